"""Select the final set: the Repr Filter on a FAISS actor (or a baseline strategy), then outputs.

    from deita_ray.select_job import SelectJobConfig, select_pool
    select_pool(SelectJobConfig(scored="out/scored", embeddings="out/embeddings", output="out/selection"))

The driver holds only ids, scores and (shard, row) references; embeddings stream from the
memory-mapped shards in score order, one block at a time, to the kept index (a Ray actor, GPU
FAISS where there is one). Outputs: `selected.parquet` (scored rows + `selection_rank`),
`selected.jsonl` (ShareGPT, readable by the reference tools and common trainers),
`rejections.parquet` (id, nearest kept id, similarity) and `select_summary.json`.
"""

from __future__ import annotations

import json
import posixpath
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from deita_ray.io.embedding_store import EmbeddingStore
from deita_ray.io.writer import clear_directory, list_parts, read_columns, write_part
from deita_ray.job_io import write_json
from deita_ray.select.baselines import STRATEGIES, random_selection, top_by, turn_sum
from deita_ray.select.repr_filter import normalise_rows, run_filter


@dataclass
class SelectJobConfig:
    scored: str                       # the `scored/` directory of `deita-ray score`
    output: str                       # where selected.parquet / .jsonl, rejections and the summary go
    embeddings: str | None = None     # the `embeddings/` directory of `deita-ray embed` (diverse only)
    strategy: str = "diverse"
    budget: int = 6000                # the paper: 6,000 (deita-6k) or 10,000 (deita-10k)
    threshold: float = 0.9            # tau: reject when the nearest kept similarity is > tau
    block_size: int = 1024
    seed: int = 0                     # random strategy only
    index: str = "actor"              # actor: FAISS in a Ray actor; local: in this process
    device: str = "auto"              # auto | cpu | gpu for the FAISS index
    overwrite: bool = False

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.budget < 1 or self.block_size < 1:
            raise ValueError("budget and block_size must be >= 1")
        if self.index not in ("actor", "local"):
            raise ValueError("index must be 'actor' or 'local'")
        if self.strategy == "diverse" and not self.embeddings:
            raise ValueError("the diverse strategy needs --embeddings (the output of `deita-ray embed`)")


def _candidates(config: SelectJobConfig) -> tuple[pa.Table, dict]:
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
    needs = {"diverse": "evol_score", "evol": "evol_score"}.get(config.strategy)
    if needs:
        missing = table.column(needs).is_null()
        ineligible["no evol score"] = int(pc.sum(pc.cast(missing, pa.int64())).as_py() or 0)
        table = table.filter(pc.invert(missing))
    if config.strategy == "diverse":
        store_index = EmbeddingStore(config.embeddings).index.select(["id", "shard", "row"])
        joined = table.select(["id", "evol_score"]).join(store_index, "id", join_type="left outer")
        has_vector = pc.is_valid(joined.column("shard"))
        ineligible["no embedding"] = joined.num_rows - int(pc.sum(pc.cast(has_vector, pa.int64())).as_py() or 0)
        table = joined.filter(has_vector)
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


