"""Quarantine: every row a stage cannot process goes there with a reason and a class (stages/failures.py decides it).

- permanent: the input is bad (malformed record, a prompt the engine rejects); never retried.
- transient: the machine failed (out of memory, a timeout, an engine or worker that died); a resumed
  run retries these rows, and their quarantine parts are removed first so nothing is counted twice.

A stage marks a failed row by filling the columns `_failure_reason` and `_failure_class`
(`mark_failures`); the runner splits such rows off to quarantine (`split_failures`), so a stage never
writes quarantine itself. Readers and training data preparation use `quarantine_rows` directly.
"""

from __future__ import annotations

import hashlib
import json
import posixpath

import pyarrow as pa
import pyarrow.compute as pc

PERMANENT, TRANSIENT = "permanent", "transient"
FAILURE_CLASSES = (PERMANENT, TRANSIENT)
REASON, CLASS = "_failure_reason", "_failure_class"

QUARANTINE_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("stage", pa.string()),
    ("reason", pa.string()),
    ("raw", pa.string()),
    ("source", pa.string()),
    # Row index in a JSON array or Parquet file; byte offset of the line in a JSONL file.
    ("position", pa.int64()),
    ("failure", pa.string()),   # permanent | transient
])

def mark_failures(table: pa.Table, failures: list[tuple[str, str] | None]) -> pa.Table:
    """Append (or merge into) the failure columns: one (reason, class) or None per row."""
    reasons = [f[0] if f else None for f in failures]
    classes = [f[1] if f else None for f in failures]
    if REASON in table.column_names:  # an earlier stage step already failed some rows: keep both reasons
        old_r, old_c = table.column(REASON).to_pylist(), table.column(CLASS).to_pylist()
        reasons = ["; ".join(r for r in (a, b) if r) or None for a, b in zip(old_r, reasons)]
        classes = [TRANSIENT if TRANSIENT in (a, b) else (a or b) for a, b in zip(old_c, classes)]
        table = table.drop_columns([REASON, CLASS])
    table = table.append_column(REASON, pa.array(reasons, pa.string()))
    return table.append_column(CLASS, pa.array(classes, pa.string()))


def raw_record(row: dict) -> str:
    return json.dumps({k: v for k, v in row.items() if k not in (REASON, CLASS)}, ensure_ascii=False, default=str)


def quarantine_rows(ids, stage: str, reasons, raws, sources=None, positions=None, classes=None) -> pa.Table:
    n = len(ids)
    return pa.table({
        "id": pa.array(ids, pa.string()), "stage": pa.array([stage] * n, pa.string()),
        "reason": pa.array(reasons, pa.string()), "raw": pa.array(raws, pa.string()),
        "source": pa.array(sources if sources is not None else [None] * n, pa.string()),
        "position": pa.array(positions if positions is not None else [None] * n, pa.int64()),
        "failure": pa.array(classes if classes is not None else [PERMANENT] * n, pa.string()),
    }, schema=QUARANTINE_SCHEMA)


def part_for(stage: str, failure: str, ids: list[str]) -> str:
    """Quarantine part names carry the stage and the class, so resume can drop the transient ones."""
    key = hashlib.sha1("\0".join(ids).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{stage}-{failure}-{key}.parquet"


def split_failures(table: pa.Table, quarantine_dir: str, stage: str) -> pa.Table:
    """Write the rows a stage marked as failed to quarantine; return the others without the marks."""
    from deita_ray.io.writer import write_part

    if REASON not in table.column_names:
        return table
    failed = pc.is_valid(table.column(REASON))
    if pc.any(failed).as_py():
        bad = table.filter(failed)
        rows = bad.to_pylist()
        for r in rows:  # an unknown class is not dropped: it is treated as permanent
            r[CLASS] = r[CLASS] if r[CLASS] in FAILURE_CLASSES else PERMANENT
        for failure in FAILURE_CLASSES:
            chosen = [r for r in rows if r[CLASS] == failure]
            if not chosen:
                continue
            ids = [r["id"] for r in chosen]
            keys = [f"{r['id']}\1{r.get('source')}\1{r.get('position')}" for r in chosen]
            part = quarantine_rows(ids, stage, [r[REASON] for r in chosen], [raw_record(r) for r in chosen],
                                   [r.get("source") for r in chosen], [r.get("position") for r in chosen],
                                   [failure] * len(chosen))
            write_part(part, quarantine_dir, part_for(stage, failure, keys))
        table = table.filter(pc.invert(failed))
    return table.drop_columns([REASON, CLASS])


def transient_parts(quarantine_dir: str) -> list[str]:
    from deita_ray.io.writer import list_parts

    from deita_ray.io.outputs import OWN_FILE

    return [p for p in list_parts(quarantine_dir) if f"-{TRANSIENT}-" in posixpath.basename(p)
            and OWN_FILE.fullmatch(posixpath.basename(p))]
