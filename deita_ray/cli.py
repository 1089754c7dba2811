"""The `deita-ray` command line: `deita-ray --help`, `deita-ray score --help`, ...

Subcommands stay thin: they build a typed config and call the Python API underneath.
"""

from __future__ import annotations

import argparse
import contextlib
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


def _add_job_arguments(p: argparse.ArgumentParser, what: str) -> None:
    """What a stage command adds to its section's flags: where it runs and what it may overwrite."""
    from deita_ray.configlib import add_flags
    from deita_ray.runner.options import ReadOptions

    add_flags(p, ReadOptions, title="data")
    r = p.add_argument_group("run")
    r.add_argument("--overwrite", action="store_true", help=f"replace existing {what}")
    r.add_argument("--resume", action="store_true", help="continue an interrupted run: keep what it finished, do the "
                                                         "rest (rows the engine failed on transiently are retried)")
    r.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else start a local Ray)")
    r.add_argument("--local", action="store_true", help="run in this process without Ray (small pools, debugging)")


def _add_score_arguments(p: argparse.ArgumentParser) -> None:
    from deita_ray.configlib import add_flags
    from deita_ray.score_job import ScoreSection

    p.add_argument("inputs", nargs="+", help="pool files, directories or globs (.jsonl/.json/.parquet, optionally "
                                             ".gz/.zst/.bz2; local, s3://, gs://, ...)")
    p.add_argument("-o", "--output", required=True, help="output directory: scored/, quarantine/, score_summary.json")
    add_flags(p, ScoreSection, required=("complexity_model", "quality_model"), title="scoring (the score: section)")
    _add_job_arguments(p, "scores")


def _add_embed_arguments(p: argparse.ArgumentParser) -> None:
    from deita_ray.configlib import add_flags
    from deita_ray.embed_job import EmbedSection

    p.add_argument("inputs", nargs="+", help="pool files/directories (e.g. OUT/scored from `deita-ray score`, which keeps ids)")
    p.add_argument("-o", "--output", required=True, help="run directory: embeddings/, embed_quarantine/, embed_summary.json")
    add_flags(p, EmbedSection, title="embedding (the embed: section)")
    _add_job_arguments(p, "embeddings")


def _add_evolve_arguments(p: argparse.ArgumentParser) -> None:
    from deita_ray.configlib import add_flags
    from deita_ray.evolve_job import EvolveSection

    p.add_argument("inputs", nargs="+", help="seed files, directories or globs: ShareGPT, Alpaca, Self-Instruct seed "
                                             "tasks or messages (.jsonl/.json/.parquet; local, s3://, ...)")
    p.add_argument("-o", "--output", required=True, help="output directory: evolved/, evolve_quarantine/, "
                                                         "evolve_summary.json")
    add_flags(p, EvolveSection, required=("model",), title="evolution")
    _add_job_arguments(p, "evolved chains")


def _add_judge_arguments(p: argparse.ArgumentParser) -> None:
    from deita_ray.configlib import add_flags
    from deita_ray.judge_job import JudgeSection

    p.add_argument("inputs", nargs="+", help="evolved chains: OUT/evolved from `deita-ray evolve` (Parquet parts)")
    p.add_argument("-o", "--output", required=True, help="output directory: judged/, judge_invalid/, "
                                                         "judge_quarantine/, judge_summary.json")
    add_flags(p, JudgeSection, required=("model",), title="judging")
    _add_job_arguments(p, "judgements")


def _finish(summary: dict) -> int:
    """Print a map stage's summary; exit 1 (with one line) when its work as a whole failed."""
    from deita_ray.runner.map_job import format_summary, outcome_error

    print(format_summary(summary))
    problem = outcome_error(summary)
    if problem:
        print(f"deita-ray: error: {problem}", file=sys.stderr)
        return 1
    return 0


def _run_generation(args, section_cls, local, pool) -> int:
    """evolve and judge: build the section from the flags, check the model (not for an HTTP server), run."""
    from deita_ray.configlib import build, given
    from deita_ray.preflight import check_model

    section = build(section_cls, given(args, section_cls))
    if section.engine != "http":
        check_model("--model", section.model)
    config = section.job(args.inputs, args.output, overwrite=args.overwrite, resume=args.resume, **_read_options(args))
    return _finish(local(config) if args.local else pool(config, ray_address=args.address))


def cmd_evolve(args) -> int:
    from deita_ray.evolve_job import EvolveSection, evolve_local, evolve_pool

    return _run_generation(args, EvolveSection, evolve_local, evolve_pool)


def cmd_judge(args) -> int:
    from deita_ray.judge_job import JudgeSection, judge_local, judge_pool

    return _run_generation(args, JudgeSection, judge_local, judge_pool)


