"""Read instruction pools (ShareGPT / Alpaca / OpenAI messages; JSON, JSONL, Parquet) into Arrow.

Two halves. `plan_reads` runs on the driver: it expands paths, globs and directories on any
fsspec filesystem (local, s3://, gs://, memory://), fails fast with one clear line on a wrong
path or unreadable file, detects each file's format and cuts JSONL files into byte ranges.
`read_task` runs anywhere (a Ray task, or in-process): it yields Arrow blocks of good rows
(`id`, `conversations`, `source`, `source_format`, `num_turns`) plus quarantine rows for
bad ones, so that for every task rows in = rows out + rows quarantined.

    from deita_ray.io.reader import plan_reads, read_all
    good, bad = read_all(plan_reads(["pool/"]))
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass
from typing import Any, Iterator

import pyarrow as pa

from deita_ray.io.fs import url_to_fs
from deita_ray.io.formats import FORMATS, BadRow, detect_format, to_conversation, turn_pairs
from deita_ray.io.quarantine import PERMANENT, QUARANTINE_SCHEMA

EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}

TURN_TYPE = pa.struct([("from", pa.string()), ("value", pa.string())])
POOL_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("conversations", pa.list_(TURN_TYPE)),
    ("source", pa.string()),
    ("source_format", pa.string()),
    ("num_turns", pa.int32()),
    # Row index in a JSON array or Parquet file; byte offset of the line in a JSONL file.
    ("position", pa.int64()),
])
class InputError(ValueError):
    """A problem with the inputs as a whole (wrong path, unreadable file): stop before any work."""


@dataclass(frozen=True)
class ReadTask:
    url: str            # the file, as a URL any worker can open with fsspec
    kind: str           # "jsonl" | "json" | "parquet"
    fmt: str | None     # "sharegpt" | "alpaca" | "messages"; None: detect from the file's first good record
    start: int = 0      # byte range [start, end) for JSONL chunks
    end: int = -1


def _open_fs(url: str):
    return url_to_fs(url)


def _expand(url: str) -> list[str]:
    fs, path = _open_fs(url)
    if any(ch in path for ch in "*?["):
        found = sorted(fs.glob(path))
    elif fs.isdir(path):
        # Like Spark and Hadoop, skip _-prefixed and hidden files (manifests, _SUCCESS markers).
        found = sorted(p for p in fs.find(path)
                       if _kind(p, strict=False) and not posixpath.basename(p).startswith(("_", ".")))
    elif fs.exists(path):
        found = [path]
    else:
        raise InputError(f"input not found: {url}")
    files = [p for p in found if not fs.isdir(p)]
    if not files:
        raise InputError(f"no .jsonl/.json/.parquet files under {url}")
    return [fs.unstrip_protocol(p) if "://" in url else p for p in files]


def _kind(path: str, strict: bool = True) -> str | None:
    for ext, kind in EXTENSIONS.items():
        if path.lower().endswith(ext):
            return kind
    if strict:
        raise InputError(f"unsupported file type (want .jsonl, .json or .parquet): {path}")
    return None


def _peek_jsonl_format(fs, path: str, limit: int = 1 << 16) -> str | None:
    with fs.open(path, "rb") as f:
        head = f.read(limit)
    for line in head.splitlines():
        try:
            return detect_format(json.loads(line))
        except (ValueError, BadRow):
            continue
    return None


def _parquet_format(fs, path: str) -> str | None:
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as f:
        names = set(pq.ParquetFile(f).schema_arrow.names)
    for key, fmt in (("conversations", "sharegpt"), ("messages", "messages"), ("instruction", "alpaca")):
        if key in names:
            return fmt
    return None


def plan_reads(inputs: list[str], input_format: str | None = None, chunk_bytes: int = 16 << 20) -> list[ReadTask]:
    """Expand inputs into read tasks; every file is opened once here so a bad path fails now."""
    if input_format is not None and input_format not in FORMATS:
        raise InputError(f"--input-format must be one of {FORMATS}, got {input_format!r}")
    if not inputs:
        raise InputError("no input given")
    tasks: list[ReadTask] = []
    for url in inputs:
        for file_url in _expand(url):
            kind = _kind(file_url)
            fs, path = _open_fs(file_url)
            try:
                size = fs.size(path)
                with fs.open(path, "rb") as f:
                    f.read(1)
                if kind == "parquet":
                    fmt = input_format or _parquet_format(fs, path)
                elif kind == "jsonl":
                    fmt = input_format or _peek_jsonl_format(fs, path)
                else:
                    fmt = input_format
                    with fs.open(path, "rb") as f:  # cheap check; the full parse happens in the read task
                        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
                    if not head.startswith(b"["):
                        raise InputError(f"{file_url}: a .json pool must be a JSON array of records "
                                         "(use .jsonl for one record per line)")
            except InputError:
                raise
            except Exception as exc:  # permission, corrupt Parquet footer, ...
                raise InputError(f"cannot read {file_url}: {type(exc).__name__}: {exc}") from None
            if kind == "jsonl" and size > chunk_bytes:
                tasks += [ReadTask(file_url, kind, fmt, s, min(s + chunk_bytes, size)) for s in range(0, size, chunk_bytes)]
            else:
                tasks.append(ReadTask(file_url, kind, fmt))
    return tasks


def derived_id(source: str, position: int, content: str) -> str:
    """Stable id for a record without one: file name + position + content, hashed."""
    key = f"{posixpath.basename(source)}\0{position}\0{content}"
    return hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _record_id(record: Any, source: str, position: int, raw: str) -> str:
    if isinstance(record, dict) and "id" in record and record["id"] not in (None, ""):
        rid = record["id"]
        if isinstance(rid, bool) or not isinstance(rid, (str, int)):
            raise BadRow(f"'id' must be a string or integer, got {type(rid).__name__}")
        rid = str(rid)
        try:
            rid.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate escape such as "\ud800": not text, cannot be stored
            raise BadRow("'id' is not valid Unicode text (a lone surrogate escape)") from None
        return rid
    return derived_id(source, position, raw)


def _records(task: ReadTask) -> Iterator[tuple[int, Any, str, str | None]]:
    """(position, record, raw text, parse error) for every row of the task's slice."""
    fs, path = _open_fs(task.url)
    if task.kind == "jsonl":
        with fs.open(path, "rb") as f:
            if task.start > 0:
                f.seek(task.start - 1)
                f.readline()  # finish the line that started in the previous chunk
            end = task.end if task.end >= 0 else float("inf")
            while True:
                pos = f.tell()
                if pos >= end:
                    break
                line = f.readline()
                if not line:
                    break
                if not line.strip():
                    continue
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError:
                    yield pos, None, line.decode("utf-8", "backslashreplace").rstrip("\n"), "line is not valid UTF-8"
                    continue
                try:
                    yield pos, json.loads(text.strip()), text.rstrip("\n"), None
                except json.JSONDecodeError as exc:
                    yield pos, None, text.rstrip("\n"), f"malformed JSON: {exc.msg} (column {exc.colno})"
    elif task.kind == "json":
        with fs.open(path, "rb") as f:
            # surrogateescape keeps invalid bytes visible so the row (not the file) is quarantined.
            text = f.read().decode("utf-8", "surrogateescape")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{task.url} is not valid JSON ({exc.msg} at line {exc.lineno}); use JSONL to quarantine bad lines") from None
        if not isinstance(data, list):
            raise InputError(f"{task.url}: a .json pool must be a JSON array of records")
        for pos, record in enumerate(data):
            yield pos, record, json.dumps(record, ensure_ascii=True), None
    else:
        import pyarrow.parquet as pq

        with fs.open(path, "rb") as f:
            pos = 0
            for batch in pq.ParquetFile(f).iter_batches(batch_size=4096):
                for record in batch.to_pylist():
                    yield pos, record, json.dumps(record, ensure_ascii=False, default=str), None
                    pos += 1


