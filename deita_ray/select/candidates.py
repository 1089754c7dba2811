"""The diverse strategy's candidates, streamed in selection order, from the driver or from Ray Data.

    from deita_ray.select.candidates import diverse_candidates
    cands = diverse_candidates("out/scored", "out/embeddings", block_size=1024, sort_on="auto")
    for batch in cands.batches: ...   # pa.Table: id, evol_score, shard, row; evol desc, id asc

Candidates are the scored rows with an evol score and a stored vector. The Repr Filter visits them
by evol score descending, ties by id ascending (UTF-8 byte order, as `selection_order`).

Two ways to build that order, with the same result (tested):
- `driver`: read ids and scores into this process, join and sort with Arrow. The simplest, and
  right for small pools and runs without Ray. Memory grows by ~1 KB per pool row.
- `ray`: Ray Data reads, joins and sorts across the cluster (in the object store, spilling to disk
  when needed); this process only receives the sorted blocks one at a time. The driver's memory
  stays flat as the pool grows, which a million-sample pool needs.
`auto` takes `ray` when a Ray session is up and the pool has at least RAY_SORT_FROM_ROWS rows (Ray
Data's fixed cost, ~15 s on a laptop, outweighs the memory it saves below that), else `driver`.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from deita_ray.io.writer import arrow_filesystem, list_parts, read_columns

SORT_KEYS = [("evol_score", "descending"), ("id", "ascending")]
SCHEMA = pa.schema([("id", pa.string()), ("evol_score", pa.float64()), ("shard", pa.string()), ("row", pa.int64())])
SORT_ON = ("auto", "driver", "ray")
RAY_SORT_FROM_ROWS = 100_000
# Ray Data (2.60) reads Parquet footers on a pool of actors started for each read, 32 unless this variable says
# otherwise, and starts it twice (the schema sample, then the listing). One actor takes 10 files at a time, so
# more than ceil(files / 10) only adds process starts: ~1 s of CPU each, 64 per read of a small directory.
FOOTER_ACTORS, FILES_PER_FOOTER_ACTOR, MAX_FOOTER_ACTORS = "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS", 10, 32


@dataclass
class Candidates:
    count: int                                  # candidates that will be streamed
    ineligible: dict = field(default_factory=dict)
    batches: Iterator[pa.Table] = iter(())       # id, evol_score, shard, row; in selection order
    sorted_on: str = "driver"


def diverse_candidates(scored: str, embeddings: str, block_size: int, sort_on: str = "auto") -> Candidates:
    if sort_on not in SORT_ON:
        raise ValueError(f"sort_on must be one of {SORT_ON}, got {sort_on!r}")
    if sort_on == "auto":
        import ray

        from deita_ray.io.writer import count_rows

        big = ray.is_initialized() and count_rows(scored) >= RAY_SORT_FROM_ROWS
        sort_on = "ray" if big else "driver"
    build = _on_ray if sort_on == "ray" else _in_driver
    return build(scored, posixpath.join(embeddings, "index"), block_size)


def _duplicates_error(scored: str, examples: list) -> ValueError:
    return ValueError(f"{scored} has duplicate sample ids (e.g. {examples[:3]}); ids must be unique to select")


def _in_driver(scored: str, index_dir: str, block_size: int) -> Candidates:
    table = read_columns(scored, ["id", "evol_score"])
    if table is None:
        raise FileNotFoundError(f"no scored Parquet under {scored} (run `deita-ray score` first)")
    if pc.count_distinct(table.column("id")).as_py() != table.num_rows:
        counts = pc.value_counts(table.column("id"))
        dupes = counts.filter(pc.greater(counts.field("counts"), 1)).field("values").to_pylist()
        raise _duplicates_error(scored, dupes)
    scored_rows = table.num_rows
    table = table.filter(pc.is_valid(table.column("evol_score")))
    no_score = scored_rows - table.num_rows
    index = read_columns(index_dir, ["id", "shard", "row"])
    if index is None:
        raise FileNotFoundError(f"no embedding index under {index_dir} (run `deita-ray embed` first)")
    index = index.filter(pc.is_valid(index.column("shard")))
    joined = table.join(index, "id", join_type="inner")
    ordered = joined.take(pc.sort_indices(joined, sort_keys=SORT_KEYS)).select(SCHEMA.names).cast(SCHEMA)
    batches = (ordered.slice(start, block_size) for start in range(0, ordered.num_rows, block_size))
    return Candidates(ordered.num_rows, {"no evol score": no_score, "no embedding": table.num_rows - ordered.num_rows},
                      batches, "driver")


def read_parquet_on_ray(parts: list[str], root: str, columns: list[str] | None = None):
    """A Ray Data dataset of Parquet `parts` (under `root`), with as many footer readers as they can use;
    a FOOTER_ACTORS value the user set wins."""
    import ray.data

    own = FOOTER_ACTORS not in os.environ
    if own:  # read when the dataset is created, not when it runs
        os.environ[FOOTER_ACTORS] = str(min(MAX_FOOTER_ACTORS, -(-len(parts) // FILES_PER_FOOTER_ACTOR)))
    try:
        dataset = ray.data.read_parquet(parts, filesystem=arrow_filesystem(root))
    finally:
        if own:
            os.environ.pop(FOOTER_ACTORS, None)
    return dataset.select_columns(columns) if columns else dataset


def _on_ray(scored: str, index_dir: str, block_size: int) -> Candidates:
    from ray.data.expressions import col

    parts = list_parts(scored)
    if not parts:
        raise FileNotFoundError(f"no scored Parquet under {scored} (run `deita-ray score` first)")
    index_parts = list_parts(index_dir)
    if not index_parts:
        raise FileNotFoundError(f"no embedding index under {index_dir} (run `deita-ray embed` first)")
    ids = read_parquet_on_ray(parts, scored, ["id", "evol_score"])
    scored_rows = ids.count()  # from Parquet metadata, no data read
    dupes = ids.groupby("id").count().rename_columns({"count()": "n"}).filter(expr=col("n") > 1).take(3)
    if dupes:
        raise _duplicates_error(scored, [d["id"] for d in dupes])
    with_score = ids.filter(expr=col("evol_score").is_not_null()).materialize()
    vectors = read_parquet_on_ray(index_parts, index_dir, ["id", "shard", "row"]).filter(expr=col("shard").is_not_null())
    # Partitions sized for ~100K rows each keep every join/sort task small on any cluster.
    partitions = max(1, min(64, scored_rows // 100_000 + 1))
    joined = with_score.join(vectors, join_type="inner", num_partitions=partitions, on=("id",))
    ordered = joined.sort(["evol_score", "id"], descending=[True, False]).materialize()
    count = ordered.count()
    batches = ordered.iter_batches(batch_size=block_size, batch_format="pyarrow", prefetch_batches=1)
    eligible = with_score.count()
    return Candidates(count, {"no evol score": scored_rows - eligible, "no embedding": eligible - count},
                      (b.select(SCHEMA.names).cast(SCHEMA) for b in batches), "ray")


def selected_rows_on_ray(scored: str, selected_ids: list[str]) -> pa.Table:
    """The full scored rows of `selected_ids` (any order), filtered by Ray Data tasks: every part is
    read and decoded on the cluster, and only the selected rows come back to the driver."""
    import ray
    from ray.data.expressions import col

    parts = list_parts(scored)
    found = read_parquet_on_ray(parts, scored).filter(expr=col("id").is_in(list(selected_ids)))
    import pyarrow.parquet as pq

    schema = pq.read_schema(parts[0], filesystem=arrow_filesystem(scored))  # Ray may widen string types
    tables = [t.select(schema.names).cast(schema) for t in ray.get(found.to_arrow_refs()) if t.num_rows]
    return pa.concat_tables(tables) if tables else schema.empty_table()