def _diverse(config: SelectJobConfig, table: pa.Table) -> tuple[np.ndarray, pa.Table, dict]:
    """The Repr Filter over the candidates. Per-row data stays in Arrow/NumPy (no Python object per
    row), so the driver's memory grows by a few bytes per candidate, not by the pool."""
    from deita_ray.select.kept_index import KeptIndex, RemoteKeptIndex

    store = EmbeddingStore(config.embeddings)
    # Evol score descending, ties by id ascending (UTF-8 byte order = code point order, as selection_order).
    order = pc.sort_indices(table, sort_keys=[("evol_score", "descending"), ("id", "ascending")]).to_numpy()
    shard = pc.dictionary_encode(table.column("shard")).combine_chunks()
    shard_codes, shard_names = shard.indices.to_numpy(), shard.dictionary.to_pylist()
    rows = table.column("row").to_numpy()
    ids = table.column("id")

    def take_ids(positions) -> pa.Array:
        return ids.take(pa.array(np.asarray(positions, dtype=np.int64)))

    def blocks():
        for n, start in enumerate(range(0, len(order), config.block_size)):
            positions = order[start:start + config.block_size]
            names = [shard_names[c] for c in shard_codes[positions]]
            yield positions, normalise_rows(store.gather(names, rows[positions]))
            if n % 20 == 19:
                print(f"  visited {start + len(positions):,} candidates", file=sys.stderr, flush=True)

    dim = store.dim
    index = RemoteKeptIndex(dim, config.device) if config.index == "actor" else KeptIndex(dim, config.device)
    result = run_filter(blocks(), index, config.budget, config.threshold)
    backend = index.describe()
    if hasattr(index, "close"):
        index.close()
    rejections = pa.table({
        "id": take_ids(result.rejected).cast(pa.string()),
        "nearest_kept_id": take_ids(result.rejected_nearest).cast(pa.string()),
        "similarity": pa.array(result.rejected_similarity, pa.float64()),
    })
    visited = order[: result.visited]
    visits = pa.table({"id": take_ids(visited).cast(pa.string()),
                       "evol_score": pa.array(table.column("evol_score").to_numpy()[visited], pa.float64()),
                       "accepted": pa.array(result.visit_accepted, pa.bool_()),
                       "nearest_kept_similarity": pa.array(result.visit_similarity, pa.float64())})
    write_part(visits, config.output, "visits.parquet")
    return np.asarray(result.kept, dtype=np.int64), rejections, {"visited": result.visited, "index": backend}


def _selected_rows(scored: str, selected_ids: list[str]) -> pa.Table:
    """Full scored rows of the selected ids (read part by part, filtered), in selection order."""
    wanted = pa.array(selected_ids, pa.string())
    pool = pa.default_memory_pool()
    parts = []
    import fsspec

    fs, _ = fsspec.core.url_to_fs(scored)
    for part in list_parts(scored):
        hits = pc.is_in(pq.read_table(part, columns=["id"], filesystem=fs).column("id"), value_set=wanted)
        if pc.any(hits).as_py():  # decode a part's texts only when it holds selected rows
            parts.append(pq.read_table(part, filesystem=fs).filter(hits))
        # Arrow's allocator keeps freed pages; hand them back so the driver's peak tracks the
        # selected rows, not every part read on the way.
        pool.release_unused()
    rows = pa.concat_tables(parts, promote_options="default")
    rank = {sid: r for r, sid in enumerate(selected_ids)}
    ranks = [rank[i] for i in rows.column("id").to_pylist()]
    rows = rows.append_column("selection_rank", pa.array(ranks, pa.int64()))
    return rows.take(pc.sort_indices(rows.column("selection_rank")))


def write_sharegpt_jsonl(rows: pa.Table, path: str) -> None:
    import fsspec

    keep = [c for c in ("evol_score", "complexity_scores", "quality_scores", "selection_rank") if c in rows.column_names]
    with fsspec.open(path, "w") as f:
        for row in rows.select(["id", "conversations"] + keep).to_pylist():
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def select_pool(config: SelectJobConfig) -> dict:
    started = time.time()
    if list_parts(config.output) and not config.overwrite:
        raise FileExistsError(f"{config.output} already holds a selection; pass --overwrite to replace it")
    clear_directory(config.output)
    table, ineligible = _candidates(config)
    extra: dict = {}
    rejections = None
    if config.strategy == "diverse":
        kept, rejections, extra = _diverse(config, table)
    else:
        kept = _order(config, table)
    selected_ids = table.column("id").take(pa.array(kept, pa.int64())).to_pylist() if len(kept) else []
    rows = _selected_rows(config.scored, selected_ids)
    write_part(rows, config.output, "selected.parquet")
    write_sharegpt_jsonl(rows, posixpath.join(config.output, "selected.jsonl"))
    if rejections is not None:
        write_part(rejections, config.output, "rejections.parquet")
    summary = {
        "strategy": config.strategy, "budget": config.budget, "threshold": config.threshold,
        "candidates": table.num_rows, "ineligible": ineligible, "selected": len(selected_ids),
        "rejected": rejections.num_rows if rejections is not None else 0, **extra,
        "seconds": round(time.time() - started, 3), "output": config.output, "config": asdict(config),
    }
    write_json(posixpath.join(config.output, "select_summary.json"), summary)
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
