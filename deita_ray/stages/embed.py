"""The embedding stage: one L2-normalised vector per conversation, over Arrow batches.

Plain Python, no Ray: `EmbedStage(LLMConfig(...))(table)` appends `embedding`
(fixed-size list of float16 or float32; null where it could not be computed), `embed_truncated`,
`embed_tokens`, `embed_flops` (the model FLOPs of the row, engines/flops.py) and `embed_reason`. Conversations are rendered with the Vicuna v1.1 template
(Deita embeds with the model to be trained, on that template); sentence-transformers models get
the plain text by default, where a long constant system prompt would only blur similarities.
Texts over the context keep their head (as the reference's tokenizer truncation does) and are flagged.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from deita_ray.engines.base import close_engine, load_tokenizer, make_engine
from deita_ray.engines.config import LLMConfig
from deita_ray.engines.flops import shape_of_engine
from deita_ray.io.formats import turn_pairs
from deita_ray.prompts import chat
from deita_ray.io.quarantine import PERMANENT, mark_failures
from deita_ray.stages.failures import classify, each_or_one

TEMPLATES = ("auto", "vicuna", "plain")


def render_vicuna(conversation: list[dict]) -> str:
    """FastChat's vicuna_v1.1 (prompts/chat.py); system turns of the data are not used."""
    return chat.render_vicuna(turn_pairs(conversation))


def render_plain(conversation: list[dict]) -> str:
    return "\n\n".join(f"{q}\n{a}" for q, a in turn_pairs(conversation))


class EmbedStage:
    """Embeds Arrow batches. The constructor is cheap; setup() loads the engine (on the worker),
    teardown() frees it. A row without a vector (engine failure, zero or non-finite vector) keeps a
    null `embedding` and a reason, and is marked failed so the runner quarantines it."""

    def __init__(self, config: LLMConfig, template: str = "auto", out_dtype: str = "float16", engine=None):
        if template not in TEMPLATES:
            raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
        if out_dtype not in ("float16", "float32"):
            raise ValueError("out_dtype must be float16 or float32")
        self.config = config
        self.render = render_plain if template == "plain" or (template == "auto" and config.takes_text) else render_vicuna
        self.out_dtype = np.dtype(out_dtype)
        self.engine, self.tokenizer = engine, None
        self._failures: list = []

    def setup(self) -> None:
        if self.engine is None:
            self.engine = make_engine(self.config, "embed")
        if self.tokenizer is None and not self.config.takes_text:
            self.tokenizer = load_tokenizer(self.config.model)

    def teardown(self) -> None:
        close_engine(self.engine)
        self.engine = None

    def inputs(self, texts: list[str]) -> tuple[list, list[bool], list[int]]:
        """Engine inputs (token ids, or texts for sentence-transformers), truncated flags, token counts."""
        limit = self.engine.context_length
        if self.config.takes_text:
            counts = self.engine.count_tokens(texts)
            return texts, [n > limit for n in counts], [min(n, limit) for n in counts]
        ids = self.tokenizer(texts)["input_ids"]
        return [p[:limit] for p in ids], [len(p) > limit for p in ids], [min(len(p), limit) for p in ids]

    def vectors(self, inputs: list) -> tuple[np.ndarray | None, list[str | None]]:
        """Normalised vectors; a batch failure is retried row by row so only bad rows lose theirs."""
        reasons: list[str | None] = [None] * len(inputs)
        self._failures = [None] * len(inputs)
        rows = each_or_one(self.engine.embed, inputs)
        for i, row in enumerate(rows):
            if isinstance(row, Exception):
                self._failures[i] = classify(row)
                reasons[i] = self._failures[i][0]
        dim = next((len(r) for r in rows if not isinstance(r, Exception)), 0)
        raw = np.array([np.full(dim, np.nan) if isinstance(r, Exception) else r for r in rows], dtype=np.float32)
        norms = np.linalg.norm(raw, axis=1) if len(raw) else np.empty(0)
        for i, norm in enumerate(norms):
            if reasons[i] is None and not np.isfinite(norm):
                reasons[i] = "non-finite embedding"
            elif reasons[i] is None and norm == 0:
                reasons[i] = "zero embedding"
        safe = np.where(np.isfinite(norms) & (norms > 0), norms, 1.0)
        return raw / safe[:, None], reasons

    def __call__(self, table: pa.Table) -> pa.Table:
        self.setup()
        self._failures = []
        texts = [self.render(conv) for conv in table.column("conversations").to_pylist()]
        inputs, truncated, tokens = self.inputs(texts)
        vectors, reasons = self.vectors(inputs) if texts else (np.empty((0, 0), np.float32), [])
        # What the engine computed for each row, padding included (engines that pad say so; others pad nothing).
        widths = getattr(self.engine, "last_widths", None)
        computed = widths if widths is not None and len(widths) == len(tokens) else tokens
        dim = vectors.shape[1] if vectors.ndim == 2 and vectors.shape[1] else 1
        values = pa.array(vectors.astype(self.out_dtype).reshape(-1) if vectors.size else np.empty(0, self.out_dtype))
        mask = pa.array([r is not None for r in reasons], type=pa.bool_())
        embedding = pa.FixedSizeListArray.from_arrays(values, dim, mask=mask) if len(texts) else \
            pa.array([], type=pa.list_(pa.from_numpy_dtype(self.out_dtype), dim))
        table = table.append_column("embedding", embedding)
        table = table.append_column("embed_truncated", pa.array(truncated, type=pa.bool_()))
        table = table.append_column("embed_tokens", pa.array(tokens, type=pa.int64()))
        table = table.append_column("embed_computed_tokens", pa.array(computed, type=pa.int64()))
        shape = shape_of_engine(self.config)  # hidden states only: no LM head
        table = table.append_column("embed_flops", pa.array([shape.forward([n]) if shape else None for n in tokens],
                                                            type=pa.float64()))
        table = table.append_column("embed_reason", pa.array(reasons, type=pa.string()))
        failures = [f or ((f"embed: {r}", PERMANENT) if r else None) for f, r in zip(self._failures or [None] * len(reasons), reasons)]
        return mark_failures(table, failures)
