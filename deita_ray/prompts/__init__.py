"""Deita's exact scorer prompt templates and the score math (DESIGN.md §2).

Pure Python/NumPy, no model needed: `python -c "from deita_ray import prompts"`.
The templates are byte-for-byte those of the Deita scorers (note the doubled space
before `\\n##Complexity` and the space before `\\n #Question#`); tests pin them.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

COMPLEXITY_TEMPLATE = (
    "You are a helpful assistant. Please identify the complexity score of the following user query. \n"
    "##Query: {instruction}  \n##Complexity: "
)
QUALITY_TEMPLATE = (
    "You are a helpful assistant. Please identify the quality score of the Response corresponding to the Question. \n"
    " #Question#:\n{instruction}\n#Response#:\n{output} \n##Quality: "
)

SCORE_DIGITS = ("1", "2", "3", "4", "5", "6")
_SCORE_VALUES = np.arange(1, 7, dtype=np.float64)

AGGREGATIONS = ("sum", "mean", "last")


def complexity_prompt(instruction: str) -> str:
    return COMPLEXITY_TEMPLATE.format(instruction=instruction)


def quality_prompt(instruction: str, output: str) -> str:
    return QUALITY_TEMPLATE.format(instruction=instruction, output=output)


def scorer_fields(kind: str, prompt: str) -> list[str] | None:
    """The fields (instruction[, output]) of a filled scorer prompt, or None when `prompt` is not one: so a
    label given as its filled prompt can be cut the way `score` cuts (the template kept, the fields shortened)."""
    template = COMPLEXITY_TEMPLATE if kind == "complexity" else QUALITY_TEMPLATE
    head, rest = template.split("{instruction}")
    if kind == "complexity":
        tail = rest
        if not (prompt.startswith(head) and prompt.endswith(tail)) or len(prompt) < len(head) + len(tail):
            return None
        return [prompt[len(head):len(prompt) - len(tail)]]
    middle, tail = rest.split("{output}")
    if not (prompt.startswith(head) and prompt.endswith(tail)):
        return None
    body = prompt[len(head):len(prompt) - len(tail)]
    if middle not in body:
        return None
    instruction, output = body.split(middle, 1)  # at the first separator
    return [instruction, output]


def expected_scores(digit_logits: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
    """Score = sum_i i * softmax(logits of digits "1".."6")_i, per row.

    `digit_logits` is (n, 6), column k holding the logit of digit k+1. Rows whose
    logits are not all finite get NaN and a reason: we never invent a score (the
    reference returns 3.0 there).
    """
    logits = np.asarray(digit_logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] != 6:
        raise ValueError(f"expected (n, 6) digit logits, got shape {logits.shape}")
    finite = np.isfinite(logits).all(axis=1)
    safe = np.where(finite[:, None], logits, 0.0)
    shifted = safe - safe.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    scores = probs @ _SCORE_VALUES
    scores[~finite] = np.nan
    reasons = [None if ok else "non-finite digit logits" for ok in finite]
    return scores, reasons


def aggregate_evol_score(
    complexity: Sequence[float | None], quality: Sequence[float | None], how: str = "sum"
) -> float | None:
    """Sample evol score from per-turn scores: sum (paper), mean or last of c_t * q_t.

    Any missing turn score makes the sample's evol score missing (None): a partial
    sum would rank the sample below where it belongs without saying so.
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {how!r}")
    if len(complexity) != len(quality):
        raise ValueError("complexity and quality must have one score per turn")
    if not complexity:
        return None
    products = []
    for c, q in zip(complexity, quality):
        if c is None or q is None or not (math.isfinite(c) and math.isfinite(q)):
            return None
        products.append(c * q)
    if how == "sum":
        return float(sum(products))
    if how == "mean":
        return float(sum(products) / len(products))
    return float(products[-1])
