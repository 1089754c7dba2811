"""Embed a pool on Ray Data: read -> embedding actors -> .npy shards + id index.

    from deita_ray.embed_job import EmbedJobConfig, embed_pool
    embed_pool(EmbedJobConfig(inputs=["out/scored"], output="out/", embedder=EmbedderConfig(model=...)))

Inputs are any pool the reader accepts; the scored Parquet of `deita-ray score` is one (its ids
carry over). Outputs under `<output>/`: `embeddings/` (see io/embedding_store.py),
`embed_quarantine/`, `embed_read_stats/` and `embed_summary.json`.
"""

from __future__ import annotations

import posixpath
import time
from dataclasses import asdict, dataclass, field


from deita_ray.engines.embedders import EmbedderConfig
from deita_ray.io.embedding_store import write_vector_shard
from deita_ray.io.reader import plan_reads
from deita_ray.io.writer import sum_columns
from deita_ray.job_io import (prepare_output, start_stage, read_and_quarantine, reconcile, stage_paths, write_json,
                              write_part_atomic)
from deita_ray.stages.embed import EmbedStage


@dataclass
class EmbedJobConfig:
    inputs: list[str]
    output: str
    embedder: EmbedderConfig
    template: str = "auto"           # vicuna (causal LMs) | plain (sentence-transformers) | auto
    out_dtype: str = "float16"
    input_format: str | None = None
    replicas: int = 1
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    batch_rows: int = 256
    block_rows: int = 1024
    chunk_bytes: int = 16 << 20
    overwrite: bool = False
    resume: bool = False
    extra_ray_init: dict = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.embedder, dict):
            self.embedder = EmbedderConfig(**self.embedder)
        if self.replicas < 1 or self.batch_rows < 1 or self.block_rows < 1:
            raise ValueError("replicas, batch_rows and block_rows must be >= 1")


def _vectors_dir(paths: dict[str, str]) -> str:
    return posixpath.join(paths["out"], "vectors")


def embed_pool(config: EmbedJobConfig, ray_address: str | None = None) -> dict:
    import ray

    paths, ds = start_stage(config, "embed", "embedded", ray_address)  # fails fast on bad paths
    started = time.time()
    ds = ds.map_batches(EmbedStage, fn_constructor_args=(config.embedder, config.template, config.out_dtype),
                        batch_size=config.batch_rows, batch_format="pyarrow",
                        compute=ray.data.ActorPoolStrategy(size=config.replicas),
                        num_cpus=config.cpus_per_replica, num_gpus=config.gpus_per_replica)
    ds = ds.map_batches(write_vector_shard, fn_kwargs={"vectors_dir": _vectors_dir(paths)}, batch_format="pyarrow",
                        num_cpus=0.25)
    ds.map_batches(write_part_atomic, fn_kwargs={"directory": posixpath.join(paths["out"], "index")}, batch_size=None,
                   batch_format="pyarrow", num_cpus=0.25).materialize()
    return summarize(config, time.time() - started)


def embed_local(config: EmbedJobConfig, stage: EmbedStage | None = None) -> dict:
    """The same job in this process (tests, small pools)."""
    tasks = plan_reads(config.inputs, config.input_format, config.chunk_bytes)
    paths = stage_paths(config.output, "embed")
    prepare_output(paths, config.overwrite, config.resume)
    started = time.time()
    stage = stage or EmbedStage(config.embedder, config.template, config.out_dtype)
    for task in tasks:
        for good in read_and_quarantine(task, paths, config.block_rows):
            for offset in range(0, good.num_rows, config.batch_rows):
                index = write_vector_shard(stage(good.slice(offset, config.batch_rows)), _vectors_dir(paths))
                write_part_atomic(index, posixpath.join(paths["out"], "index"))
    return summarize(config, time.time() - started)


def summarize(config: EmbedJobConfig, seconds: float) -> dict:
    paths = stage_paths(config.output, "embed")
    rows, totals = sum_columns(posixpath.join(paths["out"], "index"), {
        "tokens": "embed_tokens", "truncated": "embed_truncated", "no_vector": "nulls:shard"})
    counts = reconcile(paths, rows)
    summary = {
        "rows_in": counts["rows_in"], "rows_embedded": rows - totals["no_vector"],
        "rows_without_embedding": totals["no_vector"],
        "rows_out": rows, "rows_quarantined": counts["rows_quarantined"], "reconciled": counts["reconciled"],
        "rows_truncated": totals["truncated"],
        "tokens": totals["tokens"], "seconds": round(seconds, 3),
        "samples_per_s": round(rows / seconds, 2) if seconds else None,
        "quarantine_reasons": counts["quarantine_reasons"], "output": paths["out"],
        "config": asdict(config),
    }
    write_json(posixpath.join(config.output, "embed_summary.json"), summary)
    return summary


def format_summary(summary: dict) -> str:
    ok = "(= embedded rows + quarantined)" if summary["reconciled"] else "!! DOES NOT EQUAL rows out + quarantined"
    return "\n".join([
        f"rows in      {summary['rows_in']:>10,}   {ok}",
        f"embedded     {summary['rows_embedded']:>10,}   (truncated: {summary['rows_truncated']:,}; "
        f"without a vector: {summary['rows_without_embedding']:,})",
        f"quarantined  {summary['rows_quarantined']:>10,}",
        f"throughput   {summary['samples_per_s'] or 0:>10,.1f} samples/s ({summary['seconds']:.1f} s)",
        f"output       {summary['output']}/",
    ])
