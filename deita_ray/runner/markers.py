"""Completion records of a run's steps, on the output's own filesystem (local or object store).

A step is done when its summary exists, reconciled, for the same fingerprint (a hash of its config
and of its upstream steps' fingerprints); a step that started for the same fingerprint but has no
summary was interrupted and resumes. Any other step starts over.
"""

from __future__ import annotations

import hashlib
import json
import posixpath

from deita_ray.io import fs


def fingerprint(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def summary_path(output: str, step: str) -> str:
    return posixpath.join(output, f"{step}_summary.json")


def started_path(output: str, step: str) -> str:
    return posixpath.join(output, f"_{step}_started.json")


def done(output: str, step: str, print_: str) -> dict | None:
    """The step's summary if it completed and reconciled for this exact fingerprint."""
    summary = fs.read_json(summary_path(output, step))
    if not summary or summary.get("fingerprint") != print_ or not summary.get("reconciled", True):
        return None
    return summary


def begin(output: str, step: str, print_: str) -> bool:
    """Mark a step started; True when an interrupted run of the same step config can be resumed."""
    path = started_path(output, step)
    previous = fs.read_json(path)
    resume = bool(previous) and previous.get("fingerprint") == print_
    fs.remove(summary_path(output, step))  # the summary written last is the completion record
    fs.write_json(path, {"fingerprint": print_})
    return resume


def stamp(output: str, step: str, summary: dict, print_: str) -> dict:
    summary["fingerprint"] = print_
    fs.write_json(summary_path(output, step), summary)
    return summary
