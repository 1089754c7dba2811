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
from deita_ray.io.reader import ReadTask, plan_reads, read_task
from deita_ray.io.writer import clear_directory, count_rows, list_parts, part_name, read_columns, write_part
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


def _paths(output: str) -> dict[str, str]:
    return {name: posixpath.join(output, name) for name in ("scored", "quarantine", "read_stats")}


def read_and_quarantine(task: ReadTask, paths: dict[str, str], block_rows: int):
    """Good blocks of one read task; its bad rows go to quarantine and its row count to read_stats,
    an independent count the summary reconciles against what was written."""
    key = f"{task.url}:{task.start}"
    rows_read = 0
    for index, (good, bad) in enumerate(read_task(task, block_rows=block_rows)):
        rows_read += good.num_rows + bad.num_rows
        if bad.num_rows:
            write_part(bad, paths["quarantine"], part_name("read", key, index))
        if good.num_rows:
            yield good
    stats = pa.table({"task": [key], "rows_read": pa.array([rows_read], pa.int64())})
    write_part(stats, paths["read_stats"], part_name("read", key, 0))


def read_blocks(batch: pa.Table, paths: dict[str, str], block_rows: int):
    """Ray Data UDF: one row per read task in, Arrow blocks of good rows out."""
    for task_row in batch.to_pylist():
        yield from read_and_quarantine(ReadTask(**task_row), paths, block_rows)


def _prepare_output(config: ScoreJobConfig) -> dict[str, str]:
    paths = _paths(config.output)
    existing = list_parts(paths["scored"]) + list_parts(paths["quarantine"])
    if existing and not config.overwrite:
        raise FileExistsError(f"{config.output} already holds scored output; pass --overwrite to replace it")
    for path in paths.values():
        clear_directory(path)
    return paths


def score_pool(config: ScoreJobConfig, ray_address: str | None = None) -> dict:
    """Run the scoring job on Ray (local embedded Ray unless an address/RAY_ADDRESS is given)."""
    import ray

    tasks = plan_reads(config.inputs, config.input_format, config.chunk_bytes)  # fails fast on bad paths
    paths = _prepare_output(config)
    if not ray.is_initialized():
        ray.init(address=ray_address, **config.extra_ray_init)
    started = time.time()
    ds = ray.data.from_items([asdict(t) for t in tasks], override_num_blocks=len(tasks))
    ds = ds.map_batches(read_blocks, batch_size=1, batch_format="pyarrow", num_cpus=0.25,
                        fn_kwargs={"paths": paths, "block_rows": config.block_rows})
    for kind, engine in (("complexity", config.complexity), ("quality", config.quality)):
        ds = ds.map_batches(
            ScoreStage, fn_constructor_args=(kind, engine), batch_size=config.batch_rows, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=config.replicas),
            num_cpus=config.cpus_per_replica, num_gpus=config.gpus_per_replica,
        )
    ds = ds.map_batches(finalize_scores, fn_kwargs={"aggregation": config.aggregation}, batch_format="pyarrow",
                        num_cpus=0.25)
    ds.write_parquet(paths["scored"])
    return summarize(config.output, time.time() - started, config)


def score_local(config: ScoreJobConfig, complexity: ScoreStage | None = None, quality: ScoreStage | None = None) -> dict:
    """The same job in this process, no Ray: the reference the Ray path is tested against."""
    tasks = plan_reads(config.inputs, config.input_format, config.chunk_bytes)
    paths = _prepare_output(config)
    started = time.time()
    complexity = complexity or ScoreStage("complexity", config.complexity)
    quality = quality or ScoreStage("quality", config.quality)
    part = done = 0
    for task in tasks:
        for good in read_and_quarantine(task, paths, config.block_rows):
            for offset in range(0, good.num_rows, config.batch_rows):
                batch = good.slice(offset, config.batch_rows)
                scored = finalize_scores(quality(complexity(batch)), config.aggregation)
                write_part(scored, paths["scored"], f"part-{part:05d}.parquet")
                part += 1
                done += batch.num_rows
                if part % 10 == 0:
                    print(f"  scored {done:,} samples ({done / (time.time() - started):.1f}/s)", file=sys.stderr, flush=True)
    return summarize(config.output, time.time() - started, config)


def summarize(output: str, seconds: float, config: ScoreJobConfig | None = None) -> dict:
    """Counts that must reconcile (rows in = scored + quarantined), flags and throughput; written as JSON."""
    paths = _paths(output)
    flags = read_columns(paths["scored"], ["truncated", "evol_score", "complexity_tokens", "quality_tokens"])
    scored = flags.num_rows if flags is not None else 0
    quarantined = count_rows(paths["quarantine"])
    tokens = 0
    truncated = unscored = 0
    if flags is not None and scored:
        tokens = int(pc.sum(flags.column("complexity_tokens")).as_py() + pc.sum(flags.column("quality_tokens")).as_py())
        truncated = int(pc.sum(pc.cast(flags.column("truncated"), pa.int64())).as_py())
        unscored = flags.column("evol_score").null_count
    quarantine_reasons = {}
    if quarantined:
        reasons = read_columns(paths["quarantine"], ["reason"]).column("reason").to_pylist()
        for reason in reasons:
            quarantine_reasons[reason] = quarantine_reasons.get(reason, 0) + 1
    read_stats = read_columns(paths["read_stats"], ["rows_read"])
    rows_in = int(pc.sum(read_stats.column("rows_read")).as_py() or 0) if read_stats is not None else 0
    summary = {
        "rows_in": rows_in, "rows_scored": scored, "rows_quarantined": quarantined,
        "reconciled": rows_in == scored + quarantined,
        "rows_truncated": truncated, "rows_without_score": unscored, "prompt_tokens": tokens,
        "seconds": round(seconds, 3), "samples_per_s": round(scored / seconds, 2) if seconds else None,
        "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        "quarantine_reasons": quarantine_reasons, "output": output,
    }
    if config is not None:
        summary["config"] = json.loads(json.dumps(asdict(config), default=str))
    import fsspec

    with fsspec.open(posixpath.join(output, "score_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
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
