"""Deterministic fake engine for plumbing tests: logits are a hash of the prompt's token ids.

No model weights are read (only `max_length` from the config), so Ray and I/O tests run in
milliseconds. Never used for real scores; the real engines have their own tests.
"""

from __future__ import annotations

import hashlib

import numpy as np

from deita_ray.engines.base import EngineConfig


class FakeEngine:
    name = "fake"

    def __init__(self, config: EngineConfig):
        self.config = config
        self.context_length = config.max_length or 512
        self.fail_on_token = config.extra.get("fail_on_token")  # to test per-row engine failures

    def token_logits(self, prompts: list[list[int]], token_ids: list[int]) -> np.ndarray:
        out = np.empty((len(prompts), len(token_ids)), dtype=np.float32)
        for row, prompt in enumerate(prompts):
            if self.fail_on_token is not None and self.fail_on_token in prompt:
                raise RuntimeError(f"fake engine failure on token {self.fail_on_token}")
            digest = hashlib.sha256(np.asarray(prompt, dtype=np.int64).tobytes()).digest()
            out[row] = np.frombuffer(digest[: 4 * len(token_ids)], dtype=np.uint32) / 2**32 * 4.0
        return out
