"""`deita-ray eval MODEL`: MT-Bench the way FastChat's llm_judge runs it: the model answers, an LLM judge grades.

    deita-ray eval runs/sft/model --questions mt_bench_question.jsonl --judge-model gpt-4o --judge-engine http \\
        --judge-prompts judge_prompts.jsonl -o runs/sft/eval
    from deita_ray.steps import STEPS; STEPS["eval"].execute(STEPS["eval"].config(model=..., questions=[...], ...))

Questions are FastChat's question.jsonl rows (`question_id`, `category`, `turns`, optional `reference`; any path or
URL; a bad row goes to quarantine with its reason). On Ray Data actors, like every model step: the model under test
answers turn by turn (stages/answer.py), then the judge grades every turn 1-10 (stages/grade.py) with FastChat's
judge prompts when `--judge-prompts` names its judge_prompts.jsonl (then the numbers compare with published
MT-Bench), else with a prompt of our own, recorded as such. Outputs: `graded/` (Parquet: question, answers,
ratings, judgements, with the model, the judge and the prompt names), `answers.jsonl` and `judgements.jsonl`
(one line per question, per judged turn), `eval_quarantine/`, `eval_summary.json` (overall, per category and per
turn, each with a 95% bootstrap interval; invalid judgements counted) and `report/eval.html`.
"""

from __future__ import annotations

import json
import posixpath
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

from deita_ray.configlib import option, section
from deita_ray.engines.config import EngineOptions, LLMConfig, ServingOptions, llm_config
from deita_ray.io import fs
from deita_ray.io.quarantine import PERMANENT, QUARANTINE_SCHEMA
from deita_ray.io.writer import list_parts, write_part
from deita_ray.prompts import mt_bench
from deita_ray.runner.layout import LAYOUTS, QUESTIONS_DIR
from deita_ray.runner.options import ActorResources, check_gpus
from deita_ray.runner.session import ActorRequest
from deita_ray.runner.spec import StageSpec
from deita_ray.stages.answer import AnswerStage
from deita_ray.stages.grade import GradeStage
from deita_ray.steps.base import RunsModels, StepType, snapshot

QUESTION_SCHEMA = pa.schema([("id", pa.string()), ("category", pa.string()), ("turns", pa.list_(pa.string())),
                             ("reference", pa.list_(pa.string())), ("source", pa.string()), ("position", pa.int64())])


@section
class JudgeOptions:
    """The MT-Bench judge: a model on any engine (a hosted one through its OpenAI-compatible API, as published
    MT-Bench numbers use), at temperature 0."""

    judge_model: str = option(help="the judge: a model directory, a hub name, or a served model's name (http)")
    judge_engine: Literal["hf", "vllm", "http", "fake"] = option("http", "the judge's engine (fake: the scripted "
                                                                         "keyword judge of the quickstart)")
    judge_api_base: str = option("http://127.0.0.1:8000/v1", "http: the judge server's OpenAI-compatible base URL")
    judge_api_key_env: str = option("OPENAI_API_KEY", "http: the environment variable holding the judge's API key")
    judge_prompts: str | None = option(None, "FastChat's judge_prompts.jsonl (numbers comparable with published "
                                             "MT-Bench); default: a prompt of our own, recorded in the summary")
    judge_max_new_tokens: int = option(2048, "tokens a judgement may take", ge=1)
    judge_max_in_flight: int = option(16, "http: judge requests in flight at once (mind the API's rate limits)", ge=1)
    judge_engine_kwargs: dict = option(default_factory=dict, help="passed to the judge engine's constructor")
    judge_replicas: int = option(1, "judge actors (engine replicas; an HTTP judge takes its concurrency from "
                                    "max_in_flight instead)", ge=1)
    judge_cpus_per_replica: float = option(1.0, "CPUs reserved per judge actor", gt=0)
    judge_gpus_per_replica: float | None = option(None, "GPUs per judge actor (default: one for hf, tensor-parallel "
                                                        "size 1 for vllm, none for http and fake)", ge=0)
    judge_batch_rows: int = option(16, "questions per batch handed to a judge actor", ge=1)

    def judge_actor(self, prompts: list[dict] | None, mode: str, option_name: str):
        from deita_ray.runner.spec import ActorStep

        judge = self.judge_config()
        return ActorStep(GradeStage, (judge, prompts, mode, self.judge_max_new_tokens), option=option_name,
                         replicas=self.judge_replicas, cpus=self.judge_cpus_per_replica,
                         gpus=self.judge_gpus_per_replica, batch_rows=self.judge_batch_rows,
                         auto_gpus=1.0 if judge.engine in ("hf", "vllm") else 0.0)

    def judge_request(self, option_name: str) -> ActorRequest:
        return ActorRequest(option_name, self.judge_replicas, self.judge_cpus_per_replica, self.judge_gpus_per_replica,
                            1.0 if self.judge_engine in ("hf", "vllm") else 0.0)

    def judge_config(self) -> LLMConfig:
        return LLMConfig(model=self.judge_model, engine=self.judge_engine, api_base=self.judge_api_base,
                         api_key_env=self.judge_api_key_env, max_in_flight=self.judge_max_in_flight,
                         engine_kwargs=dict(self.judge_engine_kwargs))

    def judge_prompt_rows(self) -> list[dict] | None:
        if self.judge_prompts is None:
            return None
        text = fs.read_text(self.judge_prompts)
        if text is None:
            raise FileNotFoundError(f"judge prompts not found: {self.judge_prompts}")
        return [json.loads(line) for line in text.splitlines() if line.strip()]


