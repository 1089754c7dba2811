"""`deita-ray labels`: scorer training rows from judged chains, one per valid (variant, score), and the report.

    deita-ray labels OUT -o OUT          # OUT holds judged/ (from deita-ray judge)
    from deita_ray.steps import STEPS; STEPS["labels"].execute(STEPS["labels"].config(inputs=["OUT"]))

Writes `<output>/labels/complexity.jsonl` and/or `quality.jsonl` in the format `deita-ray train scorer` reads (the
filled scorer prompt as the human turn, the score digit as the gpt turn; notes/evol-judge.md §5),
`<output>/labels/labels.parquet` (the same rows with their lineage: id `<seed id>/r<round>`, seed_id, round,
operation, kind, score), `<output>/labels_summary.json` and `<output>/report/generation.html`. Chains are read and
their labels written part by part (the files appear whole, or not at all); only valid judgements give labels.
Counts reconcile: chains in = valid + invalid + skipped, and labels = variants of valid chains.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import time

import pyarrow as pa
import pyarrow.parquet as pq

from deita_ray.configlib import option, section
from deita_ray.io import fs
from deita_ray.io.writer import list_parts
from deita_ray.prompts import judge
from deita_ray.report.generation import judged_dir
from deita_ray.runner.layout import LABELS_SUMMARY, labels_dir
from deita_ray.runner.summary import common
from deita_ray.stages.judge import INVALID, SKIPPED, VALID
from deita_ray.steps.base import StepType

COLUMNS = ["id", "mode", "instruction", "variants", "operations", "scores", "judge_status"]


@section
class LabelsConfig:
    """The flags of `deita-ray labels` (a run makes labels of every mode it evolves; no section of its own)."""

    inputs: list[str] = option(default_factory=list, help="run directories holding judged/ (or judged/ directories)",
                               flag=False, section=False)
    output: str | None = option(None, "where labels/ and the report go (default: the first input)", flag=False,
                                section=False)
    overwrite: bool = option(False, "replace existing labels (only the files labels writes)", flag=False,
                             section=False)
    report: bool = option(True, "write report/generation.html")
    allow_partial: bool = option(False, "read judged chains whose judge run did not finish (recorded in the "
                                        "summary)")

    def __post_init__(self):
        self.output = self.output or (self.inputs[0] if self.inputs else None)

def judged_dirs(inputs: list[str]) -> list[str]:
    """The judged/ directory of every input, each checked to hold judge output (one line when not)."""
    found = []
    for path in inputs:
        directory = judged_dir(path)
        parts = list_parts(directory)
        if not parts:
            raise FileNotFoundError(f"no judged chains under {path} (no judged/ Parquet parts; run deita-ray judge "
                                    "first)")
        filesystem, _ = fs.url_to_fs(directory)
        with filesystem.open(parts[0], "rb") as f:
            missing = [c for c in COLUMNS if c not in pq.ParquetFile(f).schema_arrow.names]
        if missing:
            raise FileNotFoundError(f"{directory} holds no judge output ({parts[0]} has no column "
                                    f"{', '.join(missing)}); give a run directory holding judged/")
        found.append(directory)
    return found


def iter_chains(directories: list[str]):
    """Judged chains, one Parquet part at a time (only the columns labels need)."""
    for directory in directories:
        filesystem, _ = fs.url_to_fs(directory)
        for part in list_parts(directory):
            with filesystem.open(part, "rb") as f:
                yield pq.read_table(f, columns=COLUMNS)


# labels.parquet: the label rows flattened (the prompt as a column), schema fixed so parts agree.
LABEL_SCHEMA = pa.schema([("id", pa.string()), ("seed_id", pa.string()), ("round", pa.int64()),
                          ("operation", pa.string()), ("kind", pa.string()), ("score", pa.int64()),
                          ("prompt", pa.string())])


LABEL_FILES = ("complexity.jsonl", "quality.jsonl", "labels.parquet")


def export_labels(config: LabelsConfig, address: str | None = None, log=print, mode: str = "ray") -> dict:
    """Stream the judged chains part by part into the label files: the driver holds one part's labels.
    The inputs are checked (judge output, complete) before anything under the output is removed."""
    from deita_ray.io.outputs import check_output, clear_own_files
    from deita_ray.runner.completion import check_complete
    from deita_ray.runner.layout import OWN_DIRS
    from deita_ray.runner.lock import hold_output

    output = config.output
    directories = judged_dirs(config.inputs)
    partial = check_complete(directories, config.allow_partial, log=log)
    check_output(output, directories, own=OWN_DIRS)
    with hold_output(output):
        out_dir = labels_dir(output)
        existing = [n for n in LABEL_FILES if fs.exists(posixpath.join(out_dir, n))]
        if existing and not config.overwrite:
            raise FileExistsError(f"{out_dir} already holds labels; pass --overwrite to replace them")
        fs.remove(posixpath.join(output, LABELS_SUMMARY))  # the completion record goes first, comes back last
        clear_own_files(out_dir, LABEL_FILES)  # a kind that gets no labels this time must not keep the last run's
        summary = _export(directories, out_dir)
        summary["partial_inputs"] = partial
        if config.report:
            from deita_ray.report.generation import write_generation_report

            summary["report"] = write_generation_report(output, directories)
        fs.write_json(posixpath.join(output, LABELS_SUMMARY), summary)
        return summary


def _export(directories: list[str], out_dir: str) -> dict:
    started = time.time()
    status_counts = {VALID: 0, INVALID: 0, SKIPPED: 0}
    by_kind: dict[str, int] = {}
    labels_out, expected, chains_read = 0, 0, 0
    files: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        jsonl: dict[str, object] = {}  # one streamed file per kind, opened at its first label
        parquet = None
        for table in iter_chains(directories):
            chains_read += table.num_rows
            part_rows = []
            for chain in table.to_pylist():
                status_counts[chain["judge_status"]] = status_counts.get(chain["judge_status"], 0) + 1
                if chain["judge_status"] != VALID:
                    continue
                expected += len(chain["variants"])
                rows = judge.label_rows(chain["mode"], chain["id"], chain["variants"], chain["scores"],
                                        chain["operations"], chain["instruction"])
                kind = chain["mode"]
                if kind not in jsonl:
                    files[kind] = posixpath.join(out_dir, f"{kind}.jsonl")
                    jsonl[kind] = stack.enter_context(fs.open_for_write(files[kind]))
                jsonl[kind].write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
                by_kind[kind] = by_kind.get(kind, 0) + len(rows)
                part_rows += rows
            if part_rows:
                if parquet is None:
                    target = stack.enter_context(fs.open_for_write(posixpath.join(out_dir, "labels.parquet"), binary=True))
                    parquet = stack.enter_context(pq.ParquetWriter(target.file, LABEL_SCHEMA))
                flat = [{**{k: v for k, v in r.items() if k != "conversations"}, "prompt": r["conversations"][0]["value"]}
                        for r in part_rows]
                parquet.write_table(pa.Table.from_pylist(flat, schema=LABEL_SCHEMA))
                labels_out += len(part_rows)
    # chains read = valid + invalid + skipped (an unknown status would break this), labels = valid variants
    reconciled = labels_out == expected and chains_read == sum(status_counts[k] for k in (VALID, INVALID, SKIPPED))
    summary = {
        **common("labels", chains_read, labels_out, 0, round(time.time() - started, 3), reconciled=reconciled),
        "chains_in": chains_read, "chains": status_counts,
        "judge_validity": round(status_counts[VALID] / (status_counts[VALID] + status_counts[INVALID]), 4)
        if status_counts[VALID] + status_counts[INVALID] else None,
        "labels_out": labels_out, "labels_by_kind": by_kind, "files": files, "output": out_dir,
    }
    return summary


def format_summary(summary: dict) -> str:
    chains = summary["chains"]
    ok = "(= labels of every valid chain)" if summary["reconciled"] else "!! DOES NOT RECONCILE"
    if summary.get("partial_inputs"):
        ok += f"  !! PARTIAL: read on purpose although incomplete: {', '.join(summary['partial_inputs'])}"
    lines = [f"chains in    {summary['chains_in']:>10,}   (valid {chains.get(VALID, 0):,}, invalid "
             f"{chains.get(INVALID, 0):,}, skipped {chains.get(SKIPPED, 0):,})",
             f"labels       {summary['labels_out']:>10,}   {ok}  "
             + ", ".join(f"{k}: {v:,}" for k, v in summary["labels_by_kind"].items())]
    if summary["judge_validity"] is not None:
        lines.append(f"valid judgements {summary['judge_validity']:.1%}")
    for kind, path in summary["files"].items():
        lines.append(f"{kind:<12} {path}   (deita-ray train scorer {path} --kind {kind} ...)")
    if summary.get("report"):
        lines.append(f"report       {summary['report']}")
    return "\n".join(lines)


def no_labels(summary: dict) -> str | None:
    if not summary["reconciled"]:
        return "labels: the counts do not reconcile"
    if summary["labels_out"] == 0:
        return f"labels: not one label from {summary['chains_in']:,} chains (no valid judgement)"
    return None


STEP = StepType(
    name="labels", config=LabelsConfig, run=export_labels, format=format_summary, failed=no_labels,
    help="scorer training rows from judged chains (+ the evolution/judging report)",
    description="One row per valid (variant, score) in the format `deita-ray train scorer` reads, with lineage ids "
                "<seed id>/r<round>; and report/generation.html.",
    positional_help="run directories holding judged/ (or judged/ directories)",
    output_help="where labels/ and the report go (default: the first input)", output_required=False,
    epilog="example:\n  deita-ray labels out/ && deita-ray train scorer out/labels/complexity.jsonl --kind complexity "
           "--model models/scorer-complexity -o runs/scorer",
)
