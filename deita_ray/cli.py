"""The `deita-ray` command line: `deita-ray --help`, `deita-ray score --help`, ...

One subcommand per step of the registry (steps/), built from its config class: every field a flag with its help,
range and default; the command builds the typed config, checks the models it loads (one line each), runs the step
and prints its summary. `run` and `quickstart` run the recipe; the tools (make-models, make-pool, doctor, report)
have their own few flags.
"""

from __future__ import annotations

import argparse
import json
import sys

MAIN_HELP = """\
deita-ray picks the best instruction-tuning samples out of a large pool, the Deita way
(Liu et al., ICLR 2024), on Ray.

Typical session on a laptop (local Ray, CPU, tiny models, nothing downloaded):
  deita-ray run quickstart                     # models + pool, then score, embed, select, report
or step by step:
  deita-ray make-models models/                # tiny scorer/embedder/generator models, built offline
  deita-ray make-pool pool/                    # a 3,000-sample pool in three formats
  deita-ray score pool/ -o out/ \\
      --complexity-model models/scorer-complexity --quality-model models/scorer-quality
  deita-ray embed out/scored -o out/                    # all-MiniLM-L6-v2 by default (offline)
  deita-ray select out/ --budget 1000 --threshold 0.9   # -> out/selection/selected.jsonl
  deita-ray report out/                                 # -> out/report/index.html
  deita-ray train sft out/selection/selected.jsonl --model models/scorer-quality -o runs/sft --max-steps 4

On a GPU cluster (Ray >= 2.60 clusters use token authentication), with real Deita scorers and vLLM:
  RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- \\
      python -m deita_ray.cli run deita-6k --set inputs=[s3://bucket/pool/] --set output=s3://bucket/runs/6k
Every command takes --help; every option of a run config is a flag of its step's command.
"""


def add_step_command(sub, step) -> None:
    """The subcommand of one step, generated from its StepType and config class."""
    from deita_ray.configlib import add_flags, field_info

    fields = step.config.__pydantic_fields__
    p = sub.add_parser(step.words[-1], help=step.help, description=step.description, epilog=step.epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(step.positional, nargs=step.positional_nargs, help=step.positional_help,
                   metavar=step.positional_metavar,
                   **({"default": argparse.SUPPRESS} if step.positional_nargs in ("?", "*") else {}))
    if "output" in fields:
        p.add_argument("-o", "--output", required=step.output_required, default=argparse.SUPPRESS,
                       help=step.output_help)
    add_flags(p, step.config, skip=step.skip, required=step.required, title=f"{step.name} options",
              defaults=step.shown_defaults)
    r = p.add_argument_group("run")
    for name in ("overwrite", "resume"):
        info = field_info(step.config, name) if name in fields else None
        if info is not None and not info["flag"] and info["default"] is False:  # a switch that turns it on
            r.add_argument(f"--{name}", action="store_true", default=argparse.SUPPRESS,
                           help=info["help"])
    r.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else start a local Ray)")
    if step.is_map:
        r.add_argument("--local", action="store_true", help="run in this process without Ray (small pools, debugging)")
    r.add_argument("--dry-run", action="store_true", help="print the resolved configuration as JSON and exit")
    if step.arguments is not None:
        step.arguments(p)
    p.set_defaults(func=lambda args: run_step(step, args))


def run_step(step, args) -> int:
    from deita_ray.configlib import build, given
    from deita_ray.preflight import check_model
    from deita_ray.steps.base import snapshot

    values = given(args, step.config)
    config = step.from_args(args, values) if step.from_args is not None else build(step.config, values)
    if args.dry_run:
        print(json.dumps(step.describe(config) if step.describe is not None else snapshot(config), indent=2))
        return 0
    for key, model, engine in config.models() if hasattr(config, "models") else []:
        if engine != "http":  # a served model's name is the server's business
            check_model(f"--{key.replace('_', '-')}", model)
    summary = step.execute(config, mode="local" if getattr(args, "local", False) else "ray", address=args.address)
    print(step.formatted(summary))
    problem = step.failure(summary)
    if problem:
        print(f"deita-ray: error: {problem}", file=sys.stderr)
        return 1
    return 0


