"""Select the final set: the Repr Filter on a FAISS actor (or a baseline strategy), then outputs.

    from deita_ray.select_job import SelectJobConfig, select_pool
    select_pool(SelectJobConfig(scored="out/scored", embeddings="out/embeddings", output="out/selection"))

Candidates stream in score order one block at a time (sorted by Ray Data inside a Ray session, so
the driver's memory stays flat as the pool grows; see select/candidates.py); their embeddings are
gathered from the memory-mapped shards and go to the kept index (a Ray actor, GPU FAISS where
there is one). Outputs: `selected.parquet` (scored rows + `selection_rank`),
`selected.jsonl` (ShareGPT, readable by the reference tools and common trainers),
`rejections.parquet` (id, nearest kept id, similarity) and `select_summary.json`.
"""

from __future__ import annotations

import json
import posixpath
import sys
import time
from dataclasses import asdict
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from deita_ray.io.embedding_store import EmbeddingStore
from deita_ray.configlib import ConfigError, check, option, section
from deita_ray.io import fs
from deita_ray.io.outputs import check_output, clear_own_files
from deita_ray.io.writer import arrow_filesystem, list_parts, read_columns, write_table_atomic
from deita_ray.runner.completion import check_complete
from deita_ray.runner.layout import SELECT_SUMMARY
from deita_ray.runner.lock import hold_output
from deita_ray.select.baselines import random_selection, top_by, turn_sum
from deita_ray.select.candidates import diverse_candidates
from deita_ray.select.repr_filter import normalise_rows, run_filter


@section
class SelectOptions:
    """The `select:` section of a run config and the flags of `deita-ray select`: every option once."""

    strategy: Literal["diverse", "random", "complexity", "quality", "evol", "length"] = option(
        "diverse", "diverse: Deita's Repr Filter over evol score; the others are ablation baselines (top-m, no "
                   "diversity)")
    budget: int = option(6000, "samples to select (paper: 6000 or 10000)", ge=1)
    threshold: float = option(0.9, "tau: reject a sample whose nearest kept neighbour has cosine similarity > tau",
                              ge=-1, le=1)
    block_size: int = option(1024, "candidates per batched FAISS search (the result is the same for any)", ge=1)
    seed: int = option(0, "random strategy only")
    index: Literal["actor", "local"] = option("actor", "actor: the kept index in a Ray actor; local: in this process")
    device: Literal["auto", "cpu", "gpu"] = option("auto", "kept index device (auto: a GPU if the index sees one)")
    backend: Literal["auto", "faiss", "numpy", "torch"] = option(
        "auto", "kept index search: faiss (IndexFlatIP; GPU with FAISS's GPU build), numpy (one float32 GEMM per "
                "block, CPU), torch (one float32 GEMM per block; CUDA where torch sees it); auto: FAISS's GPU index "
                "where its build has kernels for the GPU, else torch on the GPU, else the faster of faiss and numpy "
                "on this CPU (timed once). All give the same selection")
    sort_on: Literal["auto", "driver", "ray"] = option(
        "auto", "where candidates are joined and sorted by score: ray (Ray Data; this process's memory stays flat for "
                "million-row pools), driver (Arrow here; quicker for small pools); auto: ray from 100K rows")

    def __post_init__(self):
        check(self)


@section
class SelectJobConfig(SelectOptions):
    scored: str                       # the `scored/` directory of `deita-ray score`
    output: str                       # where selected.parquet / .jsonl, rejections and the summary go
    embeddings: str | None = None     # the `embeddings/` directory of `deita-ray embed` (diverse only)
    overwrite: bool = False
    allow_partial: bool = False       # read scores/embeddings whose step did not finish (recorded)

    def __post_init__(self):
        check(self)
        if self.strategy == "diverse" and not self.embeddings:
            raise ConfigError("the diverse strategy needs --embeddings (the output of `deita-ray embed`)")


