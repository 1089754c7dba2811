"""Deita's Repr Filter, block-resolved and exact (DESIGN.md §3).

    from deita_ray.select import select_diverse
    kept = select_diverse(embeddings, evol_scores, ids, budget=6000, threshold=0.9)

Walk candidates in descending score (ties: id ascending, else position); keep a candidate if its
cosine similarity to its nearest already-kept sample is <= tau (strict `>` rejects); the first is
always kept; stop at the budget. In blocks of b candidates: one batched search against the kept
index rejects for good (the kept set only grows), then survivors are resolved in order against
the ones accepted earlier in the same block. The result equals the one-at-a-time loop for every
b; `exact.py` makes that hold bit for bit even for similarities within rounding of tau.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from deita_ray.select.exact import exact_above, float32_error_bound


@dataclass
class FilterResult:
    kept: list[int] = field(default_factory=list)              # positions, in selection order
    rejected: list[int] = field(default_factory=list)          # positions, in visiting order
    rejected_nearest: list[int] = field(default_factory=list)  # position of the nearest kept sample
    rejected_similarity: list[float] = field(default_factory=list)
    visited: int = 0                                           # candidates examined before the budget filled
    # Every visited candidate in visiting order: accepted or not, and the similarity to its nearest
    # sample kept in an earlier block (float32; -inf for the first block), for reports.
    visit_accepted: list[bool] = field(default_factory=list)
    visit_similarity: list[float] = field(default_factory=list)


def selection_order(scores: np.ndarray, ids: list[str] | np.ndarray | None = None) -> np.ndarray:
    """Positions by score descending, ties by id ascending (or by position when there are no ids)."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN: drop unscored rows before selecting")
    tie = np.arange(len(scores)) if ids is None else np.asarray(ids, dtype=str)
    return np.lexsort((tie, -scores))


def normalise_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def numpy_blas_single_thread():
    """Run numpy's own BLAS single-threaded: its idle threads spin and, measured on a 2-core machine,
    halve the speed of FAISS's BLAS (a separate copy) when the two alternate, as they do here.
    The in-block work numpy does is small; the big GEMM is FAISS's."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return contextlib.nullcontext()
    controller = ThreadpoolController()
    prefixes = [lib.prefix for lib in controller.lib_controllers if "numpy" in lib.filepath]
    return controller.select(prefix=prefixes).limit(limits=1) if prefixes else contextlib.nullcontext()


def run_filter(blocks: Iterable[tuple[np.ndarray, np.ndarray]], index, budget: int, threshold: float) -> FilterResult:
    """Core loop over (positions, float32 vectors) blocks already in selection order."""
    if budget < 1:
        raise ValueError("budget must be >= 1")
    # numpy's BLAS threads spin between calls and slow FAISS's own BLAS (measured); with the numpy backend the
    # search is numpy's, so it keeps its threads.
    limit = getattr(index, "backend", "faiss") == "faiss"
    with numpy_blas_single_thread() if limit else contextlib.nullcontext():
        return _run_filter(blocks, index, budget, threshold)


def _run_filter(blocks, index, budget: int, threshold: float) -> FilterResult:
    result = FilterResult()
    for positions, block in blocks:
        if len(result.kept) >= budget:
            break
        positions = np.asarray(positions)
        exceeds, nearest, sims = index.query(block, threshold)
        survivors = np.flatnonzero(~exceeds)
        slot = np.full(len(block), -1, dtype=np.int64)
        slot[survivors] = np.arange(len(survivors))
        err = float32_error_bound(block.shape[1], float(np.max(np.linalg.norm(block, axis=1)))) if len(block) else 0.0
        # Similarities of each survivor to the earlier ones, for the in-block resolution (float32, exact near tau).
        gram, earliest = lower_gram(block[survivors])
        # A survivor whose similarity to every earlier survivor is certainly <= tau cannot be
        # rejected inside the block (the accepted rows are a subset of the earlier survivors).
        needs_check = earliest >= threshold - err
        accepted_slots = np.empty(len(survivors), dtype=np.int64)
        n_accepted = 0
        accepted_rows: list[int] = []
        visits: list[tuple[int, int]] = []     # (entry in result.visit_similarity, slot) of the survivors visited
        rejected: list[tuple[int, int]] = []   # (entry, row) of the candidates the index rejected
        room = budget - len(result.kept)
        for row in range(len(block)):
            if n_accepted >= room:
                break
            result.visited += 1
            result.visit_similarity.append(float(sims[row]))
            result.visit_accepted.append(False)
            if exceeds[row]:
                result.rejected.append(int(positions[row]))
                result.rejected_nearest.append(result.kept[nearest[row]])
                result.rejected_similarity.append(float(sims[row]))
                rejected.append((len(result.visit_similarity) - 1, row))
                continue
            s = slot[row]
            visits.append((len(result.visit_similarity) - 1, s))
            if n_accepted and needs_check[s]:
                hit, j, sim = _exceeds_accepted(block, gram[s, accepted_slots[:n_accepted]], accepted_rows, row,
                                                threshold, err)
                if hit:
                    result.rejected.append(int(positions[row]))
                    result.rejected_nearest.append(int(positions[accepted_rows[j]]))
                    result.rejected_similarity.append(sim)
                    continue
            result.visit_accepted[-1] = True
            accepted_slots[n_accepted] = s
            n_accepted += 1
            accepted_rows.append(row)
        _nearest_in_block(result.visit_similarity, visits, gram, accepted_slots[:n_accepted], rejected, block,
                          np.asarray(accepted_rows, dtype=np.int64))
        index.add(block[accepted_rows])
        result.kept.extend(int(p) for p in positions[accepted_rows])
    return result


def _nearest_in_block(similarity: list, visits: list, gram: np.ndarray, accepted: np.ndarray, rejected: list,
                      block: np.ndarray, accepted_rows: np.ndarray) -> None:
    """Each visited candidate's similarity to the nearest sample kept when it was visited: the index's (earlier
    blocks) or one accepted earlier in this block, whichever is nearer. Survivors read the in-block Gram matrix;
    the few the index rejected get one small product. Vectorised per block; the report plots it for every
    visited candidate."""
    if not len(accepted):
        return
    nearer = []
    if visits:
        entries, slots = (np.asarray(x) for x in zip(*visits))
        nearer.append((entries, np.where(accepted[None, :] < slots[:, None], gram[np.ix_(slots, accepted)],
                                         -np.inf).max(axis=1)))
    if rejected:
        entries, rows = (np.asarray(x) for x in zip(*rejected))
        sims = np.where(accepted_rows[None, :] < rows[:, None], block[rows] @ block[accepted_rows].T, -np.inf)
        nearer.append((entries, sims.max(axis=1)))
    for entries, values in nearer:
        for entry, value in zip(entries.tolist(), values.tolist()):
            if value > similarity[entry]:
                similarity[entry] = value


GRAM_ROWS = 256  # rows of the in-block similarity computed at once


def lower_gram(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Similarities of every row to the rows before it (the strictly lower triangle; the rest of the matrix is left
    unset) and each row's largest of them: computed a band of rows at a time, each only against the rows up to it,
    so about half the FLOPs of the full product."""
    n = len(rows)
    gram = np.empty((n, n), dtype=np.float32)
    for start in range(0, n, GRAM_ROWS):
        stop = min(start + GRAM_ROWS, n)
        np.matmul(rows[start:stop], rows[:stop].T, out=gram[start:stop, :stop])
    earliest = np.where(_strictly_lower(n), gram, -np.inf).max(axis=1, initial=-np.inf)  # the unset part is masked
    return gram, earliest