def read_task(task: ReadTask, block_rows: int = 4096) -> Iterator[tuple[pa.Table, pa.Table]]:
    """Yield (good rows, quarantined rows) Arrow tables of at most `block_rows` good rows each."""
    fmt = task.fmt
    good: list[dict] = []
    bad: list[dict] = []
    for pos, record, raw, error in _records(task):
        rid = None
        try:
            if error:
                raise BadRow(error)
            rid = _record_id(record, task.url, pos, raw)
            if fmt is None:
                fmt = detect_format(record)
            conversation = to_conversation(record, fmt)
        except BadRow as exc:
            if rid is None:
                rid = derived_id(task.url, pos, raw)
            bad.append({"id": rid, "stage": "read", "reason": str(exc), "raw": raw.encode("utf-8", "backslashreplace").decode("utf-8"),
                        "source": task.url, "position": pos, "failure": PERMANENT})
            continue
        good.append({"id": rid, "conversations": conversation, "source": task.url, "source_format": fmt,
                     "num_turns": len(turn_pairs(conversation)), "position": pos})
        if len(good) >= block_rows:
            yield pa.Table.from_pylist(good, schema=POOL_SCHEMA), pa.Table.from_pylist(bad, schema=QUARANTINE_SCHEMA)
            good, bad = [], []
    if good or bad:
        yield pa.Table.from_pylist(good, schema=POOL_SCHEMA), pa.Table.from_pylist(bad, schema=QUARANTINE_SCHEMA)


def read_all(tasks: list[ReadTask]) -> tuple[pa.Table, pa.Table]:
    """In-process read of every task (tests, small pools): (pool, quarantine)."""
    goods, bads = [POOL_SCHEMA.empty_table()], [QUARANTINE_SCHEMA.empty_table()]
    for task in tasks:
        for good, bad in read_task(task):
            goods.append(good)
            bads.append(bad)
    return pa.concat_tables(goods), pa.concat_tables(bads)
