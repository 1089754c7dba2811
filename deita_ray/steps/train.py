"""`deita-ray train sft|dpo|scorer`: TRL on Ray Train workers (DeepSpeed ZeRO optional), one step per task.

    from deita_ray.steps import STEPS
    from deita_ray.train.config import load_train_config
    summary = STEPS["sft"].execute(load_train_config("sft", data={"model": "m/", "data": ["sel.jsonl"],
                                                                  "output": "runs/sft"}))

The config is train/config.TrainConfig (the Deita options, the paper's presets, and a `trl:` mapping passed to
TRL untouched); the work is train/launch.py. A run config's `sft:` and `dpo:` sections and `generation.scorer`
are this config too.
"""

from __future__ import annotations

import argparse

from deita_ray.steps.base import StepType
from deita_ray.train.config import PRESETS, TrainConfig, check_paths, check_trl_keys, load_train_config, task_defaults

TRAIN_HELP = """\
Train on Ray Train workers with TRL, optionally under DeepSpeed ZeRO-2/3. The global batch stays what you ask
for whatever the number of workers (gradient accumulation is derived). A checkpoint goes to OUTPUT/checkpoints at
every epoch end; running the same command again resumes from the latest one (--fresh starts over). The final
model is OUTPUT/model (Hugging Face format). Unset options take the preset's, else the task's defaults shown;
--dry-run prints what a run would use. Every other TRL option: --trl KEY=VALUE (e.g. --trl report_to=tensorboard).
"""
# Options that mean something for one task only (hidden from the others' --help).
ONLY = {"dpo": ("beta", "ref_model", "max_prompt_length", "max_pairs"), "scorer": ("kind",)}


def run_training(config: TrainConfig, address: str | None = None, mode: str = "ray") -> dict:
    from deita_ray.runner.session import local_cpus
    from deita_ray.train.launch import train

    check_paths(config)
    check_trl_keys(config)
    # A local Ray gets logical CPUs for every worker plus the controller, even on a 2-core machine.
    cpus = max(local_cpus(), int(config.num_workers * config.cpus_per_worker) + 1)
    return train(config, address=address, num_cpus=cpus)


def train_arguments(parser) -> None:
    parser.add_argument("--config", help="YAML file with any of the options (command-line values win)")
    parser.add_argument("--fresh", action="store_true", help="ignore earlier checkpoints in OUTPUT and start over")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="any option, e.g. --set seed=1")
    parser.add_argument("--trl", action="append", dest="trl_options", metavar="KEY=VALUE", help="a TRL config field, passed untouched "
                        "(value parsed as YAML), e.g. --trl report_to=tensorboard --trl logging_dir=runs/tb")


def train_config(task: str):
    def from_args(args: argparse.Namespace, values: dict) -> TrainConfig:
        values = {k: v for k, v in values.items() if v is not None}
        if args.fresh:
            values["resume"] = False
        overrides = list(args.set or []) + [f"trl.{kv}" for kv in args.trl_options or []]
        return load_train_config(task, data=values, path=args.config, overrides=overrides)
    return from_args


def describe(config: TrainConfig) -> dict:
    from deita_ray.steps.base import snapshot

    check_trl_keys(config)  # a typo in a TRL option is an error now, not minutes later on a worker
    return {**snapshot(config), "deepspeed_config": config.deepspeed_config(),
            "gradient_accumulation_steps": config.grad_accumulation}


def check_workers(config: TrainConfig, option: str, local: bool) -> None:
    from deita_ray.train.launch import check_resources

    check_resources(config, option)


def format_training(summary: dict) -> str:
    from deita_ray.train.launch import format_summary

    return format_summary(summary)


def _step(task: str, help_text: str, data_help: str, examples: str) -> StepType:
    return StepType(
        name=task, config=TrainConfig, command=("train", task), run=run_training, format=format_training,
        help=help_text, description=f"{help_text}.\n\n{TRAIN_HELP}", positional="data", positional_nargs="*", positional_help=data_help,
        output_help="run directory: checkpoints/, model/, train_summary.json", output_required=False,
        arguments=train_arguments, from_args=train_config(task), describe=describe, resources=check_workers,
        skip=tuple(name for other, names in ONLY.items() if other != task for name in names),
        shown_defaults=task_defaults(task),
        epilog="presets: " + ", ".join(name for name, p in PRESETS.items() if p["task"] == task) + "\n" + examples)


STEPS = (
    _step("sft", "supervised fine-tuning on a selected set (loss on assistant turns only, Vicuna v1.1 template)",
          "training files or directories: selection/selected.jsonl or .parquet, or any ShareGPT / Alpaca / "
          "messages file (local or s3://...)",
          "examples:\n  deita-ray train sft out/selection/selected.jsonl --model mistralai/Mistral-7B-v0.1 -o runs/sft "
          "--preset deita-mistral-7b-sft --deepspeed zero3 --workers 8 --gpu\n"
          "  deita-ray train sft sel.jsonl --model deita-quickstart/models/scorer-quality -o runs/tiny --set epochs=1"),
    _step("dpo", "direct preference optimisation on preference pairs against a frozen reference model",
          "preference pairs: prompt/chosen/rejected, UltraFeedback-binarized message lists, or ShareGPT preference "
          "rows",
          "example:\n  deita-ray train dpo ultrafeedback.jsonl --model runs/sft/model -o runs/dpo "
          "--preset deita-mistral-7b-dpo --deepspeed zero3 --workers 8 --gpu"),
    _step("scorer", "a Deita complexity or quality scorer from (instruction[, response], score 1-6) labels; the "
                    "result loads straight into `deita-ray score`",
          "label files: labels/complexity.jsonl or quality.jsonl from `deita-ray labels`",
          "example:\n  deita-ray train scorer labels.jsonl --kind complexity --model meta-llama/Llama-2-7b-hf "
          "-o runs/cscorer --gpu"),
)
