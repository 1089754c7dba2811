"""Plumbing shared by the Ray jobs: output layout, reading with quarantine, reconciliation, JSON.

Each job stage owns three directories under the output: its results, its quarantine and its read
statistics (rows read per read task, written by the read tasks themselves, so that
`rows in = rows out + rows quarantined` is checked against an independent count).

Result parts are written atomically (a temporary name, then a rename), so a part that exists is
complete: the parts are the stage's completion records, keyed by the sample ids inside them. A
resumed stage lists the ids already written (and those its own step quarantined), and its read
tasks skip them, so a rerun after a crash does only what is missing.
"""

from __future__ import annotations

import functools
import json
import posixpath
from dataclasses import asdict

import pyarrow as pa
import pyarrow.compute as pc

from deita_ray.io.reader import ReadTask, read_task
from deita_ray.io.writer import clear_directory, count_rows, count_values, list_parts, part_name, read_columns, sum_columns, write_part

STAGE_DIRS = {
    "score": ("scored", "quarantine", "read_stats"),
    "embed": ("embeddings", "embed_quarantine", "embed_read_stats"),
}


def stage_paths(output: str, stage: str) -> dict[str, str]:
    out, quarantine, stats = STAGE_DIRS[stage]
    return {"out": posixpath.join(output, out), "quarantine": posixpath.join(output, quarantine),
            "read_stats": posixpath.join(output, stats), "done": posixpath.join(output, f"_{stage}_done_ids.parquet"),
            "stage": stage}


def prepare_output(paths: dict[str, str], overwrite: bool, resume: bool = False) -> int:
    """Clear for a fresh run (existing results need `overwrite`), or keep finished parts to resume.
    Returns how many samples a resumed run will skip."""
    import fsspec

    fs, done_path = fsspec.core.url_to_fs(paths["done"])
    if fs.exists(done_path):
        fs.rm(done_path)
    if resume:
        fs_out, out_path = fsspec.core.url_to_fs(paths["out"])
        if fs_out.exists(out_path):
            for leftover in fs_out.find(out_path):
                if leftover.endswith(".inprogress"):  # a part whose writer died: never complete
                    fs_out.rm(leftover)
        done = [read_columns(paths["out"], ["id"])]
        quarantined = read_columns(paths["quarantine"], ["id", "stage"])
        if quarantined is not None:  # rows this stage's own step quarantined were processed too
            done.append(quarantined.filter(pc.not_equal(quarantined.column("stage"), "read")).select(["id"]))
        done = pa.concat_tables([t for t in done if t is not None]) if any(t is not None for t in done) else None
        if done is not None and done.num_rows:
            write_part(done, posixpath.dirname(done_path) or ".", posixpath.basename(done_path))
        return done.num_rows if done is not None else 0
    if (list_parts(paths["out"]) or list_parts(paths["quarantine"])) and not overwrite:
        raise FileExistsError(f"{paths['out']} already holds output; pass --overwrite to replace it")
    for key in ("out", "quarantine", "read_stats"):
        clear_directory(paths[key])
    return 0


def write_part_atomic(table: pa.Table, directory: str, prefix: str = "part") -> pa.Table:
    """Ray Data UDF ending a stage: one Parquet part per block, named from its ids, renamed into
    place only once complete. Returns a one-row count so the driver holds nothing."""
    import fsspec

    if table.num_rows:
        name = part_name(prefix, "\0".join(table.column("id").to_pylist()), 0)
        fs, path = fsspec.core.url_to_fs(directory)
        temporary = write_part(table, directory, f"_{name}.inprogress")
        fs.mv(temporary, posixpath.join(path, name))
    return pa.table({"rows": pa.array([table.num_rows], pa.int64())})


@functools.lru_cache(maxsize=2)
def _done_ids(path: str, stamp: float) -> frozenset:
    """The ids a resumed stage skips; cached per worker process (keyed by the file's mtime)."""
    import fsspec
    import pyarrow.parquet as pq

    with fsspec.open(path, "rb") as f:
        return frozenset(pq.read_table(f, columns=["id"]).column("id").to_pylist())


def _skip_done(good: pa.Table, paths: dict[str, str]) -> pa.Table:
    import fsspec

    fs, path = fsspec.core.url_to_fs(paths["done"])
    if not fs.exists(path):
        return good
    done = _done_ids(paths["done"], fs.modified(path).timestamp() if hasattr(fs, "modified") else 0.0)
    keep = [i not in done for i in good.column("id").to_pylist()]
    return good if all(keep) else good.filter(pa.array(keep))


def read_and_quarantine(task: ReadTask, paths: dict[str, str], block_rows: int):
    """Good blocks of one read task; its bad rows go to quarantine and its row count to read_stats."""
    key = f"{task.url}:{task.start}"
    rows_read = 0
    for index, (good, bad) in enumerate(read_task(task, block_rows=block_rows)):
        rows_read += good.num_rows + bad.num_rows
        if bad.num_rows:
            write_part(bad, paths["quarantine"], part_name("read", key, index))
        good = _skip_done(good, paths) if "done" in paths else good
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


def start_stage(config, stage: str, done_verb: str, ray_address: str | None = None):
    """Common start of a Ray stage job: plan the reads (bad paths fail here, before any work),
    clear or resume the output, connect to Ray, and return (paths, dataset of the pool's good rows)."""
    import sys

    import ray

    from deita_ray.io.reader import plan_reads

    tasks = plan_reads(config.inputs, config.input_format, config.chunk_bytes)
    paths = stage_paths(config.output, stage)
    skipped = prepare_output(paths, config.overwrite, config.resume)
    if skipped:
        print(f"resuming: {skipped:,} samples already {done_verb}", file=sys.stderr, flush=True)
    if not ray.is_initialized():
        ray.init(address=ray_address, **config.extra_ray_init)
    return paths, read_dataset(tasks, paths, config.block_rows)


def reconcile(paths: dict[str, str], rows_out: int) -> dict:
    """Rows read (independent count) against rows written + quarantined, with quarantine reasons."""
    rows_in = sum_columns(paths["read_stats"], {"rows_read": "rows_read"})[1]["rows_read"]
    quarantined = count_rows(paths["quarantine"])
    reasons = count_values(paths["quarantine"], "reason") if quarantined else {}
    return {"rows_in": rows_in, "rows_quarantined": quarantined, "reconciled": rows_in == rows_out + quarantined,
            "quarantine_reasons": reasons}


def write_json(path: str, obj: dict) -> None:
    import fsspec

    with fsspec.open(path, "w") as f:
        json.dump(obj, f, indent=2, default=str)
