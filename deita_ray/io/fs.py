"""The one filesystem layer: every read and write of deita_ray goes through here (local paths, s3://, gs://, ...).

    from deita_ray.io import fs
    fs.write_json("s3://bucket/out/run_stats.json", stats)     # atomic: temporary name, then rename
    fs.read_json("s3://bucket/out/run_stats.json")             # None when absent

fsspec resolves the URL; object stores get their settings from the usual places (for S3:
AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... in the environment of the driver and of the Ray workers).
Whole-file writes go to a temporary name first and are renamed into place, so a reader never sees
half a file (on object stores a single PUT is already all-or-nothing; the rename costs a copy).
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import uuid


def url_to_fs(url: str):
    """(fsspec filesystem, path inside it) for a local path or URL.

    Object stores get no directory-listing cache: Ray workers in other processes write parts all
    the time, and a cached listing makes `info()` deny a file that exists (seen on S3)."""
    import fsspec

    protocol = fsspec.core.split_protocol(url)[0]
    if protocol in (None, "file", "local"):
        return fsspec.core.url_to_fs(url)
    try:
        return fsspec.core.url_to_fs(url, use_listings_cache=False)
    except TypeError:  # a filesystem without listing caches
        return fsspec.core.url_to_fs(url)


def is_local(url: str) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(url_to_fs(url)[0], LocalFileSystem)


def absolute(url: str) -> str:
    """A local path made absolute against this process's working directory; URLs and "" as they are. Ray's
    workers on a cluster this process joined run elsewhere: a relative path would mean another place there."""
    if not url or "://" in url:
        return url
    return os.path.abspath(os.path.expanduser(url))


def absolute_model(model: str | None) -> str | None:
    """A model that is a local directory, made absolute; a hub name ("org/name") or None as it is."""
    return absolute(model) if model and os.path.exists(os.path.expanduser(model)) else model


def exists(url: str) -> bool:
    fs, path = url_to_fs(url)
    return fs.exists(path)


def makedirs(url: str) -> None:
    fs, path = url_to_fs(url)
    fs.makedirs(path, exist_ok=True)


def remove(url: str, recursive: bool = False) -> None:
    """Remove a file (or a directory tree with `recursive`); nothing when absent."""
    fs, path = url_to_fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)


def list_files(url: str, suffix: str = "") -> list[str]:
    """Every file under a directory (recursively), as paths of its filesystem, sorted."""
    fs, path = url_to_fs(url)
    if not fs.exists(path):
        return []
    return sorted(p for p in fs.find(path) if p.endswith(suffix))


def read_bytes(url: str) -> bytes | None:
    fs, path = url_to_fs(url)
    try:
        with fs.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def read_text(url: str) -> str | None:
    data = read_bytes(url)
    return None if data is None else data.decode("utf-8")


def read_json(url: str):
    text = read_text(url)
    return None if text is None else json.loads(text)


def write_bytes(url: str, data: bytes) -> str:
    """Write a whole file atomically: a temporary name beside it, then a rename."""
    with open_for_write(url, binary=True) as f:
        f.write(data)
    return f.path


class discarded_on_failure:
    """Remove a temporary file when the block that writes it fails (a full disk must not leave it behind)."""

    def __init__(self, filesystem, temporary: str):
        self.filesystem, self.temporary = filesystem, temporary

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is not None:
            try:
                if self.filesystem.exists(self.temporary):
                    self.filesystem.rm_file(self.temporary)
            except OSError:
                pass  # the original error is the one to report
        return False


def write_text(url: str, text: str) -> str:
    return write_bytes(url, text.encode("utf-8"))


def write_json(url: str, obj) -> str:
    return write_text(url, json.dumps(obj, indent=2, default=str))


# Filesystems whose pipe_file(mode="create") is a real conditional write (s3fs: If-None-Match; memory:
# one process). fsspec's generic version checks exists() and then writes: not exclusive.
_EXCLUSIVE_CREATE = {"s3", "s3a", "memory"}


def create_exclusive(url: str, data: bytes) -> bool:
    """Write `url` only if it does not exist, atomically with respect to other writers: True if this call
    created it, False if it was there. Local disks: a complete temporary file hard-linked into place
    (link fails if the name exists); S3: a conditional PUT. NotImplementedError elsewhere."""
    filesystem, path = url_to_fs(url)
    protocols = {filesystem.protocol} if isinstance(filesystem.protocol, str) else set(filesystem.protocol)
    parent = posixpath.dirname(path)
    if is_local(url):
        os.makedirs(parent or ".", exist_ok=True)
        temporary = posixpath.join(parent, f"_{posixpath.basename(path)}.{uuid.uuid4().hex[:8]}.inprogress")
        try:
            with open(temporary, "wb") as f:
                f.write(data)
            os.link(temporary, path)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):  # no hard links here
                raise NotImplementedError(f"no hard links at {parent}: {exc}") from exc
            raise  # a full disk, no permission: the caller's error, not a missing feature
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
        return True
    if not protocols & _EXCLUSIVE_CREATE:
        raise NotImplementedError(f"{type(filesystem).__name__} has no exclusive create")
    if parent:
        filesystem.makedirs(parent, exist_ok=True)
    try:
        filesystem.pipe_file(path, data, mode="create")
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno == errno.EBUSY:  # S3's 409 ConditionalRequestConflict: another writer at the same moment
            return False
        raise
    return True


def open_for_write(url: str, binary: bool = False):
    """A file object whose content appears at `url` only when closed without error (streamed outputs
    such as selected.jsonl; binary for a streamed Parquet file: hand `.file` to the Parquet writer)."""
    return _AtomicWriter(url, binary)


class _AtomicWriter:
    def __init__(self, url: str, binary: bool = False):
        self.fs, self.path = url_to_fs(url)
        parent = posixpath.dirname(self.path)
        if parent:
            self.fs.makedirs(parent, exist_ok=True)
        self.temporary = posixpath.join(parent, f"_{posixpath.basename(self.path)}.{uuid.uuid4().hex[:8]}.inprogress")
        self.file = self.fs.open(self.temporary, "wb") if binary else self.fs.open(self.temporary, "w", encoding="utf-8")

    def write(self, text: str) -> int:
        return self.file.write(text)

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        with discarded_on_failure(self.fs, self.temporary):  # closing (flushing) can fail too: a full disk
            self.file.close()
            if kind is None:
                self.fs.mv(self.temporary, self.path)
            else:
                self.fs.rm_file(self.temporary)
        return False
