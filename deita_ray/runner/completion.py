"""Reading another step's output only when that step says it finished: its completion record (its summary).

    partial = check_complete(["out/judged"])              # IncompleteInput: names the step, counts, what to do
    partial = check_complete(["out/judged"], allow_partial=True)   # read as it is; the caller records `partial`

A step's output is recognised by its place in the layout (OUT/scored, OUT/judged, OUT/selection/selected.jsonl,
OUT/labels/complexity.jsonl, a trained model's OUT/model) and by files only deita-ray writes there; a user's
own files are never checked. Every step removes its completion record before it changes its output and
writes it last, so an interrupted step has none. A record whose part count no longer matches the parts
(output changed since) counts as missing too.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from deita_ray.io import fs
from deita_ray.io.outputs import OWN_FILE
from deita_ray.io.writer import count_rows, list_parts
from deita_ray.runner.layout import LABELS_DIR, LABELS_SUMMARY, LAYOUTS, SELECT_SUMMARY, SELECTION_DIR, \
    TRAIN_SUMMARY


class IncompleteInput(RuntimeError):
    """An input that another step was still writing (or that changed after it finished)."""


@dataclass(frozen=True)
class Producer:
    step: str          # the command that writes it
    summary: str       # its completion record
    results: str       # the directory its parts or files are in
    parts: bool        # whether `results` holds Parquet parts (counted against the record)


def _basename(url: str) -> str:
    return posixpath.basename(url.rstrip("/"))


def _dirname(url: str) -> str:
    return posixpath.dirname(url.rstrip("/"))


def producer(url: str) -> Producer | None:
    """The step that wrote `url`, when it lies where a deita-ray step writes and holds what only it writes."""
    name, parent = _basename(url), _dirname(url)
    for layout in LAYOUTS.values():
        results = url.rstrip("/")
        if layout.parts_subdir and name == layout.parts_subdir and _basename(parent) == layout.results:
            results = parent
        elif name != layout.results:
            continue
        if any(OWN_FILE.fullmatch(_basename(p)) for p in list_parts(results)):
            return Producer(layout.stage, posixpath.join(_dirname(results), f"{layout.stage}_summary.json"), results,
                            True)
    if _basename(parent) == SELECTION_DIR and name in ("selected.jsonl", "selected.parquet"):
        if any(fs.exists(posixpath.join(parent, f)) for f in ("selected.parquet", "visits.parquet", SELECT_SUMMARY)):
            return Producer("select", posixpath.join(parent, SELECT_SUMMARY), parent, False)
    if _basename(parent) == LABELS_DIR and name.endswith(".jsonl"):
        if fs.exists(posixpath.join(parent, "labels.parquet")):
            return Producer("labels", posixpath.join(_dirname(parent), LABELS_SUMMARY), parent, False)
    if name == "model" and fs.exists(posixpath.join(parent, "prepared", "train.parquet")):
        return Producer("train", posixpath.join(parent, TRAIN_SUMMARY), url.rstrip("/"), False)
    return None


def _problem(found: Producer) -> str | None:
    summary = fs.read_json(found.summary)
    if summary is None:
        return f"has no completion record ({posixpath.basename(found.summary)}): the {found.step} run that wrote it " \
               f"did not finish"
    if not summary.get("reconciled", True):
        return f"its {found.step} run's counts do not reconcile ({found.summary})"
    if summary.get("partial_inputs"):
        return f"its {found.step} run read partial inputs on purpose ({', '.join(summary['partial_inputs'])})"
    if found.parts and summary.get("parts") is not None and summary["parts"] != len(list_parts(found.results)):
        return f"its parts changed after the {found.step} run finished ({summary['parts']} recorded, " \
               f"{len(list_parts(found.results))} there)"
    return None


def check_complete(inputs: list[str], allow_partial: bool = False, log=None) -> list[str]:
    """Refuse inputs whose producing step did not finish; with `allow_partial`, warn and return them."""
    partial = []
    for url in inputs:
        found = producer(url)
        problem = _problem(found) if found is not None else None
        if problem is None:
            continue
        have = f" ({count_rows(found.results):,} rows in {len(list_parts(found.results)):,} parts there)" \
            if found.parts else ""
        if not allow_partial:
            raise IncompleteInput(f"{url} is incomplete: it {problem}{have}; finish that step first (run it again, "
                                  f"with --resume for a map step), or pass --allow-partial to read it as it is")
        if log is not None:
            log(f"warning: reading {url} as it is although it {problem}{have} (--allow-partial)")
        partial.append(url)
    return partial