def cmd_labels(args) -> int:
    from deita_ray.labels_job import export_labels, format_summary

    summary = export_labels(args.inputs, args.output or args.inputs[0], overwrite=args.overwrite,
                            report=not args.no_report, allow_partial=args.allow_partial)
    print(format_summary(summary))
    problem = None if summary["reconciled"] else "labels: the counts do not reconcile"
    if summary["labels_out"] == 0:
        problem = f"labels: not one label from {summary['chains_in']:,} chains (no valid judgement)"
    if problem:
        print(f"deita-ray: error: {problem}", file=sys.stderr)
        return 1
    return 0


def _add_select_arguments(p: argparse.ArgumentParser) -> None:
    from deita_ray.configlib import add_flags
    from deita_ray.select_job import SelectOptions

    p.add_argument("run_dir", nargs="?", default=".", help="run directory holding scored/ and embeddings/ (default .)")
    p.add_argument("--scored", help="scored Parquet directory (default RUN_DIR/scored)")
    p.add_argument("--embeddings", help="embeddings directory (default RUN_DIR/embeddings)")
    p.add_argument("-o", "--output", help="output directory (default RUN_DIR/selection)")
    add_flags(p, SelectOptions, title="selection (the select: section)")
    p.add_argument("--local", action="store_true", help="= --index local: keep the index in this process")
    p.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else start a local Ray)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing selection (only the files a "
                                                            "selection writes are removed)")
    p.add_argument("--allow-partial", action="store_true", help="select from scores or embeddings whose step did not "
                                                                "finish (recorded in the summary)")


def _read_options(args) -> dict:
    from deita_ray.configlib import given
    from deita_ray.runner.options import ReadOptions

    return given(args, ReadOptions)


def cmd_score(args) -> int:
    from deita_ray.configlib import build, given
    from deita_ray.preflight import check_model
    from deita_ray.score_job import ScoreSection, score_local, score_pool

    section = build(ScoreSection, given(args, ScoreSection))
    check_model("--complexity-model", section.complexity_model)
    check_model("--quality-model", section.quality_model)
    config = section.job(args.inputs, args.output, overwrite=args.overwrite, resume=args.resume, **_read_options(args))
    return _finish(score_local(config) if args.local else score_pool(config, ray_address=args.address))


def cmd_embed(args) -> int:
    from deita_ray.configlib import build, given
    from deita_ray.embed_job import EmbedSection, embed_local, embed_pool
    from deita_ray.preflight import check_model

    section = build(EmbedSection, given(args, EmbedSection))
    check_model("--model", section.model)
    config = section.job(args.inputs, args.output, overwrite=args.overwrite, resume=args.resume, **_read_options(args))
    return _finish(embed_local(config) if args.local else embed_pool(config, ray_address=args.address))


