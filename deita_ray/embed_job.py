"""Embed a pool: read -> embedding actors -> .npy shards + id index, on the runner.

    from deita_ray.embed_job import EmbedJobConfig, embed_pool
    embed_pool(EmbedJobConfig(inputs=["out/scored"], output="out/", embedder=EmbedderConfig(model=...)))

Inputs are any pool the reader accepts; the scored Parquet of `deita-ray score` is one (its ids
carry over). Outputs under `<output>/`: `embeddings/` (see io/embedding_store.py),
`embed_quarantine/` (rows without a vector, with the reason), `embed_read_stats/` and `embed_summary.json`.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import asdict, dataclass, field

from deita_ray.engines.config import EmbedderConfig
from deita_ray.io.embedding_store import check_one_dimension, write_vector_shard
from deita_ray.runner.layout import LAYOUTS, StageLayout
from deita_ray.runner.map_job import ActorStep, StageSpec, format_summary, run_map_job, write_part_atomic  # noqa: F401
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


def write_embeddings(table, layout: StageLayout) -> int:
    """Vectors to a .npy shard, then the index rows as the stage's atomic part (the completion record)."""
    index = write_vector_shard(table, posixpath.join(layout.out, "vectors"))
    return write_part_atomic(index, layout.parts)


def check_store(layout: StageLayout) -> None:
    check_one_dimension(posixpath.join(layout.out, "vectors"))


def embed_spec(config: EmbedJobConfig) -> StageSpec:
    return StageSpec(
        layout=LAYOUTS["embed"],
        actors=[ActorStep(EmbedStage, (config.embedder, config.template, config.out_dtype), option="embed",
                          replicas=config.replicas, cpus=config.cpus_per_replica, gpus=config.gpus_per_replica,
                          batch_rows=config.batch_rows)],
        writer=write_embeddings, check=check_store,
        sums={"embed_tokens": "embed_tokens", "rows_truncated": "embed_truncated"},
        tokens=("embed_tokens",), flagged="rows_truncated", noun="embedded",
        config=json.loads(json.dumps(asdict(config), default=str)),
    )


def _run(config: EmbedJobConfig, mode: str, ray_address: str | None = None, stages=None) -> dict:
    return run_map_job(embed_spec(config), config.inputs, config.output, mode=mode, input_format=config.input_format,
                       chunk_bytes=config.chunk_bytes, read_block_rows=config.block_rows, overwrite=config.overwrite,
                       resume=config.resume, ray_address=ray_address, stages=stages)


def embed_pool(config: EmbedJobConfig, ray_address: str | None = None) -> dict:
    return _run(config, "ray", ray_address)


def embed_local(config: EmbedJobConfig, stage: EmbedStage | None = None) -> dict:
    """The same job in this process (tests, small pools)."""
    return _run(config, "local", stages=[stage] if stage is not None else None)
