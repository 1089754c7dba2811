"""`deita-ray train sft|dpo|scorer`: the command-line face of deita_ray.train (see `deita-ray train --help`)."""

from __future__ import annotations

import argparse

TRAIN_HELP = """\
Train on Ray Train workers with TRL, optionally under DeepSpeed ZeRO-2/3.

  sft     supervised fine-tuning on the selected set (selection/selected.jsonl or .parquet, or any
          ShareGPT / Alpaca / messages file); Vicuna v1.1 template, loss on assistant turns only
  dpo     DPO on preference pairs (prompt/chosen/rejected, UltraFeedback-binarized message lists,
          or ShareGPT preference rows) against a frozen reference model
  scorer  a Deita complexity or quality scorer from (instruction[, response], score 1-6) labels;
          the result loads straight into `deita-ray score`

The global batch stays what you ask for whatever the number of workers (gradient accumulation is
derived). A checkpoint goes to OUTPUT/checkpoints at every epoch end; running the same command
again resumes from the latest one (--fresh starts over). The final model is OUTPUT/model (Hugging
Face format).

examples:
  deita-ray train sft out/selection/selected.jsonl --model mistralai/Mistral-7B-v0.1 -o runs/sft \\
      --preset deita-mistral-7b-sft --deepspeed zero3 --workers 8 --gpu
  deita-ray train dpo ultrafeedback.jsonl --model runs/sft/model -o runs/dpo --preset deita-mistral-7b-dpo \\
      --deepspeed zero3 --workers 8 --gpu
  deita-ray train scorer labels.jsonl --kind complexity --model meta-llama/Llama-2-7b-hf -o runs/cscorer --gpu
  deita-ray train sft sel.jsonl --model deita-quickstart/models/scorer-quality -o runs/tiny --set epochs=1
"""


def add_train_parser(sub) -> None:
    from deita_ray.configlib import add_flags
    from deita_ray.train.config import PRESETS, TrainConfig, task_defaults

    p = sub.add_parser("train", help="SFT, DPO or scorer training with Ray Train + TRL + DeepSpeed",
                       description=TRAIN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    tasks = p.add_subparsers(dest="task", required=True, metavar="TASK")
    for task, help_text in [("sft", "supervised fine-tuning on a selected set"),
                            ("dpo", "direct preference optimisation on preference pairs"),
                            ("scorer", "train a Deita complexity or quality scorer from score labels")]:
        t = tasks.add_parser(task, help=help_text, description=f"{help_text}. Unset options take the preset's, "
                             "else the defaults shown (this task's own). --dry-run prints what a run would use. "
                             "See `deita-ray train --help`.")
        t.add_argument("data", nargs="*", help="training files or directories (.jsonl/.json/.parquet; local or s3://...)")
        t.add_argument("--model", help="model to start from (HF directory or hub name)")
        t.add_argument("-o", "--output", help="run directory: checkpoints/, model/, train_summary.json")
        t.add_argument("--config", help="YAML file with any of the keys below (command-line values win)")
        t.add_argument("--preset", help="the paper's settings: " + ", ".join(
            name for name, p in PRESETS.items() if p["task"] == task))
        only = {"dpo": ("beta", "ref_model", "max_prompt_length"), "scorer": ("kind",)}
        skip = tuple(name for other, names in only.items() if other != task for name in names)
        add_flags(t, TrainConfig, skip=skip, title="training options (unset: the preset's, else the defaults shown)",
                  defaults=task_defaults(task))
        t.add_argument("--fresh", action="store_true", help="ignore earlier checkpoints in OUTPUT and start over")
        t.add_argument("--dry-run", action="store_true", help="print the resolved configuration (defaults, preset, "
                                                              "config file, flags) as JSON and exit, without Ray")
        t.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other config key, e.g. --set seed=1")
        t.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else a local Ray)")
        t.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from deita_ray.configlib import given
    from deita_ray.runner.session import local_cpus
    from deita_ray.train.config import TrainConfig, load_train_config
    from deita_ray.preflight import check_model
    from deita_ray.train.launch import check_inputs, format_summary, train

    values = {k: v for k, v in given(args, TrainConfig).items() if v is not None and k not in ("task", "preset")}
    if args.data:
        values["data"] = args.data
    if args.fresh:
        values["resume"] = False
    config = load_train_config(args.task, data=values, preset=args.preset, path=args.config, overrides=args.set)
    if args.dry_run:
        import dataclasses
        import json

        print(json.dumps({**dataclasses.asdict(config), "deepspeed_config": config.deepspeed_config(),
                          "gradient_accumulation_steps": config.grad_accumulation}, indent=2))
        return 0
    # Before Ray starts: the starting models load (a hub that cannot be reached is one line, not minutes of
    # retries on a worker), and the data and output pass the checks every command makes.
    for key in ("model", "ref_model"):
        if getattr(config, key):
            check_model(f"--{key.replace('_', '-')}", getattr(config, key))
    check_inputs(config)
    # A local Ray (started once the rows are prepared) gets logical CPUs for every worker plus the controller,
    # even on a 2-core machine.
    cpus = max(local_cpus(), int(config.num_workers * config.cpus_per_worker) + 1)
    print(format_summary(train(config, address=args.address, num_cpus=cpus)))
    return 0
