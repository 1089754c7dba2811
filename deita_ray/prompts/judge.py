"""The joint rank-and-score judge: its prompts, the judgement format, the tolerant parser, the labels.

    from deita_ray.prompts import judge
    prompt = judge.judge_prompt("complexity", variants)                 # every variant of a chain, one prompt
    scores, reason = judge.parse_judgement("complexity", text, len(variants))
    rows = judge.label_rows("complexity", seed_id, variants, scores, operations)

A judgement is valid only with exactly one integer 1..6 for every variant, matched by its index
(`[3] Score: 5`, `[Response 3] Score: 5`), never by line position: a preamble, prose around the
numbers or out-of-order lines do not shift anything. Otherwise the reason says what is wrong and
no score is guessed (notes/evol-judge.md §4). `judgement_regex` is the exact format, for engines
that can constrain decoding.
"""

from __future__ import annotations

import re

from deita_ray.prompts import complexity_prompt, quality_prompt

SCORES = range(1, 7)  # the scorers read exactly the digits 1..6

# The paper's Table 14, byte for byte. The table prints the format example as "format:\n [1] Score: 1\n [2]
# Score: 2\n": the escape sequences of the authors' prompt string, so a newline and a space before each line of
# the example. The line break after "Score 1-5." is the table's own; the table shows no "..." line.
COMPLEXITY_HEAD = (
    "Ranking the following questions according to the difficulty and complexity. Score 1-5.\n"
    "You can give a score of 6 if the question is too complex for you to answer it. You should respond with the "
    "format:\n"
    " [1] Score: 1\n"
    " [2] Score: 2\n"
)
# The paper's Table 18, byte for byte (no "..." line either).
QUALITY_HEAD = (
    "Rank the following responses provided by different AI assistants to the user's question according to the "
    "quality of their response. Score each response from 1 to 5, with 6 reserved for responses that are already "
    "very well written and cannot be improved further.\n"
    "Your evaluation should consider factors such as helpfulness, relevance, accuracy, depth, creativity, and level "
    "of detail of the response.\n"
    "Use the following format:\n"
    "[Response 1] Score:\n"
    "[Response 2] Score:\n"
)


def _label(mode: str, index: int) -> str:
    return f"[{index}]" if mode == "complexity" else f"[Response {index}]"


def judge_prompt(mode: str, variants: list[str], instruction: str | None = None) -> str:
    """All variants of one chain in one prompt: instructions (complexity), or responses to the seed
    instruction (quality, `instruction` given)."""
    if mode == "complexity":
        return COMPLEXITY_HEAD + "".join(f"[{i}] {v}\n" for i, v in enumerate(variants, 1))
    if instruction is None:
        raise ValueError("the quality judge needs the question (the seed instruction)")
    return (QUALITY_HEAD + f"#Question#: {instruction}\n#Response List#:\n"
            + "".join(f"[Response {i}] {v}\n" for i, v in enumerate(variants, 1)))


def judgement_regex(mode: str, n: int) -> str:
    """The judgement format exactly: one line `[i] Score: d` per variant, d in 1..6."""
    # Only the brackets need escaping; grammar engines (xgrammar) warn on Python's escaped spaces.
    return "".join(f"{_label(mode, i)} Score: ".replace("[", "\\[").replace("]", "\\]") + "[1-6]"
                   + ("\\n" if i < n else "") for i in range(1, n + 1))


def slot_cue(mode: str, index: int) -> str:
    """The start of variant `index`'s line, up to where its score goes: `[3] Score: `."""
    return f"{_label(mode, index)} Score: "


def judgement_text(mode: str, scores: list[int]) -> str:
    return "\n".join(f"{_label(mode, i)} Score: {s}" for i, s in enumerate(scores, 1))


_ENTRY = re.compile(r"\[\s*(?:Response\s*)?(\d+)\s*\]\s*:?\s*\**\s*Score\s*\**\s*[:=]?\s*\**\s*(-?\d+(?:\.\d+)?)"
                    r"(\s*(?:/|out\s+of\b|of\b)\s*\d*)?", re.IGNORECASE)


def parse_judgement(mode: str, text: str, n: int) -> tuple[list[int] | None, str | None]:
    """(scores in variant order, None) for a valid judgement, else (None, the reason)."""
    found: dict[int, list[str]] = {}
    for match in _ENTRY.finditer(text or ""):
        # "4/10", "3 out of 10": a score on another scale, never read as a score on 1..6
        found.setdefault(int(match.group(1)), []).append(match.group(2) + (match.group(3) or ""))
    if not found:
        return None, "no '[i] Score: d' entries"
    problems = []
    extra = sorted(i for i in found if not 1 <= i <= n)
    if extra:
        problems.append(f"scores for variants {extra} but there are {n}")
    missing = [i for i in range(1, n + 1) if i not in found]
    if missing:
        problems.append(f"no score for variant{'s' if len(missing) > 1 else ''} {missing}")
    scores = []
    for i in range(1, n + 1):
        values = found.get(i, [])
        if len(set(values)) > 1:
            problems.append(f"variant {i} scored more than once ({', '.join(values)})")
        elif values:
            raw = values[0]
            if not re.fullmatch(r"\d+", raw):
                problems.append(f"variant {i}: {raw.strip()!r} is not an integer on the 1..6 scale")
            elif int(raw) not in SCORES:
                problems.append(f"variant {i}: {raw} is outside 1..6")
            else:
                scores.append(int(raw))
    if problems:
        return None, "; ".join(problems)
    return scores, None


def label_rows(mode: str, seed_id: str, variants: list[str], scores: list[int], operations: list[str | None],
               instruction: str | None = None) -> list[dict]:
    """Scorer training rows, one per (variant, score), in the format `deita-ray train scorer` reads:
    the filled scorer prompt as the human turn, the score digit as the gpt turn; ids `<seed id>/r<round>`."""
    rows = []
    for round_, (variant, score, op) in enumerate(zip(variants, scores, operations)):
        prompt = complexity_prompt(variant) if mode == "complexity" else quality_prompt(instruction, variant)
        rows.append({"id": f"{seed_id}/r{round_}", "seed_id": seed_id, "round": round_, "operation": op,
                     "kind": mode, "score": int(score),
                     "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": str(score)}]})
    return rows
