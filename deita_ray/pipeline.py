"""`deita-ray run CONFIG`: an ordered list of steps (score -> embed -> select -> report) as one Ray job.

    deita-ray run quickstart                         # the embedded default (local Ray, CPU, tiny models)
    deita-ray run my.yaml --set select.budget=10000  # any config, with overrides

Each step has a completion record on the output's own filesystem (runner/markers.py): a step whose
record says it finished and reconciled, for the same config and the same upstream records, is
skipped; an interrupted step with the same config resumes (only the samples its finished parts do
not hold); a step whose inputs changed runs again, and so does everything after it. The output is
held by one run at a time (runner/lock.py). The run stops at the first step whose counts do not
reconcile. Everything is checked before any work starts: the whole configuration, the models (one
line each) and whether the cluster can hold what each step asks for. `run_stats.json` holds one
record per step and `report/index.html` the selection report.
"""

from __future__ import annotations

import dataclasses
import posixpath
import time
from dataclasses import dataclass
from typing import Callable

from deita_ray.config import RunConfig
from deita_ray.io import fs
from deita_ray.io.reader import input_signature
from deita_ray.runner import markers
from deita_ray.runner.layout import generation_dir, labels_dir, run_stats_path, scorer_dir, selection_dir


class PipelineError(RuntimeError):
    """A step ended without a result the next step can trust (counts that do not reconcile, no rows)."""


@dataclass
class Step:
    name: str
    label: str                       # what the log says when it runs
    fingerprint: str                 # its config and its upstream steps' fingerprints
    run: Callable[[bool], dict]      # run(resume) -> summary (with rows_in / rows_out / rows_quarantined)


def _resolve_model(model: str, models_dir: str) -> str:
    if not model.startswith("tiny:"):
        return model
    from deita_ray.tools.tiny_models import make_tiny_models

    return str(make_tiny_models(models_dir)[model[5:]])


def _make_sample(section, log, what: str, make) -> list[str]:
    """A generated data set the config asks for (made once, if missing); [] when it asks for none."""
    import os

    if not section.dir:
        return []
    if not os.path.exists(os.path.join(section.dir, "_manifest.json")):
        log(f"making the sample {what} in {section.dir}")
        make(section.dir, section.samples, section.seed)
    return [section.dir]


def _inputs(config: RunConfig, log) -> tuple[list[str], list[str]]:
    """The pool and the seeds (kept apart), generated where the config asks; and the preference pairs."""
    from deita_ray.tools.sample_pool import make_pool, make_preferences

    pool = _make_sample(config.sample_pool, log, "pool", lambda d, n, s: make_pool(d, samples=n, seed=s))
    seeds = _make_sample(config.sample_seeds, log, "seeds", lambda d, n, s: make_pool(d, samples=n, seed=s))
    _make_sample(config.sample_preferences, log, "preference pairs", lambda d, n, s: make_preferences(d, n, s))
    gen_seeds = list(config.generation.seeds) if config.generation is not None else []
    return list(config.inputs) or pool, gen_seeds or seeds


def _summary_of_training(s: dict) -> dict:
    rows = s["rows"]
    return {"rows_in": rows["rows_in"], "rows_out": rows["rows_used"], "rows_quarantined": rows["rows_skipped"],
            "reconciled": rows["rows_in"] == rows["rows_used"] + rows["rows_skipped"], "seconds": s["seconds"],
            "tokens": s.get("num_input_tokens_seen"), "tokens_per_s": s.get("tokens_per_s"),
            "model_flops": s.get("model_flops"), "model_flops_per_s": s.get("model_flops_per_s"),
            "peak_fraction": s.get("peak_fraction"),
            "model": s["model"], "global_step": s.get("global_step"), "losses": s.get("losses")}