def cmd_run(args) -> int:
    from deita_ray.recipe.config import load_config
    from deita_ray.recipe.pipeline import run_pipeline
    from deita_ray.recipe.table import format_run

    overrides = list(args.set or [])
    if args.output:
        overrides.append(f"output={args.output}")
    if args.overwrite:
        overrides.append("overwrite=true")
    if args.local:
        overrides.append("ray.local=true")
    config = load_config(args.config, overrides)
    if args.dry_run:
        from deita_ray.steps.base import snapshot

        print(json.dumps(snapshot(config), indent=2))
        return 0
    run = run_pipeline(config)
    print(format_run(run))
    if config.ablation is not None:
        from deita_ray.report.eval import ablation_rows, ablation_text

        print("\n" + ablation_text(ablation_rows(config.output), list(config.ablation.arms)))
    return 0 if all(s.get("reconciled", True) for s in run["stages"].values()) else 1


def cmd_quickstart(args) -> int:
    args.config = "quickstart"
    args.set = [f"select.budget={args.budget}", f"sample_pool.samples={args.samples}"]
    if args.workdir:
        args.set += [f"output={args.workdir}/out", f"models_dir={args.workdir}/models",
                     f"sample_pool.dir={args.workdir}/pool"]
    if args.engine:
        args.set.append(f"score.engine={args.engine}")
    args.output, args.overwrite, args.dry_run, args.local = None, False, False, False
    return cmd_run(args)


def cmd_report(args) -> int:
    from deita_ray.report.selection import write_report

    print(f"report: {write_report(args.output)}")
    return 0


def add_recipe_commands(sub) -> None:
    from deita_ray.recipe.config import shipped_configs

    shipped = shipped_configs()
    p = sub.add_parser("run", help="the whole job from a YAML config: score, embed, select, report (and generation, "
                                   "training)",
                       description="Run a config's steps as one Ray job, in order: the generation half when it has a "
                                   "generation: section (per mode: evolve, judge, labels, train the scorer), then "
                                   "score, embed, select, SFT and DPO when it has sft: / dpo: sections, then the "
                                   "report. CONFIG is a YAML file or a shipped config: " + ", ".join(
                                       f"{name} ({what})" for name, what in shipped.items()) + ". Rerunning skips "
                                   "finished steps and resumes an interrupted one.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  deita-ray run quickstart\n"
                              "  deita-ray run my.yaml --set select.budget=10000 --set score.replicas=4")
    p.add_argument("config", help="YAML config file, or a shipped name: " + ", ".join(shipped))
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set select.budget=500 (repeatable)")
    p.add_argument("-o", "--output", help="shortcut for --set output=DIR")
    p.add_argument("--overwrite", action="store_true", help="redo every step even if a finished one is there")
    p.add_argument("--local", action="store_true", help="shortcut for --set ray.local=true: every step but training "
                                                        "in this process, without Ray Data (small pools, debugging)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved configuration as JSON and exit")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("quickstart", help="= run quickstart: tiny models and a sample pool, then score, embed, select",
                       description="The embedded default: local Ray, CPU, tiny models, the project's own pool.")
    p.add_argument("--workdir", default=None, help="where models/, pool/ and out/ go (default: deita-quickstart)")
    p.add_argument("--samples", type=int, default=3000, help="pool size (default 3000)")
    p.add_argument("--engine", choices=["hf", "vllm"], default=None, help="scoring engine (default hf)")
    p.add_argument("--budget", type=int, default=1000, help="samples to select (default 1000)")
    p.set_defaults(func=cmd_quickstart)


