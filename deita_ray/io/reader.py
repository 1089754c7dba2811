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

EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".arrow": "arrow"}
# What Hugging Face `datasets.save_to_disk` writes beside its .arrow files: metadata, not records.
DATASETS_METADATA = ("dataset_info.json", "state.json", "dataset_dict.json")
# Compressed JSON/JSONL, recognised by extension and decompressed while reading (one read task per file).
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".bz2": "bz2"}
PLAN_PARSE_BYTES = 64 << 20  # .json arrays up to this size are parsed while planning (file errors surface at once)

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
    kind: str           # "jsonl" | "json" | "parquet" | "arrow"
    fmt: str | None     # "sharegpt" | "alpaca" | "messages"; None: detect from the file's first good record
    start: int = 0      # byte range [start, end) for JSONL chunks
    end: int = -1


def _open_fs(url: str):
    return url_to_fs(url)


def expand_inputs(url: str, not_read: list[str] | None = None) -> list[str]:
    """The files an input names. Files of a directory that are not read (other extensions) are
    appended to `not_read`; `_`-prefixed and hidden files (manifests, _SUCCESS markers) are skipped
    silently, as Spark and Hadoop do."""
    fs, path = _open_fs(url)
    if any(ch in path for ch in "*?["):
        found = sorted(fs.glob(path))
    elif fs.isdir(path):
        listed = [p for p in sorted(fs.find(path)) if not posixpath.basename(p).startswith(("_", "."))]
        arrow_dirs = {posixpath.dirname(p) for p in listed if p.endswith(".arrow")}
        listed = [p for p in listed if not (posixpath.basename(p) in DATASETS_METADATA and (
            posixpath.dirname(p) in arrow_dirs or posixpath.basename(p) == "dataset_dict.json"))]
        found = [p for p in listed if _kind(p, strict=False)]
        if not_read is not None:
            not_read += [fs.unstrip_protocol(p) if "://" in url else p for p in listed if not _kind(p, strict=False)]
    elif fs.exists(path):
        found = [path]
    else:
        raise InputError(f"input not found: {url}")
    files = [p for p in found if not fs.isdir(p)]
    if not files:
        raise InputError(f"no .jsonl/.json/.parquet/.arrow files under {url}")
    return [fs.unstrip_protocol(p) if "://" in url else p for p in files]


def input_signature(inputs: list[str]) -> list[list]:
    """What a step reads, for its fingerprint: every file the inputs name, with its size and its version (ETag on
    object stores, else the modification time). A file added, removed or changed gives another signature."""
    found = []
    for url in inputs:
        try:
            files = set(expand_inputs(url))
        except InputError as exc:  # said again, in one line, by the step that reads it
            found.append([url, None, str(exc)])
            continue
        filesystem, path = _open_fs(url)
        if filesystem.isdir(path):  # one listing with details instead of a request per file
            details = {(filesystem.unstrip_protocol(p) if "://" in url else p): info
                       for p, info in filesystem.find(path, detail=True).items()}
        else:
            details = {f: filesystem.info(_open_fs(f)[1]) for f in files}
        for name in sorted(files):
            info = details.get(name) or filesystem.info(_open_fs(name)[1])
            version = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified")
            found.append([name, info.get("size"), str(version)])
    return found


def compression(path: str) -> str | None:
    """gzip | zstd | bz2 for a compressed file (by extension), else None."""
    for ext, name in COMPRESSIONS.items():
        if path.lower().endswith(ext):
            return name
    return None


def _kind(path: str, strict: bool = True) -> str | None:
    name = path.lower()
    for ext in COMPRESSIONS:
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    for ext, kind in EXTENSIONS.items():
        if name.endswith(ext) and not (kind in ("parquet", "arrow") and name != path.lower()):
            return kind
    if strict:
        raise InputError(f"unsupported file type (want .jsonl, .json, .parquet or .arrow, optionally .gz/.zst/.bz2 "
                         f"for JSON and JSONL): {path}")
    return None


def open_binary(fs, path: str):
    """A file of the pool, decompressed when its extension says so."""
    return fs.open(path, "rb", compression=compression(path))


def _peek_jsonl_format(fs, path: str, limit: int = 1 << 16) -> str | None:
    with open_binary(fs, path) as f:
        head = f.read(limit)
    for line in head.splitlines():
        try:
            return detect_format(json.loads(line))
        except (ValueError, BadRow):
            continue
    return None


