"""`deita-ray select`: the final set, by Deita's Repr Filter on a FAISS actor (or an ablation baseline).

    from deita_ray.steps import STEPS
    summary = STEPS["select"].execute(STEPS["select"].config(run_dir="out/", budget=6000, threshold=0.9))

Candidates stream in score order one block at a time (sorted by Ray Data inside a Ray session, so the driver's
memory stays flat as the pool grows; select/candidates.py); their embeddings are gathered from the memory-mapped
shards and go to the kept index (a Ray actor, GPU FAISS where there is one). Outputs: `selected.parquet` (scored
rows + `selection_rank`), `selected.jsonl` (ShareGPT, readable by the reference tools and common trainers),
`rejections.parquet` (id, nearest kept id, similarity), `visits.parquet` and `select_summary.json`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import posixpath
import time
from typing import Literal

import pyarrow as pa

from deita_ray.configlib import option, section
from deita_ray.io import fs
from deita_ray.io.outputs import check_output, clear_own_files
from deita_ray.io.writer import list_parts, write_part
from deita_ray.runner.completion import check_complete
from deita_ray.runner.layout import SELECT_SUMMARY
from deita_ray.runner.lock import hold_output
from deita_ray.runner.summary import common
from deita_ray.select import baselines
from deita_ray.select.rows import in_selection_order, selected_rows, write_sharegpt_jsonl
from deita_ray.steps.base import StepType, snapshot

# Every file a selection writes in its output directory: --overwrite removes these and nothing else.
SELECTION_FILES = ("selected.parquet", "selected.jsonl", "rejections.parquet", "visits.parquet", SELECT_SUMMARY)


@section
class SelectConfig:
    """The `select:` section of a run config and the flags of `deita-ray select`: every option once."""

    strategy: Literal["diverse", "random", "complexity", "quality", "evol", "length"] = option(
        "diverse", "diverse: Deita's Repr Filter over evol score; the others are ablation baselines (top-m, no "
                   "diversity)")
    budget: int = option(6000, "samples to select (paper: 6000 or 10000)", ge=1)
    threshold: float = option(0.9, "tau: reject a sample whose nearest kept neighbour has cosine similarity > tau",
                              ge=-1, le=1)
    block_size: int = option(1024, "candidates per batched FAISS search (the result is the same for any)", ge=1)
    seed: int = option(0, "random strategy only")
    index: Literal["actor", "local"] = option("actor", "actor: the kept index in a Ray actor; local: in this process "
                                                       "(also --local)")
    device: Literal["auto", "cpu", "gpu"] = option("auto", "kept index device (auto: a GPU if the index sees one)")
    backend: Literal["auto", "faiss", "numpy", "torch"] = option(
        "auto", "kept index search: faiss (IndexFlatIP; GPU with FAISS's GPU build), numpy (one float32 GEMM per "
                "block, CPU), torch (one float32 GEMM per block; CUDA where torch sees it); auto: FAISS's GPU index "
                "where its build has kernels for the GPU, else torch on the GPU, else the faster of faiss and numpy "
                "on this CPU (timed once). All give the same selection")
    sort_on: Literal["auto", "driver", "ray"] = option(
        "auto", "where candidates are joined and sorted by score: ray (Ray Data; this process's memory stays flat for "
                "million-row pools), driver (Arrow here; quicker for small pools); auto: ray from 100K rows")
    run_dir: str = option("", "run directory holding scored/ and embeddings/", flag=False, section=False)
    scored: str | None = option(None, "scored Parquet directory (default RUN_DIR/scored)", section=False)
    embeddings: str | None = option(None, "embeddings directory (default RUN_DIR/embeddings; diverse only)",
                                    section=False)
    output: str | None = option(None, "output directory (default RUN_DIR/selection)", flag=False, section=False)
    overwrite: bool = option(False, "replace an existing selection (only the files a selection writes are removed)",
                             flag=False, section=False)
    allow_partial: bool = option(False, "select from scores or embeddings whose step did not finish (recorded in the "
                                        "summary)", section=False)

    def __post_init__(self):
        run = self.run_dir or "."
        self.scored = self.scored or posixpath.join(run, "scored")
        self.output = self.output or posixpath.join(run, "selection")
        if self.strategy == "diverse":
            self.embeddings = self.embeddings or posixpath.join(run, "embeddings")

    def inputs(self) -> list[str]:
        return [self.scored] + ([self.embeddings] if self.strategy == "diverse" else [])

    def run_dir_read(self) -> str | None:
        """The run directory whose scored/ or embeddings/ this selection reads (held while it runs)."""
        run = self.run_dir or "."
        defaults = {posixpath.join(run, "scored"), posixpath.join(run, "embeddings")}
        return run if defaults & set(self.inputs()) else None


def check_inputs(config: SelectConfig, log=print) -> list[str]:
    """Before the output is touched: the inputs are there and complete, and the output keeps clear of them.
    Returns the inputs read on purpose although incomplete (--allow-partial)."""
    if not list_parts(config.scored):
        raise FileNotFoundError(f"no scored Parquet under {config.scored} (run `deita-ray score` first)")
    if config.strategy == "diverse" and not list_parts(config.embeddings):
        raise FileNotFoundError(f"no embedding index under {config.embeddings} (run `deita-ray embed` first)")
    partial = check_complete(config.inputs(), config.allow_partial, log=log)
    check_output(config.output, config.inputs())
    return partial


def run_select(config: SelectConfig, address: str | None = None, mode: str = "ray") -> dict:
    """Check the inputs, hold the output (and the run directory read), select, write; returns the summary.
    `mode="local"` keeps the kept index in this process (as `--index local`) and orders the candidates here."""
    if mode == "local":
        config = dataclasses.replace(config, index="local", sort_on="driver" if config.sort_on == "auto" else
                                     config.sort_on)
    started = time.time()
    check_inputs(config)  # before Ray starts; checked again under the lock
    if config.index == "actor":
        from deita_ray.runner.session import ensure_ray

        ensure_ray(address)
    # The run directory the inputs come from is held too: a `run` must not rewrite them meanwhile.
    run_dir = config.run_dir_read()
    with hold_output(run_dir) if run_dir else contextlib.nullcontext():
        partial = check_inputs(config)
        with hold_output(config.output):
            existing = [name for name in SELECTION_FILES if fs.exists(posixpath.join(config.output, name))]
            if existing and not config.overwrite:
                raise FileExistsError(f"{config.output} already holds a selection ({existing[0]}); pass --overwrite "
                                      "to replace it")
            clear_own_files(config.output, SELECTION_FILES)  # the summary first of all: written again last
            return _select(config, started, partial)


def _select(config: SelectConfig, started: float, partial: list[str]) -> dict:
    rejections = None
    if config.strategy == "diverse":
        from deita_ray.select.diverse import run_diverse

        selected_ids, rejections, extra = run_diverse(config)
    else:
        table, ineligible = baselines.candidates(config)
        kept = baselines.order(config, table)
        selected_ids = table.column("id").take(pa.array(kept, pa.int64())).to_pylist() if len(kept) else []
        extra = {"candidates": table.num_rows, "ineligible": ineligible}
    if extra.get("sorted_on") == "ray":  # a big pool: the cluster reads the parts, the driver gets the selection
        from deita_ray.select.candidates import selected_rows_on_ray

        rows = in_selection_order(selected_rows_on_ray(config.scored, selected_ids), selected_ids)
    else:
        rows = selected_rows(config.scored, selected_ids)
    # Each file appears whole (temporary name, then rename); the summary, written last, says the set is complete.
    write_part(rows, config.output, "selected.parquet")
    write_sharegpt_jsonl(rows, posixpath.join(config.output, "selected.jsonl"))
    if rejections is not None:
        write_part(rejections, config.output, "rejections.parquet")
    seconds = round(time.time() - started, 3)
    # Rows in: the candidates; out: the selection; the rest were passed over (too similar, or past the budget).
    summary = {
        **common("select", extra["candidates"], len(selected_ids), 0, seconds, reconciled=True,
                 samples_per_s=round(extra["candidates"] / max(seconds, 1e-9), 1)),  # candidates ranked per second
        "strategy": config.strategy, "budget": config.budget, "threshold": config.threshold,
        "selected": len(selected_ids), "rejected": rejections.num_rows if rejections is not None else 0, **extra,
        "output": config.output, "partial_inputs": partial, "config": snapshot(config),
    }
    fs.write_json(posixpath.join(config.output, SELECT_SUMMARY), summary)
    return summary


def format_summary(s: dict) -> str:
    lines = [f"strategy     {s['strategy']} (budget {s['budget']:,}" +
             (f", tau {s['threshold']})" if s["strategy"] == "diverse" else ")"),
             f"candidates   {s['candidates']:>10,}   (not eligible: " +
             (", ".join(f"{k}: {v:,}" for k, v in s["ineligible"].items()) or "none") + ")"]
    if s["strategy"] == "diverse":
        lines.append(f"visited      {s['visited']:>10,}   rejected as too similar: {s['rejected']:,}   "
                     f"index: {s['index']['backend']}")
    lines += [f"selected     {s['selected']:>10,}   ({s['seconds']:.1f} s)",
              f"output       {s['output']}/selected.parquet, selected.jsonl" +
              (", rejections.parquet" if s["strategy"] == "diverse" else "")]
    if s.get("partial_inputs"):
        lines.append(f"!! PARTIAL    read on purpose although incomplete: {', '.join(s['partial_inputs'])}")
    return "\n".join(lines)


def nothing_selected(s: dict) -> str | None:
    return f"select: nothing selected from {s['candidates']:,} candidates" if s["selected"] == 0 else None


def local_flag(parser) -> None:
    parser.add_argument("--local", dest="index", action="store_const", const="local", default=argparse.SUPPRESS,
                        help="= --index local: keep the index in this process")


STEP = StepType(
    name="select", config=SelectConfig, run=run_select, format=format_summary, failed=nothing_selected,
    help="select the final set: Deita's Repr Filter on a FAISS actor, or a baseline",
    description="Walk the pool by evol score (descending; ties by id) and keep a sample unless its cosine similarity "
                "to the nearest already-kept sample is > tau, until the budget is full. Exact for any block size. "
                "Writes selected.parquet, selected.jsonl (ShareGPT) and rejections.parquet.",
    positional="run_dir", positional_nargs="?", positional_help="run directory holding scored/ and embeddings/ (default .)",
    output_help="output directory (default RUN_DIR/selection)", output_required=False, arguments=local_flag,
    epilog="examples:\n  deita-ray select out/ --budget 6000 --threshold 0.9     # -> out/selection/\n"
           "  deita-ray select out/ --strategy random --budget 6000 -o out/random",
)