def generation_steps(config: RunConfig, seeds: list[str]) -> tuple[list[Step], dict[str, str], list[str]]:
    """Per mode: evolve -> judge -> labels -> train the scorer. Returns the steps, the trained scorers'
    model directories by kind, and the fingerprints the score step depends on."""
    from deita_ray.configlib import build
    from deita_ray.evolve_job import EvolveSection, evolve_pool
    from deita_ray.judge_job import JudgeSection, judge_pool
    from deita_ray.labels_job import export_labels

    gen, out, address = config.generation, config.output, config.ray.address
    steps, scorers, fingerprints = [], {}, []
    for mode in gen.modes:
        work = generation_dir(out, mode)
        evolve = build(EvolveSection, {**gen.evolve, "mode": mode}, "generation.evolve")
        evolve_cfg = evolve.job(seeds, work, model=_resolve_model(evolve.model, config.models_dir), overwrite=True)
        evolve_fp = markers.fingerprint(dataclasses.asdict(evolve_cfg), input_signature(seeds))
        judge = build(JudgeSection, dict(gen.judge), "generation.judge")
        judge_cfg = judge.job([posixpath.join(work, "evolved")], work,
                              model=_resolve_model(judge.model, config.models_dir), overwrite=True)
        judge_fp = markers.fingerprint(dataclasses.asdict(judge_cfg), evolve_fp)
        labels_fp = markers.fingerprint("labels", judge_fp)
        scorer = dict(gen.scorer, model=_resolve_model(gen.scorer["model"], config.models_dir), kind=mode,
                      data=[posixpath.join(labels_dir(work), f"{mode}.jsonl")], output=scorer_dir(out, mode))
        scorer_fp = markers.fingerprint(scorer, labels_fp)

        def run_evolve(resume, cfg=evolve_cfg):
            cfg.resume = resume
            return evolve_pool(cfg, ray_address=address)

        def run_judge(resume, cfg=judge_cfg):
            cfg.resume = resume
            return judge_pool(cfg, ray_address=address)

        def run_labels(resume, work=work):
            s = export_labels([work], work, overwrite=True)
            chains = s["chains"]
            return {"rows_in": s["chains_in"], "rows_out": s["labels_out"], "rows_quarantined": 0,
                    "reconciled": s["reconciled"], "seconds": s["seconds"], "chains": chains,
                    "judge_validity": s["judge_validity"]}

        def run_scorer(resume, section=scorer):
            from deita_ray.train.config import load_train_config
            from deita_ray.train.launch import train

            return _summary_of_training(train(load_train_config("scorer", data=dict(section, resume=resume))))

        steps += [Step(f"evolve_{mode}", f"Evol {mode}: {evolve.rounds} rounds with {evolve.model}", evolve_fp, run_evolve),
                  Step(f"judge_{mode}", f"judging the {mode} chains with {judge.model}", judge_fp, run_judge),
                  Step(f"labels_{mode}", f"{mode} scorer labels", labels_fp, run_labels),
                  Step(f"scorer_{mode}", f"training the {mode} scorer from {gen.scorer['model']}", scorer_fp,
                       run_scorer)]
        scorers[mode] = posixpath.join(scorer_dir(out, mode), "model")
        fingerprints.append(scorer_fp)
    return steps, scorers, fingerprints


def build_steps(config: RunConfig, inputs: list[str], seeds: list[str] | None = None) -> list[Step]:
    from deita_ray.embed_job import embed_pool
    from deita_ray.score_job import score_pool
    from deita_ray.select_job import SelectJobConfig, select_pool

    out = config.output
    score, embed, select = config.score, config.embed, config.select
    steps, trained, upstream_fps = [], {}, []
    if config.generation is not None:
        steps, trained, upstream_fps = generation_steps(config, seeds or [])
    score_cfg = score.job(inputs, out, complexity_model=trained.get("complexity") or
                          _resolve_model(score.complexity_model, config.models_dir),
                          quality_model=trained.get("quality") or _resolve_model(score.quality_model, config.models_dir),
                          input_format=config.input_format, overwrite=True)
    # The pool's files (sizes, versions) are part of it: a file added to the pool is scored, never skipped.
    score_fp = markers.fingerprint(dataclasses.asdict(score_cfg), input_signature(inputs), *upstream_fps)
    embed_cfg = embed.job([posixpath.join(out, "scored")], out, model=_resolve_model(embed.model, config.models_dir),
                          overwrite=True)
    # Chained on the upstream fingerprint: whatever re-ran upstream, this step runs again on what it produced.
    embed_fp = markers.fingerprint(dataclasses.asdict(embed_cfg), score_fp)
    select_cfg = SelectJobConfig(scored=posixpath.join(out, "scored"), embeddings=posixpath.join(out, "embeddings"),
                                 output=selection_dir(out), overwrite=True, **dataclasses.asdict(select))
    select_fp = markers.fingerprint(dataclasses.asdict(select_cfg), embed_fp)

    def run_score(resume):
        score_cfg.resume = resume
        return score_pool(score_cfg, ray_address=config.ray.address)

    def run_embed(resume):
        embed_cfg.resume = resume
        return embed_pool(embed_cfg, ray_address=config.ray.address)

    def run_select(resume):
        s = select_pool(select_cfg)
        return {"rows_in": s["candidates"], "rows_out": s["selected"], "rows_quarantined": 0, "reconciled": True,
                "seconds": s["seconds"], "visited": s.get("visited"), "sorted_on": s.get("sorted_on"),
                "ineligible": s.get("ineligible"),
                "samples_per_s": round(s.get("visited", s["selected"]) / max(s["seconds"], 1e-9), 1)}

    steps += [Step("score", "scoring", score_fp, run_score),
             Step("embed", f"embedding with {embed.model}", embed_fp, run_embed),
             Step("select", f"selecting {select.budget:,} ({select.strategy}, tau {select.threshold})", select_fp,
                  run_select)]
    upstream = select_fp
    for task in ("sft", "dpo"):
        section = getattr(config, task)
        if section is not None:
            step = _train_step(task, dict(section), config, upstream)
            steps.append(step)
            upstream = step.fingerprint
    return steps


