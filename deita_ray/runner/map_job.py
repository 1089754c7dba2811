"""The one map-job function: a stage spec run over Ray Data actors, or the same loop in this process.

    summary = run_map_job(spec, inputs=["pool/"], output="out/", mode="ray")   # or mode="local"

A stage is a class with a cheap constructor, `setup()` (loads its engine, on the worker),
`__call__(pa.Table) -> pa.Table` (appends columns; marks rows it failed on, see io/quarantine.py)
and `teardown()`. The spec says which stage classes run in which order (each an actor pool with its
resources), what cheap functions run after them, and how results are written. The runner owns
everything else, identically on both paths:
- reading: the pool reader (normalised rows, bad rows quarantined) or an upstream stage's Parquet
  parts read as they are; rows read are counted per read task (`read_stats/`), independently;
- layout, clearing (`overwrite`) or resuming (`resume`: rows already written, or permanently
  quarantined, are skipped by id; transiently quarantined rows are retried);
- atomic, id-named parts (a part that exists is complete), the quarantine split, and for a stage
  that reads the pool, duplicate ids (the first occurrence kept, the others quarantined);
- one summary schema: rows in / out / quarantined / flagged, tokens, seconds, reconciled.
"""

from __future__ import annotations

import functools
import posixpath
import re
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc

from deita_ray.io import fs
from deita_ray.io.quarantine import split_failures, transient_parts
from deita_ray.io.reader import InputError, ReadTask, read_task
from deita_ray.io.outputs import OWN_FILE, OutputError, clear_own_files
from deita_ray.io.writer import count_rows, count_values, list_parts, part_name, read_columns, \
    sum_columns, write_part
from deita_ray.runner.layout import StageLayout


class StageError(RuntimeError):
    """A stage failed outright (disk full, permission denied, an engine that cannot start)."""

    def __init__(self, stage: str, path: str, cause: BaseException, log_file: str | None = None):
        self.stage, self.path, self.cause, self.log_file = stage, path, cause, log_file
        where = f" (traceback: {log_file})" if log_file else ""
        super().__init__(f"stage {stage} failed on {path}: {cause_name(cause)}: {str(cause).splitlines()[0] if str(cause) else ''}"
                         f"{where}")


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


# ---------------------------------------------------------------- output and resume

def _done_key(table: pa.Table) -> list[tuple]:
    """Rows are skipped on resume by (id, source, position): ids alone would also skip the second
    copy of a duplicated id that the first stage has still to quarantine."""
    sources = table.column("source").to_pylist() if "source" in table.column_names else [None] * table.num_rows
    positions = table.column("position").to_pylist() if "position" in table.column_names else [None] * table.num_rows
    return list(zip(table.column("id").to_pylist(), sources, positions))


def prepare_output(layout: StageLayout, overwrite: bool, resume: bool = False) -> int:
    """Clear for a fresh run (existing results need `overwrite`), or keep finished parts to resume.
    Returns how many samples a resumed run will skip."""
    fs.remove(layout.done_ids)
    fs.remove(layout.summary)  # the completion record: written again only when this run finishes
    if resume:
        # A part whose writer died is never complete (only our own temporaries: names a person does not type).
        _remove(layout.out, [p for p in fs.list_files(layout.out, ".inprogress") if OWN_FILE.fullmatch(posixpath.basename(p))])
        # Dropped, since this run writes them again, so that nothing counts twice: transient failures (retried
        # now), and what the reader wrote (every read task re-reads; with another chunk size its parts would
        # have other names and the old ones would stay beside them).
        reader_parts = [p for p in list_parts(layout.quarantine) if posixpath.basename(p).startswith("read-")
                        and OWN_FILE.fullmatch(posixpath.basename(p))]
        _remove(layout.quarantine, sorted(set(transient_parts(layout.quarantine)) | set(reader_parts)))
        _remove(layout.read_stats, list_parts(layout.read_stats))
        keys = ["id", "source", "position"]
        done = [t for t in (_key_columns(layout.parts), _key_columns(layout.quarantine, own_stage=True)) if t is not None]
        done = pa.concat_tables([t.select(keys) for t in done]) if done else None
        if done is not None and done.num_rows:
            write_part(done, posixpath.dirname(layout.done_ids), posixpath.basename(layout.done_ids))
        return done.num_rows if done is not None else 0
    if (list_parts(layout.out) or list_parts(layout.quarantine)) and not overwrite:
        raise FileExistsError(f"{layout.out} already holds output; pass --overwrite to replace it")
    for directory in (layout.out, layout.quarantine, layout.read_stats, *layout.sides):
        clear_own_files(directory)  # only what deita_ray wrote: a file of anyone else's stays
        foreign = list_parts(directory)
        if foreign:
            raise OutputError(f"{directory} holds files deita-ray did not write ({foreign[0]}); move them away or "
                              "choose another output")
    return 0


