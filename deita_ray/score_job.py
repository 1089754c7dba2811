"""Score a pool: read -> complexity actors -> quality actors -> evol score -> Parquet, on the runner.

    from deita_ray.score_job import ScoreJobConfig, score_pool
    summary = score_pool(ScoreJobConfig(inputs=["pool/"], output="out/", complexity=..., quality=...))

The CLI (`deita-ray score`) builds the config. Read tasks stream Arrow blocks to one actor pool
per scorer (one engine replica per actor); the driver only plans the reads and, at the end,
reads Parquet footers and a few flag columns for the summary: it never holds the pool.
Outputs: `<output>/scored/*.parquet`, `<output>/quarantine/*.parquet`, `<output>/read_stats/` (rows
read per task, for reconciliation) and `<output>/score_summary.json`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from deita_ray.engines.base import EngineConfig
from deita_ray.prompts import AGGREGATIONS
from deita_ray.runner.layout import LAYOUTS
from deita_ray.runner.map_job import ActorStep, StageSpec, format_summary, run_map_job  # noqa: F401 (re-export)
from deita_ray.stages.score import ScoreStage, finalize_scores


@dataclass
class ScoreJobConfig:
    inputs: list[str]
    output: str
    complexity: EngineConfig
    quality: EngineConfig
    input_format: str | None = None  # sharegpt | alpaca | messages; None: detect per file
    aggregation: str = "sum"         # evol score over turns: sum (paper) | mean | last
    replicas: int = 1                # actors (engine replicas) per scorer
    cpus_per_replica: float = 1.0    # sized down to fit on a local Ray (see runner/session.py)
    gpus_per_replica: float = 0.0    # = tensor_parallel_size for vLLM on GPUs
    batch_rows: int = 256            # samples per Ray Data batch handed to an actor
    block_rows: int = 1024           # samples per block produced by a read task
    chunk_bytes: int = 16 << 20      # JSONL files are split into read tasks of this many bytes
    overwrite: bool = False
    resume: bool = False             # keep finished parts of an interrupted run and do only the rest
    extra_ray_init: dict = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.complexity, dict):
            self.complexity = EngineConfig(**self.complexity)
        if isinstance(self.quality, dict):
            self.quality = EngineConfig(**self.quality)
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if self.replicas < 1 or self.batch_rows < 1 or self.block_rows < 1:
            raise ValueError("replicas, batch_rows and block_rows must be >= 1")
        if self.cpus_per_replica < 0 or self.gpus_per_replica < 0:
            raise ValueError("cpus_per_replica and gpus_per_replica must be >= 0")


def score_spec(config: ScoreJobConfig) -> StageSpec:
    resources = dict(option="score", replicas=config.replicas, cpus=config.cpus_per_replica,
                     gpus=config.gpus_per_replica, batch_rows=config.batch_rows)
    return StageSpec(
        layout=LAYOUTS["score"],
        actors=[ActorStep(ScoreStage, (kind, engine), **resources)
                for kind, engine in (("complexity", config.complexity), ("quality", config.quality))],
        post=[(finalize_scores, {"aggregation": config.aggregation})],
        sums={"complexity_tokens": "complexity_tokens", "quality_tokens": "quality_tokens",
              "rows_truncated": "truncated", "rows_without_score": "nulls:evol_score"},
        tokens=("complexity_tokens", "quality_tokens"), flagged="rows_truncated", noun="scored",
        config=json.loads(json.dumps(asdict(config), default=str)),
    )


def _run(config: ScoreJobConfig, mode: str, ray_address: str | None = None, stages=None) -> dict:
    return run_map_job(score_spec(config), config.inputs, config.output, mode=mode, input_format=config.input_format,
                       chunk_bytes=config.chunk_bytes, read_block_rows=config.block_rows, overwrite=config.overwrite,
                       resume=config.resume, ray_address=ray_address, stages=stages)


def score_pool(config: ScoreJobConfig, ray_address: str | None = None) -> dict:
    """Run the scoring job on Ray (local embedded Ray unless an address/RAY_ADDRESS is given)."""
    return _run(config, "ray", ray_address)


def score_local(config: ScoreJobConfig, complexity: ScoreStage | None = None, quality: ScoreStage | None = None) -> dict:
    """The same job in this process, no Ray: the reference the Ray path is tested against."""
    stages = [complexity, quality] if complexity is not None and quality is not None else None
    return _run(config, "local", stages=stages)
