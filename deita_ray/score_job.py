"""Score a pool on Ray Data: read -> complexity actors -> quality actors -> evol score -> Parquet.

    from deita_ray.score_job import ScoreJobConfig, score_pool
    summary = score_pool(ScoreJobConfig(inputs=["pool/"], output="out/", complexity=..., quality=...))

The CLI (`deita-ray score`) builds the config. Read tasks stream Arrow blocks to one actor pool
per scorer (one engine replica per actor); the driver only plans the reads and, at the end,
reads Parquet footers and a few flag columns for the summary: it never holds the pool.
Outputs: `<output>/scored/*.parquet`, `<output>/quarantine/*.parquet`, `<output>/read_stats/` (rows
read per task, for reconciliation) and `<output>/score_summary.json`.
"""

from __future__ import annotations

import json
import posixpath
import sys
import time
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from deita_ray.engines.base import EngineConfig
from deita_ray.io.reader import plan_reads
from deita_ray.io.writer import sum_columns, write_part
from deita_ray.job_io import (prepare_output, start_stage, read_and_quarantine, reconcile, stage_paths, write_json,
                              write_part_atomic)
from deita_ray.prompts import AGGREGATIONS
from deita_ray.stages.score import ScoreStage, finalize_scores


@dataclass
class ScoreJobConfig:
    inputs: list[str]
    output: str
    complexity: EngineConfig
    quality: EngineConfig
    input_format: str | None = None  # sharegpt | alpaca | messages; None: detect per file
    aggregation: str = "sum"         # evol score over turns: sum (paper) | mean | last
    replicas: int = 1                # actors (engine replicas) per scorer
    cpus_per_replica: float = 1.0    # fractional on small CPU machines (see README)
    gpus_per_replica: float = 0.0    # = tensor_parallel_size for vLLM on GPUs
    batch_rows: int = 256            # samples per Ray Data batch handed to an actor
    block_rows: int = 1024           # samples per block produced by a read task
    chunk_bytes: int = 16 << 20      # JSONL files are split into read tasks of this many bytes
    overwrite: bool = False
    resume: bool = False             # keep finished parts of an interrupted run and do only the rest
    extra_ray_init: dict = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.complexity, dict):
            self.complexity = EngineConfig(**self.complexity)
        if isinstance(self.quality, dict):
            self.quality = EngineConfig(**self.quality)
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if self.replicas < 1 or self.batch_rows < 1 or self.block_rows < 1:
            raise ValueError("replicas, batch_rows and block_rows must be >= 1")
        if self.cpus_per_replica < 0 or self.gpus_per_replica < 0:
            raise ValueError("cpus_per_replica and gpus_per_replica must be >= 0")


def quarantine_engine_failures(table: pa.Table, quarantine_dir: str) -> pa.Table:
    """Ray Data UDF after scoring: rows an engine failed on go to quarantine (stage "score", with the
    engine's error as the reason); rows whose score was merely unreadable stay, with a null score."""
    import hashlib
    import json

    failed = [bool(c and "engine error" in c) or bool(q and "engine error" in q) for c, q in
              zip(table.column("complexity_reason").to_pylist(), table.column("quality_reason").to_pylist())]
    if not any(failed):
        return table
    mask = pa.array(failed)
    bad = table.filter(mask)
    quarantine = pa.table({
        "id": bad.column("id"), "stage": pa.array(["score"] * bad.num_rows),
        "reason": bad.column("score_reason"),
        "raw": pa.array([json.dumps(c, ensure_ascii=False) for c in bad.column("conversations").to_pylist()]),
        "source": bad.column("source"), "position": pa.array([None] * bad.num_rows, pa.int64()),
    })
    key = hashlib.sha1("\0".join(bad.column("id").to_pylist()).encode()).hexdigest()[:16]
    write_part(quarantine, quarantine_dir, f"score-{key}.parquet")
    return table.filter(pc.invert(mask))


