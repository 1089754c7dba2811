"""Running a map stage: its actor pools on Ray Data, or the same loop in this process; results written as atomic,
id-named parts, failed rows split off to quarantine.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict
from typing import Callable

import pyarrow as pa

from deita_ray.io.quarantine import split_failures
from deita_ray.io.reader import ReadTask
from deita_ray.io.writer import part_name, write_part
from deita_ray.runner.layout import StageLayout
from deita_ray.runner.reading import read_and_quarantine, read_blocks
from deita_ray.runner.resume import row_keys
from deita_ray.runner.spec import StageSpec


def write_part_atomic(table: pa.Table, directory: str, prefix: str = "part") -> int:
    """One Parquet part per block, named from its ids, renamed into place only once complete."""
    if table.num_rows:
        # Named from (id, source, position): two copies of a duplicated id must not share a part name.
        name = part_name(prefix, "\0".join(f"{i}\1{src}\1{pos}" for i, src, pos in row_keys(table)), 0)
        write_part(table, directory, name)  # atomic: a temporary name, then the rename
    return table.num_rows


def write_results(table: pa.Table, layout: StageLayout) -> int:
    return write_part_atomic(table, layout.parts)


def finish(table: pa.Table, layout: StageLayout, post: list, writer: Callable | None) -> pa.Table:
    """After the actors: cheap post functions, the quarantine split, the write. Returns a one-row
    count so the driver holds nothing."""
    for fn, kwargs in post:
        table = fn(table, **kwargs)
    table = split_failures(table, layout.quarantine, layout.stage)
    written = (writer or write_results)(table, layout)
    return pa.table({"rows": pa.array([written], pa.int64())})


def quiet_model_loading() -> None:
    """No model-loading progress bars: every actor's would reach the driver's console between its own lines, and
    in this process they would break the step's progress lines."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


def ray_actor_class(stage_cls: type, gpus: float = 0.0) -> type:
    """A Ray Data actor class named like the stage (so `ray::MapWorker(MapBatches(ScoreStage))` says
    what it runs) that builds the stage and runs its setup() on the worker: once it has checked that the
    GPUs it was given can be used (a driver too old for this CUDA build is one line, not a CPU run)."""

    def __init__(self, *args):
        quiet_model_loading()
        if gpus:
            from deita_ray.runner.session import check_cuda_usable

            check_cuda_usable(f"{stage_cls.__name__} was given {gpus:g} GPU(s)")
        self.stage = stage_cls(*args)
        self.stage.setup()

    def __call__(self, table):
        return self.stage(table)

    return type(stage_cls.__name__, (), {"__init__": __init__, "__call__": __call__})


def log_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_on_ray(spec: StageSpec, layout: StageLayout, tasks: list[ReadTask], block_rows: int, address, log) -> None:
    import ray

    from deita_ray.runner.quiet import Progress, native_noise_filtered, quiet_ray_data
    from deita_ray.runner.session import ActorRequest, ensure_ray, fit_actors, is_local_ray, resolve_gpus

    ensure_ray(address)
    quiet_ray_data()
    requests = resolve_gpus([ActorRequest(a.option, a.replicas, a.cpus, a.gpus, a.auto_gpus) for a in spec.actors])
    fitted = fit_actors(layout.stage, requests, task_ops=2, local=is_local_ray(address), log=log)
    gpus_here = ray.cluster_resources().get("GPU", 0) > 0
    ds = ray.data.from_items([asdict(t) for t in tasks], override_num_blocks=len(tasks))
    ds = ds.map_batches(read_blocks, batch_size=1, batch_format="pyarrow", num_cpus=0.25,
                        fn_kwargs={"layout": layout, "block_rows": block_rows})
    for step, request in zip(spec.actors, fitted):
        threads = dict(max_concurrent_calls_per_actor=step.concurrency, enable_true_multi_threading=True,
                       max_tasks_in_flight_per_actor=2 * step.concurrency) if step.concurrency > 1 else {}
        # Ray does not hide a node's GPUs from an actor given none: hide them, or a GPU build of an engine would take
        # GPU 0 unreserved, beside the actors that were given it.
        hidden = {"runtime_env": {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}} if gpus_here and not request.gpus else {}
        ds = ds.map_batches(ray_actor_class(step.factory, request.gpus), fn_constructor_args=step.args,
                            batch_size=step.batch_rows, batch_format="pyarrow",
                            compute=ray.data.ActorPoolStrategy(size=request.replicas, **threads),
                            num_cpus=request.cpus, num_gpus=request.gpus, **hidden)
    written = ds.map_batches(finish, fn_kwargs={"layout": layout, "post": spec.post, "writer": spec.writer},
                             batch_size=None, batch_format="pyarrow", num_cpus=0.25)
    progress = Progress(layout.stage, spec.noun, log)
    with native_noise_filtered():
        for counts in written.iter_batches(batch_size=None, batch_format="pyarrow"):  # one row per part written
            progress.add(sum(counts.column("rows").to_pylist()))
    progress.done()
    return fitted


def run_local(spec: StageSpec, layout: StageLayout, tasks: list[ReadTask], block_rows: int, stages, log) -> None:
    built = stages is None
    stages = stages if stages is not None else [step.factory(*step.args) for step in spec.actors]
    try:
        if built:
            quiet_model_loading()
            for stage in stages:
                stage.setup()
        from deita_ray.runner.quiet import Progress

        batch_rows = min(step.batch_rows for step in spec.actors) if spec.actors else 256
        progress = Progress(layout.stage, spec.noun, log, enabled=True)  # no bars here: lines, terminal or not
        for task in tasks:
            for good in read_and_quarantine(task, layout, block_rows):
                for offset in range(0, good.num_rows, batch_rows):
                    batch = good.slice(offset, batch_rows)
                    for stage in stages:
                        batch = stage(batch)
                    progress.add(finish(batch, layout, spec.post, spec.writer).column("rows")[0].as_py())
    finally:
        if built:
            for stage in stages:
                stage.teardown()