@section
class EvalConfig(RunsModels, JudgeOptions, ServingOptions, EngineOptions, ActorResources):
    """The flags of `deita-ray eval` (and what an ablation arm's evaluation runs with)."""

    model: str = option("", "the model under test: a model directory (e.g. OUT/sft/model), a hub name, or a "
                            "served model's name (http)", flag=False, section=False)
    engine: Literal["hf", "vllm", "http", "fake"] = option(
        "hf", "the model under test's engine: hf (transformers), vllm, http (an OpenAI-compatible server), fake")
    questions: list[str] = option(default_factory=list, help="FastChat question.jsonl files (local, s3://, ...)",
                                  section=False)
    output: str = option("", "output directory", flag=False, section=False)
    template: Literal["vicuna", "model"] = option(
        "vicuna", "how the model is prompted: vicuna (Deita's SFT format, raw text) or model (its chat template, or a "
                  "server's chat API)")
    max_new_tokens: int = option(1024, "tokens per answer at most (FastChat: 1024)", ge=1)
    seed: int = option(0, "run seed: with (question id, turn) it fixes every answer's sampling seed")
    overwrite: bool = option(False, "replace an earlier evaluation here (only the files deita-ray wrote)", flag=False,
                             section=False)
    resume: bool = option(False, "continue an interrupted evaluation: questions already graded are kept",
                          flag=False, section=False)
    model_keys = ("model", "judge_model")
    pools = 2

    def __post_init__(self):
        check_gpus(self.engine, self.tensor_parallel_size, self.gpus_per_replica, "")

    def models(self) -> list[tuple[str, str, str]]:
        return [(key, model, engine) for key, model, engine in (("model", self.model, self.engine),
                                                                ("judge_model", self.judge_model, self.judge_engine))
                if model and not (key == "judge_model" and engine == "fake")]  # the scripted judge loads nothing

    def requests(self, option: str) -> list[ActorRequest]:
        return [ActorRequest(option, self.replicas, self.cpus_per_replica, self.gpus_per_replica, self.auto_gpus()),
                self.judge_request(f"{option}.judge")]


