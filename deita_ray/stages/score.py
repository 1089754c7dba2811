"""The scoring stage: Deita complexity or quality scores for every turn, over Arrow batches.

Plain Python, no Ray: `ScoreStage(kind, LLMConfig(...))(table)` appends
`{kind}_scores` (per-turn list, null where a score could not be read), `{kind}_truncated`,
`{kind}_tokens` (prompt tokens scored) and `{kind}_reason` (null when every turn scored).
`finalize_scores(table, aggregation)` then adds `evol_score`, `truncated` and `score_reason`.
The Ray runner wraps the same callables in actor pools.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deita_ray.engines.flops import shape_of_engine
from deita_ray.engines.base import Engine, LLMConfig, close_engine, digit_token_ids, load_tokenizer, make_engine
from deita_ray.io.formats import turn_pairs
from deita_ray.io.quarantine import PERMANENT, TRANSIENT, mark_failures
from deita_ray.stages.failures import classify, each_or_one
from deita_ray.prompts import AGGREGATIONS, aggregate_evol_score, complexity_prompt, expected_scores, quality_prompt
from deita_ray.prompts.truncate import fit_prompt

KINDS = ("complexity", "quality")


class TurnScorer:
    """One scorer model: Deita prompt -> token ids (truncated explicitly) -> six digit logits -> score."""

    def __init__(self, kind: str, config: LLMConfig, engine: Engine | None = None):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.tokenizer = load_tokenizer(config.model)
        self.digit_ids = digit_token_ids(self.tokenizer)
        self.engine = engine if engine is not None else make_engine(config, "token_logits")
        # The prompt plus the one position whose logits we read must fit the context.
        self.max_prompt_tokens = self.engine.context_length - 1

    def _render(self, fields: list[str]) -> str:
        return complexity_prompt(fields[0]) if self.kind == "complexity" else quality_prompt(fields[0], fields[1])

    def _fields(self, instruction: str, output: str) -> list[str]:
        return [instruction] if self.kind == "complexity" else [instruction, output]

    def prompt_ids(self, instruction: str, output: str) -> tuple[list[int], bool]:
        return fit_prompt(self._render, self._fields(instruction, output), self.tokenizer, self.max_prompt_tokens)

    def build_prompts(self, pairs: list[tuple[str, str]]) -> tuple[list[list[int]], list[bool]]:
        """Token ids for many pairs: one batched tokenizer call, then explicit truncation of the few too long."""
        if not pairs:
            return [], []
        ids = self.tokenizer([self._render(self._fields(q, a)) for q, a in pairs])["input_ids"]
        truncated = [False] * len(ids)
        for i, prompt in enumerate(ids):
            if len(prompt) > self.max_prompt_tokens:
                ids[i], truncated[i] = self.prompt_ids(*pairs[i])
        return ids, truncated

    def digit_logits(self, prompts: list[list[int]]) -> tuple[np.ndarray, list[tuple[str, str] | None]]:
        """Logits for all prompts (one by one where the batch fails: only the bad prompts lose their score), and
        (reason, failure class) for each prompt the engine failed on (stages/failures.py)."""
        results = each_or_one(lambda rows: self.engine.token_logits(rows, self.digit_ids), prompts)
        logits = np.full((len(prompts), 6), np.nan, dtype=np.float32)
        failures: list[tuple[str, str] | None] = [None] * len(prompts)
        for i, result in enumerate(results):
            if isinstance(result, Exception):
                failures[i] = classify(result)
            else:
                logits[i] = result
        return logits, failures

    def score_pairs(self, pairs: list[tuple[str, str]]):
        """Scores, truncated flags, token counts and reasons for (instruction, response) pairs."""
        prompts, truncated = self.build_prompts(pairs)
        # Identical prompts (e.g. the complexity prompt of a repeated "continue") are scored once.
        first_seen: dict[tuple, int] = {}
        slot = [first_seen.setdefault(tuple(p), len(first_seen)) for p in prompts]
        unique = [list(p) for p in first_seen]
        logits, failures = self.digit_logits(unique) if unique else (np.empty((0, 6)), [])
        scores, math_reasons = expected_scores(logits)
        reasons = [f[0] if f else m for f, m in zip(failures, math_reasons)]
        self.last_failures = [failures[i] for i in slot]
        return scores[slot], truncated, [len(p) for p in prompts], [reasons[i] for i in slot]


class ScoreStage:
    """One scorer over Arrow tables (the unit Ray Data actors run). The constructor is cheap; setup()
    loads the tokenizer and engine on the worker (called on first use if nobody did), teardown() frees it.

    A row whose turn the engine failed on keeps a null score and a reason, and is marked failed
    (io/quarantine.py), so the runner quarantines it with the failure's class."""

    def __init__(self, kind: str, config: LLMConfig, engine: Engine | None = None):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind, self.config, self._engine = kind, config, engine
        self.scorer: TurnScorer | None = None

    def setup(self) -> None:
        if self.scorer is None:
            self.scorer = TurnScorer(self.kind, self.config, self._engine)

    def teardown(self) -> None:
        if self.scorer is not None:
            close_engine(self.scorer.engine)
        self.scorer = None

    def __call__(self, table: pa.Table) -> pa.Table:
        self.setup()
        conversations = table.column("conversations").to_pylist()
        row_pairs = [turn_pairs(conv) for conv in conversations]
        flat = [pair for pairs in row_pairs for pair in pairs]
        scores, truncated, tokens, reasons = self.scorer.score_pairs(flat)
        failures = self.scorer.last_failures if flat else []
        out_scores, out_trunc, out_tokens, out_reason, out_failed = [], [], [], [], []
        spans = []
        start = 0
        for pairs in row_pairs:
            end = start + len(pairs)
            spans.append((start, end))
            out_scores.append([None if np.isnan(s) else float(s) for s in scores[start:end]])
            out_trunc.append(any(truncated[start:end]))
            out_tokens.append(int(sum(tokens[start:end])))
            bad = [f"turn {t}: {r}" for t, r in enumerate(reasons[start:end]) if r]
            out_reason.append("; ".join(bad) if bad else None)
            failed = [(t, f) for t, f in enumerate(failures[start:end]) if f]
            out_failed.append((f"{self.kind} " + "; ".join(f"turn {t}: {f[0]}" for t, f in failed),
                               TRANSIENT if any(f[1] == TRANSIENT for _, f in failed) else PERMANENT) if failed else None)
            start = end
        k = self.kind
        table = table.append_column(f"{k}_scores", pa.array(out_scores, type=pa.list_(pa.float64())))
        table = table.append_column(f"{k}_truncated", pa.array(out_trunc, type=pa.bool_()))
        table = table.append_column(f"{k}_tokens", pa.array(out_tokens, type=pa.int64()))
        shape = shape_of_engine(self.config)  # each turn's prompt once, the digits read at its last position
        flops = [shape.forward(tokens[a:b], head_positions=b - a) if shape else None for a, b in spans]
        table = table.append_column(f"{k}_flops", pa.array(flops, type=pa.float64()))
        table = table.append_column(f"{k}_reason", pa.array(out_reason, type=pa.string()))
        return mark_failures(table, out_failed)