def _remove(directory: str, paths: list[str]) -> None:
    """Remove files listed under `directory` (listings of object stores come without their protocol)."""
    for path in paths:
        fs.remove(fs.url_to_fs(directory)[0].unstrip_protocol(path) if "://" in directory else path)


def _key_columns(directory: str, own_stage: bool = False) -> pa.Table | None:
    if not list_parts(directory):
        return None
    try:  # parts written before source/position existed have ids only: those match on id
        table = read_columns(directory, ["id", "stage", "source", "position"] if own_stage else ["id", "source", "position"])
    except (KeyError, ValueError, OSError):
        table = read_columns(directory, ["id", "stage"] if own_stage else ["id"])
    if own_stage:  # rows this stage quarantined were processed; rows the reader quarantined are re-read
        table = table.filter(pc.not_equal(table.column("stage"), "read"))
    for name, kind in (("source", pa.string()), ("position", pa.int64())):
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, kind))
    return table


@functools.lru_cache(maxsize=2)
def _done_keys(path: str, stamp: float) -> frozenset:
    """The keys a resumed stage skips; cached per worker process (keyed by the file's mtime)."""
    import pyarrow.parquet as pq

    filesystem, local = fs.url_to_fs(path)
    with filesystem.open(local, "rb") as f:
        return frozenset(_done_key(pq.read_table(f)))


def _skip_done(good: pa.Table, layout: StageLayout) -> pa.Table:
    filesystem, path = fs.url_to_fs(layout.done_ids)
    if not filesystem.exists(path):
        return good
    done = _done_keys(layout.done_ids, filesystem.modified(path).timestamp() if hasattr(filesystem, "modified") else 0.0)
    # A done row's source/position may be null (parts written before these columns existed): match on id then.
    ids_only = {k[0] for k in done if k[1] is None}
    keep = [k not in done and k[0] not in ids_only for k in _done_key(good)]
    return good if all(keep) else good.filter(pa.array(keep))


# ---------------------------------------------------------------- reading

def _read_parts(task: ReadTask, block_rows: int):
    """An upstream stage's Parquet part, as it is, in blocks."""
    import pyarrow.parquet as pq

    filesystem, path = fs.url_to_fs(task.url)
    with filesystem.open(path, "rb") as f:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=block_rows):
            yield pa.Table.from_batches([batch]), None


def read_and_quarantine(task: ReadTask, layout: StageLayout, block_rows: int):
    """Good blocks of one read task; its bad rows go to quarantine and its row count to read_stats."""
    key = f"{task.url}:{task.start}"
    rows_read = 0
    blocks = _read_parts(task, block_rows) if task.kind == "parts" else read_task(task, block_rows=block_rows)
    for index, (good, bad) in enumerate(blocks):
        rows_read += good.num_rows + (bad.num_rows if bad is not None else 0)
        if bad is not None and bad.num_rows:
            write_part(bad, layout.quarantine, part_name("read", key, index))
        good = _skip_done(good, layout)
        if good.num_rows:
            yield good
    stats = pa.table({"task": [key], "rows_read": pa.array([rows_read], pa.int64())})
    write_part(stats, layout.read_stats, part_name("read", key, 0))


def _read_blocks(batch: pa.Table, layout: StageLayout, block_rows: int):
    """Ray Data UDF: one row per read task in, Arrow blocks of good rows out."""
    for task_row in batch.to_pylist():
        yield from read_and_quarantine(ReadTask(**task_row), layout, block_rows)


