"""A stage's output before it runs: cleared of what this project wrote (overwrite), or kept to resume, and the
rows a resumed run skips (by id, source and position).
"""

from __future__ import annotations

import functools
import posixpath

import pyarrow as pa
import pyarrow.compute as pc

from deita_ray.io import fs
from deita_ray.io.outputs import OWN_FILE, OutputError, clear_own_files
from deita_ray.io.quarantine import transient_parts
from deita_ray.io.writer import list_parts, read_columns, write_part
from deita_ray.runner.layout import StageLayout


def row_keys(table: pa.Table) -> list[tuple]:
    """Rows are skipped on resume by (id, source, position): ids alone would also skip the second
    copy of a duplicated id that the first stage has still to quarantine."""
    sources = table.column("source").to_pylist() if "source" in table.column_names else [None] * table.num_rows
    positions = table.column("position").to_pylist() if "position" in table.column_names else [None] * table.num_rows
    return list(zip(table.column("id").to_pylist(), sources, positions))


def prepare_output(layout: StageLayout, overwrite: bool, resume: bool = False) -> int:
    """Clear for a fresh run (existing results need `overwrite`), or keep finished parts to resume.
    Returns how many samples a resumed run will skip."""
    fs.remove(layout.done_ids)
    fs.remove(layout.summary)  # the completion record: written again only when this run finishes
    if resume:
        # A part whose writer died is never complete (only our own temporaries: names a person does not type).
        _remove(layout.out, [p for p in fs.list_files(layout.out, ".inprogress") if OWN_FILE.fullmatch(posixpath.basename(p))])
        # Dropped, since this run writes them again, so that nothing counts twice: transient failures (retried
        # now), and what the reader wrote (every read task re-reads; with another chunk size its parts would
        # have other names and the old ones would stay beside them).
        reader_parts = [p for p in list_parts(layout.quarantine) if posixpath.basename(p).startswith("read-")
                        and OWN_FILE.fullmatch(posixpath.basename(p))]
        _remove(layout.quarantine, sorted(set(transient_parts(layout.quarantine)) | set(reader_parts)))
        _remove(layout.read_stats, list_parts(layout.read_stats))
        keys = ["id", "source", "position"]
        done = [t for t in (_key_columns(layout.parts), _key_columns(layout.quarantine, own_stage=True)) if t is not None]
        done = pa.concat_tables([t.select(keys) for t in done]) if done else None
        if done is not None and done.num_rows:
            write_part(done, posixpath.dirname(layout.done_ids), posixpath.basename(layout.done_ids))
        return done.num_rows if done is not None else 0
    if (list_parts(layout.out) or list_parts(layout.quarantine)) and not overwrite:
        raise FileExistsError(f"{layout.out} already holds output; pass --overwrite to replace it")
    for directory in (layout.out, layout.quarantine, layout.read_stats, *layout.sides):
        clear_own_files(directory)  # only what deita_ray wrote: a file of anyone else's stays
        foreign = list_parts(directory)
        if foreign:
            raise OutputError(f"{directory} holds files deita-ray did not write ({foreign[0]}); move them away or "
                              "choose another output")
    return 0


def _remove(directory: str, paths: list[str]) -> None:
    """Remove files listed under `directory` (listings of object stores come without their protocol)."""
    for path in paths:
        fs.remove(fs.url_to_fs(directory)[0].unstrip_protocol(path) if "://" in directory else path)


def _key_columns(directory: str, own_stage: bool = False) -> pa.Table | None:
    if not list_parts(directory):
        return None
    try:  # parts written before source/position existed have ids only: those match on id
        table = read_columns(directory, ["id", "stage", "source", "position"] if own_stage else ["id", "source", "position"])
    except (KeyError, ValueError, OSError):
        table = read_columns(directory, ["id", "stage"] if own_stage else ["id"])
    if own_stage:  # rows this stage quarantined were processed; rows the reader quarantined are re-read
        table = table.filter(pc.not_equal(table.column("stage"), "read"))
    for name, kind in (("source", pa.string()), ("position", pa.int64())):
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, kind))
    return table


@functools.lru_cache(maxsize=2)
def _done_keys(path: str, stamp: float) -> frozenset:
    """The keys a resumed stage skips; cached per worker process (keyed by the file's mtime)."""
    import pyarrow.parquet as pq

    filesystem, local = fs.url_to_fs(path)
    with filesystem.open(local, "rb") as f:
        return frozenset(row_keys(pq.read_table(f)))


def skip_done(good: pa.Table, layout: StageLayout) -> pa.Table:
    filesystem, path = fs.url_to_fs(layout.done_ids)
    if not filesystem.exists(path):
        return good
    done = _done_keys(layout.done_ids, filesystem.modified(path).timestamp() if hasattr(filesystem, "modified") else 0.0)
    # A done row's source/position may be null (parts written before these columns existed): match on id then.
    ids_only = {k[0] for k in done if k[1] is None}
    keep = [k not in done and k[0] not in ids_only for k in row_keys(good)]
    return good if all(keep) else good.filter(pa.array(keep))
