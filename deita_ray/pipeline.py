"""`deita-ray run CONFIG`: pool -> scores -> embeddings -> selection -> report, as one Ray job.

    deita-ray run quickstart                         # the embedded default (local Ray, CPU, tiny models)
    deita-ray run my.yaml --set select.budget=10000  # any config, with overrides

One Ray session for the whole run; each stage is the job of its own module (score_job,
embed_job, select_job) and writes under `output/`. A stage whose summary says it finished and
reconciled, for the same stage config, is not run again; an unfinished stage with the same config
resumes, writing only the samples its finished parts do not hold (see job_io.py). So a rerun after
a crash does only what is missing. `run_stats.json` holds one record per stage and `report/index.html` the
selection report.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import posixpath
import time

from deita_ray.config import RunConfig


def _resolve_model(model: str, models_dir: str) -> str:
    if not model.startswith("tiny:"):
        return model
    from deita_ray.tools.tiny_models import make_tiny_models

    return str(make_tiny_models(models_dir)[model[5:]])


def _fingerprint(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _done(output: str, name: str, fingerprint: str) -> dict | None:
    """The stage's summary if it completed for this exact stage config (the completion record)."""
    path = posixpath.join(output, f"{name}_summary.json")
    if not os.path.exists(path):
        return None
    summary = json.loads(open(path).read())
    ok = summary.get("reconciled", True) and summary.get("fingerprint") == fingerprint
    return summary if ok else None


