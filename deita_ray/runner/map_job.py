"""The one map-job function: a stage spec run over Ray Data actors, or the same loop in this process.

    summary = run_map_job(spec, inputs=["pool/"], output="out/", mode="ray")   # or mode="local"

A stage is a class with a cheap constructor, `setup()` (loads its engine, on the worker),
`__call__(pa.Table) -> pa.Table` (appends columns; marks rows it failed on, see io/quarantine.py)
and `teardown()`. The spec (spec.py) says which stage classes run in which order (each an actor pool
with its resources), what cheap functions run after them, and how results are written. The runner
owns everything else, identically on both paths, one concern per module:
- reading.py: the pool reader or an upstream stage's Parquet parts; rows read counted per read task;
- resume.py: clearing what this project wrote (`overwrite`) or resuming (`resume`: rows already
  written, or permanently quarantined, are skipped by id; transiently quarantined rows are retried);
- execute.py: the actor pools on Ray Data or the loop here; atomic, id-named parts, the quarantine
  split; for a stage that reads the pool, duplicate ids (duplicates.py);
- summary.py: one summary schema: rows in / out / quarantined / flagged, tokens, FLOPs, seconds, reconciled;
- errors.py: a stage that fails outright is one line (StageError), its traceback in a log file.
"""

from __future__ import annotations

import time

from deita_ray.io.reader import InputError
from deita_ray.runner.errors import StageError, root_cause, save_traceback
from deita_ray.runner.execute import log_line, run_local, run_on_ray
from deita_ray.runner.reading import plan_tasks
from deita_ray.runner.resume import prepare_output
from deita_ray.runner.spec import StageSpec
from deita_ray.runner.summary import stage_peak, summarize


def run_map_job(spec: StageSpec, inputs: list[str], output: str, *, mode: str = "ray", input_format: str | None = None,
                chunk_bytes: int = 16 << 20, read_block_rows: int = 1024, overwrite: bool = False, resume: bool = False,
                allow_partial: bool = False, ray_address: str | None = None, stages: list | None = None,
                log=log_line) -> dict:
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
    tasks = plan_tasks(spec, inputs, input_format, chunk_bytes, not_read)
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
                held = run_on_ray(spec, layout, tasks, read_block_rows, ray_address, log)
            else:
                run_local(spec, layout, tasks, read_block_rows, stages, log)
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


def run_job(spec: StageSpec, config, mode: str, ray_address: str | None = None, stages: list | None = None) -> dict:
    """run_map_job with the read and output options of a job config (ScoreJobConfig, EmbedJobConfig, ...)."""
    return run_map_job(spec, config.inputs, config.output, mode=mode, input_format=config.input_format,
                       chunk_bytes=config.chunk_bytes, read_block_rows=config.block_rows, overwrite=config.overwrite,
                       resume=config.resume, allow_partial=config.allow_partial, ray_address=ray_address,
                       stages=stages)