def finalize_scores(table: pa.Table, aggregation: str = "sum") -> pa.Table:
    """Append `evol_score` (sum/mean/last of c_t*q_t), `truncated` and `score_reason`."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    comp = table.column("complexity_scores").to_pylist()
    qual = table.column("quality_scores").to_pylist()
    evol = [aggregate_evol_score(c, q, aggregation) for c, q in zip(comp, qual)]
    truncated = pc.or_(table.column("complexity_truncated"), table.column("quality_truncated"))
    reasons = []
    for c_reason, q_reason in zip(table.column("complexity_reason").to_pylist(), table.column("quality_reason").to_pylist()):
        parts = [f"complexity {c_reason}" if c_reason else None, f"quality {q_reason}" if q_reason else None]
        reasons.append("; ".join(p for p in parts if p) or None)
    table = table.append_column("evol_score", pa.array(evol, type=pa.float64()))
    table = table.append_column("truncated", truncated)
    return table.append_column("score_reason", pa.array(reasons, type=pa.string()))


def score_table(table: pa.Table, complexity: ScoreStage, quality: ScoreStage, aggregation: str = "sum") -> pa.Table:
    """In-process scoring of a whole table: the reference path the Ray path must equal."""
    return finalize_scores(quality(complexity(table)), aggregation)
