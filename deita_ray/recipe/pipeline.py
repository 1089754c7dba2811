"""`deita-ray run CONFIG`: the steps of a run config in order (generation -> score -> embed -> select -> SFT -> DPO,
then the report) as one Ray job.

    deita-ray run quickstart                         # the embedded default (local Ray, CPU, tiny models)
    deita-ray run my.yaml --set select.budget=10000  # any config, with overrides

Each step has a completion record on the output's own filesystem (runner/markers.py): a step whose record says it
finished and reconciled, for the same config and the same upstream records, is skipped; an interrupted step with
the same config resumes (only the samples its finished parts do not hold); a step whose inputs changed runs again,
and so does every step that reads its output. The output is held by one run at a time (runner/lock.py). The run stops at the
first step whose work failed (its step says so in one line). Everything is checked before any work starts: the
whole configuration, the models (one line each) and whether the cluster can hold what each step asks for.
`run_stats.json` holds one record per step and `report/index.html` the selection report.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import time
from dataclasses import dataclass

from deita_ray.io import fs
from deita_ray.io.reader import input_signature
from deita_ray.recipe.config import RunConfig, models
from deita_ray.runner import markers
from deita_ray.runner.layout import generation_dir, labels_dir, run_stats_path, scorer_dir, selection_dir
from deita_ray.runner.summary import COMMON_KEYS, RATE_KEYS
from deita_ray.steps import STEPS
from deita_ray.steps.base import StepType, snapshot
from deita_ray.steps.labels import LabelsConfig

# What a run's record keeps of a step's summary besides the common keys (the report and the table read these).
RECORD_KEYS = COMMON_KEYS + RATE_KEYS + ("rows_flagged", "visited", "sorted_on", "quarantine_classes", "model",
                                         "global_step", "losses", "judge_validity", "mt_bench", "pairwise", "selected")


class PipelineError(RuntimeError):
    """A step ended without a result the next step can trust (counts that do not reconcile, no rows)."""


@dataclass
class Step:
    name: str          # its completion record's name (evolve_complexity, score, sft, ...)
    label: str         # what the log says when it runs
    section: str       # the config section a user changes (score, generation.evolve, ...)
    type: StepType
    config: object     # its config, every value resolved
    fingerprint: str   # its config, what it read, and its upstream steps' fingerprints
    needs: tuple[str, ...] = ()  # the steps whose output it reads (run again, they make it stale)

    def run(self, resume: bool, address: str | None, local: bool = False) -> dict:
        config = dataclasses.replace(self.config, resume=resume) if hasattr(self.config, "resume") else self.config
        return self.type.execute(config, mode="local" if local else "ray", address=address)


def resolve_model(model: str | None, models_dir: str) -> str | None:
    if not model or not model.startswith("tiny:"):
        return model
    from deita_ray.tools.tiny_models import make_tiny_models

    return str(make_tiny_models(models_dir)[model[5:]])


def _make_sample(section, log, what: str, make) -> list[str]:
    """A generated data set the config asks for (made once, if missing); [] when it asks for none."""
    if not section.dir:
        return []
    if not os.path.exists(os.path.join(section.dir, "_manifest.json")):
        log(f"making the sample {what} in {section.dir}")
        make(section.dir, section.samples, section.seed)
    return [section.dir]


def make_samples(config: RunConfig, log) -> None:
    """The data sets the config asks the project to generate (the pool, seeds, preference pairs)."""
    from deita_ray.tools.sample_pool import make_pool, make_preferences, make_questions

    _make_sample(config.sample_pool, log, "pool", lambda d, n, s: make_pool(d, samples=n, seed=s))
    _make_sample(config.sample_seeds, log, "seeds", lambda d, n, s: make_pool(d, samples=n, seed=s))
    _make_sample(config.sample_preferences, log, "preference pairs", lambda d, n, s: make_preferences(d, n, s))
    _make_sample(config.sample_questions, log, "questions", lambda d, n, s: make_questions(d, n, s))


def _models_resolved(config, models_dir: str):
    """The config with its tiny:* models built and named by path."""
    names = [key for key, _, _ in config.models()] if hasattr(config, "models") else []
    return dataclasses.replace(config, **{k: resolve_model(getattr(config, k), models_dir) for k in names})


def generation_steps(config: RunConfig) -> tuple[list[Step], dict[str, str], list[str]]:
    """Per mode: evolve -> judge -> labels -> train the scorer. Returns the steps, the trained scorers' model
    directories by kind, and the fingerprints the score step depends on."""
    gen, out, models_dir = config.generation, config.output, config.models_dir
    seeds = list(gen.seeds) or [config.sample_seeds.dir]
    steps, scorers, fingerprints = [], {}, []
    for mode in gen.modes:
        work = generation_dir(out, mode)
        evolve = _models_resolved(dataclasses.replace(gen.evolve, mode=mode, inputs=seeds, output=work,
                                                      overwrite=True), models_dir)
        evolve_fp = markers.fingerprint(snapshot(evolve), input_signature(seeds))
        judge = _models_resolved(dataclasses.replace(gen.judge, inputs=[posixpath.join(work, "evolved")],
                                                     output=work, overwrite=True), models_dir)
        judge_fp = markers.fingerprint(snapshot(judge), evolve_fp)
        labels = LabelsConfig(inputs=[work], output=work, overwrite=True)
        labels_fp = markers.fingerprint("labels", judge_fp)
        scorer = _models_resolved(dataclasses.replace(
            gen.scorer, kind=mode, data=[posixpath.join(labels_dir(work), f"{mode}.jsonl")],
            output=scorer_dir(out, mode)), models_dir)
        scorer_fp = markers.fingerprint(snapshot(dataclasses.replace(scorer, resume=True)), labels_fp)
        steps += [Step(f"evolve_{mode}", f"Evol {mode}: {evolve.rounds} rounds with {gen.evolve.model}",
                       "generation.evolve", STEPS["evolve"], evolve, evolve_fp),
                  Step(f"judge_{mode}", f"judging the {mode} chains with {gen.judge.model}", "generation.judge",
                       STEPS["judge"], judge, judge_fp, (f"evolve_{mode}",)),
                  Step(f"labels_{mode}", f"{mode} scorer labels", "generation", STEPS["labels"], labels, labels_fp,
                       (f"judge_{mode}",)),
                  Step(f"scorer_{mode}", f"training the {mode} scorer from {gen.scorer.model}", "generation.scorer",
                       STEPS["scorer"], scorer, scorer_fp, (f"labels_{mode}",))]
        scorers[mode] = posixpath.join(scorer_dir(out, mode), "model")
        fingerprints.append(scorer_fp)
    return steps, scorers, fingerprints


def plan(config: RunConfig) -> list[Step]:
    """Every step of the run, its config resolved (models built, the run's own paths), fingerprinted."""
    steps, trained, upstream = [], {}, []
    if config.generation is not None:
        steps, trained, upstream = generation_steps(config)
    score = _models_resolved(config.score, config.models_dir)
    score = dataclasses.replace(score, **{f"{kind}_model": path for kind, path in trained.items()})
    # The pool's files (sizes, versions) are part of it: a file added to the pool is scored, never skipped.
    score_fp = markers.fingerprint(snapshot(score), input_signature(score.inputs), *upstream)
    embed = _models_resolved(config.embed, config.models_dir)
    # Chained on the upstream fingerprint: whatever re-ran upstream, this step runs again on what it produced.
    embed_fp = markers.fingerprint(snapshot(embed), score_fp)
    select = config.select
    select_fp = markers.fingerprint(snapshot(select), embed_fp)
    scorers = tuple(f"scorer_{mode}" for mode in trained)
    steps += [Step("score", "scoring", "score", STEPS["score"], score, score_fp, scorers),
              Step("embed", f"embedding with {config.embed.model}", "embed", STEPS["embed"], embed, embed_fp,
                   ("score",)),
              Step("select", f"selecting {select.budget:,} ({select.strategy}, tau {select.threshold})", "select",
                   STEPS["select"], select, select_fp, ("embed",))]
    if config.ablation is not None:  # the arms train; the run's own selection stays for the report
        return steps + ablation_steps(config, embed_fp)
    upstream_fp, upstream = select_fp, "select"
    for task in ("sft", "dpo"):
        train = getattr(config, task)
        if train is None:
            continue
        train = _models_resolved(train, config.models_dir)
        read = input_signature(train.data) if task == "dpo" else []  # the pairs are the user's files
        fp = markers.fingerprint(snapshot(dataclasses.replace(train, resume=True)), upstream_fp, read)
        steps.append(Step(task, f"{task.upper()} of {getattr(config, task).model} ({train.preset})", task,
                          STEPS[task], train, fp, (upstream,)))
        upstream_fp, upstream = fp, task
    return steps


def ablation_steps(config: RunConfig, embed_fp: str) -> list[Step]:
    """Per arm: select at the ablation's budget, train as the sft: (and dpo:) sections say, evaluate on MT-Bench;
    then every arm against the baseline, pairwise. Each a fingerprinted step: a finished arm is skipped, a new one
    runs alone."""
    from deita_ray.recipe.config import ARM_STRATEGIES
    from deita_ray.steps.compare import CompareConfig
    from deita_ray.steps.eval import JudgeOptions

    ablation, out = config.ablation, config.output
    budget = ablation.budget or config.select.budget
    judged = input_signature(ablation.questions + ([ablation.eval.judge_prompts] if ablation.eval.judge_prompts
                                                   else []))
    steps, evals = [], {}
    for arm in ablation.arms:
        home = arm_dir(out, arm)
        select = dataclasses.replace(config.select, strategy=ARM_STRATEGIES[arm], budget=budget,
                                     output=posixpath.join(home, "selection"))
        fp = markers.fingerprint(snapshot(select), embed_fp)
        steps.append(Step(f"select_{arm}", f"arm {arm}: selecting {budget:,} ({select.strategy})", "ablation",
                          STEPS["select"], select, fp, ("embed",)))
        model, last = None, f"select_{arm}"
        for task in ("sft", "dpo"):
            train = getattr(config, task)
            if train is None:
                continue
            data = [posixpath.join(home, "selection", "selected.jsonl")] if task == "sft" else train.data
            start = model or train.model
            train = _models_resolved(dataclasses.replace(train, data=data, output=posixpath.join(home, task),
                                                         model=start), config.models_dir)
            fp = markers.fingerprint(snapshot(dataclasses.replace(train, resume=True)), fp,
                                     input_signature(train.data) if task == "dpo" else [])
            steps.append(Step(f"{task}_{arm}", f"arm {arm}: {task.upper()}", task, STEPS[task], train, fp, (last,)))
            model, last = posixpath.join(home, task, "model"), f"{task}_{arm}"
        evaluation = dataclasses.replace(ablation.eval, model=model, questions=list(ablation.questions),
                                         output=posixpath.join(home, "eval"), overwrite=True)
        fp = markers.fingerprint(snapshot(evaluation), fp, judged)
        steps.append(Step(f"eval_{arm}", f"arm {arm}: MT-Bench", "ablation.eval", STEPS["eval"], evaluation, fp,
                          (last,)))
        evals[arm] = (evaluation.output, fp)
    judge = {f.name: getattr(ablation.eval, f.name) for f in dataclasses.fields(JudgeOptions)}
    for arm in ablation.arms:
        if arm == ablation.baseline:
            continue
        compare = CompareConfig(**judge, evals=[evals[arm][0], evals[ablation.baseline][0]],
                                output=posixpath.join(arm_dir(out, arm), f"vs-{ablation.baseline}"), overwrite=True)
        fp = markers.fingerprint(snapshot(compare), evals[arm][1], evals[ablation.baseline][1])
        steps.append(Step(f"compare_{arm}", f"arm {arm} against {ablation.baseline}", "ablation.eval",
                          STEPS["compare"], compare, fp, (f"eval_{arm}", f"eval_{ablation.baseline}")))
    return steps


def arm_dir(output: str, arm: str) -> str:
    from deita_ray.runner.layout import ARMS_DIR

    return posixpath.join(output, ARMS_DIR, arm)


def check_models(config: RunConfig) -> None:
    """Every model the run loads and does not make, one line each, before Ray starts."""
    from deita_ray.preflight import check_model

    for key, model, engine in models(config):
        if engine != "http":
            check_model(key, model)


def check_resources(config: RunConfig, steps: list[Step]) -> None:
    """Every step's request against the cluster, before the first step starts."""
    from deita_ray.runner.session import is_local_ray

    local = is_local_ray(config.ray.address)
    for step in steps:
        step.type.check_resources(step.config, step.section, local)


def run_pipeline(config: RunConfig, log=print) -> dict:
    from deita_ray.io.outputs import check_output
    from deita_ray.runner.layout import OWN_DIRS, SELECTION_DIR
    from deita_ray.runner.lock import hold_output
    from deita_ray.runner.session import ensure_ray

    check_models(config)  # one line per bad model, before Ray starts
    make_samples(config, log)
    read = list(config.score.inputs) + (list(config.generation.seeds) if config.generation is not None else []) + (
        list(config.dpo.data) if config.dpo is not None else []) + (
        list(config.ablation.questions) if config.ablation is not None else [])
    check_output(config.output, read, own=OWN_DIRS)
    # The directories other commands write on their own (select -o OUT/selection, train -o OUT/sft) are checked
    # too: a run must not start while one of them is being written.
    inside = tuple(posixpath.join(config.output, d) for d in (SELECTION_DIR, "sft", "dpo", "scorers/complexity",
                                                              "scorers/quality"))
    with hold_output(config.output, inside=inside):
        steps = plan(config)
        if not config.ray.local:  # a local run starts Ray only where a training needs it (train() does)
            ensure_ray(config.ray.address, config.ray.num_cpus)
            check_resources(config, steps)
        stats, started = {}, time.time()
        for number, step in enumerate(steps, 1):
            stats[step.name] = _run_step(config, steps, number, log)
        run = {"stages": stats, "seconds": round(time.time() - started, 2), "output": config.output,
               "selected": posixpath.join(selection_dir(config.output), "selected.jsonl"), "config": snapshot(config)}
        fs.write_json(run_stats_path(config.output), run)
        if config.report:
            from deita_ray.report.selection import write_report

            run["report"] = write_report(config.output)
        return run


def dependents(steps: list[Step], name: str) -> list[str]:
    """Every step that reads `name`'s output, directly or through others."""
    found: list[str] = []
    for step in steps:
        if any(n == name or n in found for n in step.needs):
            found.append(step.name)
    return found


def _run_step(config: RunConfig, steps: list[Step], number: int, log) -> dict:
    """One step: skipped when its record says it is done for this fingerprint, else run (resumed where an
    interrupted run of the same step left off); what comes after it is invalid until it runs again."""
    step, total = steps[number - 1], len(steps)
    summary = None if config.overwrite else markers.done(config.output, step.name, step.fingerprint)
    if summary:
        # "scoring", or the whole "arm deita: SFT": an arm's steps differ only after the first word
        head = step.label.split(" (")[0] if step.label.startswith("arm ") else step.label.split(" ")[0]
        log(f"[{number}/{total}] {head}: already done for this config, skipped")
    else:
        resume = markers.begin(config.output, step.name, step.fingerprint) and not config.overwrite
        for later in dependents(steps, step.name):  # what reads this step's output is stale until it runs again
            fs.remove(markers.summary_path(config.output, later))
        log(f"[{number}/{total}] {step.label}" + (" (resuming an interrupted run)" if resume else ""))
        summary = step.run(resume, config.ray.address, config.ray.local)
        problem = step.type.failure(summary)
        if problem:
            raise PipelineError(f"{problem}; the run stops here (see {config.output})")
        markers.stamp(config.output, step.name, summary, step.fingerprint)
    return {k: summary[k] for k in RECORD_KEYS if k in summary}
