"""Baseline selection strategies for ablations: random, top-m by complexity, quality, evol score, length.

    table, ineligible = candidates(config)     # ids and the values they are ranked by, read into the driver
    positions = order(config, table)           # positions in selection order

Ties are broken by id ascending so runs are repeatable. Per-sample complexity and quality are the sums over
turns, like the paper's evol score. `config` is the select step's config (strategy, budget, seed, scored).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from deita_ray.io.writer import list_parts, read_columns


def top_by(values: np.ndarray, ids: np.ndarray, budget: int) -> np.ndarray:
    return np.lexsort((ids, -np.asarray(values, dtype=np.float64)))[:budget]


def random_selection(n: int, budget: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n)[:budget]


def turn_sum(lists) -> np.ndarray:
    return np.asarray([sum(x) if x and all(v is not None for v in x) else np.nan for x in lists], dtype=np.float64)


def candidates(config) -> tuple[pa.Table, dict]:
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


def order(config, table: pa.Table) -> np.ndarray:
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
