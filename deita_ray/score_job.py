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
from dataclasses import asdict, fields
from typing import Literal

from deita_ray.configlib import ConfigError, check, option, section
from deita_ray.engines.config import EngineOptions, LLMConfig
from deita_ray.runner.options import ActorResources, ReadOptions, auto_gpus, check_gpus
from deita_ray.runner.layout import LAYOUTS
from deita_ray.runner.map_job import ActorStep, StageSpec, format_summary, run_job  # noqa: F401 (re-export)
from deita_ray.stages.score import ScoreStage, finalize_scores


@section
class ScoreOptions(ActorResources):
    aggregation: Literal["sum", "mean", "last"] = option(
        "sum", "evol score over turns: sum of complexity x quality (the paper), mean, or last turn only")


@section
class ScoreSection(ScoreOptions, EngineOptions):
    """The `score:` section of a run config and the flags of `deita-ray score`: every option once."""

    complexity_model: str = option("tiny:scorer-complexity", "Deita complexity scorer (model directory or hub name)")
    quality_model: str = option("tiny:scorer-quality", "Deita quality scorer (model directory or hub name)")

    def __post_init__(self):
        check(self)
        if self.engine in ("sentence-transformers", "http"):
            raise ConfigError(f"engine must be one of hf, vllm, fake for scoring, got {self.engine!r}")
        check_gpus(self.engine, self.tensor_parallel_size, self.gpus_per_replica, "")

    def engine_config(self, model: str) -> LLMConfig:
        return LLMConfig(model=model, **{f.name: getattr(self, f.name) for f in fields(EngineOptions)})

    def job(self, inputs: list[str], output: str, complexity_model: str | None = None, quality_model: str | None = None,
            **job_options) -> "ScoreJobConfig":
        """The job config of this section (model names resolved by the caller where needed)."""
        options = {f.name: getattr(self, f.name) for f in fields(ScoreOptions)}
        return ScoreJobConfig(inputs=inputs, output=output,
                              complexity=self.engine_config(complexity_model or self.complexity_model),
                              quality=self.engine_config(quality_model or self.quality_model), **options, **job_options)


@section
class ScoreJobConfig(ScoreOptions, ReadOptions):
    """What `score_pool` runs: inputs, output, the two scorers' engine configs and the shared options."""

    inputs: list[str]
    output: str
    complexity: LLMConfig
    quality: LLMConfig
    overwrite: bool = False
    resume: bool = False             # keep finished parts of an interrupted run and do only the rest

    def __post_init__(self):
        check(self)


def score_spec(config: ScoreJobConfig) -> StageSpec:
    resources = dict(option="score", replicas=config.replicas, cpus=config.cpus_per_replica,
                     gpus=config.gpus_per_replica, batch_rows=config.batch_rows)
    return StageSpec(
        layout=LAYOUTS["score"],
        actors=[ActorStep(ScoreStage, (kind, engine), **resources,
                          auto_gpus=auto_gpus(engine.engine, engine.tensor_parallel_size, engine.device))
                for kind, engine in (("complexity", config.complexity), ("quality", config.quality))],
        post=[(finalize_scores, {"aggregation": config.aggregation})],
        sums={"complexity_tokens": "complexity_tokens", "quality_tokens": "quality_tokens",
              "complexity_flops": "complexity_flops", "quality_flops": "quality_flops",
              "rows_truncated": "truncated", "rows_without_score": "nulls:evol_score"},
        tokens=("complexity_tokens", "quality_tokens"), flops=("complexity_flops", "quality_flops"),
        flagged="rows_truncated", noun="scored",
        config=json.loads(json.dumps(asdict(config), default=str)),
    )


def _run(config, mode: str, ray_address: str | None = None, stages=None) -> dict:
    return run_job(score_spec(config), config, mode, ray_address, stages)


def score_pool(config: ScoreJobConfig, ray_address: str | None = None) -> dict:
    """Run the scoring job on Ray (local embedded Ray unless an address/RAY_ADDRESS is given)."""
    return _run(config, "ray", ray_address)


def score_local(config: ScoreJobConfig, complexity: ScoreStage | None = None, quality: ScoreStage | None = None) -> dict:
    """The same job in this process, no Ray: the reference the Ray path is tested against."""
    stages = [complexity, quality] if complexity is not None and quality is not None else None
    return _run(config, "local", stages=stages)
