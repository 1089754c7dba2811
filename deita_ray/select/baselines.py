"""Baseline selection strategies for ablations: random, top-m by complexity, quality, evol score, length.

Each returns positions in selection order; ties are broken by id ascending so runs are repeatable.
Per-sample complexity and quality are the sums over turns, like the paper's evol score.
"""

from __future__ import annotations

import numpy as np

STRATEGIES = ("diverse", "random", "complexity", "quality", "evol", "length")


def top_by(values: np.ndarray, ids: np.ndarray, budget: int) -> np.ndarray:
    return np.lexsort((ids, -np.asarray(values, dtype=np.float64)))[:budget]


def random_selection(n: int, budget: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n)[:budget]


def turn_sum(lists) -> np.ndarray:
    return np.asarray([sum(x) if x and all(v is not None for v in x) else np.nan for x in lists], dtype=np.float64)
