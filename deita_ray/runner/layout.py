"""Where a stage's files live under a run's output: the only module that spells the directory names.

    layout = LAYOUTS["score"].under("s3://bucket/out")
    layout.parts, layout.quarantine, layout.read_stats, layout.summary
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class StageLayout:
    stage: str              # the stage's name, also its quarantine `stage` value
    results: str            # its results directory under the output
    quarantine_dir: str     # its quarantine directory
    read_stats_dir: str     # rows read per read task (the independent count)
    parts_subdir: str = ""  # where its completion-record parts sit inside `results`
    side_dirs: tuple[str, ...] = ()  # other tables the stage writes (cleared with its results)
    output: str = ""

    def under(self, output: str) -> "StageLayout":
        return replace(self, output=output)

    def _join(self, *parts: str) -> str:
        return posixpath.join(self.output, *parts)

    @property
    def out(self) -> str:
        return self._join(self.results)

    @property
    def parts(self) -> str:
        return self._join(self.results, self.parts_subdir) if self.parts_subdir else self.out

    @property
    def quarantine(self) -> str:
        return self._join(self.quarantine_dir)

    @property
    def read_stats(self) -> str:
        return self._join(self.read_stats_dir)

    @property
    def sides(self) -> list[str]:
        return [self._join(d) for d in self.side_dirs]

    @property
    def done_ids(self) -> str:
        return self._join(f"_{self.stage}_done_ids.parquet")

    @property
    def summary(self) -> str:
        return self._join(f"{self.stage}_summary.json")


LAYOUTS = {
    "score": StageLayout("score", "scored", "quarantine", "read_stats"),
    "embed": StageLayout("embed", "embeddings", "embed_quarantine", "embed_read_stats", parts_subdir="index"),
    "evolve": StageLayout("evolve", "evolved", "evolve_quarantine", "evolve_read_stats"),
    "judge": StageLayout("judge", "judged", "judge_quarantine", "judge_read_stats", side_dirs=("judge_invalid",)),
    "eval": StageLayout("eval", "graded", "eval_quarantine", "eval_read_stats"),
    "compare": StageLayout("compare", "compared", "compare_quarantine", "compare_read_stats"),
}
QUESTIONS_DIR = "questions"   # the questions an eval read, as Parquet parts (its stage's input)
PAIRS_DIR = "pairs"           # two models' answers side by side, what a comparison judges
ARMS_DIR = "arms"             # an ablation's arms, one directory each
JUDGE_INVALID_DIR = "judge_invalid"   # invalid judgements, raw text and reason (also in judged/, flagged)
LABELS_DIR = "labels"
SELECTION_DIR = "selection"
RUN_STATS = "run_stats.json"
REPORT_DIR = "report"
LOCK_FILE = "_run.lock"
SELECT_SUMMARY = "select_summary.json"
LABELS_SUMMARY = "labels_summary.json"
TRAIN_SUMMARY = "train_summary.json"
# Directories directly under a run's output that its steps write: an input inside one of them is the
# project's own output (OUT/scored read by `embed -o OUT`), not a user's file the output must keep clear of.
OWN_DIRS = tuple(layout.results for layout in LAYOUTS.values()) + (
    SELECTION_DIR, LABELS_DIR, REPORT_DIR, "generation", "scorers", "sft", "dpo", QUESTIONS_DIR, PAIRS_DIR, ARMS_DIR)


def stage_layout(stage: str, output: str) -> StageLayout:
    return LAYOUTS[stage].under(output)


def selection_dir(output: str) -> str:
    return posixpath.join(output, SELECTION_DIR)


def run_stats_path(output: str) -> str:
    return posixpath.join(output, RUN_STATS)


def judge_invalid_dir(output: str) -> str:
    return posixpath.join(output, JUDGE_INVALID_DIR)


def generation_dir(output: str, mode: str) -> str:
    """Where a run's Evol `mode` chains, judgements and labels go (each mode its own stage outputs)."""
    return posixpath.join(output, "generation", mode)


def scorer_dir(output: str, kind: str) -> str:
    return posixpath.join(output, "scorers", kind)


def labels_dir(output: str) -> str:
    return posixpath.join(output, LABELS_DIR)


def report_dir(output: str) -> str:
    return posixpath.join(output, REPORT_DIR)