def _stamp(output: str, name: str, summary: dict, fingerprint: str) -> dict:
    summary["fingerprint"] = fingerprint
    with open(posixpath.join(output, f"{name}_summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    return summary


def _begin(output: str, name: str, fingerprint: str) -> bool:
    """Mark a stage started; True when an interrupted run of the same stage config can be resumed."""
    path = posixpath.join(output, f"_{name}_started.json")
    resume = os.path.exists(path) and json.loads(open(path).read()).get("fingerprint") == fingerprint
    with open(path, "w") as f:
        json.dump({"fingerprint": fingerprint}, f)
    return resume


def run_pipeline(config: RunConfig, log=print) -> dict:
    import ray

    from deita_ray.embed_job import EmbedJobConfig, embed_pool
    from deita_ray.engines.base import EngineConfig
    from deita_ray.engines.embedders import MINILM, EmbedderConfig
    from deita_ray.score_job import ScoreJobConfig, score_pool
    from deita_ray.select_job import SelectJobConfig, select_pool

    out = config.output
    os.makedirs(out, exist_ok=True)
    inputs = list(config.inputs)
    if config.sample_pool.dir:
        from deita_ray.tools.sample_pool import make_pool

        if not os.path.exists(os.path.join(config.sample_pool.dir, "_manifest.json")):
            log(f"making the sample pool in {config.sample_pool.dir}")
            make_pool(config.sample_pool.dir, samples=config.sample_pool.samples, seed=config.sample_pool.seed)
        inputs = inputs or [config.sample_pool.dir]
    sc, em, se = config.score, config.embed, config.select
    complexity_model = _resolve_model(sc.complexity_model, config.models_dir)
    quality_model = _resolve_model(sc.quality_model, config.models_dir)
    embed_model = _resolve_model(em.model, config.models_dir)

    if not ray.is_initialized():
        if config.ray.address or os.environ.get("RAY_ADDRESS"):  # a cluster (ray job submit sets RAY_ADDRESS)
            ray.init(address=config.ray.address)
        else:  # a local Ray: logical CPUs above the cores so fractional actors and read tasks all fit
            ray.init(num_cpus=config.ray.num_cpus or max(4, os.cpu_count() or 1))
    stats, started = {}, time.time()

    def engine(model):
        return EngineConfig(model=model, engine=sc.engine, dtype=sc.dtype, max_length=sc.max_length,
                            batch_size=sc.batch_size, tensor_parallel_size=sc.tensor_parallel_size,
                            enforce_eager=sc.enforce_eager)

    score_cfg = ScoreJobConfig(inputs=inputs, output=out, complexity=engine(complexity_model), quality=engine(quality_model),
                               input_format=config.input_format, aggregation=sc.aggregation, replicas=sc.replicas,
                               cpus_per_replica=sc.cpus_per_replica, gpus_per_replica=sc.gpus_per_replica,
                               batch_rows=sc.batch_rows, overwrite=True)
    fp = score_fp = _fingerprint(dataclasses.asdict(score_cfg))
    summary = None if config.overwrite else _done(out, "score", fp)
    if summary:
        log("[1/3] scoring: already done for this config, skipped")
    else:
        score_cfg.resume = not config.overwrite and _begin(out, "score", fp)
        log("[1/3] scoring" + (" (resuming an interrupted run)" if score_cfg.resume else ""))
        summary = _stamp(out, "score", score_pool(score_cfg), fp)
    stats["score"] = _stage_record(summary, "rows_scored")

    embed_engine = em.engine or ("sentence-transformers" if em.model.endswith(MINILM) else "hf")
    embedder = EmbedderConfig(model=embed_model, engine=embed_engine, pooling=em.pooling, dtype=em.dtype,
                              max_length=em.max_length, batch_size=em.batch_size,
                              tensor_parallel_size=em.tensor_parallel_size, enforce_eager=em.enforce_eager)
    embed_cfg = EmbedJobConfig(inputs=[posixpath.join(out, "scored")], output=out, embedder=embedder, template=em.template,
                               out_dtype=em.store_dtype, replicas=em.replicas, cpus_per_replica=em.cpus_per_replica,
                               gpus_per_replica=em.gpus_per_replica, batch_rows=em.batch_rows, overwrite=True)
    # Chained on the scoring stage's record: whatever re-ran upstream (other inputs, other config),
    # embedding runs again on what it produced.
    fp = _fingerprint(dataclasses.asdict(embed_cfg), score_fp)
    summary = None if config.overwrite else _done(out, "embed", fp)
    if summary:
        log("[2/3] embedding: already done for this config, skipped")
    else:
        embed_cfg.resume = not config.overwrite and _begin(out, "embed", fp)
        log(f"[2/3] embedding with {em.model}" + (" (resuming an interrupted run)" if embed_cfg.resume else ""))
        summary = _stamp(out, "embed", embed_pool(embed_cfg), fp)
    stats["embed"] = _stage_record(summary, "rows_embedded")

    log(f"[3/3] selecting {se.budget:,} ({se.strategy}, tau {se.threshold})")
    select_cfg = SelectJobConfig(scored=posixpath.join(out, "scored"), embeddings=posixpath.join(out, "embeddings"),
                                 output=posixpath.join(out, "selection"), strategy=se.strategy, budget=se.budget,
                                 threshold=se.threshold, block_size=se.block_size, seed=se.seed, index=se.index,
                                 device=se.device, sort_on=se.sort_on, overwrite=True)
    selected = select_pool(select_cfg)
    stats["select"] = {"rows_in": selected["candidates"], "rows_out": selected["selected"], "rows_quarantined": 0,
                       "seconds": selected["seconds"], "visited": selected.get("visited"),
                       "sorted_on": selected.get("sorted_on"),
                       "samples_per_s": round(selected.get("visited", selected["selected"]) / max(selected["seconds"], 1e-9), 1)}
    run = {"stages": stats, "seconds": round(time.time() - started, 2), "output": out,
           "selected": posixpath.join(out, "selection", "selected.jsonl"), "config": dataclasses.asdict(config)}
    with open(posixpath.join(out, "run_stats.json"), "w") as f:
        json.dump(run, f, indent=2, default=str)
    if config.report:
        from deita_ray.report import write_report

        run["report"] = write_report(out)
    return run


def _stage_record(summary: dict, out_key: str) -> dict:
    return {"rows_in": summary["rows_in"], "rows_out": summary[out_key], "rows_quarantined": summary["rows_quarantined"],
            "reconciled": summary["reconciled"], "tokens": summary.get("prompt_tokens", summary.get("tokens")),
            "seconds": summary["seconds"], "samples_per_s": summary["samples_per_s"]}


def format_run(run: dict) -> str:
    lines = ["stage     rows in   rows out  quarantined   samples/s   seconds"]
    for name, s in run["stages"].items():
        lines.append(f"{name:7s} {s['rows_in']:>9,} {s['rows_out']:>10,} {s['rows_quarantined']:>12,} "
                     f"{s['samples_per_s'] or 0:>11,.1f} {s['seconds']:>9.1f}")
    lines.append(f"selected set: {run['selected']}")
    if run.get("report"):
        lines.append(f"report:       {run['report']}")
    return "\n".join(lines)
