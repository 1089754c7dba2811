"""The judge stage: every variant of a chain ranked and scored 1..6 in one prompt, over Arrow batches.

Plain Python, no Ray: `JudgeStage(LLMConfig(...))(evolved_table)` appends `judge_status`
(valid | invalid | skipped | failed: the engine failed, quarantined by the runner), `scores` (one integer per variant, only when valid), `judgement` (the
judge's raw text), `judge_reason` (why a judgement is invalid or skipped), `judge_method` and
`judge_tokens`. Temperature 0 (notes/evol-judge.md §4). How the judgement format is obtained:
- `regex` (vllm): structured outputs constrain decoding to `[i] Score: d` lines, d in 1..6;
- `teacher-force` (hf, fake, or vllm): the format is written for the model and only the score is
  its choice: at each slot the argmax of the six digit logits after `... [i] Score: ` (one
  `token_logits` call per slot, every chain of the batch together);
- `none` (http, a hosted judge): free text, read by the tolerant by-index parser.
Every judgement is parsed with the same parser; an invalid one keeps its text and reason and gets
no scores. A chain of one variant has nothing to rank: skipped, no labels (notes §3).
"""

from __future__ import annotations


import numpy as np
import pyarrow as pa

from deita_ray.engines.base import close_engine, digit_token_ids, make_engine, start_engine
from deita_ray.engines.config import Generation, LLMConfig, PromptTooLong, Sampling
from deita_ray.engines.flops import shape_of_engine
from deita_ray.io.quarantine import mark_failures
from deita_ray.stages.failures import classify, each_or_one
from deita_ray.prompts import judge
from deita_ray.prompts.chat import user_prompt_ids, uses_chat

METHODS = ("auto", "regex", "teacher-force", "none")
VALID, INVALID, SKIPPED, FAILED = "valid", "invalid", "skipped", "failed"  # failed: quarantined by the runner


def resolve_method(method: str, engine: str) -> str:
    """`auto`: constrained decoding where the engine has it, teacher forcing where it reads logits,
    free text (the tolerant parser) for an HTTP judge."""
    if method == "auto":
        return {"vllm": "regex", "http": "none"}.get(engine, "teacher-force")
    if method == "teacher-force" and engine == "http":
        raise ValueError("an http judge cannot be teacher-forced (no logits); use judge method none or regex")
    if method == "regex" and engine in ("hf", "fake"):
        raise ValueError(f"engine {engine} cannot constrain decoding to a regex; use judge method teacher-force")
    return method


