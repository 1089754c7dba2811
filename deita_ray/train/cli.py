"""`deita-ray train sft|dpo|scorer`: the command-line face of deita_ray.train (see `deita-ray train --help`)."""

from __future__ import annotations

import argparse
import os

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
    p = sub.add_parser("train", help="SFT, DPO or scorer training with Ray Train + TRL + DeepSpeed",
                       description=TRAIN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    tasks = p.add_subparsers(dest="task", required=True, metavar="TASK")
    for task, help_text in [("sft", "supervised fine-tuning on a selected set"),
                            ("dpo", "direct preference optimisation on preference pairs"),
                            ("scorer", "train a Deita complexity or quality scorer from score labels")]:
        t = tasks.add_parser(task, help=help_text, description=f"{help_text}. Unset options take the preset's, "
                             "else the task's defaults (see deita_ray/train/config.py). See `deita-ray train --help`.")
        t.add_argument("data", nargs="*", help="training files or directories (.jsonl/.json/.parquet; local or s3://...)")
        t.add_argument("--model", help="model to start from (HF directory or hub name)")
        t.add_argument("-o", "--output", help="run directory: checkpoints/, model/, train_summary.json")
        t.add_argument("--config", help="YAML file with any of the keys below (command-line values win)")
        t.add_argument("--preset", help="the paper's settings: deita-mistral-7b-sft, deita-llama1-13b-sft, "
                                        "deita-llama2-13b-sft (sft); deita-mistral-7b-dpo (dpo)")
        t.add_argument("--deepspeed", help="none, zero2, zero3 (shipped configs) or a DeepSpeed JSON file")
        t.add_argument("--workers", type=int, dest="num_workers", help="Ray Train workers (one per GPU with --gpu)")
        t.add_argument("--gpu", action="store_true", default=None, dest="use_gpu", help="one GPU per worker (NCCL)")
        t.add_argument("--cpus-per-worker", type=float, help="CPUs reserved per worker")
        t.add_argument("--template", choices=["vicuna", "model"], help="vicuna (Deita's) or the tokenizer's chat template")
        t.add_argument("--epochs", type=int)
        t.add_argument("--lr", type=float, dest="learning_rate")
        t.add_argument("--global-batch-size", type=int)
        t.add_argument("--per-device-batch-size", type=int)
        t.add_argument("--max-length", type=int)
        t.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (smoke runs)")
        if task == "dpo":
            t.add_argument("--beta", type=float)
            t.add_argument("--ref-model", help="frozen reference model (default: --model)")
            t.add_argument("--max-prompt-length", type=int)
        if task == "scorer":
            t.add_argument("--kind", choices=["complexity", "quality"], help="which Deita scorer")
        t.add_argument("--fresh", action="store_true", help="ignore earlier checkpoints in OUTPUT and start over")
        t.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other config key, e.g. --set seed=1")
        t.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else a local Ray)")
        t.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    import ray

    from deita_ray.train.config import TrainConfig, load_train_config
    from deita_ray.train.launch import format_summary, train

    keys = {f for f in TrainConfig.__dataclass_fields__}
    values = {k: v for k, v in vars(args).items() if k in keys and v is not None and k not in ("task", "preset")}
    if args.data:
        values["data"] = args.data
    if args.fresh:
        values["resume"] = False
    config = load_train_config(args.task, data=values, preset=args.preset, path=args.config, overrides=args.set)
    if not ray.is_initialized():
        if args.address or os.environ.get("RAY_ADDRESS"):
            ray.init(address=args.address)
        else:  # local: logical CPUs for every worker plus the controller, even on a 2-core machine
            ray.init(num_cpus=max(4, os.cpu_count() or 1, int(config.num_workers * config.cpus_per_worker) + 1))
    print(format_summary(train(config)))
    return 0
