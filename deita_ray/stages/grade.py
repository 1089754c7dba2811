"""The grading stage: an LLM judge grades MT-Bench answers, alone (1-10) or two models side by side, over Arrow batches.

Plain Python, no Ray:
    GradeStage(LLMConfig(...), prompts)(answered)            # single: appends ratings, judgements, judge_status
    GradeStage(LLMConfig(...), prompts, "pairwise")(pairs)   # pairwise: verdicts, both orders

Single grading (FastChat's `single` mode): every turn of every answered question gets one judgement at
temperature 0, with the judge prompt FastChat would pick (prompts/mt_bench.JudgePrompts: the math prompt with the
reference answer for math, reasoning and coding questions that have one; the multi-turn prompt for turn 2).
Appends `ratings` (per turn, null where invalid), `judgements` (the raw text), `judge_status` (valid | invalid per
turn), `judge_reason`, `judge_prompt` (the prompt's name) and `judge_tokens`.

Pairwise (FastChat's `pairwise-baseline`, both orders): rows hold `answers_a` and `answers_b` (two models' answers
to the same question); each turn is judged twice, A first and then B first, to cancel position bias. A model
wins a turn only when both orders agree; one order preferring it and the other a tie, or the two orders
disagreeing, is a tie; an invalid judgement in either order makes the turn invalid (counted, never guessed).
Appends `verdicts` (per turn: a | b | tie | null), `judgements` (both orders, in turn order), `judge_status`,
`judge_reason`, `judge_prompt` and `judge_tokens`.

A judgement the engine fails on marks its row failed (quarantined by the runner with its reason and class).
"""

from __future__ import annotations

import pyarrow as pa

from deita_ray.engines.base import close_engine, make_engine
from deita_ray.engines.config import LLMConfig, Sampling
from deita_ray.io.quarantine import mark_failures
from deita_ray.prompts import mt_bench
from deita_ray.stages.failures import classify, each_or_one

VALID, INVALID = "valid", "invalid"
MODES = ("single", "pairwise")


def _question(row: dict) -> mt_bench.Question:
    return mt_bench.Question(row["id"], row["category"], tuple(row["turns"]),
                             tuple(row["reference"]) if row.get("reference") else None)


def _messages(system: str, user: str) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]


def combine(first: str | None, second: str | None) -> str | None:
    """One pairwise verdict from the two orders: `first` judged with A = model a, `second` with A = model b (so
    its A and B are swapped back here). Both must agree for a win; an invalid order makes the turn invalid."""
    if first is None or second is None:
        return None
    second = {"A": "B", "B": "A", "C": "C"}[second]
    if first == second:
        return {"A": "a", "B": "b", "C": "tie"}[first]
    return "tie"


class GradeStage:
    """Grades Arrow batches. The constructor is cheap; setup() builds the judge's engine on the worker."""

    def __init__(self, config: LLMConfig, prompts: list[dict] | None = None, mode: str = "single",
                 max_new_tokens: int = 2048, engine=None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.config, self.mode, self.max_new_tokens, self.engine = config, mode, max_new_tokens, engine
        self.prompts = mt_bench.JudgePrompts.load(prompts)
        self.sampling = Sampling(temperature=0.0, max_new_tokens=max_new_tokens)

    def setup(self) -> None:
        if self.engine is None:
            self.engine = make_engine(self.config, "generate")

    def teardown(self) -> None:
        close_engine(self.engine)
        self.engine = None

    def requests(self, row: dict) -> list[tuple[list[dict], str]]:
        """(judge messages, prompt name) of every judgement the row needs, in turn order (pairwise: A first, then
        B first, per turn)."""
        question = _question(row)
        out = []
        for turn in range(1, len(row["turns"]) + 1):
            if self.mode == "single":
                system, user, name = self.prompts.single(question, row["answers"][:turn], turn)
                out.append((_messages(system, user), name))
                continue
            for a, b in ((row["answers_a"], row["answers_b"]), (row["answers_b"], row["answers_a"])):
                system, user, name = self.prompts.pairwise(question, a[:turn], b[:turn], turn)
                out.append((_messages(system, user), name))
        return out

    def __call__(self, table: pa.Table) -> pa.Table:
        self.setup()
        rows = table.to_pylist()
        per_row = [self.requests(row) for row in rows]
        flat = [(r, k) for r, requests in enumerate(per_row) for k in range(len(requests))]
        results = each_or_one(lambda items: self.engine.generate([per_row[r][k][0] for r, k in items], self.sampling),
                              flat) if flat else []
        outcome: dict[tuple[int, int], object] = dict(zip(flat, results))
        failures, columns = [], {name: [] for name in ("judgements", "judge_status", "judge_reason", "judge_prompt",
                                                       "judge_tokens", "scores")}
        for r, requests in enumerate(per_row):
            got = [outcome[(r, k)] for k in range(len(requests))]
            failed = next((g for g in got if isinstance(g, Exception)), None)
            failures.append(classify(failed) if failed is not None else None)
            texts = [None if isinstance(g, Exception) else g.text for g in got]
            columns["judgements"].append(texts)
            columns["judge_prompt"].append(sorted({name for _, name in requests}))
            columns["judge_tokens"].append(sum(g.tokens for g in got if not isinstance(g, Exception)))
            scores, status, reasons = self._read(texts)
            columns["scores"].append(scores)
            columns["judge_status"].append(status)
            columns["judge_reason"].append(reasons)
        score_type = pa.list_(pa.float64()) if self.mode == "single" else pa.list_(pa.string())
        out = {("ratings" if self.mode == "single" else "verdicts"): pa.array(columns.pop("scores"), score_type),
               "judgements": pa.array(columns["judgements"], pa.list_(pa.string())),
               "judge_status": pa.array(columns["judge_status"], pa.list_(pa.string())),
               "judge_reason": pa.array(columns["judge_reason"], pa.list_(pa.string())),
               "judge_prompt": pa.array(columns["judge_prompt"], pa.list_(pa.string())),
               "judge_tokens": pa.array(columns["judge_tokens"], pa.int64()),
               "judge_model": pa.array([self.config.model] * len(rows), pa.string())}
        for name, values in out.items():
            table = table.append_column(name, values)
        return mark_failures(table, failures)

    def _read(self, texts: list[str | None]) -> tuple[list, list[str], list[str | None]]:
        """Per turn: the score (a rating, or a combined verdict), its status and the reason where invalid."""
        if any(t is None for t in texts):  # the row failed: the runner quarantines it
            return [], [], []
        if self.mode == "single":
            parsed = [mt_bench.parse_rating(t) for t in texts]
            return ([v for v, _ in parsed], [VALID if v is not None else INVALID for v, _ in parsed],
                    [why for _, why in parsed])
        scores, status, reasons = [], [], []
        for first, second in zip(texts[0::2], texts[1::2]):
            (v1, why1), (v2, why2) = mt_bench.parse_verdict(first), mt_bench.parse_verdict(second)
            verdict = combine(v1, v2)
            scores.append(verdict)
            status.append(VALID if verdict is not None else INVALID)
            reasons.append(None if verdict is not None else f"A first: {why1 or 'valid'}; B first: {why2 or 'valid'}")
        return scores, status, reasons
