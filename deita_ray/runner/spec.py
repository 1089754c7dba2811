"""What a map stage is to the runner: the stage classes its actors run, with their resources, and how it is written.

    StageSpec(layout=LAYOUTS["score"], actors=[ActorStep(ScoreStage, (kind, engine), option="score")], ...)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from deita_ray.runner.layout import StageLayout


@dataclass
class ActorStep:
    """One stage class run by an actor pool: `factory(*args)` is built on each actor."""

    factory: type
    args: tuple
    option: str                  # the config section users change (score, embed, ...)
    replicas: int = 1
    cpus: float = 1.0
    gpus: float | None = 0.0     # None: `auto_gpus` where the cluster has GPUs, else 0
    auto_gpus: float = 0.0
    batch_rows: int = 256
    concurrency: int = 1         # batches one actor works on at once (threads sharing its engine)


@dataclass
class StageSpec:
    layout: StageLayout
    actors: list[ActorStep]
    post: list[tuple[Callable, dict]] = field(default_factory=list)  # cheap functions after the actors
    writer: Callable | None = None       # writer(table, layout) -> rows written; default: one Parquet part
    sums: dict[str, str] = field(default_factory=dict)  # summary totals over the parts (see writer.sum_columns)
    tokens: tuple[str, ...] = ()         # which of `sums` are token counts
    flops: tuple[str, ...] = ()          # which of `sums` are model FLOPs (engines/flops.py)
    flagged: str | tuple | None = None   # which of `sums` counts flagged rows, or (column, value) counted
    value_counts: tuple[str, ...] = ()   # columns whose value counts go into the summary
    source: str = "pool"                 # pool: the pool reader; parts: upstream Parquet parts as they are
    noun: str = "processed"              # "scored", "embedded": for progress and summaries
    check: Callable | None = None        # check(layout): raises when the finished output is inconsistent
    succeeded: Callable[[dict], int] | None = None  # rows whose work succeeded, from the summary (default rows out)
    config: dict = field(default_factory=dict)