class JudgeStage:
    """Judges Arrow batches of evolved chains. Cheap constructor; setup() builds the engine (and the
    tokenizer, for teacher forcing) on the worker; teardown() frees it."""

    def __init__(self, config: LLMConfig, method: str = "auto", max_new_tokens: int = 512, engine=None):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.config, self.max_new_tokens = config, max_new_tokens
        self.method = resolve_method(method, config.engine)
        self.engine, self.tokenizer = engine, None

    def setup(self) -> None:
        if self.engine is None:
            verb = "token_logits" if self.method == "teacher-force" else "generate"
            self.engine = make_engine(self.config, verb)
            start_engine(self.engine, "submit" if verb == "generate" and hasattr(self.engine, "submit") else verb)
        if self.method == "teacher-force" and self.tokenizer is None:
            from deita_ray.prompts.tokens import hf_tokenizer

            self.tokenizer = hf_tokenizer(self.config.model)
            self.chat = uses_chat(self.tokenizer, self.config.chat)
            self.digits = digit_token_ids(self.tokenizer)

    def teardown(self) -> None:
        if self.engine is not None:
            close_engine(self.engine)
        self.engine = None

    # ------------------------------------------------------------ the three methods

    def _teacher_force(self, jobs: list[tuple[str, str, int]]) -> list[tuple[str, int, str] | Exception]:
        """(judgement text, tokens, finish) per (mode, prompt, n): at slot i, the digit the model likes best
        after the format written so far."""
        prompts = [user_prompt_ids(self.tokenizer, prompt, self.chat) for _, prompt, _ in jobs]
        shape = shape_of_engine(self.config)
        flops: list[float | None] = [0.0 if shape is not None else None] * len(jobs)
        scores: list[list[int]] = [[] for _ in jobs]
        results: list = [None] * len(jobs)
        limit = self.engine.context_length - 1
        for slot in range(1, max(n for _, _, n in jobs) + 1):
            rows, inputs = [], []
            for j, (mode, _, n) in enumerate(jobs):
                if slot > n or results[j] is not None:
                    continue
                done = judge.judgement_text(mode, scores[j])
                cue = (done + "\n" if done else "") + judge.slot_cue(mode, slot)  # "[1] Score: 4\n[2] Score: "
                ids = prompts[j] + list(self.tokenizer(cue, add_special_tokens=False)["input_ids"])
                if len(ids) > limit:
                    # One wording for every length, so the summary groups these rows in one line.
                    results[j] = PromptTooLong(f"the judge prompt does not fit the judge's context of "
                                               f"{self.engine.context_length} tokens")
                    continue
                rows.append(j)
                inputs.append(ids)
            if not rows:
                continue
            logits = each_or_one(lambda batch: self.engine.token_logits(batch, self.digits), inputs)
            for r, j in enumerate(rows):
                if isinstance(logits[r], Exception):  # only this prompt loses its judgement
                    results[j] = logits[r]
                elif results[j] is None:
                    scores[j].append(int(np.argmax(logits[r])) + 1)
                if shape is not None:  # one forward over the prompt and the format so far, one head position
                    flops[j] += shape.forward([len(inputs[r])], head_positions=1)
        return [res if res is not None else (judge.judgement_text(jobs[j][0], scores[j]), len(scores[j]), "stop",
                                             flops[j]) for j, res in enumerate(results)]

    def _generate(self, jobs: list[tuple[str, str, int]]) -> list[tuple[str, int, str] | Exception]:
        # Constrained: room for the format even spelled one byte per token (a random model may choose that).
        samplings = [Sampling(temperature=0.0, max_new_tokens=self.max_new_tokens if self.method == "none"
                              else len(judge.judgement_text(mode, [1] * n).encode()) + 8,
                              regex=judge.judgement_regex(mode, n) if self.method == "regex" else None)
                     for mode, _, n in jobs]
        shape = shape_of_engine(self.config)
        if hasattr(self.engine, "submit"):
            results: list = []
            futures = []
            for (_, prompt, _), sampling in zip(jobs, samplings):
                try:
                    futures.append(self.engine.submit(prompt, sampling))
                except Exception as exc:
                    futures.append(exc)
            for future in futures:
                if isinstance(future, Exception):
                    results.append(future)
                    continue
                try:
                    generation = future.result()
                except Exception as exc:
                    results.append(exc)
                    continue
                results.append(_text(generation, shape))
            return results
        results = [None] * len(jobs)
        groups: dict[tuple, list[int]] = {}  # one generate call per (mode, length): the sampling depends on both
        for j, (mode, _, n) in enumerate(jobs):
            groups.setdefault((mode, n), []).append(j)
        for members in groups.values():
            out = each_or_one(lambda group: self.engine.generate([jobs[j][1] for j in group], samplings[group[0]]),
                              members)
            for j, generation in zip(members, out):
                results[j] = generation if isinstance(generation, Exception) else _text(generation, shape)
        return results

    # ------------------------------------------------------------ Arrow in, Arrow out

    def __call__(self, table: pa.Table) -> pa.Table:
        self.setup()
        modes = table.column("mode").to_pylist()
        variants = table.column("variants").to_pylist()
        instructions = table.column("instruction").to_pylist()
        status: list[str] = [SKIPPED] * table.num_rows
        reasons: list[str | None] = ["one variant: nothing to rank"] * table.num_rows
        texts: list[str | None] = [None] * table.num_rows
        scores: list[list[int] | None] = [None] * table.num_rows
        tokens = [0] * table.num_rows
        failures: list[tuple[str, str] | None] = [None] * table.num_rows
        todo = [i for i, v in enumerate(variants) if v is not None and len(v) >= 2]
        row_flops: list[float | None] = [None] * table.num_rows
        jobs = [(modes[i], judge.judge_prompt(modes[i], variants[i], instructions[i]), len(variants[i])) for i in todo]
        answers = (self._teacher_force if self.method == "teacher-force" else self._generate)(jobs) if jobs else []
        for i, (mode, _, n), answer in zip(todo, jobs, answers):
            if isinstance(answer, Exception):
                failures[i] = classify(answer)
                status[i], reasons[i] = FAILED, failures[i][0]
                continue
            texts[i], tokens[i], finish, row_flops[i] = answer
            parsed, reason = judge.parse_judgement(mode, texts[i], n)
            if parsed is None and finish == "length":  # e.g. a prompt so long that the context ends the answer
                reason = f"cut at the token limit ({reason})"
            status[i], scores[i], reasons[i] = (VALID, parsed, None) if parsed is not None else (INVALID, None, reason)
        columns = {
            "judge_status": pa.array(status, pa.string()),
            "scores": pa.array(scores, pa.list_(pa.int32())),
            "judgement": pa.array(texts, pa.string()),
            "judge_reason": pa.array(reasons, pa.string()),
            "judge_method": pa.array([self.method] * table.num_rows, pa.string()),
            "judge_tokens": pa.array(tokens, pa.int64()),
            "judge_flops": pa.array(row_flops, pa.float64()),
        }
        for name, values in columns.items():
            table = table.append_column(name, values)
        return mark_failures(table, failures)


def _text(generation: Generation, shape) -> tuple[str, int, str, float | None]:
    """(text, tokens, finish reason, model FLOPs: a forward over prompt + answer, None where not known)."""
    known = shape is not None and generation.prompt_tokens is not None
    flops = shape.generation(generation.prompt_tokens, generation.tokens) if known else None
    return generation.text, generation.tokens, generation.finish_reason, flops