def _arrow_batches(f) -> Iterator[pa.RecordBatch]:
    """The record batches of an Arrow IPC file: the file format (Feather v2, Polars), or the stream format that
    Hugging Face `datasets.save_to_disk` writes."""
    import pyarrow.ipc as ipc

    try:
        reader = ipc.open_file(f)
        for k in range(reader.num_record_batches):
            yield reader.get_batch(k)
    except pa.ArrowInvalid:
        f.seek(0)
        yield from ipc.open_stream(f)


def _schema_names(fs, path: str, kind: str) -> set[str]:
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as f:
        if kind == "parquet":
            return set(pq.ParquetFile(f).schema_arrow.names)
        import pyarrow.ipc as ipc

        try:
            return set(ipc.open_file(f).schema.names)
        except pa.ArrowInvalid:
            f.seek(0)
            return set(ipc.open_stream(f).schema.names)


def _parquet_format(fs, path: str, kind: str = "parquet") -> str | None:
    names = _schema_names(fs, path, kind)
    for key, fmt in (("conversations", "sharegpt"), ("messages", "messages"), ("instruction", "alpaca")):
        if key in names:
            return fmt
    return None


def plan_reads(inputs: list[str], input_format: str | None = None, chunk_bytes: int = 16 << 20,
               not_read: list[str] | None = None) -> list[ReadTask]:
    """Expand inputs into read tasks; every file is opened once here so a bad path or a broken file
    fails now, in one line. Files of input directories that will not be read go to `not_read`."""
    if input_format is not None and input_format not in FORMATS:
        raise InputError(f"--input-format must be one of {FORMATS}, got {input_format!r}")
    if not inputs:
        raise InputError("no input given")
    tasks: list[ReadTask] = []
    for url in inputs:
        for file_url in expand_inputs(url, not_read):
            kind = _kind(file_url)
            fs, path = _open_fs(file_url)
            try:
                size = fs.size(path)
                with open_binary(fs, path) as f:
                    f.read(1)
                if kind in ("parquet", "arrow"):
                    fmt = input_format or _parquet_format(fs, path, kind)
                elif kind == "jsonl":
                    fmt = input_format or _peek_jsonl_format(fs, path)
                else:
                    fmt = input_format
                    with open_binary(fs, path) as f:
                        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
                    if not head.startswith(b"["):
                        raise InputError(f"{file_url}: a .json pool must be a JSON array of records "
                                         "(use .jsonl for one record per line)")
                    if size <= PLAN_PARSE_BYTES:  # parse now: a broken file stops the run here, in one line
                        _load_json_array(fs, path, file_url)
            except InputError:
                raise
            except Exception as exc:  # permission, corrupt Parquet footer, ...
                raise InputError(f"cannot read {file_url}: {type(exc).__name__}: {exc}") from None
            if kind == "jsonl" and size > chunk_bytes and not compression(path):
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


def _load_json_array(fs, path: str, url: str) -> list:
    with open_binary(fs, path) as f:
        # surrogateescape keeps invalid bytes visible so the row (not the file) is quarantined.
        text = f.read().decode("utf-8", "surrogateescape")
    text = text[1:] if text.startswith("\ufeff") else text  # a byte-order mark is not an error
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{url} is not valid JSON ({exc.msg} at line {exc.lineno}); use JSONL to quarantine "
                         "bad lines") from None
    if not isinstance(data, list):
        raise InputError(f"{url}: a .json pool must be a JSON array of records")
    return data


def _records(task: ReadTask) -> Iterator[tuple[int, Any, str, str | None]]:
    """(position, record, raw text, parse error) for every row of the task's slice."""
    fs, path = _open_fs(task.url)
    if task.kind == "jsonl":
        with open_binary(fs, path) as f:
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
                if pos == 0 and line.startswith(b"\xef\xbb\xbf"):  # a byte-order mark is not part of the record
                    line = line[3:]
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
        for pos, record in enumerate(_load_json_array(fs, path, task.url)):
            yield pos, record, json.dumps(record, ensure_ascii=True), None
    else:
        import pyarrow.parquet as pq

        with fs.open(path, "rb") as f:
            pos = 0
            batches = pq.ParquetFile(f).iter_batches(batch_size=4096) if task.kind == "parquet" else _arrow_batches(f)
            for batch in batches:
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
