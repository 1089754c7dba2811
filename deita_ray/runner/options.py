"""Options every step shares, declared once: where it reads and writes, actor resources, how inputs are read."""

from __future__ import annotations

from typing import Literal

from deita_ray.configlib import option, section


@section
class JobIO:
    """What a step reads and where it writes: set by the command line (positionals, -o, --overwrite, --resume) or by
    the run (never keys of a run config's section)."""

    inputs: list[str] = option(default_factory=list, help="input files, directories or globs", flag=False,
                               section=False)
    output: str = option("", "output directory (local or an object store)", flag=False, section=False)
    overwrite: bool = option(False, "replace what an earlier run wrote there (only the files deita-ray wrote)",
                             flag=False, section=False)
    resume: bool = option(False, "continue an interrupted run: keep what it finished, do the rest", flag=False,
                          section=False)


@section
class ActorResources:
    replicas: int = option(1, "actors (engine replicas) of this stage", ge=1)
    cpus_per_replica: float = option(1.0, "CPUs reserved per actor (sized down to fit on a local Ray)", gt=0)
    gpus_per_replica: float | None = option(
        None, "GPUs per actor (default: on a cluster with GPUs, tensor_parallel_size for vllm and one for hf, shared "
              "when there are fewer GPUs than actors; 0 without GPUs). 0 hides the GPUs from the actor", ge=0)
    batch_rows: int = option(256, "samples per batch handed to an actor", ge=1)


ASYNC_ENGINES = ("vllm", "http")  # engines with `submit`: several batches per actor keep them busy


@section
class InFlight:
    """What every generating step shares: batches an actor works on at once."""

    batches_in_flight: int = option(4, "batches one actor works on at once, sharing its engine (vllm, http; the "
                                       "other engines take one at a time)", ge=1)

    def concurrency(self, engine: str) -> int:
        return self.batches_in_flight if engine in ASYNC_ENGINES else 1


@section
class ReadOptions:
    input_format: Literal["sharegpt", "alpaca", "messages"] | None = option(
        None, "force an input format (default: detect per file)", section=False)
    block_rows: int = option(1024, "samples per block produced by a read task", ge=1, flag=False)
    chunk_bytes: int = option(16 << 20, "JSONL files are split into read tasks of this many bytes", ge=1, flag=False)
    allow_partial: bool = option(False, "read another step's output although its completion record is missing "
                                        "(that step was interrupted); the summary records it")


def check_gpus(engine: str, tensor_parallel_size: int, gpus_per_replica: float | None, prefix: str) -> None:
    """vLLM runs one worker per GPU of its tensor-parallel group: an actor must hold exactly that many."""
    from deita_ray.configlib import ConfigError

    if engine == "vllm" and gpus_per_replica and gpus_per_replica != tensor_parallel_size:
        raise ConfigError(f"{prefix}gpus_per_replica ({gpus_per_replica:g}) must equal {prefix}tensor_parallel_size "
                          f"({tensor_parallel_size}): vLLM runs one worker per GPU of the group")


def auto_gpus(engine: str, tensor_parallel_size: int, device: str = "auto") -> float:
    """GPUs an actor of this engine takes when gpus_per_replica is left to the default and the cluster has GPUs."""
    if engine == "vllm":
        return float(tensor_parallel_size)
    return 1.0 if engine in ("hf", "sentence-transformers") and device != "cpu" else 0.0
