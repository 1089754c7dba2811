"""Model FLOPs from a model's config: what a stage's summary reports (with runner/peak.py, its share of the limit).

    shape = ModelShape.of("models/scorer")                  # hidden, layers, vocab, parameters of the body
    shape.forward([512, 180], head_positions=2)             # FLOPs of two forward passes, LM head at 2 positions

Counted as the work of the task (the usual "model FLOPs" of MFU), not as a particular engine runs it:
a forward over L tokens costs 2 x body parameters x L (every weight used once per token) plus causal
attention, 2 x layers x hidden x L^2 (the L^2/2 scores and the L^2/2 weighted sums, two FLOPs per
multiply-add, per layer); the LM head 2 x hidden x vocab at each position whose logits are read.
Generation: a forward over prompt + new tokens (a KV cache does the same work), the head at each
new token. Training: 3 x forward. Embeddings and token ids above the vocabulary do not count.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    vocab: int
    body_params: int   # parameters of the transformer layers (no embedding, no LM head)

    @staticmethod
    @functools.lru_cache(maxsize=16)
    def of(model: str) -> "ModelShape | None":
        """From the model's config.json (local or the hub cache); None for a model without one (a server's)."""
        try:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(model)
        except Exception:
            return None
        return ModelShape.from_config(config)

    @staticmethod
    def from_config(config) -> "ModelShape | None":
        config = getattr(config, "text_config", None) or config
        hidden = getattr(config, "hidden_size", None)
        layers = getattr(config, "num_hidden_layers", None)
        if not hidden or not layers:
            return None
        heads = getattr(config, "num_attention_heads", None) or 1
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or hidden // heads
        intermediate = getattr(config, "intermediate_size", None) or 4 * hidden
        attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2   # q, o; k, v
        gated = getattr(config, "hidden_act", "silu") in ("silu", "swish", "gelu_pytorch_tanh") \
            and getattr(config, "model_type", "llama") not in ("gpt2", "bert")
        mlp = (3 if gated else 2) * hidden * intermediate
        return ModelShape(hidden=hidden, layers=layers, vocab=getattr(config, "vocab_size", 0) or 0,
                          body_params=layers * (attention + mlp))

    def forward(self, lengths, head_positions: int = 0) -> float:
        """FLOPs of forward passes over sequences of `lengths` tokens, the LM head at `head_positions` positions."""
        tokens = float(sum(lengths))
        attention = 2.0 * self.layers * self.hidden * float(sum(n * n for n in lengths))
        return 2.0 * self.body_params * tokens + attention + 2.0 * self.hidden * self.vocab * head_positions

    def generation(self, prompt_tokens: int, new_tokens: int) -> float:
        return self.forward([prompt_tokens + new_tokens], head_positions=max(new_tokens, 1))


def shape_of_engine(config) -> ModelShape | None:
    """The shape of the model an engine config runs; None where the model is a server's (http) or not on disk."""
    import os

    if config.engine == "http" or (config.engine == "fake" and not os.path.isdir(config.model)):
        return None
    return ModelShape.of(config.model)
