"""Explicit truncation of scorer prompts that exceed the model's context.

The template's head and tail are kept whole; the fields (instruction, response) lose their
middle, longest field first, and the cut is marked with " [...] ". The caller flags the row
`truncated`. Deterministic: the same text and limit always give the same ids.
"""

from __future__ import annotations

from typing import Callable

CUT_MARK = " [...] "


def water_fill(lengths: list[int], budget: int) -> list[int]:
    """Allotments <= lengths summing to <= budget that shorten the longest fields first."""
    if sum(lengths) <= budget:
        return list(lengths)
    lo, hi = 0, max(lengths)
    while lo < hi:  # largest cap c with sum(min(l, c)) <= budget
        mid = (lo + hi + 1) // 2
        if sum(min(n, mid) for n in lengths) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return [min(n, lo) for n in lengths]


def fit_prompt(render: Callable[[list[str]], str], fields: list[str], tokenizer, limit: int) -> tuple[list[int], bool]:
    """Token ids of `render(fields)` within `limit` tokens, and whether anything was cut."""
    ids = tokenizer.encode(render(fields))
    if len(ids) <= limit:
        return ids, False
    field_ids = [tokenizer.encode(f, add_special_tokens=False) for f in fields]
    overflow = len(ids) - limit
    for _ in range(8):  # re-tokenising the cut text can shift a few tokens at the seams: tighten and retry
        budget = sum(len(f) for f in field_ids) - overflow - 4 * len(fields)
        if budget <= 0:
            break
        cut = []
        for f_ids, keep in zip(field_ids, water_fill([len(f) for f in field_ids], budget)):
            if keep >= len(f_ids):
                cut.append(tokenizer.decode(f_ids))
            else:
                head = keep - keep // 2
                cut.append(tokenizer.decode(f_ids[:head]) + CUT_MARK + tokenizer.decode(f_ids[len(f_ids) - keep // 2:]))
        ids = tokenizer.encode(render(cut))
        if len(ids) <= limit:
            return ids, True
        overflow += len(ids) - limit
    # The template alone does not fit (tiny context): keep the head and tail of the ids themselves.
    ids = tokenizer.encode(render(fields))
    return ids[: limit - limit // 2] + ids[len(ids) - limit // 2:], True
