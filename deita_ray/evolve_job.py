"""Evolve seeds: read -> evolution actors (all rounds of each chain) -> Parquet, on the runner.

    from deita_ray.evolve_job import EvolveSection, evolve_pool
    config = EvolveSection(model="models/generator", mode="complexity").job(["seeds.jsonl"], "out/")
    summary = evolve_pool(config)                   # or evolve_local(config): same job, no Ray

The CLI (`deita-ray evolve SEEDS -o OUT --model M --mode complexity|quality`) builds the config.
Seeds are read like pools (ShareGPT, Alpaca, Self-Instruct seed tasks, messages; JSON/JSONL/Parquet;
local or object store); bad rows go to quarantine. Outputs: `<output>/evolved/*.parquet` (one row
per seed with its chain), `<output>/evolve_quarantine/`, `<output>/evolve_summary.json`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Literal

from deita_ray.configlib import ConfigError, check, option, section
from deita_ray.engines.config import EngineOptions, LLMConfig, Sampling, ServingOptions
from deita_ray.prompts import evol
from deita_ray.runner.layout import LAYOUTS
from deita_ray.runner.map_job import ActorStep, StageSpec, format_summary, run_job  # noqa: F401 (re-export)
from deita_ray.runner.options import ActorResources, ReadOptions, auto_gpus, check_gpus
from deita_ray.stages.evolve import EvolveStage

ASYNC_ENGINES = ("vllm", "http")  # engines with `submit`: several batches per actor keep them busy


@section
class GenerationOptions(ActorResources):
    """What every generating stage shares."""

    batches_in_flight: int = option(4, "batches one actor works on at once, sharing its engine (vllm, http; the "
                                       "other engines take one at a time)", ge=1)

    def concurrency(self, engine: str) -> int:
        return self.batches_in_flight if engine in ASYNC_ENGINES else 1


@section
class EvolveOptions(GenerationOptions):
    mode: Literal["complexity", "quality"] = option(
        "complexity", "complexity: rewrite the instruction (Evol Complexity); quality: rewrite the response to the "
                      "seed instruction (Evol Quality)")
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

    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens)


@section
class EvolveSection(EvolveOptions, ServingOptions, EngineOptions):
    """The flags of `deita-ray evolve` (and an `evolve:` section of a recipe): every option once."""

    model: str = option(help="the rewriting model: a model directory or hub name (hf, vllm), or the served model's "
                             "name (http)")

    def __post_init__(self):
        check(self)
        if self.engine == "sentence-transformers":
            raise ConfigError("engine must be one of hf, vllm, http, fake for evolution, got 'sentence-transformers'")
        check_gpus(self.engine, self.tensor_parallel_size, self.gpus_per_replica, "")

    def engine_config(self, model: str | None = None) -> LLMConfig:
        engine = {f.name: getattr(self, f.name) for f in fields(EngineOptions) + fields(ServingOptions)}
        return LLMConfig(model=model or self.model, **engine)

    def job(self, inputs: list[str], output: str, model: str | None = None, **job_options) -> "EvolveJobConfig":
        options = {f.name: getattr(self, f.name) for f in fields(EvolveOptions)}
        return EvolveJobConfig(inputs=inputs, output=output, generator=self.engine_config(model), **options,
                               **job_options)


@section
class EvolveJobConfig(EvolveOptions, ReadOptions):
    """What `evolve_pool` runs."""

    inputs: list[str]
    output: str
    generator: LLMConfig
    overwrite: bool = False
    resume: bool = False

    def __post_init__(self):
        check(self)


def evolve_spec(config: EvolveJobConfig) -> StageSpec:
    return StageSpec(
        layout=LAYOUTS["evolve"],
        actors=[ActorStep(EvolveStage, (config.mode, config.generator, config.sampling(), config.rounds, config.seed,
                                        None, config.retries, config.wizardlm_rules),
                          option="evolve", replicas=config.replicas, cpus=config.cpus_per_replica,
                          gpus=config.gpus_per_replica, batch_rows=config.batch_rows,
                          auto_gpus=auto_gpus(config.generator.engine, config.generator.tensor_parallel_size,
                                              config.generator.device),
                          concurrency=config.concurrency(config.generator.engine))],
        sums={"generated_tokens": "generated_tokens", "variants_generated": "rounds_completed",
              "generation_flops": "generation_flops"},
        tokens=("generated_tokens",), flops=("generation_flops",), value_counts=("stop_rule",), noun="evolved",
        succeeded=lambda summary: summary["totals"]["variants_generated"],  # chains with no new variant failed
        config=json.loads(json.dumps(asdict(config), default=str)),
    )


def _run(config, mode: str, ray_address: str | None = None, stages=None) -> dict:
    return run_job(evolve_spec(config), config, mode, ray_address, stages)


def evolve_pool(config: EvolveJobConfig, ray_address: str | None = None) -> dict:
    """Run the evolution job on Ray (local embedded Ray unless an address/RAY_ADDRESS is given)."""
    return _run(config, "ray", ray_address)


def evolve_local(config: EvolveJobConfig, stage: EvolveStage | None = None) -> dict:
    """The same job in this process, no Ray: the reference the Ray path is tested against."""
    return _run(config, "local", stages=[stage] if stage is not None else None)