def read_questions(paths: list[str]) -> tuple[pa.Table, pa.Table]:
    """(questions, quarantined rows) from FastChat question.jsonl files: a bad row is quarantined with its reason."""
    good, bad = [], []
    files = []
    for path in paths:  # a directory: its .jsonl files
        filesystem, local = fs.url_to_fs(path)
        files += [path] if not filesystem.isdir(local) else [
            filesystem.unstrip_protocol(p) if "://" in path else p for p in sorted(filesystem.find(local))
            if p.endswith(".jsonl") and not posixpath.basename(p).startswith(("_", "."))]
    for path in files:
        text = fs.read_text(path)
        if text is None:
            raise FileNotFoundError(f"questions not found: {path}")
        for position, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                question = mt_bench.read_question(json.loads(line))
            except (ValueError, mt_bench.QuestionError) as exc:
                bad.append({"id": f"{posixpath.basename(path)}:{position}", "stage": "read", "reason": str(exc),
                            "raw": line, "source": path, "position": position, "failure": PERMANENT})
                continue
            good.append({"id": question.question_id, "category": question.category, "turns": list(question.turns),
                         "reference": list(question.reference) if question.reference else None, "source": path,
                         "position": position})
    if not good:
        raise ValueError(f"no question could be read from {', '.join(paths)} (FastChat question.jsonl: question_id, "
                         "category, turns)")
    return pa.Table.from_pylist(good, QUESTION_SCHEMA), pa.Table.from_pylist(bad, QUARANTINE_SCHEMA)


def eval_spec(config: EvalConfig, prompts: list[dict] | None) -> StageSpec:
    return StageSpec(
        layout=LAYOUTS["eval"],
        actors=[config.actor(AnswerStage, (llm_config(config, config.model), config.template, config.max_new_tokens,
                                           config.seed), "eval"), config.judge_actor(prompts, "single", "eval.judge")],
        source="parts", sums={"answer_tokens": "answer_tokens", "judge_tokens": "judge_tokens",
                              "answer_flops": "answer_flops"},
        tokens=("answer_tokens", "judge_tokens"), flops=("answer_flops",), noun="graded", config=snapshot(config))


def run_eval(config: EvalConfig, address: str | None = None, mode: str = "ray") -> dict:
    from deita_ray.report.eval import rating_stats, write_eval_page
    from deita_ray.runner.lock import hold_output
    from deita_ray.runner.map_job import run_map_job

    if not config.questions:
        raise ValueError("give the questions to ask: --questions FILE (FastChat question.jsonl)")
    if not config.model:
        raise ValueError("give the model under test")
    prompts = config.judge_prompt_rows()
    mt_bench.JudgePrompts.load(prompts).pick("single", mt_bench.Question("q", "general", ("?",)), 1)  # usable?
    questions, bad = read_questions(config.questions)
    _check_inputs(config)
    questions_dir = posixpath.join(config.output, QUESTIONS_DIR)
    with hold_output(config.output):
        graded = LAYOUTS["eval"].under(config.output).parts
        if list_parts(graded) and not (config.overwrite or config.resume):
            raise FileExistsError(f"{graded} already holds graded answers; pass --overwrite to replace them or "
                                  "--resume to finish them")
        write_part(questions, questions_dir, "questions.parquet")
        summary = run_map_job(eval_spec(config, prompts), [questions_dir], config.output, mode=mode,
                              overwrite=config.overwrite, resume=config.resume, ray_address=address)
        rows = graded_rows(posixpath.join(config.output, LAYOUTS["eval"].results))
        stats = rating_stats(rows)
        stats["judge_prompts"] = config.judge_prompts or mt_bench.JudgePrompts.load(None).source
        _write_lines(config.output, rows, config)
        summary.update({"mt_bench": stats, "questions_read": questions.num_rows + bad.num_rows,
                        "questions_bad": bad.to_pylist(), "model": config.model, "judge": config.judge_model,
                        "report": write_eval_page(config.output, stats, config.model)})
        fs.write_json(LAYOUTS["eval"].under(config.output).summary, summary)  # the completion record, whole
        return summary


def _check_inputs(config: EvalConfig) -> None:
    """The model is a finished training's (or not ours), and the output keeps clear of everything read."""
    import os

    from deita_ray.io.outputs import check_output
    from deita_ray.runner.completion import check_complete

    local = [m for m in (config.model,) if "://" not in m and os.path.exists(m)]
    check_complete(local)
    check_output(config.output, list(config.questions) + local + ([config.judge_prompts] if config.judge_prompts
                                                                   else []))