def plan_parts(inputs: list[str]) -> list[ReadTask]:
    """Read tasks over upstream Parquet parts (one per part)."""
    tasks = []
    for url in inputs:
        filesystem, path = fs.url_to_fs(url)
        if not filesystem.exists(path):
            raise InputError(f"input not found: {url}")
        parts = list_parts(url) if filesystem.isdir(path) else [path]
        tasks += [ReadTask(filesystem.unstrip_protocol(p) if "://" in url else p, "parts", None) for p in parts]
    if not tasks:
        raise InputError(f"no Parquet parts under {', '.join(inputs)}")
    return tasks


# ---------------------------------------------------------------- writing

def write_part_atomic(table: pa.Table, directory: str, prefix: str = "part") -> int:
    """One Parquet part per block, named from its ids, renamed into place only once complete."""
    if table.num_rows:
        # Named from (id, source, position): two copies of a duplicated id must not share a part name.
        name = part_name(prefix, "\0".join(f"{i}\1{src}\1{pos}" for i, src, pos in _done_key(table)), 0)
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


# ---------------------------------------------------------------- running

def ray_actor_class(stage_cls: type, gpus: float = 0.0) -> type:
    """A Ray Data actor class named like the stage (so `ray::MapWorker(MapBatches(ScoreStage))` says
    what it runs) that builds the stage and runs its setup() on the worker: once it has checked that the
    GPUs it was given can be used (a driver too old for this CUDA build is one line, not a CPU run)."""

    def __init__(self, *args):
        if gpus:
            from deita_ray.runner.session import check_cuda_usable

            check_cuda_usable(f"{stage_cls.__name__} was given {gpus:g} GPU(s)")
        self.stage = stage_cls(*args)
        self.stage.setup()

    def __call__(self, table):
        return self.stage(table)

    return type(stage_cls.__name__, (), {"__init__": __init__, "__call__": __call__})


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _plan(spec: StageSpec, inputs: list[str], input_format: str | None, chunk_bytes: int,
          not_read: list[str]) -> list[ReadTask]:
    if spec.source == "parts":
        return plan_parts(inputs)
    from deita_ray.io.reader import plan_reads

    return plan_reads(inputs, input_format, chunk_bytes, not_read=not_read)


def run_map_job(spec: StageSpec, inputs: list[str], output: str, *, mode: str = "ray", input_format: str | None = None,
                chunk_bytes: int = 16 << 20, read_block_rows: int = 1024, overwrite: bool = False, resume: bool = False,
                allow_partial: bool = False, ray_address: str | None = None, stages: list | None = None,
                log=_log) -> dict:
    """Run the stage over `inputs` into `output`; returns (and writes) its summary.

    `stages` (local mode only): stage objects already built, used instead of building them.
    `allow_partial`: read an upstream step's output although its completion record is missing (recorded)."""
    from deita_ray.io.outputs import check_output
    from deita_ray.runner.completion import check_complete
    from deita_ray.runner.layout import OWN_DIRS
    from deita_ray.runner.lock import hold_output

    layout = spec.layout.under(output)
    not_read: list[str] = []
    # Everything about the inputs is checked before the output is touched: paths and files, then whether an
    # upstream step's output is complete, then that the output keeps clear of them.
    tasks = _plan(spec, inputs, input_format, chunk_bytes, not_read)
    partial = check_complete(inputs, allow_partial, log) if spec.source == "parts" else []
    check_output(output, inputs, own=OWN_DIRS)
    if not_read:
        log(f"warning: {len(not_read)} file(s) in the input directories are not read (not .jsonl/.json/.parquet): "
            + ", ".join(not_read[:20]) + (" ..." if len(not_read) > 20 else ""))
    with hold_output(output):
        skipped = prepare_output(layout, overwrite, resume)
        if skipped:
            log(f"{layout.stage}: resuming, {skipped:,} samples already {spec.noun}")
        started = time.time()
        try:
            if mode == "ray":
                held = _run_on_ray(spec, layout, tasks, read_block_rows, ray_address, log)
            else:
                _run_local(spec, layout, tasks, read_block_rows, stages, log)
                held = None
            seconds = time.time() - started
            if spec.source == "pool":
                from deita_ray.runner.duplicates import dedupe_ids

                duplicates = dedupe_ids(layout)
                if duplicates:
                    log(f"{layout.stage}: {duplicates:,} rows repeat an id seen before; quarantined as duplicates")
            if spec.check is not None:
                spec.check(layout)
        except (InputError, StageError):
            raise
        except Exception as exc:
            cause = root_cause(exc)
            if isinstance(cause, (InputError, StageError)):
                raise cause from None
            raise StageError(layout.stage, layout.out, cause, save_traceback(exc)) from exc
        peak = stage_peak(held) if spec.flops else None
        return summarize(spec, layout, seconds, files_not_read=not_read, partial_inputs=partial, peak=peak)


