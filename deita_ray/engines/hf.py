"""Transformers engine: batched prefill on CPU or GPU, logits read at the last prompt position.

Prompts are sorted by length and cut into buckets (at most `batch_size` prompts and
`max_batch_tokens` padded tokens each), left-padded with explicit position ids so that a
padded row computes what it would alone, and only the last position's logits are
materialised (`logits_to_keep=1`). Nothing is ever decoded.
"""

from __future__ import annotations

import numpy as np

from deita_ray.engines.base import EngineConfig

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def length_buckets(lengths: list[int], batch_size: int, max_batch_tokens: int) -> list[np.ndarray]:
    """Indices grouped into batches of similar length (sorted), bounded by count and padded tokens."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    buckets, current = [], []
    for idx in order:
        longest = lengths[idx]  # ascending order: the newest item is the longest
        if current and (len(current) >= batch_size or longest * (len(current) + 1) > max_batch_tokens):
            buckets.append(np.asarray(current))
            current = []
        current.append(idx)
    if current:
        buckets.append(np.asarray(current))
    return buckets


class HFEngine:
    name = "hf"

    def __init__(self, config: EngineConfig):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        self.config = config
        device = config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        dtype = getattr(torch, _DTYPES.get(config.dtype, "float32")) if config.dtype != "auto" else "auto"
        self.model = AutoModelForCausalLM.from_pretrained(config.model, dtype=dtype, **config.extra).to(self.device).eval()
        model_config = AutoConfig.from_pretrained(config.model)
        native = getattr(model_config, "max_position_embeddings", None) or 2048
        self.context_length = min(config.max_length or native, native)
        self.pad_id = model_config.pad_token_id if model_config.pad_token_id is not None else 0

    def token_logits(self, prompts: list[list[int]], token_ids: list[int]) -> np.ndarray:
        import torch

        out = np.empty((len(prompts), len(token_ids)), dtype=np.float32)
        lengths = [len(p) for p in prompts]
        if any(n == 0 for n in lengths):
            raise ValueError("empty prompt")
        wanted = torch.tensor(token_ids, device=self.device)
        for bucket in length_buckets(lengths, self.config.batch_size, self.config.max_batch_tokens):
            width = max(lengths[i] for i in bucket)
            ids = torch.full((len(bucket), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(bucket), width), dtype=torch.long)
            for row, i in enumerate(bucket):
                ids[row, width - lengths[i]:] = torch.tensor(prompts[i])
                mask[row, width - lengths[i]:] = 1
            # Positions count real tokens only, as they would for the prompt alone.
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                    position_ids=positions.to(self.device), logits_to_keep=1, use_cache=False).logits
            out[bucket] = logits[:, -1, :].index_select(-1, wanted).float().cpu().numpy()
        return out