def _train_step(task: str, section: dict, config: RunConfig, upstream: str) -> Step:
    """SFT on the selection, DPO on the preference pairs; the model flows from SFT to DPO."""
    out = config.output
    if task == "sft":
        section["data"] = [posixpath.join(selection_dir(out), "selected.jsonl")]
    elif not section.get("model"):
        section["model"] = posixpath.join(out, "sft", "model")
    section["output"] = posixpath.join(out, task)
    preset = section.pop("preset", None)
    if "model" in section:
        section["model"] = _resolve_model(section["model"], config.models_dir)

    def run(resume):
        from deita_ray.train.config import load_train_config
        from deita_ray.train.launch import train

        return _summary_of_training(train(load_train_config(task, data=dict(section, resume=resume), preset=preset)))

    read = input_signature(section["data"]) if task == "dpo" else []  # the pairs are the user's files
    return Step(task, f"{task.upper()} of {section['model']} ({preset or 'defaults'})",
                markers.fingerprint(section, preset, upstream, read), run)


def _check_resources(config: RunConfig, log) -> None:
    """Every map step's request against the cluster, before the first step starts."""
    from deita_ray.runner.options import auto_gpus
    from deita_ray.runner.session import ActorRequest, fit_actors, is_local_ray, resolve_gpus

    local = is_local_ray(config.ray.address)
    sections = [("score", config.score, 2), ("embed", config.embed, 1)]
    if config.generation is not None:
        from deita_ray.configlib import build
        from deita_ray.evolve_job import EvolveSection
        from deita_ray.judge_job import JudgeSection

        sections += [("generation.evolve", build(EvolveSection, config.generation.evolve, "generation.evolve"), 1),
                     ("generation.judge", build(JudgeSection, config.generation.judge, "generation.judge"), 1)]
    for name, section, pools in sections:
        engine = section.engine_name() if hasattr(section, "engine_name") else section.engine
        request = ActorRequest(name, section.replicas, section.cpus_per_replica, section.gpus_per_replica,
                               auto_gpus(engine, section.tensor_parallel_size))
        fit_actors(name, resolve_gpus([request] * pools), task_ops=2, local=local, log=lambda _line: None)
    from deita_ray.runner.session import check_workers
    from deita_ray.train.config import TrainConfig

    defaults = TrainConfig.__pydantic_fields__
    trainings = [("sft", config.sft), ("dpo", config.dpo)]
    if config.generation is not None:
        trainings.append(("generation.scorer", config.generation.scorer))
    for name, section in trainings:
        if section is not None:
            value = lambda key: section.get(key, defaults[key].default)  # noqa: E731
            check_workers(f"{name} training", value("num_workers"), value("cpus_per_worker"),
                          1.0 if value("use_gpu") else 0.0, f"{name}.num_workers / cpus_per_worker / use_gpu")


def _record(summary: dict) -> dict:
    keys = ("rows_in", "rows_out", "rows_quarantined", "rows_flagged", "reconciled", "tokens", "seconds",
            "samples_per_s", "tokens_per_s", "model_flops", "model_flops_per_s", "peak_fraction", "visited", "sorted_on", "quarantine_classes", "model", "global_step", "losses",
            "judge_validity")
    return {k: summary[k] for k in keys if k in summary}