def _candidates(config: SelectJobConfig) -> tuple[pa.Table, dict]:
    """Baseline strategies: ids and their ranking values, read into the driver."""
    columns = ["id", "evol_score"] + ([f"{config.strategy}_scores"] if config.strategy in ("complexity", "quality") else [])
    table = read_columns(config.scored, columns)
    if table is None:
        raise FileNotFoundError(f"no scored Parquet under {config.scored} (run `deita-ray score` first)")
    if pc.count_distinct(table.column("id")).as_py() != table.num_rows:
        raise ValueError(f"{config.scored} has duplicate sample ids; ids must be unique to select")
    if config.strategy == "length":
        lengths = []
        for part in list_parts(config.scored):
            convs = pq.read_table(part, columns=["conversations"]).column("conversations").to_pylist()
            lengths += [sum(len(t["value"]) for t in c) for c in convs]
        table = table.append_column("length", pa.array(lengths, pa.int64()))
    ineligible: dict[str, int] = {}
    if config.strategy == "evol":
        missing = table.column("evol_score").is_null()
        ineligible["no evol score"] = int(pc.sum(pc.cast(missing, pa.int64())).as_py() or 0)
        table = table.filter(pc.invert(missing))
    return table, ineligible


def _order(config: SelectJobConfig, table: pa.Table) -> np.ndarray:
    ids = np.asarray(table.column("id").to_pylist(), dtype=str)
    if config.strategy == "random":
        return random_selection(table.num_rows, config.budget, config.seed)
    if config.strategy in ("complexity", "quality"):
        values = turn_sum(table.column(f"{config.strategy}_scores").to_pylist())
        keep = ~np.isnan(values)
        return np.flatnonzero(keep)[top_by(values[keep], ids[keep], config.budget)]
    if config.strategy == "length":
        return top_by(table.column("length").to_numpy(), ids, config.budget)
    return top_by(table.column("evol_score").to_numpy(), ids, config.budget)  # evol, no diversity


def _diverse(config: SelectJobConfig) -> tuple[list[str], pa.Table, dict]:
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
    write_table_atomic(visits, config.output, "visits.parquet")
    extra = {"visited": result.visited, "index": backend, "candidates": candidates.count,
             "ineligible": candidates.ineligible, "sorted_on": candidates.sorted_on}
    return take_ids(result.kept).to_pylist(), rejections, extra


def _in_selection_order(rows: pa.Table, selected_ids: list[str]) -> pa.Table:
    rank = {sid: r for r, sid in enumerate(selected_ids)}
    ranks = [rank[i] for i in rows.column("id").to_pylist()]
    rows = rows.append_column("selection_rank", pa.array(ranks, pa.int64()))
    return rows.take(pc.sort_indices(rows.column("selection_rank")))


def _selected_rows(scored: str, selected_ids: list[str], batch_rows: int = 2048) -> pa.Table:
    """Full scored rows of the selected ids, in selection order. Parts are streamed in small
    batches and filtered as they come, so the driver's peak is one batch plus the selected rows,
    whatever the size of a part (a whole part with its texts can be hundreds of MB)."""
    wanted = pa.array(selected_ids, pa.string())
    pool = pa.default_memory_pool()
    found = []
    fs = arrow_filesystem(scored)
    for part in list_parts(scored):
        with fs.open_input_file(part) as f:
            reader = pq.ParquetFile(f)
            if not pc.any(pc.is_in(reader.read(columns=["id"]).column("id"), value_set=wanted)).as_py():
                continue  # decode a part's texts only when it holds selected rows
            for batch in reader.iter_batches(batch_size=batch_rows):
                hits = pc.is_in(batch.column(batch.schema.get_field_index("id")), value_set=wanted)
                if pc.any(hits).as_py():
                    found.append(pa.Table.from_batches([batch.filter(hits)]))
        # Arrow's allocator keeps freed pages; hand them back between parts.
        pool.release_unused()
    return _in_selection_order(pa.concat_tables(found, promote_options="default").combine_chunks(), selected_ids)


def write_sharegpt_jsonl(rows: pa.Table, path: str) -> None:
    """ShareGPT JSONL, renamed into place only when every line is written."""
    keep = [c for c in ("evol_score", "complexity_scores", "quality_scores", "selection_rank") if c in rows.column_names]
    with fs.open_for_write(path) as f:
        for row in rows.select(["id", "conversations"] + keep).to_pylist():
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


