"""`deita-ray compare EVAL_A EVAL_B`: two models' MT-Bench answers judged side by side, in both orders.

    deita-ray compare runs/deita/eval runs/random/eval -o runs/deita-vs-random --judge-model gpt-4o
    from deita_ray.steps import STEPS; STEPS["compare"].execute(STEPS["compare"].config(evals=[a, b], output=...))

Reads the graded answers of two `deita-ray eval` outputs (the questions both answered), and has the judge compare
every turn twice, model A's answer first and then model B's (FastChat's pairwise grading with the position swap):
a model wins a turn only when both orders say so; anything else is a tie, and an invalid judgement in either order
makes the turn invalid (counted, never guessed). Outputs: `compared/` (Parquet: both answers, both judgements,
the verdict per turn), `compare_summary.json` (win / tie / loss of A against B, invalid turns, win rate).
"""

from __future__ import annotations

import posixpath

import pyarrow as pa

from deita_ray.configlib import option, section
from deita_ray.runner.layout import LAYOUTS, PAIRS_DIR
from deita_ray.runner.session import ActorRequest
from deita_ray.runner.spec import StageSpec
from deita_ray.steps.base import StepType, snapshot
from deita_ray.steps.eval import JudgeOptions, graded_rows

PAIR_SCHEMA = pa.schema([("id", pa.string()), ("category", pa.string()), ("turns", pa.list_(pa.string())),
                         ("reference", pa.list_(pa.string())), ("answers_a", pa.list_(pa.string())),
                         ("answers_b", pa.list_(pa.string())), ("model_a", pa.string()), ("model_b", pa.string()),
                         ("source", pa.string()), ("position", pa.int64())])


@section
class CompareConfig(JudgeOptions):
    """The flags of `deita-ray compare` (and what an ablation runs between an arm and its baseline)."""

    evals: list[str] = option(default_factory=list, help="two `deita-ray eval` outputs: A, then B", flag=False,
                              section=False)
    output: str = option("", "output directory", flag=False, section=False)
    overwrite: bool = option(False, "replace an earlier comparison here (only the files deita-ray wrote)",
                             flag=False, section=False)
    resume: bool = option(False, "continue an interrupted comparison", flag=False, section=False)

    def models(self) -> list[tuple[str, str, str]]:
        return [] if self.judge_engine == "fake" else [("judge_model", self.judge_model, self.judge_engine)]

    def requests(self, option: str) -> list[ActorRequest]:
        return [self.judge_request(option)]


def pairs(evals: list[str]) -> pa.Table:
    """The questions both evaluations answered, with both answers (the graded parts of each)."""
    graded = [{r["id"]: r for r in graded_rows(posixpath.join(path, LAYOUTS["eval"].results))} for path in evals]
    common = sorted(set(graded[0]) & set(graded[1]))
    if not common:
        raise ValueError(f"{evals[0]} and {evals[1]} share no answered question")
    rows = [{"id": q, "category": graded[0][q]["category"], "turns": graded[0][q]["turns"],
             "reference": graded[0][q]["reference"], "answers_a": graded[0][q]["answers"], "answers_b": graded[1][q]["answers"],
             "model_a": graded[0][q]["answer_model"], "model_b": graded[1][q]["answer_model"], "source": evals[0],
             "position": k} for k, q in enumerate(common)]
    return pa.Table.from_pylist(rows, PAIR_SCHEMA)


def compare_spec(config: CompareConfig, prompts: list[dict] | None) -> StageSpec:
    return StageSpec(layout=LAYOUTS["compare"], actors=[config.judge_actor(prompts, "pairwise", "compare")],
                     source="parts",
                     sums={"judge_tokens": "judge_tokens"}, tokens=("judge_tokens",), noun="compared",
                     config=snapshot(config))


def run_compare(config: CompareConfig, address: str | None = None, mode: str = "ray") -> dict:
    from deita_ray.io import fs
    from deita_ray.io.outputs import check_output
    from deita_ray.io.writer import write_part
    from deita_ray.report.eval import pairwise_stats
    from deita_ray.runner.completion import check_complete
    from deita_ray.runner.lock import hold_output
    from deita_ray.runner.map_job import run_map_job

    if len(config.evals) != 2:
        raise ValueError(f"compare takes two eval outputs (A, then B), got {len(config.evals)}")
    check_complete([posixpath.join(e, LAYOUTS["eval"].results) for e in config.evals])
    check_output(config.output, list(config.evals))
    prompts = config.judge_prompt_rows()
    table = pairs(config.evals)
    with hold_output(config.output):
        write_part(table, posixpath.join(config.output, PAIRS_DIR), "pairs.parquet")
        summary = run_map_job(compare_spec(config, prompts), [posixpath.join(config.output, PAIRS_DIR)],
                              config.output, mode=mode, overwrite=config.overwrite, resume=config.resume,
                              ray_address=address)
        rows = _compared_rows(posixpath.join(config.output, LAYOUTS["compare"].results))
        summary.update({"pairwise": pairwise_stats(rows), "a": config.evals[0], "b": config.evals[1],
                        "judge": config.judge_model})
        fs.write_json(LAYOUTS["compare"].under(config.output).summary, summary)
        return summary


def _compared_rows(directory: str) -> list[dict]:
    from deita_ray.io.writer import read_columns

    table = read_columns(directory, ["id", "verdicts"])
    return [] if table is None else table.to_pylist()


def format_summary(s: dict) -> str:
    p = s["pairwise"]
    rate = f"{p['win_rate']:.1%}" if p["win_rate"] is not None else "n/a"
    return "\n".join([f"A            {s['a']}", f"B            {s['b']}",
                      f"turns        {p['turns']:>10,}   A wins {p['win']:,}, ties {p['tie']:,}, loses {p['loss']:,}; "
                      f"{p['invalid']:,} invalid (not counted); A's win rate (ties half) {rate}"])


STEP = StepType(
    name="compare", config=CompareConfig, run=run_compare, format=format_summary,
    help="two models' MT-Bench answers judged side by side, in both orders (win / tie / loss)",
    description="Judge two `deita-ray eval` outputs against each other, turn by turn, each turn twice with the "
                "answers' order swapped (FastChat's pairwise grading): a win only when both orders agree, else a "
                "tie; invalid judgements are counted, never guessed.",
    positional="evals", positional_nargs=2, positional_metavar="EVAL", required=("judge_model",), positional_help="two eval output directories: A, then B",
    output_help="output directory: compared/, compare_summary.json",
    epilog="example:\n  deita-ray compare runs/deita/eval runs/random/eval -o runs/deita-vs-random "
           "--judge-model gpt-4o --judge-api-base https://api.openai.com/v1",
)