@functools.lru_cache(maxsize=4)
def _strictly_lower(n: int) -> np.ndarray:
    return np.tri(n, k=-1, dtype=bool)


def _exceeds_accepted(block, approx, accepted_rows, row, tau, err) -> tuple[bool, int, float]:
    """Does `row` exceed tau against a row accepted earlier in this block? (exact near tau)"""
    best = int(np.argmax(approx))
    if approx[best] > tau + err:
        return True, best, float(approx[best])
    band = np.flatnonzero(approx >= tau - err)
    if len(band) == 0:
        return False, best, float(approx[best])
    hit, j, sim = exact_above(block[row], block[np.asarray(accepted_rows)[band]], approx[band], tau, err)
    return (True, int(band[j]), sim) if hit else (False, best, float(approx[best]))


def iterate_blocks(vectors: np.ndarray, order: np.ndarray, block_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for start in range(0, len(order), block_size):
        positions = order[start:start + block_size]
        yield positions, np.ascontiguousarray(vectors[positions], dtype=np.float32)


def repr_filter(embeddings: np.ndarray, scores: np.ndarray, ids=None, budget: int = 6000, threshold: float = 0.9,
                block_size: int = 1024, index=None, normalize: bool = True) -> FilterResult:
    """The whole filter in memory (or with `index` a RemoteKeptIndex on a Ray actor); see select_diverse."""
    from deita_ray.select.kept_index import KeptIndex

    vectors = normalise_rows(embeddings) if normalize else np.asarray(embeddings, dtype=np.float32)
    if len(vectors) != len(scores):
        raise ValueError(f"{len(vectors)} embeddings but {len(scores)} scores")
    order = selection_order(scores, ids)
    index = index if index is not None else KeptIndex(vectors.shape[1], capacity=min(budget, len(vectors)))
    return run_filter(iterate_blocks(vectors, order, block_size), index, budget, threshold)


def select_diverse(embeddings: np.ndarray, scores: np.ndarray, ids=None, budget: int = 6000, threshold: float = 0.9,
                   block_size: int = 1024, index=None, normalize: bool = True) -> np.ndarray:
    """Positions of the kept samples, in selection order (Deita's Repr Filter, exact for any block_size)."""
    result = repr_filter(embeddings, scores, ids, budget, threshold, block_size, index, normalize)
    return np.asarray(result.kept, dtype=np.int64)
