"""What a step is: one config class, and either a stage spec (map steps, run over Ray Data) or a run function.

    from deita_ray.steps import STEPS
    step = STEPS["score"]
    summary = step.execute(step.config(inputs=["pool/"], output="out/"), mode="local")

Everything around a step is generated from its StepType: its `deita-ray` subcommand (flags from the config's
fields, cli.py), its section of a run config (recipe/config.py), the models checked before Ray starts
(`config.models()`), the resources checked against the cluster (`config.requests()`), the per-step table
(every summary carries runner/summary.COMMON_KEYS). Adding a map step: a stage (stages/), a step file holding its
config and `spec`, and one line in the registry (steps/__init__.py).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Callable, ClassVar

from deita_ray.runner.options import auto_gpus
from deita_ray.runner.session import ActorRequest
from deita_ray.runner.spec import ActorStep


def snapshot(config) -> dict:
    """A config as JSON values (recorded in its summary)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


class RunsModels:
    """What a step config that runs models on actor pools has (with EngineOptions and ActorResources mixed in):
    the models it loads (checked before Ray starts) and what its actors ask of the cluster."""

    model_keys: ClassVar[tuple[str, ...]] = ("model",)
    pools: ClassVar[int] = 1  # actor pools of this step that run at once

    def engine_name(self) -> str:
        return self.engine

    def models(self) -> list[tuple[str, str, str]]:
        """(field, model, engine) of every model the step loads."""
        return [(name, getattr(self, name), self.engine_name()) for name in self.model_keys]

    def auto_gpus(self) -> float:
        return auto_gpus(self.engine_name(), self.tensor_parallel_size)

    def requests(self, option: str) -> list[ActorRequest]:
        request = ActorRequest(option, self.replicas, self.cpus_per_replica, self.gpus_per_replica, self.auto_gpus())
        return [request] * self.pools

    def actor(self, factory: type, args: tuple, option: str, concurrency: int = 1) -> ActorStep:
        return ActorStep(factory, args, option=option, replicas=self.replicas, cpus=self.cpus_per_replica,
                         gpus=self.gpus_per_replica, auto_gpus=self.auto_gpus(), batch_rows=self.batch_rows,
                         concurrency=concurrency)


# The config fields that name local paths: made absolute before a step runs (fs.absolute), since its Ray workers
# may run in another directory (a cluster joined with RAY_ADDRESS starts them where the head was started). Models
# only when they are there: "org/name" is a hub name.
PATH_FIELDS = ("inputs", "output", "run_dir", "scored", "embeddings", "data", "questions", "evals")
MODEL_FIELDS = ("model", "ref_model", "complexity_model", "quality_model", "judge_model", "deepspeed")


def absolute_paths(config):
    """`config` with its local paths absolute (a copy; the config given is left as it was)."""
    from deita_ray.io import fs

    def fix(name, value):
        if isinstance(value, list):
            return [fix(name, v) for v in value]
        if not isinstance(value, str):
            return value
        return fs.absolute_model(value) if name in MODEL_FIELDS else fs.absolute(value)

    names = {f.name for f in dataclasses.fields(config)} & set(PATH_FIELDS + MODEL_FIELDS)
    changed = {n: fix(n, getattr(config, n)) for n in names}
    return dataclasses.replace(config, **{n: v for n, v in changed.items() if v != getattr(config, n)})


@dataclass(frozen=True)
class StepType:
    name: str                     # the registry key, a run config's section, the summary's stem
    config: type                  # its one config class (configlib.section)
    help: str                     # one line for `deita-ray --help`
    description: str              # its subcommand's description
    command: tuple[str, ...] = ()  # its subcommand (default: (name,)), e.g. ("train", "sft")
    spec: Callable | None = None  # map steps: spec(config) -> runner.spec.StageSpec
    run: Callable | None = None   # the other steps: run(config, address, mode=) -> summary (with the common keys)
    positional: str = "inputs"    # the config field the subcommand takes as positional arguments
    required: tuple[str, ...] = ()  # flags the subcommand requires although the run config has defaults for them
    positional_help: str = "input files, directories or globs (local, s3://, ...)"
    positional_nargs: str | int | None = "+"  # argparse nargs: "+", "*", "?", a count, or None (exactly one)
    positional_metavar: str | None = None  # how --help names each of them (default: the field's name)
    output_help: str = "output directory"
    output_required: bool = True
    epilog: str = ""
    format: Callable[[dict], str] | None = None        # the summary for the terminal (default: runner's)
    failed: Callable[[dict], str | None] | None = None  # one line when the work as a whole failed, else None
    arguments: Callable | None = None  # arguments(parser): flags of its own besides the config's fields
    from_args: Callable | None = None  # from_args(args, values) -> config, where the flags need more than build()
    describe: Callable | None = None   # describe(config) -> dict: what --dry-run prints (default: the config)
    resources: Callable | None = None  # resources(config, option, local): raises when the cluster cannot hold it
    skip: tuple[str, ...] = ()         # config fields that are no flag of this subcommand
    shown_defaults: dict | None = None  # the defaults --help shows where another layer sets them (a preset)

    @property
    def is_map(self) -> bool:
        return self.spec is not None

    @property
    def words(self) -> tuple[str, ...]:
        return self.command or (self.name,)

    def execute(self, config, mode: str = "ray", address: str | None = None, stages: list | None = None) -> dict:
        """Run the step: a map step on Ray Data actors (`mode="ray"`) or in this process (`"local"`, where
        `stages` may hand it stage objects already built)."""
        config = absolute_paths(config)
        if self.is_map:
            from deita_ray.runner.map_job import run_job

            return run_job(self.spec(config), config, mode, address, stages)
        return self.run(config, address, mode=mode)

    def check_resources(self, config, option: str, local: bool) -> None:
        """What the step asks of the cluster against what it has: one line (ResourceError) when it cannot fit."""
        if self.resources is not None:
            return self.resources(config, option, local)
        if hasattr(config, "requests"):
            from deita_ray.runner.session import fit_actors, resolve_gpus

            fit_actors(option, resolve_gpus(config.requests(option)), task_ops=2, local=local, log=lambda _line: None)

    def formatted(self, summary: dict) -> str:
        if self.format is not None:
            return self.format(summary)
        from deita_ray.runner.summary import format_summary

        return format_summary(summary)

    def failure(self, summary: dict) -> str | None:
        if self.failed is not None:
            return self.failed(summary)
        from deita_ray.runner.summary import outcome_error

        return outcome_error(summary)
