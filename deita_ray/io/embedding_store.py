"""Embeddings on disk: float16/float32 `.npy` shards plus a Parquet index keyed by sample id.

Layout under `<out>/embeddings/`: `vectors/emb-<hash>.npy` (one shard per batch, only rows that
have a vector) and `index/*.parquet` (`id`, `shard`, `row`, `embed_truncated`, `embed_tokens`,
`embed_reason`). Shards are named from their ids, so a retried batch overwrites rather than
doubles. `EmbeddingStore.gather` reads arbitrary rows through memory maps: the selector streams
candidates in score order without ever loading the pool's embeddings.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deita_ray.io import fs

INDEX_COLUMNS = ["id", "shard", "row", "embed_truncated", "embed_tokens", "embed_reason"]
COUNTED = ["embed_computed_tokens", "embed_flops"]  # what the row cost (padding included; model FLOPs), when known


def write_vector_shard(table: pa.Table, vectors_dir: str) -> pa.Table:
    """After the embed stage: vectors to a .npy shard, the table to index rows."""
    column = table.column("embedding").combine_chunks()
    valid = np.asarray(column.is_valid())
    ids = table.column("id").to_pylist()
    shard = None
    rows = np.full(len(ids), -1, dtype=np.int64)
    if valid.any():
        dim = column.type.list_size
        values = column.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False)
        vectors = values.reshape(-1, dim)
        keys = ids
        if "position" in table.column_names:  # (id, source, position): unique even where an id repeats
            keys = [f"{i}\1{s}\1{p}" for i, s, p in zip(ids, table.column("source").to_pylist(),
                                                         table.column("position").to_pylist())]
        shard = f"emb-{hashlib.sha1(chr(0).join(keys).encode('utf-8', 'surrogatepass')).hexdigest()[:20]}.npy"
        buffer = io.BytesIO()
        np.save(buffer, vectors)
        fs.write_bytes(posixpath.join(vectors_dir, shard), buffer.getvalue())  # atomic, like the Parquet parts
        rows[valid] = np.arange(int(valid.sum()))
    shards = pa.array([shard if ok else None for ok in valid], type=pa.string())
    # source/position travel with the id: resume and duplicate checks key rows by (id, source, position).
    keep = ["id"] + [c for c in ("source", "position") if c in table.column_names]
    out = table.select(keep + ["embed_truncated", "embed_tokens", "embed_reason"]
                       + [c for c in COUNTED if c in table.column_names])
    return out.append_column("shard", shards).append_column("row", pa.array(rows))


def shard_dimensions(vectors_dir: str) -> dict[int, int]:
    """{dimension: shards} over every shard (only the .npy headers are read)."""
    dims: dict[int, int] = {}
    filesystem, _ = fs.url_to_fs(vectors_dir)
    for path in fs.list_files(vectors_dir, ".npy"):
        with filesystem.open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape = read_header(f)[0]
        dims[int(shape[1])] = dims.get(int(shape[1]), 0) + 1
    return dims


def check_one_dimension(vectors_dir: str) -> None:
    dims = shard_dimensions(vectors_dir)
    if len(dims) > 1:
        raise ValueError(f"{vectors_dir} mixes vectors of {' and '.join(f'{d}-d' for d in sorted(dims))}: two embedding "
                         "models wrote into one store; embed again with --overwrite")


class EmbeddingStore:
    def __init__(self, directory: str):
        from deita_ray.io.writer import list_parts

        self.directory = directory
        if not list_parts(posixpath.join(directory, "index")):
            raise FileNotFoundError(f"no embedding index under {directory}/index (run `deita-ray embed` first)")
        self._index: pa.Table | None = None
        self._maps: dict[str, tuple] = {}
        self._cache_dir = None
        self._dim: int | None = None

    @property
    def index(self) -> pa.Table:
        """The whole id -> (shard, row) index, read on first use (O(pool) memory: the selector
        streams it through Ray Data instead, see select/candidates.py)."""
        if self._index is None:
            from deita_ray.io.writer import read_columns

            self._index = read_columns(posixpath.join(self.directory, "index"), INDEX_COLUMNS)
        return self._index

    def _shard(self, name: str) -> tuple[str, int, np.dtype, tuple]:
        """(local path, data offset, dtype, shape) of a shard: only its .npy header is read."""
        if name not in self._maps:
            from fsspec.implementations.local import LocalFileSystem

            filesystem, path = fs.url_to_fs(posixpath.join(self.directory, "vectors", name))
            if isinstance(filesystem, LocalFileSystem):
                local = path
            else:  # object stores: fetch the shard once into a local cache
                self._cache_dir = self._cache_dir or tempfile.mkdtemp(prefix="deita-emb-")
                local = os.path.join(self._cache_dir, name)
                filesystem.get(path, local)
            with open(local, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read_header(f)
                if fortran or len(shape) != 2:
                    raise ValueError(f"{name}: expected a C-ordered 2-d array, got shape {shape}")
                if self._dim is not None and shape[1] != self._dim:
                    raise ValueError(f"{self.directory} mixes {self._dim}-d and {shape[1]}-d vectors ({name}): two "
                                     "embedding models wrote into one store; embed again with --overwrite")
                self._maps[name] = (local, f.tell(), np.dtype(dtype), shape)
        return self._maps[name]

    @property
    def dim(self) -> int:
        if self._dim is None:
            filesystem, path = fs.url_to_fs(posixpath.join(self.directory, "vectors"))
            shards = sorted(p for p in filesystem.ls(path, detail=False) if p.endswith(".npy")) \
                if filesystem.exists(path) else []
            if not shards:
                raise FileNotFoundError(f"no vector shards under {self.directory}/vectors (every row failed to embed?)")
            self._dim = int(self._shard(posixpath.basename(shards[0]))[3][1])
        return self._dim

    def gather(self, shards: list[str], rows: np.ndarray) -> np.ndarray:
        """float32 vectors for (shard, row) pairs, in the order given.

        Rows are read with pread, not through a memory map: a mapped row faults in the pages
        around it too (measured: ~40 KB per random row), so the reader's resident memory would
        grow with every shard touched. pread costs the row's bytes only."""
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        by_shard: dict[str, list[int]] = {}
        for i, name in enumerate(shards):
            by_shard.setdefault(name, []).append(i)
        for name, where in by_shard.items():
            local, offset, dtype, shape = self._shard(name)
            row_bytes = dtype.itemsize * shape[1]
            fd = os.open(local, os.O_RDONLY)
            try:
                for i in where:
                    row = int(rows[i])
                    if not 0 <= row < shape[0]:
                        raise IndexError(f"{name}: row {row} outside 0..{shape[0] - 1}")
                    out[i] = np.frombuffer(os.pread(fd, row_bytes, offset + row * row_bytes), dtype=dtype)
            finally:
                os.close(fd)
        return out

    def vectors(self, ids: list[str] | None = None) -> tuple[list[str], np.ndarray]:
        """(ids, float32 vectors): every stored vector, or those of `ids` in that order (KeyError for an id with
        none). O(rows x dim) memory: for a pool that fits in RAM; the selector streams instead."""
        index = self.index.filter(pc.is_valid(self.index.column("shard")))
        where = {sid: k for k, sid in enumerate(index.column("id").to_pylist())}
        if ids is None:
            ids = index.column("id").to_pylist()
        missing = [sid for sid in ids if sid not in where]
        if missing:
            raise KeyError(f"no vector for {len(missing):,} id(s), e.g. {missing[0]!r}")
        take = np.asarray([where[sid] for sid in ids], dtype=np.int64)
        shards, rows = index.column("shard").to_pylist(), index.column("row").to_numpy()
        return list(ids), self.gather([shards[k] for k in take], rows[take])

    def to_parquet(self, path: str, rows_per_part: int = 65536) -> int:
        """Every vector as one Parquet file (`id`, `embedding`: a fixed-size list of the stored dtype), opened by
        pandas, Polars or `datasets.Dataset.from_parquet` without deita_ray; written whole or not at all."""
        import pyarrow.parquet as pq

        ids = self.index.filter(pc.is_valid(self.index.column("shard"))).column("id").to_pylist()
        dtype = self._shard(self.index.column("shard").drop_null()[0].as_py())[2] if ids else np.dtype("float32")
        schema = pa.schema([("id", pa.string()), ("embedding", pa.list_(pa.from_numpy_dtype(dtype), self.dim))])
        with fs.open_for_write(path, binary=True) as target, pq.ParquetWriter(target.file, schema) as writer:
            for start in range(0, len(ids), rows_per_part):
                chunk, vectors = self.vectors(ids[start:start + rows_per_part])
                values = pa.array(vectors.astype(dtype).reshape(-1))
                writer.write_table(pa.table({"id": chunk, "embedding": pa.FixedSizeListArray.from_arrays(
                    values, self.dim)}, schema=schema))
        return len(ids)


def load_embeddings(directory: str, ids: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """The vectors `deita-ray embed` stored under `directory` (OUT/embeddings): (ids, float32 array)."""
    return EmbeddingStore(directory).vectors(ids)
