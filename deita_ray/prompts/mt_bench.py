"""MT-Bench, as FastChat's llm_judge does it: questions, per-category temperatures, judge prompts, strict verdicts.

    questions = read_questions(rows)                  # question_id, category, turns[, reference]
    temperature("writing")                            # 0.7: FastChat's temperature_config
    prompts = JudgePrompts.load(rows)                 # FastChat's judge_prompts.jsonl, or ours (DEFAULT_PROMPTS)
    text, name = prompts.single(question, answers, turn=2)
    parse_rating("... Rating: [[7]]")                 # (7.0, None); anything but exactly one [[x]] in 1..10 is invalid
    parse_verdict("... [[A]]")                        # ("A", None)

FastChat (lm-sys/FastChat, fastchat/llm_judge/common.py): answers are generated turn by turn, the second with the
model's own first answer in the conversation; the temperature is the category's; a judge sees one answer (single
grading 1-10) or two (pairwise, [[A]] / [[B]] / [[C]] for a tie); math, reasoning and coding questions are
judged against a reference answer. Where FastChat falls back to a looser pattern (`[7]`), we do not: a judgement
with no `[[...]]` verdict, or more than one, is invalid and counted, never guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# fastchat/llm_judge/common.py
TEMPERATURES = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0, "reasoning": 0.0,
                "stem": 0.1, "humanities": 0.1, "arena-hard-200": 0.0}
NEEDS_REFERENCE = ("math", "reasoning", "coding", "arena-hard-200")
DEFAULT_TEMPERATURE = 0.7  # a category FastChat does not list: as its writing questions
RATING = re.compile(r"\[\[(\d+(?:\.\d+)?)\]\]")
VERDICT = re.compile(r"\[\[([ABC])\]\]")


def temperature(category: str) -> float:
    return TEMPERATURES.get(category, DEFAULT_TEMPERATURE)


def needs_reference(category: str) -> bool:
    return category in NEEDS_REFERENCE


class QuestionError(ValueError):
    """A question row that is not FastChat's format."""


@dataclass(frozen=True)
class Question:
    question_id: str
    category: str
    turns: tuple[str, ...]
    reference: tuple[str, ...] | None = None


def read_question(row: dict) -> Question:
    """One row of FastChat's question.jsonl (`reference` optional; ids kept as text)."""
    if not isinstance(row, dict):
        raise QuestionError(f"a question must be a JSON object, got {type(row).__name__}")
    missing = [k for k in ("question_id", "turns") if k not in row]
    if missing:
        raise QuestionError(f"missing field {missing[0]!r}")
    turns = row["turns"]
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
        raise QuestionError("'turns' must be a non-empty list of non-empty strings")
    reference = row.get("reference")
    if reference is not None and (not isinstance(reference, list) or not all(isinstance(t, str) for t in reference)):
        raise QuestionError("'reference' must be a list of strings")
    return Question(str(row["question_id"]), str(row.get("category") or "general"), tuple(turns),
                     tuple(reference) if reference else None)


def parse_rating(text: str) -> tuple[float | None, str | None]:
    """(rating, None) when the judgement holds exactly one [[x]] with 1 <= x <= 10, else (None, the reason)."""
    found = RATING.findall(text or "")
    if len(found) != 1:
        return None, "no [[rating]] in the judgement" if not found else f"{len(found)} [[ratings]] in the judgement"
    value = float(found[0])
    if not 1 <= value <= 10:
        return None, f"rating {found[0]} is outside 1..10"
    return value, None


def parse_verdict(text: str) -> tuple[str | None, str | None]:
    """("A" | "B" | "C", None) when the judgement holds exactly one verdict (C: a tie), else (None, the reason)."""
    found = set(VERDICT.findall(text or ""))
    if len(found) != 1:
        return None, "no [[A]]/[[B]]/[[C]] verdict in the judgement" if not found else \
            f"several verdicts in the judgement ({', '.join(sorted(found))})"
    return found.pop(), None


