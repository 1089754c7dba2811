"""The answer stage: a model under test answers MT-Bench questions turn by turn, over Arrow batches.

Plain Python, no Ray: `AnswerStage(LLMConfig(...), template="vicuna")(table)` appends to question rows (`id`,
`category`, `turns`) `answers` (one per turn), `answer_finish` ("stop" or "length" per turn), `answer_tokens` and
`answer_flops` (engines/flops.py; null where the model's shape is not known). As FastChat's llm_judge generates
them: turn k is asked in the conversation so far, after the model's own answers to turns 1..k-1; the temperature
is the question category's (prompts/mt_bench.TEMPERATURES); each request has its own seed, drawn from (run seed,
question id, turn), so an answer does not depend on the batch it lands in. Templates: `vicuna` renders the
conversation as Deita trains its models (`{system} USER: q ASSISTANT: a</s>USER: ...`, prompts/chat.py) and
sends it as raw text; `model` sends chat messages through the model's own chat template (or an HTTP server's
chat API). A question whose conversation does not fit the model's context, or that the engine fails on, is
marked failed (quarantined with its reason by the runner).
"""

from __future__ import annotations

import dataclasses
import hashlib

import pyarrow as pa

from deita_ray.engines.base import close_engine, make_engine
from deita_ray.engines.config import LLMConfig, PromptTooLong, Sampling
from deita_ray.engines.flops import shape_of_engine
from deita_ray.io.quarantine import PERMANENT, mark_failures
from deita_ray.prompts import chat, mt_bench
from deita_ray.stages.failures import classify, each_or_one

TEMPLATES = ("vicuna", "model")


def request_seed(seed: int, question_id: str, turn: int) -> int:
    digest = hashlib.sha256(f"{seed}\0{question_id}\0{turn}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


class AnswerStage:
    """Answers Arrow batches of questions. The constructor is cheap; setup() builds the engine on the worker."""

    def __init__(self, config: LLMConfig, template: str = "vicuna", max_new_tokens: int = 1024, seed: int = 0,
                 engine=None):
        if template not in TEMPLATES:
            raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
        # Vicuna text is the prompt as it stands: no chat template (or chat API) may wrap it again.
        self.config = dataclasses.replace(config, chat=False) if template == "vicuna" else config
        self.template, self.max_new_tokens, self.seed = template, max_new_tokens, seed
        self.engine, self.shape = engine, None

    def setup(self) -> None:
        self.shape = shape_of_engine(self.config)
        if self.engine is None:
            self.engine = make_engine(self.config, "generate")

    def teardown(self) -> None:
        close_engine(self.engine)
        self.engine = None

    def prompt(self, turns: list[str], answers: list[str]):
        """The conversation the model continues for the next turn: text (vicuna) or chat messages (model)."""
        history = list(zip(turns[:len(answers)], answers)) + [(turns[len(answers)], None)]
        if self.template == "vicuna":
            return chat.render_vicuna_prompt(history)
        messages = []
        for question, answer in history:
            messages.append({"role": "user", "content": question})
            if answer is not None:
                messages.append({"role": "assistant", "content": answer})
        return messages

    def __call__(self, table: pa.Table) -> pa.Table:
        self.setup()
        ids, categories = table.column("id").to_pylist(), table.column("category").to_pylist()
        turns = table.column("turns").to_pylist()
        answers: list[list[str]] = [[] for _ in ids]
        finish: list[list[str]] = [[] for _ in ids]
        tokens, flops = [0] * len(ids), [0.0 if self.shape else None for _ in ids]
        failures: list[tuple[str, str] | None] = [None] * len(ids)
        for turn in range(max((len(t) for t in turns), default=0)):
            asked = [i for i in range(len(ids)) if failures[i] is None and turn < len(turns[i])]
            for temperature in sorted({mt_bench.temperature(categories[i]) for i in asked}):
                group = [i for i in asked if mt_bench.temperature(categories[i]) == temperature]
                sampling = Sampling(temperature=temperature, max_new_tokens=self.max_new_tokens)
                requests = [(self.prompt(turns[i], answers[i]), request_seed(self.seed, ids[i], turn)) for i in group]
                results = each_or_one(lambda reqs, s=sampling: self.engine.generate(
                    [r[0] for r in reqs], s, seeds=[r[1] for r in reqs]), requests)
                for i, result in zip(group, results):
                    if isinstance(result, PromptTooLong):
                        failures[i] = (f"answer: turn {turn + 1} does not fit the model's context: {result}",
                                       PERMANENT)
                    elif isinstance(result, Exception):
                        failures[i] = classify(result)
                    else:
                        answers[i].append(result.text.strip())
                        finish[i].append(result.finish_reason)
                        tokens[i] += result.tokens
                        if self.shape is not None and result.prompt_tokens is not None:
                            flops[i] += self.shape.generation(result.prompt_tokens, result.tokens)
        columns = {"answers": pa.array(answers, pa.list_(pa.string())),
                   "answer_finish": pa.array(finish, pa.list_(pa.string())),
                   "answer_tokens": pa.array(tokens, pa.int64()), "answer_flops": pa.array(flops, pa.float64()),
                   "answer_model": pa.array([self.config.model] * len(ids), pa.string())}
        for name, values in columns.items():
            table = table.append_column(name, values)
        return mark_failures(table, failures)