def graded_rows(directory: str) -> list[dict]:
    """Every graded question of an evaluation (its graded/ parts), by question id."""
    columns = ["id", "category", "turns", "reference", "answers", "ratings", "judge_status", "judgements",
               "judge_prompt", "judge_reason", "answer_model", "judge_model"]
    filesystem, _ = fs.url_to_fs(directory)
    rows = []
    for part in list_parts(directory):
        with filesystem.open(part, "rb") as f:
            rows += pq.read_table(f, columns=columns).to_pylist()
    return sorted(rows, key=lambda r: r["id"])


def _write_lines(output: str, rows: list[dict], config: EvalConfig) -> None:
    """answers.jsonl (FastChat's model_answer shape) and judgements.jsonl (one line per judged turn), with lineage."""
    answers = [{"question_id": r["id"], "model_id": r["answer_model"], "category": r["category"],
                "choices": [{"index": 0, "turns": r["answers"]}]} for r in rows]
    judged = [{"question_id": r["id"], "turn": k + 1, "model": r["answer_model"], "judge": r["judge_model"],
               "judge_prompt": r["judge_prompt"], "rating": rating, "status": status, "reason": reason,
               "judgement": text}
              for r in rows for k, (rating, status, reason, text) in enumerate(zip(r["ratings"], r["judge_status"],
                                                                                  r["judge_reason"], r["judgements"]))]
    for name, lines in (("answers.jsonl", answers), ("judgements.jsonl", judged)):
        with fs.open_for_write(posixpath.join(output, name)) as f:
            f.write("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))


def format_summary(s: dict) -> str:
    stats = s["mt_bench"]
    overall = stats["overall"]
    lines = [f"questions    {s['questions_read']:>10,}   ({len(s['questions_bad']):,} bad rows, "
             f"{s['rows_quarantined']:,} quarantined by the model or the judge)",
             f"MT-Bench     {overall['mean'] if overall['mean'] is not None else float('nan'):>10.2f}   95% interval "
             f"[{overall['low'] or 0:.2f}, {overall['high'] or 0:.2f}] over {overall['n']:,} judged turns; "
             f"{stats['invalid_judgements']:,} invalid judgements (not counted)"]
    lines += [f"  turn {t}: {v['mean']:.2f}" for t, v in stats["by_turn"].items() if v["mean"] is not None]
    lines += [f"  {c}: {v['mean']:.2f}" for c, v in stats["by_category"].items() if v["mean"] is not None]
    lines.append(f"report       {s['report']}")
    return "\n".join(lines)


def no_rating(s: dict) -> str | None:
    from deita_ray.runner.summary import outcome_error

    problem = outcome_error(s)
    if problem is None and s["mt_bench"]["overall"]["n"] == 0:
        return f"eval: not one valid judgement of {s['mt_bench']['judgements']:,} (see judgements.jsonl)"
    return problem


STEP = StepType(
    name="eval", config=EvalConfig, run=run_eval, format=format_summary, failed=no_rating,
    help="MT-Bench: the model answers FastChat's questions, an LLM judge grades every turn 1-10",
    description="Evaluate a model the way FastChat's MT-Bench does: two-turn answers (the second after the model's "
                "own first), FastChat's per-category temperatures, a seed per request; single-answer grading 1-10 by "
                "any judge (FastChat's judge prompts with --judge-prompts; a reference answer for math, reasoning and "
                "coding); strict verdicts ([[7]]): an invalid judgement is counted, never guessed. The summary gives "
                "the mean with a 95% bootstrap interval, per category and per turn.",
    positional="model", positional_nargs=None, required=("judge_model", "questions"), positional_help="the model under test (a directory, a hub name, or a "
                                                               "served model's name with --engine http)",
    output_help="output directory: graded/, answers.jsonl, judgements.jsonl, eval_summary.json, report/eval.html",
    epilog="examples:\n  deita-ray eval runs/sft/model --questions mt_bench_question.jsonl -o runs/sft/eval \\\n"
           "      --judge-model gpt-4o --judge-api-base https://api.openai.com/v1 --judge-prompts judge_prompts.jsonl\n"
           "  deita-ray eval runs/sft/model --questions q.jsonl -o out/eval --judge-engine fake "
           "--judge-model scripted",
)
