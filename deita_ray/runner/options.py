"""Options every map stage shares, declared once: actor resources and how inputs are read."""

from __future__ import annotations

from typing import Literal

from deita_ray.configlib import check, option, section


@section
class ActorResources:
    replicas: int = option(1, "actors (engine replicas) of this stage", ge=1)
    cpus_per_replica: float = option(1.0, "CPUs reserved per actor (sized down to fit on a local Ray)", gt=0)
    gpus_per_replica: float = option(0.0, "GPUs per actor (= tensor_parallel_size with vLLM)", ge=0)
    batch_rows: int = option(256, "samples per batch handed to an actor", ge=1)

    def __post_init__(self):
        check(self)


@section
class ReadOptions:
    input_format: Literal["sharegpt", "alpaca", "messages"] | None = option(
        None, "force an input format (default: detect per file)")
    block_rows: int = option(1024, "samples per block produced by a read task", ge=1, flag=False)
    chunk_bytes: int = option(16 << 20, "JSONL files are split into read tasks of this many bytes", ge=1, flag=False)

    def __post_init__(self):
        check(self)