def score_pool(config: ScoreJobConfig, ray_address: str | None = None) -> dict:
    """Run the scoring job on Ray (local embedded Ray unless an address/RAY_ADDRESS is given)."""
    import ray

    paths, ds = start_stage(config, "score", "scored", ray_address)  # fails fast on bad paths
    started = time.time()
    for kind, engine in (("complexity", config.complexity), ("quality", config.quality)):
        ds = ds.map_batches(
            ScoreStage, fn_constructor_args=(kind, engine), batch_size=config.batch_rows, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=config.replicas),
            num_cpus=config.cpus_per_replica, num_gpus=config.gpus_per_replica,
        )
    ds = ds.map_batches(finalize_scores, fn_kwargs={"aggregation": config.aggregation}, batch_format="pyarrow",
                        num_cpus=0.25)
    ds = ds.map_batches(quarantine_engine_failures, fn_kwargs={"quarantine_dir": paths["quarantine"]},
                        batch_format="pyarrow", num_cpus=0.25)
    ds.map_batches(write_part_atomic, fn_kwargs={"directory": paths["out"]}, batch_size=None, batch_format="pyarrow",
                   num_cpus=0.25).materialize()
    return summarize(config.output, time.time() - started, config)


def score_local(config: ScoreJobConfig, complexity: ScoreStage | None = None, quality: ScoreStage | None = None) -> dict:
    """The same job in this process, no Ray: the reference the Ray path is tested against."""
    tasks = plan_reads(config.inputs, config.input_format, config.chunk_bytes)
    paths = stage_paths(config.output, "score")
    prepare_output(paths, config.overwrite, config.resume)
    started = time.time()
    complexity = complexity or ScoreStage("complexity", config.complexity)
    quality = quality or ScoreStage("quality", config.quality)
    part = done = 0
    for task in tasks:
        for good in read_and_quarantine(task, paths, config.block_rows):
            for offset in range(0, good.num_rows, config.batch_rows):
                batch = good.slice(offset, config.batch_rows)
                scored = quarantine_engine_failures(finalize_scores(quality(complexity(batch)), config.aggregation),
                                                    paths["quarantine"])
                write_part_atomic(scored, paths["out"])
                part += 1
                done += batch.num_rows
                if part % 10 == 0:
                    print(f"  scored {done:,} samples ({done / (time.time() - started):.1f}/s)", file=sys.stderr, flush=True)
    return summarize(config.output, time.time() - started, config)


def summarize(output: str, seconds: float, config: ScoreJobConfig | None = None) -> dict:
    """Counts that must reconcile (rows in = scored + quarantined), flags and throughput; written as JSON."""
    paths = stage_paths(output, "score")
    # Part by part: the driver's memory must not grow with the pool.
    scored, totals = sum_columns(paths["out"], {"complexity": "complexity_tokens", "quality": "quality_tokens",
                                                "truncated": "truncated", "unscored": "nulls:evol_score"})
    tokens, truncated, unscored = totals["complexity"] + totals["quality"], totals["truncated"], totals["unscored"]
    counts = reconcile(paths, scored)
    summary = {
        "rows_in": counts["rows_in"], "rows_scored": scored, "rows_quarantined": counts["rows_quarantined"],
        "reconciled": counts["reconciled"],
        "rows_truncated": truncated, "rows_without_score": unscored, "prompt_tokens": tokens,
        "seconds": round(seconds, 3), "samples_per_s": round(scored / seconds, 2) if seconds else None,
        "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        "quarantine_reasons": counts["quarantine_reasons"], "output": output,
    }
    if config is not None:
        summary["config"] = json.loads(json.dumps(asdict(config), default=str))
    write_json(posixpath.join(output, "score_summary.json"), summary)
    return summary


def format_summary(summary: dict) -> str:
    lines = [
        f"rows in      {summary['rows_in']:>10,}   "
        + ("(= scored + quarantined)" if summary["reconciled"] else "!! DOES NOT EQUAL scored + quarantined: rows were lost"),
        f"scored       {summary['rows_scored']:>10,}   (truncated: {summary['rows_truncated']:,}; "
        f"without a score: {summary['rows_without_score']:,})",
        f"quarantined  {summary['rows_quarantined']:>10,}",
        f"throughput   {summary['samples_per_s'] or 0:>10,.1f} samples/s, {summary['tokens_per_s'] or 0:,.0f} prompt tokens/s "
        f"({summary['seconds']:.1f} s)",
    ]
    for reason, n in sorted(summary["quarantine_reasons"].items(), key=lambda kv: -kv[1])[:20]:
        lines.append(f"  quarantined {n:>5} x {reason}")
    lines.append(f"output       {posixpath.join(summary['output'], 'scored')}/  (quarantine: {summary['output']}/quarantine/)")
    return "\n".join(lines)
