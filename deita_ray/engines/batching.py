"""Batching helpers shared by the transformers engine's verbs: length buckets and common prefixes."""

from __future__ import annotations

import numpy as np

MIN_SHARED_PREFIX = 8  # shorter common prefixes are not worth a second forward call


MAX_PADDING = 0.05  # a bucket is closed before padding would exceed this share of the tokens it computes


def length_buckets(lengths: list[int], batch_size: int, max_batch_tokens: int,
                   max_padding: float = MAX_PADDING) -> list[np.ndarray]:
    """Indices grouped into batches of similar length (sorted), bounded by count, by padded tokens, and by the
    share of padding (a pool whose lengths spread widely, like whole conversations, gets smaller batches rather
    than forwards that are a sixth padding)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    buckets, current, real = [], [], 0
    for idx in order:
        longest = lengths[idx]  # ascending order: the newest item is the longest
        width = longest * (len(current) + 1)
        if current and (len(current) >= batch_size or width > max_batch_tokens
                        or width - (real + longest) > max_padding * width):
            buckets.append(np.asarray(current))
            current, real = [], 0
        current.append(idx)
        real += longest
    if current:
        buckets.append(np.asarray(current))
    return buckets


def padded_widths(lengths: list[int], buckets: list[np.ndarray]) -> list[int]:
    """The length each input is computed at: the longest of its bucket."""
    widths = list(lengths)
    for bucket in buckets:
        width = max(lengths[i] for i in bucket)
        for i in bucket:
            widths[i] = width
    return widths


def common_prefix_length(seqs: list[list[int]]) -> int:
    """Length of the longest token prefix shared by all sequences, leaving each at least one token."""
    first, limit = seqs[0], min(len(s) for s in seqs) - 1
    n = 0
    while n < limit and all(s[n] == first[n] for s in seqs):
        n += 1
    return n