# Judge prompts of our own, used when no judge_prompts.jsonl is named (recorded in the eval summary as such):
# the structure of FastChat's, shorter. Numbers from them are not comparable with published MT-Bench.
DEFAULT_PROMPTS = [
    {"name": "deita-single", "type": "single", "category": "general", "system_prompt": "You are a strict judge.",
     "prompt_template": "Rate the assistant's answer to the question from 1 to 10 for helpfulness, accuracy and "
                        "detail. End with the rating as [[rating]], e.g. [[5]].\n\n[Question]\n{question}\n\n"
                        "[Answer]\n{answer}"},
    {"name": "deita-single-multi-turn", "type": "single", "category": "general",
     "system_prompt": "You are a strict judge.",
     "prompt_template": "Rate the assistant's answer to the second question from 1 to 10. End with [[rating]].\n\n"
                        "[Question 1]\n{question_1}\n\n[Answer 1]\n{answer_1}\n\n[Question 2]\n{question_2}\n\n"
                        "[Answer 2]\n{answer_2}"},
    {"name": "deita-single-math", "type": "single", "category": "math", "system_prompt": "You are a strict judge.",
     "prompt_template": "Rate the assistant's answer from 1 to 10 for correctness against the reference answer. End "
                        "with the rating as [[rating]], e.g. [[5]].\n\n[Question]\n{question}\n\n[Reference]\n"
                        "{ref_answer_1}\n\n[Answer]\n{answer}"},
    {"name": "deita-single-math-multi-turn", "type": "single", "category": "math",
     "system_prompt": "You are a strict judge.",
     "prompt_template": "Rate the assistant's answer to the second question from 1 to 10 for correctness against the "
                        "reference answers. End with [[rating]].\n\n[Question 1]\n{question_1}\n\n[Reference 1]\n"
                        "{ref_answer_1}\n\n[Answer 1]\n{answer_1}\n\n[Question 2]\n{question_2}\n\n"
                        "[Reference 2]\n{ref_answer_2}\n\n[Answer 2]\n{answer_2}"},
    {"name": "deita-pair", "type": "pairwise", "category": "general", "system_prompt": "You are a strict judge.",
     "prompt_template": "Which assistant answered the question better? End with [[A]], [[B]] or [[C]] for a tie."
                        "\n\n[Question]\n{question}\n\n[Assistant A]\n{answer_a}\n\n[Assistant B]\n{answer_b}"},
    {"name": "deita-pair-multi-turn", "type": "pairwise", "category": "general",
     "system_prompt": "You are a strict judge.",
     "prompt_template": "Which assistant answered the second question better? End with [[A]], [[B]] or [[C]]."
                        "\n\n[Question 1]\n{question_1}\n\n[Question 2]\n{question_2}\n\n[Assistant A]\n"
                        "{answer_a_1}\n---\n{answer_a_2}\n\n[Assistant B]\n{answer_b_1}\n---\n{answer_b_2}"},
]


@dataclass(frozen=True)
class JudgePrompt:
    name: str
    kind: str              # single | pairwise
    system: str
    template: str


class JudgePrompts:
    """FastChat's judge prompts by the names llm_judge picks them by: single-v1, single-math-v1 (with a reference),
    their -multi-turn forms for turn 2, and pair-v2 / pair-math-v1 likewise."""

    FASTCHAT = {("single", False, 1): "single-v1", ("single", True, 1): "single-math-v1",
                ("single", False, 2): "single-v1-multi-turn", ("single", True, 2): "single-math-v1-multi-turn",
                ("pairwise", False, 1): "pair-v2", ("pairwise", True, 1): "pair-math-v1",
                ("pairwise", False, 2): "pair-v2-multi-turn", ("pairwise", True, 2): "pair-math-v1-multi-turn"}
    OURS = {("single", False, 1): "deita-single", ("single", True, 1): "deita-single-math",
            ("single", False, 2): "deita-single-multi-turn", ("single", True, 2): "deita-single-math-multi-turn",
            ("pairwise", False, 1): "deita-pair", ("pairwise", False, 2): "deita-pair-multi-turn"}

    def __init__(self, prompts: dict[str, JudgePrompt], source: str):
        self.prompts, self.source = prompts, source

    @classmethod
    def load(cls, rows: list[dict] | None, source: str = "") -> "JudgePrompts":
        """From judge_prompts.jsonl rows (FastChat's format), or ours when `rows` is None."""
        if rows is None:
            rows, source = DEFAULT_PROMPTS, "deita_ray's own (not comparable with published MT-Bench)"
        prompts = {}
        for row in rows:
            missing = [k for k in ("name", "type", "prompt_template") if k not in row]
            if missing:
                raise ValueError(f"judge prompt {row.get('name', '?')!r}: missing field {missing[0]!r}")
            prompts[row["name"]] = JudgePrompt(row["name"], row["type"], row.get("system_prompt", ""),
                                               row["prompt_template"])
        return cls(prompts, source)

    def pick(self, kind: str, question: Question, turn: int) -> JudgePrompt:
        reference = needs_reference(question.category) and question.reference is not None
        for name in (self.FASTCHAT.get((kind, reference, turn)), self.OURS.get((kind, reference, turn)),
                     self.FASTCHAT.get((kind, False, turn)), self.OURS.get((kind, False, turn))):
            if name in self.prompts:
                return self.prompts[name]
        raise ValueError(f"no {kind} judge prompt for turn {turn} in {self.source or 'the judge prompts'}")

    def single(self, question: Question, answers: list[str], turn: int) -> tuple[str, str, str]:
        """(system, user message, prompt name) grading the answer to `turn` (1 or 2)."""
        prompt = self.pick("single", question, turn)
        values = _slots(question, turn) | {"answer": answers[0]} | {f"answer_{k + 1}": a for k, a in
                                                                  enumerate(answers)}
        return prompt.system, prompt.template.format(**values), prompt.name

    def pairwise(self, question: Question, answers_a: list[str], answers_b: list[str], turn: int) -> tuple[str, str,
                                                                                                         str]:
        prompt = self.pick("pairwise", question, turn)
        values = _slots(question, turn) | {"answer_a": answers_a[0], "answer_b": answers_b[0]} | {
            f"answer_{side}_{k + 1}": a for side, answers in (("a", answers_a), ("b", answers_b))
            for k, a in enumerate(answers)}
        return prompt.system, prompt.template.format(**values), prompt.name


def _slots(question: Question, turn: int) -> dict:
    values = {"question": question.turns[0]} | {f"question_{k + 1}": q for k, q in enumerate(question.turns)}
    for k, ref in enumerate(question.reference or ()):
        values[f"ref_answer_{k + 1}"] = ref
    return values
