"""The diverse strategy: Deita's Repr Filter over candidates streamed in selection order, on the kept index.

    selected_ids, rejections, extra = run_diverse(config)   # config: the select step's (scored, embeddings, ...)

The driver keeps only the visited rows' ids and scores, never the pool's; it writes `visits.parquet` (every
visited candidate, accepted or not, with its nearest kept similarity) for the report.
"""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa

from deita_ray.io.embedding_store import EmbeddingStore
from deita_ray.io.writer import write_part
from deita_ray.select.candidates import diverse_candidates
from deita_ray.select.repr_filter import normalise_rows, run_filter


def run_diverse(config) -> tuple[list[str], pa.Table, dict]:
    """The Repr Filter over candidates streamed in selection order (see select/candidates.py).
    The driver keeps only the visited rows' ids and scores, never the pool's."""
    from deita_ray.select.kept_index import KeptIndex, RemoteKeptIndex

    store = EmbeddingStore(config.embeddings)
    candidates = diverse_candidates(config.scored, config.embeddings, config.block_size, config.sort_on)
    visited_ids: list[pa.Array] = []
    visited_scores: list[pa.Array] = []

    def blocks():
        start = 0
        for n, batch in enumerate(candidates.batches):
            visited_ids.append(batch.column("id").combine_chunks())
            visited_scores.append(batch.column("evol_score").combine_chunks())
            positions = np.arange(start, start + batch.num_rows)
            start += batch.num_rows
            yield positions, normalise_rows(store.gather(batch.column("shard").to_pylist(), batch.column("row").to_numpy()))
            if n % 20 == 19:
                print(f"  visited {start:,} of {candidates.count:,} candidates", file=sys.stderr, flush=True)

    if config.index == "actor":
        index = RemoteKeptIndex(store.dim, config.device, backend=config.backend)
    else:
        index = KeptIndex(store.dim, config.device, capacity=config.budget, backend=config.backend)
    result = run_filter(blocks(), index, config.budget, config.threshold)
    backend = index.describe()
    if hasattr(index, "close"):
        index.close()
    ids = pa.chunked_array(visited_ids, pa.string()) if visited_ids else pa.chunked_array([], pa.string())

    def take_ids(positions) -> pa.Array:
        return ids.take(pa.array(np.asarray(positions, dtype=np.int64))).combine_chunks()

    rejections = pa.table({
        "id": take_ids(result.rejected),
        "nearest_kept_id": take_ids(result.rejected_nearest),
        "similarity": pa.array(result.rejected_similarity, pa.float64()),
    })
    visits = pa.table({"id": ids.slice(0, result.visited).combine_chunks(),
                       "evol_score": pa.chunked_array(visited_scores, pa.float64()).slice(0, result.visited).combine_chunks(),
                       "accepted": pa.array(result.visit_accepted, pa.bool_()),
                       "nearest_kept_similarity": pa.array(result.visit_similarity, pa.float64())})
    write_part(visits, config.output, "visits.parquet")
    extra = {"visited": result.visited, "index": backend, "candidates": candidates.count,
             "ineligible": candidates.ineligible, "sorted_on": candidates.sorted_on}
    return take_ids(result.kept).to_pylist(), rejections, extra