def cmd_select(args) -> int:
    from deita_ray.configlib import given
    from deita_ray.runner.lock import hold_output
    from deita_ray.select_job import SelectJobConfig, SelectOptions, check_inputs, format_summary, select_pool

    run = args.run_dir
    options = given(args, SelectOptions)
    if args.local:
        options["index"] = "local"
    strategy = options.get("strategy", "diverse")
    config = SelectJobConfig(
        scored=args.scored or os.path.join(run, "scored"), output=args.output or os.path.join(run, "selection"),
        embeddings=args.embeddings or (os.path.join(run, "embeddings") if strategy == "diverse" else None),
        overwrite=args.overwrite, allow_partial=args.allow_partial, **options)
    check_inputs(config)  # before Ray starts; select_pool checks again under the lock
    if config.index == "actor":
        from deita_ray.runner.session import ensure_ray

        ensure_ray(args.address)
    # The run directory its inputs come from is held too: a `run` must not rewrite them meanwhile.
    reads_run_dir = not (args.scored and (args.embeddings or strategy != "diverse"))
    with hold_output(run) if reads_run_dir else contextlib.nullcontext():
        summary = select_pool(config)
    print(format_summary(summary))
    if summary["selected"] == 0:
        print(f"deita-ray: error: select: nothing selected from {summary['candidates']:,} candidates", file=sys.stderr)
        return 1
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
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_score_arguments(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("embed", help="embed every sample (Vicuna-rendered conversation -> L2-normalised vector)",
                       description="Embed a pool on Ray Data actors: transformers or vLLM with last-token (Deita) or mean "
                                   "pooling, or a sentence-transformers model. Vectors go to float16 .npy shards keyed "
                                   "by sample id; bad rows to quarantine.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_embed_arguments(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("select", help="select the final set: Deita's Repr Filter on a FAISS actor, or a baseline",
                       description="Walk the pool by evol score (descending; ties by id) and keep a sample unless its "
                                   "cosine similarity to the nearest already-kept sample is > tau, until the budget is "
                                   "full. Exact for any block size. Writes selected.parquet, selected.jsonl (ShareGPT) "
                                   "and rejections.parquet.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_select_arguments(p)
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("evolve", help="Evol Complexity / Evol Quality: rewrite each seed for M rounds (chains of variants)",
                       description="Evolve seeds the Deita way: every round rewrites the previous variant with one "
                                   "in-depth operation drawn from (seed id, round), for M rounds (chains of M+1 "
                                   "variants, as the paper). A rewrite that is not a usable text (empty, cut at the "
                                   "token limit, unchanged, copying the prompt's markers) is retried with a new seed "
                                   "(--retries) before its chain ends; every failed attempt is kept with its reason. "
                                   "One row per seed with its chain. complexity rewrites instructions, quality "
                                   "rewrites the seed response to the seed instruction.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n"
                              "  deita-ray make-models models/\n"
                              "  deita-ray evolve seeds.jsonl -o out/ --model models/generator --max-new-tokens 64\n"
                              "  deita-ray evolve s3://b/seeds/ -o s3://b/evol/ --model Qwen/Qwen2.5-7B-Instruct "
                              "--engine vllm --dtype bfloat16 --replicas 8 --gpus-per-replica 1\n"
                              "  OPENAI_API_KEY=... deita-ray evolve seeds.jsonl -o out/ --engine http "
                              "--api-base https://api.openai.com/v1 --model gpt-4o-mini --mode quality")
    _add_evolve_arguments(p)
    p.set_defaults(func=cmd_evolve)

    p = sub.add_parser("judge", help="rank and score every chain's variants jointly (1..6), temperature 0",
                       description="Judge evolved chains: all variants of a chain in one prompt (the paper's joint "
                                   "rank-and-score), at temperature 0. A judgement is valid only with exactly one "
                                   "integer 1..6 per variant, matched by index; invalid ones keep their text and "
                                   "reason in judge_invalid/ and give no labels.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  deita-ray judge out/evolved -o out/ --model models/scorer-complexity\n"
                              "  deita-ray judge out/evolved -o out/ --model M --engine vllm   # regex-constrained")
    _add_judge_arguments(p)
    p.set_defaults(func=cmd_judge)

    p = sub.add_parser("labels", help="scorer training rows from judged chains (+ the evolution/judging report)",
                       description="One row per valid (variant, score) in the format `deita-ray train scorer` reads, "
                                   "with lineage ids <seed id>/r<round>; and report/generation.html.",
                       epilog="example:\n  deita-ray labels out/ && deita-ray train scorer out/labels/complexity.jsonl "
                              "--kind complexity --model models/scorer-complexity -o runs/scorer",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="run directories holding judged/ (or judged/ directories)")
    p.add_argument("-o", "--output", help="where labels/ and the report go (default: the first input)")
    p.add_argument("--overwrite", action="store_true", help="replace existing labels")
    p.add_argument("--no-report", action="store_true", help="skip report/generation.html")
    p.add_argument("--allow-partial", action="store_true", help="read judged chains whose judge run did not finish "
                                                                "(recorded in the summary)")
    p.set_defaults(func=cmd_labels)

    from deita_ray.train.cli import add_train_parser

    add_train_parser(sub)

    p = sub.add_parser("make-models", help="build tiny offline scorer and embedder models (for local runs and tests)",
                       description=tiny_models.__doc__.split("\n\n")[0])
    tiny_models.add_arguments(p)
    p.set_defaults(func=tiny_models.run)

    from deita_ray.tools import doctor

    p = sub.add_parser("doctor", help="what this node has (GPUs, driver, CUDA, versions) and whether deita_ray can use it",
                       description=doctor.__doc__.split("\n\n")[0], epilog=doctor.__doc__.split("\n\n")[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    doctor.add_arguments(p)
    p.set_defaults(func=doctor.run)

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
    from deita_ray.runner.completion import IncompleteInput
    from deita_ray.runner.lock import OutputLocked
    from deita_ray.runner.map_job import StageError, cause_name, root_cause, save_traceback
    from deita_ray.runner.session import ResourceError

    try:
        return args.func(args)
    except (InputError, FileExistsError, FileNotFoundError, ValueError, StageError, PipelineError, OutputLocked,
            ResourceError, IncompleteInput) as exc:
        print(f"deita-ray: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deita-ray: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # anything else: one line, the traceback kept
        cause = root_cause(exc)
        log_file = save_traceback(exc)
        print(f"deita-ray: error: {cause_name(cause)}: {str(cause).strip().splitlines()[0] if str(cause).strip() else ''}"
              f" (traceback: {log_file})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
