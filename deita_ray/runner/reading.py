"""Reading for a map stage: read tasks over the pool (the pool reader) or over an upstream stage's Parquet parts,
each task's bad rows to quarantine and its row count to read_stats (the independent count), done rows skipped.
"""

from __future__ import annotations

import pyarrow as pa

from deita_ray.io import fs
from deita_ray.io.reader import InputError, ReadTask, read_task
from deita_ray.io.writer import list_parts, part_name, write_part
from deita_ray.runner.layout import StageLayout
from deita_ray.runner.resume import skip_done
from deita_ray.runner.spec import StageSpec


def _read_parts(task: ReadTask, block_rows: int):
    """An upstream stage's Parquet part, as it is, in blocks."""
    import pyarrow.parquet as pq

    filesystem, path = fs.url_to_fs(task.url)
    with filesystem.open(path, "rb") as f:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=block_rows):
            yield pa.Table.from_batches([batch]), None


def read_and_quarantine(task: ReadTask, layout: StageLayout, block_rows: int):
    """Good blocks of one read task; its bad rows go to quarantine and its row count to read_stats."""
    key = f"{task.url}:{task.start}"
    rows_read = 0
    blocks = _read_parts(task, block_rows) if task.kind == "parts" else read_task(task, block_rows=block_rows)
    for index, (good, bad) in enumerate(blocks):
        rows_read += good.num_rows + (bad.num_rows if bad is not None else 0)
        if bad is not None and bad.num_rows:
            write_part(bad, layout.quarantine, part_name("read", key, index))
        good = skip_done(good, layout)
        if good.num_rows:
            yield good
    stats = pa.table({"task": [key], "rows_read": pa.array([rows_read], pa.int64())})
    write_part(stats, layout.read_stats, part_name("read", key, 0))


def read_blocks(batch: pa.Table, layout: StageLayout, block_rows: int):
    """Ray Data UDF: one row per read task in, Arrow blocks of good rows out."""
    for task_row in batch.to_pylist():
        yield from read_and_quarantine(ReadTask(**task_row), layout, block_rows)


def plan_parts(inputs: list[str]) -> list[ReadTask]:
    """Read tasks over upstream Parquet parts (one per part)."""
    tasks = []
    for url in inputs:
        filesystem, path = fs.url_to_fs(url)
        if not filesystem.exists(path):
            raise InputError(f"input not found: {url}")
        parts = list_parts(url) if filesystem.isdir(path) else [path]
        tasks += [ReadTask(filesystem.unstrip_protocol(p) if "://" in url else p, "parts", None) for p in parts]
    if not tasks:
        raise InputError(f"no Parquet parts under {', '.join(inputs)}")
    return tasks


def plan_tasks(spec: StageSpec, inputs: list[str], input_format: str | None, chunk_bytes: int,
          not_read: list[str]) -> list[ReadTask]:
    if spec.source == "parts":
        return plan_parts(inputs)
    from deita_ray.io.reader import plan_reads

    return plan_reads(inputs, input_format, chunk_bytes, not_read=not_read)
