"""Deterministic fake engine for plumbing tests: every output is a hash of the input's token ids.

No model weights are read (only `max_length` from the config), so Ray and I/O tests run in
milliseconds. Never used for real results; the real engines have their own tests. `engine_kwargs`:
`fail_on_token` makes any input holding that token id raise `fail_with` (RuntimeError by default;
TimeoutError or MemoryError for transient failures), to test per-row failures; `die_once` (a file
path) kills the first process that generates, once.
"""

from __future__ import annotations

import hashlib

import numpy as np

from deita_ray.engines.config import Generation, LLMConfig, Sampling

WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu")


def _digest(ids, salt: bytes = b"") -> bytes:
    return hashlib.sha256(salt + np.asarray(ids, dtype=np.int64).tobytes()).digest()


class FakeEngine:
    name = "fake"

    def __init__(self, config: LLMConfig):
        self.config = config
        self.context_length = config.max_length or 512
        self.fail_on_token = config.engine_kwargs.get("fail_on_token")
        # The exception class raised there: RuntimeError (a permanent failure) or e.g. TimeoutError (transient).
        self.fail_with = {"RuntimeError": RuntimeError, "TimeoutError": TimeoutError,
                          "MemoryError": MemoryError}[config.engine_kwargs.get("fail_with", "RuntimeError")]
        # A file path: the first process to generate creates it and kills itself (SIGKILL), once per path,
        # so tests can kill an actor mid-generation.
        self.die_once = config.engine_kwargs.get("die_once")

    def _maybe_die(self) -> None:
        import os
        import signal

        try:
            fd = os.open(self.die_once, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)

    def _check(self, ids) -> None:
        if self.fail_on_token is not None and not isinstance(ids, str) and self.fail_on_token in ids:
            raise self.fail_with(f"fake engine failure on token {self.fail_on_token}")

    def token_logits(self, prompts: list[list[int]], token_ids: list[int]) -> np.ndarray:
        out = np.empty((len(prompts), len(token_ids)), dtype=np.float32)
        for row, prompt in enumerate(prompts):
            self._check(prompt)
            out[row] = np.frombuffer(_digest(prompt)[: 4 * len(token_ids)], dtype=np.uint32) / 2**32 * 4.0
        return out

    def embed(self, prompts: list[list[int]]) -> np.ndarray:
        out = np.empty((len(prompts), 64), dtype=np.float32)
        for i, p in enumerate(prompts):
            self._check(p)
            seed = int.from_bytes(_digest(p)[:8], "little")
            out[i] = np.random.default_rng(seed).standard_normal(64)
        return out

    def generate(self, prompts: list, sampling: Sampling, seeds: list[int | None] | None = None) -> list[Generation]:
        """Words drawn from a hash of (prompt, request seed); at most max_new_tokens of them."""
        results = []
        seeds = list(seeds) if seeds is not None else [sampling.seed] * len(prompts)
        for prompt, request_seed in zip(prompts, seeds):
            self._check(prompt)
            if self.die_once is not None:
                self._maybe_die()
            key = prompt.encode() if isinstance(prompt, str) else _digest(prompt)
            seed = int.from_bytes(hashlib.sha256(key + str(request_seed).encode()).digest()[:8], "little")
            rng = np.random.default_rng(seed)
            n = int(rng.integers(1, 2 * sampling.max_new_tokens + 1))
            words = [WORDS[i] for i in rng.integers(0, len(WORDS), min(n, sampling.max_new_tokens))]
            text = " ".join(words)
            reason = "length" if n >= sampling.max_new_tokens else "stop"
            for stop in sampling.stop:
                if stop in text:
                    text, reason = text[: text.index(stop)], "stop"
            results.append(Generation(text=text, token_ids=[WORDS.index(w) for w in words], finish_reason=reason))
        return results
