"""Plumbing shared by the Ray jobs: output layout, reading with quarantine, reconciliation, JSON.

Each job stage owns three directories under the output: its results, its quarantine and its read
statistics (rows read per read task, written by the read tasks themselves, so that
`rows in = rows out + rows quarantined` is checked against an independent count).
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import asdict

import pyarrow as pa
import pyarrow.compute as pc

from deita_ray.io.reader import ReadTask, read_task
from deita_ray.io.writer import clear_directory, count_rows, list_parts, part_name, read_columns, write_part

STAGE_DIRS = {
    "score": ("scored", "quarantine", "read_stats"),
    "embed": ("embeddings", "embed_quarantine", "embed_read_stats"),
}


def stage_paths(output: str, stage: str) -> dict[str, str]:
    out, quarantine, stats = STAGE_DIRS[stage]
    return {"out": posixpath.join(output, out), "quarantine": posixpath.join(output, quarantine),
            "read_stats": posixpath.join(output, stats)}


def prepare_output(paths: dict[str, str], overwrite: bool) -> None:
    """Refuse to mix runs: existing results need `overwrite`, which clears all three directories."""
    if (list_parts(paths["out"]) or list_parts(paths["quarantine"])) and not overwrite:
        raise FileExistsError(f"{paths['out']} already holds output; pass --overwrite to replace it")
    for path in paths.values():
        clear_directory(path)


def read_and_quarantine(task: ReadTask, paths: dict[str, str], block_rows: int):
    """Good blocks of one read task; its bad rows go to quarantine and its row count to read_stats."""
    key = f"{task.url}:{task.start}"
    rows_read = 0
    for index, (good, bad) in enumerate(read_task(task, block_rows=block_rows)):
        rows_read += good.num_rows + bad.num_rows
        if bad.num_rows:
            write_part(bad, paths["quarantine"], part_name("read", key, index))
        if good.num_rows:
            yield good
    stats = pa.table({"task": [key], "rows_read": pa.array([rows_read], pa.int64())})
    write_part(stats, paths["read_stats"], part_name("read", key, 0))


def read_blocks(batch: pa.Table, paths: dict[str, str], block_rows: int):
    """Ray Data UDF: one row per read task in, Arrow blocks of good rows out."""
    for task_row in batch.to_pylist():
        yield from read_and_quarantine(ReadTask(**task_row), paths, block_rows)


def read_dataset(tasks: list[ReadTask], paths: dict[str, str], block_rows: int):
    """A Ray Dataset of the pool's good rows (read tasks in parallel; quarantine written on the way)."""
    import ray

    ds = ray.data.from_items([asdict(t) for t in tasks], override_num_blocks=len(tasks))
    return ds.map_batches(read_blocks, batch_size=1, batch_format="pyarrow", num_cpus=0.25,
                          fn_kwargs={"paths": paths, "block_rows": block_rows})


def reconcile(paths: dict[str, str], rows_out: int) -> dict:
    """Rows read (independent count) against rows written + quarantined, with quarantine reasons."""
    stats = read_columns(paths["read_stats"], ["rows_read"])
    rows_in = int(pc.sum(stats.column("rows_read")).as_py() or 0) if stats is not None else 0
    quarantined = count_rows(paths["quarantine"])
    reasons: dict[str, int] = {}
    if quarantined:
        for reason in read_columns(paths["quarantine"], ["reason"]).column("reason").to_pylist():
            reasons[reason] = reasons.get(reason, 0) + 1
    return {"rows_in": rows_in, "rows_quarantined": quarantined, "reconciled": rows_in == rows_out + quarantined,
            "quarantine_reasons": reasons}


def write_json(path: str, obj: dict) -> None:
    import fsspec

    with fsspec.open(path, "w") as f:
        json.dump(obj, f, indent=2, default=str)