# Every file a selection writes in its output directory: --overwrite removes these and nothing else.
SELECTION_FILES = ("selected.parquet", "selected.jsonl", "rejections.parquet", "visits.parquet", SELECT_SUMMARY)


def check_inputs(config: SelectJobConfig, log=print) -> list[str]:
    """Before the output is touched: the inputs are there and complete, and the output keeps clear of them.
    Returns the inputs read on purpose although incomplete (--allow-partial)."""
    inputs = [config.scored] + ([config.embeddings] if config.strategy == "diverse" else [])
    if not list_parts(config.scored):
        raise FileNotFoundError(f"no scored Parquet under {config.scored} (run `deita-ray score` first)")
    if config.strategy == "diverse" and not list_parts(config.embeddings):
        raise FileNotFoundError(f"no embedding index under {config.embeddings} (run `deita-ray embed` first)")
    partial = check_complete(inputs, config.allow_partial, log=log)
    check_output(config.output, inputs)
    return partial


def select_pool(config: SelectJobConfig) -> dict:
    started = time.time()
    partial = check_inputs(config)
    with hold_output(config.output):
        existing = [name for name in SELECTION_FILES if fs.exists(posixpath.join(config.output, name))]
        if existing and not config.overwrite:
            raise FileExistsError(f"{config.output} already holds a selection ({existing[0]}); pass --overwrite to "
                                  "replace it")
        clear_own_files(config.output, SELECTION_FILES)  # the summary first of all: written again last
        return _select(config, started, partial)


def _select(config: SelectJobConfig, started: float, partial: list[str]) -> dict:
    rejections = None
    if config.strategy == "diverse":
        selected_ids, rejections, extra = _diverse(config)
    else:
        table, ineligible = _candidates(config)
        kept = _order(config, table)
        selected_ids = table.column("id").take(pa.array(kept, pa.int64())).to_pylist() if len(kept) else []
        extra = {"candidates": table.num_rows, "ineligible": ineligible}
    if extra.get("sorted_on") == "ray":  # a big pool: the cluster reads the parts, the driver gets the selection
        from deita_ray.select.candidates import selected_rows_on_ray

        rows = _in_selection_order(selected_rows_on_ray(config.scored, selected_ids), selected_ids)
    else:
        rows = _selected_rows(config.scored, selected_ids)
    # Each file appears whole (temporary name, then rename); the summary, written last, says the set is complete.
    write_table_atomic(rows, config.output, "selected.parquet")
    write_sharegpt_jsonl(rows, posixpath.join(config.output, "selected.jsonl"))
    if rejections is not None:
        write_table_atomic(rejections, config.output, "rejections.parquet")
    summary = {
        "strategy": config.strategy, "budget": config.budget, "threshold": config.threshold,
        "selected": len(selected_ids),
        "rejected": rejections.num_rows if rejections is not None else 0, **extra,
        "seconds": round(time.time() - started, 3), "output": config.output, "partial_inputs": partial,
        "config": asdict(config),
    }
    fs.write_json(posixpath.join(config.output, SELECT_SUMMARY), summary)
    return summary


def format_summary(s: dict) -> str:
    lines = [f"strategy     {s['strategy']} (budget {s['budget']:,}" +
             (f", tau {s['threshold']})" if s["strategy"] == "diverse" else ")"),
             f"candidates   {s['candidates']:>10,}   (not eligible: " +
             (", ".join(f"{k}: {v:,}" for k, v in s["ineligible"].items()) or "none") + ")"]
    if s["strategy"] == "diverse":
        lines.append(f"visited      {s['visited']:>10,}   rejected as too similar: {s['rejected']:,}   index: {s['index']['backend']}")
    lines += [f"selected     {s['selected']:>10,}   ({s['seconds']:.1f} s)",
              f"output       {s['output']}/selected.parquet, selected.jsonl" +
              (", rejections.parquet" if s["strategy"] == "diverse" else "")]
    return "\n".join(lines)