class RemoteError(Exception):
    """An exception raised in a Ray worker that reached the driver only as text (Ray Data's
    UserCodeException keeps the original in its traceback string, not as an object)."""

    def __init__(self, remote_type: str, message: str):
        super().__init__(message)
        self.remote_type = remote_type


_EXCEPTION_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)(?:\([\w.]+\))?): (.*)$", re.M)


def run_job(spec: StageSpec, config, mode: str, ray_address: str | None = None, stages: list | None = None) -> dict:
    """run_map_job with the read and output options of a job config (ScoreJobConfig, EmbedJobConfig, ...)."""
    return run_map_job(spec, config.inputs, config.output, mode=mode, input_format=config.input_format,
                       chunk_bytes=config.chunk_bytes, read_block_rows=config.block_rows, overwrite=config.overwrite,
                       resume=config.resume, allow_partial=config.allow_partial, ray_address=ray_address,
                       stages=stages)


def root_cause(exc: BaseException) -> BaseException:
    """The exception a Ray task or actor raised, through Ray's wrappers."""
    seen, chain = set(), []
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        inner = getattr(exc, "cause", None) or exc.__cause__
        exc = inner if isinstance(inner, BaseException) else None
    last = chain[-1]
    if not type(last).__module__.startswith("ray"):
        return last
    text = "\n".join(str(getattr(e, "traceback_str", "") or "") + "\n" + str(e) for e in chain)
    found = [m for m in _EXCEPTION_LINE.finditer(text) if not m.group(1).startswith("ray.")
             and not any(w in m.group(1) for w in ("UserCodeException", "RayTaskError", "RayActorError"))]
    if not found:
        return last
    name, message = found[-1].group(1), found[-1].group(2).strip()
    if name.split(".")[-1] == "InputError":
        return InputError(message)
    return RemoteError(name.split(".")[-1], message)


def cause_name(exc: BaseException) -> str:
    return getattr(exc, "remote_type", type(exc).__name__)


def save_traceback(exc: BaseException) -> str | None:
    """The whole traceback to a local log file (the one line printed names it)."""
    import tempfile

    try:
        handle = tempfile.NamedTemporaryFile("w", prefix="deita-ray-error-", suffix=".log", delete=False)
        with handle:
            traceback.print_exception(exc, file=handle)
        return handle.name
    except OSError:
        return None


