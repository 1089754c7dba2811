"""Judge evolved chains: evolved Parquet parts -> judge actors -> Parquet, on the runner.

    from deita_ray.judge_job import JudgeSection, judge_pool
    summary = judge_pool(JudgeSection(model="models/judge").job(["out/evolved"], "out/"))

The CLI (`deita-ray judge EVOLVED -o OUT --model M`) builds the config. Each chain is judged in one
prompt at temperature 0 (stages/judge.py says how the format is obtained per engine). Outputs:
`<output>/judged/*.parquet` (every chain, with `judge_status` valid | invalid | skipped),
`<output>/judge_invalid/` (the invalid judgements alone: raw text and reason, never guessed),
`<output>/judge_quarantine/` (chains the engine failed on), `<output>/judge_summary.json`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from deita_ray.configlib import ConfigError, check, option, section
from deita_ray.engines.config import EngineOptions, LLMConfig, ServingOptions
from deita_ray.evolve_job import GenerationOptions
from deita_ray.runner.layout import LAYOUTS, StageLayout, judge_invalid_dir
from deita_ray.runner.map_job import ActorStep, StageSpec, format_summary, run_job, write_part_atomic  # noqa: F401
from deita_ray.runner.options import ReadOptions, auto_gpus, check_gpus
from deita_ray.stages.judge import INVALID, SKIPPED, VALID, JudgeStage, resolve_method


@section
class JudgeOptions(GenerationOptions):
    method: Literal["auto", "regex", "teacher-force", "none"] = option(
        "auto", "how judgements keep their format: regex (vllm structured outputs), teacher-force (the format is "
                "written, the model picks each digit from its logits; hf, fake, vllm) or none (free text and the "
                "tolerant parser; a hosted judge). auto: regex on vllm, none on http, else teacher-force")
    max_new_tokens: int = option(512, "tokens a free-text judgement may take (method none)", ge=1)


@section
class JudgeSection(JudgeOptions, ServingOptions, EngineOptions):
    """The flags of `deita-ray judge` (and a `judge:` section of a recipe): every option once."""

    model: str = option(help="the judge model: a model directory or hub name (hf, vllm), or the served model's name "
                             "(http)")

    def __post_init__(self):
        check(self)
        if self.engine == "sentence-transformers":
            raise ConfigError("engine must be one of hf, vllm, http, fake for judging, got 'sentence-transformers'")
        check_gpus(self.engine, self.tensor_parallel_size, self.gpus_per_replica, "")
        try:
            resolve_method(self.method, self.engine)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def engine_config(self, model: str | None = None) -> LLMConfig:
        engine = {f.name: getattr(self, f.name) for f in fields(EngineOptions) + fields(ServingOptions)}
        return LLMConfig(model=model or self.model, **engine)

    def job(self, inputs: list[str], output: str, model: str | None = None, **job_options) -> "JudgeJobConfig":
        options = {f.name: getattr(self, f.name) for f in fields(JudgeOptions)}
        return JudgeJobConfig(inputs=inputs, output=output, judge=self.engine_config(model), **options, **job_options)


@section
class JudgeJobConfig(JudgeOptions, ReadOptions):
    """What `judge_pool` runs."""

    inputs: list[str]
    output: str
    judge: LLMConfig
    overwrite: bool = False
    resume: bool = False

    def __post_init__(self):
        check(self)


def write_judged(table: pa.Table, layout: StageLayout) -> int:
    """The invalid judgements to their own table first (same part name), then every chain as the
    stage's part (the completion record: a resumed run that finds it skips the chains)."""
    invalid = table.filter(pc.equal(table.column("judge_status"), INVALID))
    if invalid.num_rows:
        write_part_atomic(invalid.select(["id", "mode", "variants", "judgement", "judge_reason", "judge_method"]),
                          judge_invalid_dir(layout.output))
    return write_part_atomic(table, layout.parts)


def judged_well(summary: dict) -> int:
    """Chains the judge did its work on: valid judgements, and chains with nothing to rank."""
    status = summary["counts"].get("judge_status", {})
    return status.get(VALID, 0) + status.get(SKIPPED, 0)


def judge_spec(config: JudgeJobConfig) -> StageSpec:
    return StageSpec(
        layout=LAYOUTS["judge"],
        actors=[ActorStep(JudgeStage, (config.judge, config.method, config.max_new_tokens), option="judge",
                          replicas=config.replicas, cpus=config.cpus_per_replica, gpus=config.gpus_per_replica,
                          auto_gpus=auto_gpus(config.judge.engine, config.judge.tensor_parallel_size,
                                              config.judge.device),
                          batch_rows=config.batch_rows, concurrency=config.concurrency(config.judge.engine))],
        writer=write_judged, source="parts",
        sums={"judge_tokens": "judge_tokens", "judge_flops": "judge_flops"}, tokens=("judge_tokens",),
        flops=("judge_flops",),
        value_counts=("judge_status",), flagged=("judge_status", INVALID), noun="judged",
        succeeded=judged_well,
        config=json.loads(json.dumps(asdict(config), default=str)),
    )


def _run(config, mode: str, ray_address: str | None = None, stages=None) -> dict:
    return run_job(judge_spec(config), config, mode, ray_address, stages)


def judge_pool(config: JudgeJobConfig, ray_address: str | None = None) -> dict:
    return _run(config, "ray", ray_address)


def judge_local(config: JudgeJobConfig, stage: JudgeStage | None = None) -> dict:
    return _run(config, "local", stages=[stage] if stage is not None else None)
