"""Options every map stage shares, declared once: actor resources and how inputs are read."""

from __future__ import annotations

from typing import Literal

from deita_ray.configlib import check, option, section


@section
class ActorResources:
    replicas: int = option(1, "actors (engine replicas) of this stage", ge=1)
    cpus_per_replica: float = option(1.0, "CPUs reserved per actor (sized down to fit on a local Ray)", gt=0)
    gpus_per_replica: float | None = option(
        None, "GPUs per actor (default: on a cluster with GPUs, tensor_parallel_size for vllm and one for hf, shared "
              "when there are fewer GPUs than actors; 0 without GPUs). 0 hides the GPUs from the actor", ge=0)
    batch_rows: int = option(256, "samples per batch handed to an actor", ge=1)

    def __post_init__(self):
        check(self)


@section
class ReadOptions:
    input_format: Literal["sharegpt", "alpaca", "messages"] | None = option(
        None, "force an input format (default: detect per file)")
    block_rows: int = option(1024, "samples per block produced by a read task", ge=1, flag=False)
    chunk_bytes: int = option(16 << 20, "JSONL files are split into read tasks of this many bytes", ge=1, flag=False)
    allow_partial: bool = option(False, "read another step's output although its completion record is missing "
                                        "(that step was interrupted); the summary records it")

    def __post_init__(self):
        check(self)


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