def cmd_export_embeddings(args) -> int:
    from deita_ray.io import fs
    from deita_ray.io.embedding_store import EmbeddingStore

    inside = args.output.rstrip("/").startswith(args.embeddings.rstrip("/") + "/")
    if inside:
        raise ValueError(f"{args.output} is inside {args.embeddings}: write the Parquet file elsewhere")
    if fs.exists(args.output) and not args.overwrite:
        raise FileExistsError(f"{args.output} exists; pass --overwrite to replace it")
    rows = EmbeddingStore(args.embeddings).to_parquet(args.output)
    print(f"{rows:,} vectors -> {args.output} (columns id, embedding)")
    return 0


def add_tool_commands(sub) -> None:
    from deita_ray.tools import doctor, sample_pool, tiny_models

    p = sub.add_parser("make-models", help="build tiny offline scorer and embedder models (for local runs and tests)",
                       description=tiny_models.__doc__.split("\n\n")[0])
    tiny_models.add_arguments(p)
    p.set_defaults(func=tiny_models.run)
    p = sub.add_parser("make-pool", help="write the project's sample pool (ShareGPT, Alpaca, messages; some malformed)",
                       description=sample_pool.__doc__.split("\n\n")[0])
    sample_pool.add_arguments(p)
    p.set_defaults(func=sample_pool.run)
    p = sub.add_parser("doctor", help="what this node has (GPUs, driver, CUDA, versions) and whether deita_ray can use "
                                      "it", description=doctor.__doc__.split("\n\n")[0],
                       epilog=doctor.__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    doctor.add_arguments(p)
    p.set_defaults(func=doctor.run)
    p = sub.add_parser("export-embeddings", help="the vectors of `deita-ray embed` as one Parquet file (id, "
                                                 "embedding), for pandas, Polars or datasets",
                       description="Write every vector of an embeddings/ directory as one Parquet file with columns "
                                   "id and embedding (a fixed-size list). In Python: "
                                   "deita_ray.io.embedding_store.load_embeddings(DIR) -> (ids, float32 array).")
    p.add_argument("embeddings", help="the embeddings/ directory `deita-ray embed` wrote (OUT/embeddings)")
    p.add_argument("-o", "--output", required=True, help="the Parquet file to write (local or an object store)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.set_defaults(func=cmd_export_embeddings)
    p = sub.add_parser("report", help="(re)build the selection report of a run: OUT/report/index.html",
                       description="Write OUT/report/index.html (plots of the pool against the selection, the filter's "
                                   "walk, throughput, training curves) from a finished run's small columns.")
    p.add_argument("output", help="the run's output directory (holding scored/ and selection/)")
    p.set_defaults(func=cmd_report)


def build_parser() -> argparse.ArgumentParser:
    from deita_ray.steps import STEPS
    from deita_ray.steps.train import TRAIN_HELP

    parser = argparse.ArgumentParser(prog="deita-ray", description=MAIN_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_recipe_commands(sub)
    groups = {}
    for step in STEPS.values():
        if len(step.words) == 1:
            add_step_command(sub, step)
            continue
        if step.words[0] not in groups:
            group = sub.add_parser(step.words[0], help="SFT, DPO or scorer training with Ray Train + TRL + DeepSpeed",
                                   description=TRAIN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
            groups[step.words[0]] = group.add_subparsers(dest="task", required=True, metavar="TASK")
        add_step_command(groups[step.words[0]], step)
    add_tool_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Every failure ends in one line on stderr (exit 2); a stage's traceback goes to a log file it names."""
    args = build_parser().parse_args(argv)
    from deita_ray.io.reader import InputError
    from deita_ray.recipe.pipeline import PipelineError
    from deita_ray.runner.completion import IncompleteInput
    from deita_ray.runner.lock import OutputLocked
    from deita_ray.runner.errors import StageError, cause_name, root_cause, save_traceback
    from deita_ray.runner.session import ResourceError

    from pydantic import ValidationError

    from deita_ray.configlib import one_line

    try:
        return args.func(args)
    except ValidationError as exc:  # a config built in code from the user's values: its first problem, one line
        print(f"deita-ray: error: {one_line(exc)}", file=sys.stderr)
        return 2
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
