"""Batching helpers shared by the transformers engine's verbs: length buckets and common prefixes."""

from __future__ import annotations

import numpy as np

MIN_SHARED_PREFIX = 8  # shorter common prefixes are not worth a second forward call


def length_buckets(lengths: list[int], batch_size: int, max_batch_tokens: int) -> list[np.ndarray]:
    """Indices grouped into batches of similar length (sorted), bounded by count and padded tokens."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    buckets, current = [], []
    for idx in order:
        longest = lengths[idx]  # ascending order: the newest item is the longest
        if current and (len(current) >= batch_size or longest * (len(current) + 1) > max_batch_tokens):
            buckets.append(np.asarray(current))
            current = []
        current.append(idx)
    if current:
        buckets.append(np.asarray(current))
    return buckets


def common_prefix_length(seqs: list[list[int]]) -> int:
    """Length of the longest token prefix shared by all sequences, leaving each at least one token."""
    first, limit = seqs[0], min(len(s) for s in seqs) - 1
    n = 0
    while n < limit and all(s[n] == first[n] for s in seqs):
        n += 1
    return n