def _run_on_ray(spec: StageSpec, layout: StageLayout, tasks: list[ReadTask], block_rows: int, address, log) -> None:
    import ray

    from deita_ray.runner.session import ActorRequest, ensure_ray, fit_actors, is_local_ray, resolve_gpus

    ensure_ray(address)
    requests = resolve_gpus([ActorRequest(a.option, a.replicas, a.cpus, a.gpus, a.auto_gpus) for a in spec.actors])
    fitted = fit_actors(layout.stage, requests, task_ops=2, local=is_local_ray(address), log=log)
    gpus_here = ray.cluster_resources().get("GPU", 0) > 0
    ds = ray.data.from_items([asdict(t) for t in tasks], override_num_blocks=len(tasks))
    ds = ds.map_batches(_read_blocks, batch_size=1, batch_format="pyarrow", num_cpus=0.25,
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
    ds.map_batches(finish, fn_kwargs={"layout": layout, "post": spec.post, "writer": spec.writer}, batch_size=None,
                   batch_format="pyarrow", num_cpus=0.25).materialize()
    return fitted


def _run_local(spec: StageSpec, layout: StageLayout, tasks: list[ReadTask], block_rows: int, stages, log) -> None:
    built = stages is None
    stages = stages if stages is not None else [step.factory(*step.args) for step in spec.actors]
    try:
        if built:
            for stage in stages:
                stage.setup()
        batch_rows = min(step.batch_rows for step in spec.actors) if spec.actors else 256
        started, done, part = time.time(), 0, 0
        for task in tasks:
            for good in read_and_quarantine(task, layout, block_rows):
                for offset in range(0, good.num_rows, batch_rows):
                    batch = good.slice(offset, batch_rows)
                    for stage in stages:
                        batch = stage(batch)
                    finish(batch, layout, spec.post, spec.writer)
                    part += 1
                    done += batch.num_rows
                    if part % 10 == 0:
                        log(f"  {layout.stage}: {done:,} samples {spec.noun} ({done / (time.time() - started):.1f}/s)")
    finally:
        if built:
            for stage in stages:
                stage.teardown()


# ---------------------------------------------------------------- the summary

def stage_peak(held: list | None) -> dict | None:
    """The FLOP/s limit of what the stage's actors held (runner/peak.py), measured where they ran: per GPU or CPU
    core, times the GPUs (else CPUs) reserved; None when it cannot be measured. In this process (`held` None):
    per core, times the cores this process may use."""
    import os

    from deita_ray.runner.peak import device_peak

    try:
        if held is None:
            unit = device_peak(0)
            return {**unit, "units": len(os.sched_getaffinity(0)), "total": unit["flops"] * len(os.sched_getaffinity(0))}
        import ray

        first = held[0]
        measure = ray.remote(device_peak).options(num_cpus=min(first.cpus, 1), num_gpus=min(first.gpus, 1))
        unit = ray.get(measure.remote(first.gpus), timeout=120)
        units = sum(a.replicas * (a.gpus if unit["per"] == "gpu" else a.cpus) for a in held)
        return {**unit, "units": units, "total": unit["flops"] * units}
    except Exception as exc:  # the efficiency figure is a report, never a reason to fail a finished stage
        return {"error": f"{type(exc).__name__}: {exc}"[:200]}


def summarize(spec: StageSpec, layout: StageLayout, seconds: float, files_not_read: list[str] | None = None,
              partial_inputs: list[str] | None = None, peak: dict | None = None) -> dict:
    """One schema for every stage; counted part by part (the driver's memory does not grow with the pool)."""
    rows_out, totals = sum_columns(layout.parts, spec.sums)
    rows_in = sum_columns(layout.read_stats, {"rows_read": "rows_read"})[1]["rows_read"]
    quarantined = count_rows(layout.quarantine)
    tokens = sum(totals[name] for name in spec.tokens)
    flops = float(sum(totals[name] for name in spec.flops)) if spec.flops else 0.0
    counts = {column: count_values(layout.parts, column) for column in spec.value_counts} if rows_out else {}
    if isinstance(spec.flagged, tuple):
        flagged = counts.get(spec.flagged[0], {}).get(spec.flagged[1], 0)
    else:
        flagged = totals.get(spec.flagged, 0) if spec.flagged else 0
    summary = {
        "stage": layout.stage, "rows_in": rows_in, "rows_out": rows_out, "rows_quarantined": quarantined,
        "rows_flagged": flagged,
        "reconciled": rows_in == rows_out + quarantined, "tokens": tokens,
        "seconds": round(seconds, 3), "samples_per_s": round(rows_out / seconds, 2) if seconds else None,
        "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        # Model FLOPs of the work (engines/flops.py), per second, and the share of what the actors held.
        "model_flops": flops or None, "model_flops_per_s": round(flops / seconds) if flops and seconds else None,
        "peak": peak, "peak_fraction": round(flops / seconds / peak["total"], 4)
        if flops and seconds and peak and peak.get("total") else None,
        "quarantine_reasons": count_values(layout.quarantine, "reason") if quarantined else {},
        "quarantine_classes": count_values(layout.quarantine, "failure") if quarantined else {},
        "totals": {k: v for k, v in totals.items() if k not in spec.tokens and k not in spec.flops},
        "counts": counts,
        "files_not_read": files_not_read or [],
        "partial_inputs": partial_inputs or [],   # upstream outputs read although incomplete (--allow-partial)
        "parts": len(list_parts(layout.parts)),   # what the completion record vouches for
        "output": layout.output, "results": layout.out, "noun": spec.noun, "config": spec.config,
    }
    summary["rows_succeeded"] = spec.succeeded(summary) if spec.succeeded is not None else rows_out
    if totals.get("computed_tokens"):  # what the engine computed beyond the tokens themselves: padding
        summary["padding_share"] = round(1 - tokens / totals["computed_tokens"], 4)
    fs.write_json(layout.summary, summary)
    return summary


def outcome_error(summary: dict) -> str | None:
    """One line when a stage's work as a whole failed (the command then exits non-zero), else None: counts that
    do not reconcile, no input rows, or not one row whose work succeeded."""
    if not summary["reconciled"]:
        return (f"{summary['stage']}: rows in {summary['rows_in']:,} != {summary.get('noun', 'out')} "
                f"{summary['rows_out']:,} + quarantined {summary['rows_quarantined']:,}: rows were lost")
    if summary["rows_in"] == 0:
        return f"{summary['stage']}: the inputs hold no records"
    if summary.get("rows_succeeded", summary["rows_out"]) == 0:
        reasons = sorted((summary.get("quarantine_reasons") or {}).items(), key=lambda kv: -kv[1])
        top = f"; top reason ({reasons[0][1]:,} rows): {reasons[0][0][:300]}" if reasons else ""
        return f"{summary['stage']}: not one of {summary['rows_in']:,} rows succeeded{top}"
    return None


def format_summary(summary: dict) -> str:
    noun = summary.get("noun", "out")
    ok = f"(= {noun} + quarantined)" if summary["reconciled"] else f"!! DOES NOT EQUAL {noun} + quarantined: rows were lost"
    details = ", ".join(f"{k.replace('_', ' ')}: {v:,}" for k, v in summary.get("totals", {}).items())
    classes = summary.get("quarantine_classes") or {}
    lines = [
        f"rows in      {summary['rows_in']:>10,}   {ok}",
        f"{noun:<12} {summary['rows_out']:>10,}" + (f"   ({details})" if details else ""),
        f"quarantined  {summary['rows_quarantined']:>10,}" +
        (f"   ({', '.join(f'{k}: {v:,}' for k, v in sorted(classes.items()))})" if classes else ""),
        f"throughput   {summary['samples_per_s'] or 0:>10,.1f} samples/s, {summary['tokens_per_s'] or 0:,.0f} tokens/s "
        f"({summary['seconds']:.1f} s)",
    ]
    if summary.get("padding_share") is not None:
        lines.append(f"padding      {summary['padding_share']:>10.1%}   of the tokens computed")
    if summary.get("model_flops"):
        peak = summary.get("peak") or {}
        share = (f", {summary['peak_fraction']:.1%} of {peak['units']:g} {peak['per'].upper()}"
                 f"{'s' if peak['units'] != 1 else ''} ({peak['how']})") if summary.get("peak_fraction") else ""
        lines.append(f"model FLOPs  {summary['model_flops']:>10.3g}   {summary['model_flops_per_s'] / 1e9:,.2f} GFLOP/s{share}")
    for column, counted in (summary.get("counts") or {}).items():
        lines.append(f"  {column.replace('_', ' ')}: " + ", ".join(f"{k}: {v:,}" for k, v in
                                                                sorted(counted.items(), key=lambda kv: -kv[1])[:8]))
    for reason, n in sorted(summary["quarantine_reasons"].items(), key=lambda kv: -kv[1])[:20]:
        lines.append(f"  quarantined {n:>5} x {reason[:160]}")
    if summary.get("partial_inputs"):
        lines.append(f"!! PARTIAL    read on purpose although incomplete: {', '.join(summary['partial_inputs'])}")
    if summary.get("files_not_read"):
        lines.append(f"not read     {len(summary['files_not_read']):>10,} file(s): {', '.join(summary['files_not_read'][:5])}")
    lines.append(f"output       {summary['results']}/")
    return "\n".join(lines)