def run_pipeline(config: RunConfig, log=print) -> dict:
    from deita_ray.io.outputs import check_output
    from deita_ray.preflight import check_run_models
    from deita_ray.runner.layout import OWN_DIRS, SELECTION_DIR
    from deita_ray.runner.lock import hold_output
    from deita_ray.runner.session import ensure_ray

    check_run_models(config)  # one line per bad model, before Ray starts
    inputs, seeds = _inputs(config, log)
    read = inputs + seeds + (list(config.dpo.get("data") or []) if config.dpo else [])
    check_output(config.output, read, own=OWN_DIRS)
    # The directories other commands write on their own (select -o OUT/selection, train -o OUT/sft) are
    # checked too: a run must not start while one of them is being written.
    inside = tuple(posixpath.join(config.output, d) for d in (SELECTION_DIR, "sft", "dpo", "scorers/complexity",
                                                              "scorers/quality"))
    with hold_output(config.output, inside=inside):
        steps = build_steps(config, inputs, seeds)
        ensure_ray(config.ray.address, config.ray.num_cpus)
        _check_resources(config, log)
        stats, started = {}, time.time()
        for number, step in enumerate(steps, 1):
            prefix = f"[{number}/{len(steps)}] {step.label}"
            summary = None if config.overwrite else markers.done(config.output, step.name, step.fingerprint)
            if summary:
                log(f"[{number}/{len(steps)}] {step.label.split(' ')[0]}: already done for this config, skipped")
            else:
                resume = markers.begin(config.output, step.name, step.fingerprint) and not config.overwrite
                for later in steps[number:]:  # whatever comes after is invalid until it runs again
                    fs.remove(markers.summary_path(config.output, later.name))
                log(prefix + (" (resuming an interrupted run)" if resume else ""))
                summary = step.run(resume)
                _check_step(step.name, summary, config.output)
                markers.stamp(config.output, step.name, summary, step.fingerprint)
            stats[step.name] = _record(summary)
        run = {"stages": stats, "seconds": round(time.time() - started, 2), "output": config.output,
               "selected": posixpath.join(selection_dir(config.output), "selected.jsonl"),
               "config": dataclasses.asdict(config)}
        fs.write_json(run_stats_path(config.output), run)
        if config.report:
            from deita_ray.report import write_report

            run["report"] = write_report(config.output)
        return run


def _check_step(name: str, summary: dict, output: str) -> None:
    if name == "score" and summary["rows_in"] == 0:
        raise PipelineError("no rows to score: the inputs hold no records")
    if "rows_succeeded" in summary:  # a map step: not one row may have succeeded
        from deita_ray.runner.map_job import outcome_error

        problem = outcome_error(summary)
        if problem:
            raise PipelineError(f"{problem}; the run stops here (see {output})")
    if name.startswith("labels") and summary["rows_out"] == 0:
        raise PipelineError(f"{name}: not one label from {summary['rows_in']:,} chains (no valid judgement); the run "
                            f"stops here (see {output})")
    if not summary.get("reconciled", True):
        raise PipelineError(f"{name}: rows in {summary['rows_in']:,} != rows out {summary['rows_out']:,} + "
                            f"quarantined {summary['rows_quarantined']:,}; the run stops here (see {output})")
    if name == "score" and summary["rows_out"] == 0:
        raise PipelineError(f"no rows left to embed: all {summary['rows_in']:,} rows were quarantined "
                            f"(reasons in {posixpath.join(output, 'quarantine')})")


def format_run(run: dict) -> str:
    width = max([7] + [len(n) for n in run["stages"]])
    total = sum(s["seconds"] for s in run["stages"].values()) or 1.0
    lines = [f"{'stage':{width}s}   rows in   rows out  quarantined      tokens   seconds  share   tokens/s  "
             f"GFLOP/s  of peak"]
    for name, s in run["stages"].items():
        rate = f"{s['tokens_per_s']:>10,.0f}" if s.get("tokens_per_s") else f"{'-':>10}"
        gflops = f"{s['model_flops_per_s'] / 1e9:>8,.2f}" if s.get("model_flops_per_s") else f"{'-':>8}"
        share = f"{s['peak_fraction']:>8.1%}" if s.get("peak_fraction") is not None else f"{'-':>8}"
        lines.append(f"{name:{width}s} {s['rows_in']:>9,} {s['rows_out']:>10,} {s['rows_quarantined']:>12,} "
                     f"{s.get('tokens') or 0:>11,} {s['seconds']:>9.1f} {s['seconds'] / total:>6.0%} {rate} {gflops} "
                     f"{share}")
    lines.append(f"selected set: {run['selected']}")
    if run.get("report"):
        lines.append(f"report:       {run['report']}")
    return "\n".join(lines)
