"""The `deita-ray train` configuration: one typed dataclass, presets with the paper's settings.

    from deita_ray.train.config import load_train_config
    cfg = load_train_config("sft", data={"model": "m/", "data": ["sel.jsonl"], "output": "out/"},
                            preset="deita-mistral-7b-sft", overrides=["num_workers=8"])

Values come from (later wins): the task's defaults, a preset, a YAML file, the command line.
Unknown keys, wrong types, a missing local model or data path and a global batch that the workers
cannot split evenly are errors that name the key, raised before any worker starts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic_core import PydanticUndefined

from deita_ray.configlib import ConfigError, apply_override as _apply_override, build as _build, merge as _merge, \
    must_exist as _must_exist, option, section, load_yaml_text

TASKS = ("sft", "dpo", "scorer")
DEEPSPEED_DIR = Path(__file__).parent / "deepspeed"
DEEPSPEED_SHIPPED = ("zero2", "zero3")

# The paper's recipes (arXiv 2312.15685, Appendix A: "In all experiments of this paper, the training parameters
# are set with a maximum input length of 2048"), checked against hkust-nlp/deita examples/train/*.sh:
# - LLaMA-1-13B: batch 128, 6 epochs, lr 1e-5, warmup 0.03; LLaMA-2-13B: batch 128, 6 epochs, lr 2e-5, warmup 0.1
#   (the paper names no schedule for these: cosine, as FastChat's Vicuna recipe that Lu et al. (2023) follow);
# - Mistral-7B SFT: batch 512, lr 2e-5, warmup 0.1, cosine, 6 epochs (sft.sh, the released Deita models);
# - Mistral-7B DPO: batch 32, lr 5e-7, warmup 0.1, linear, 9 epochs, beta 0.1 (dpo.sh), on 10K UltraFeedback
#   pairs drawn at random with seed 42 (src/deita/data/sample_ultrafeedback.py), prompts to 512 tokens (dpo_train.py).
#
# One preset mechanism: a preset is a named set of values over the field defaults, and each task has one of its
# own (named as the task) that applies when no other is named: what `deita-ray train TASK --help` shows.
PRESETS: dict[str, dict] = {
    "sft": {"task": "sft", "learning_rate": 2e-5, "epochs": 3, "global_batch_size": 128, "lr_scheduler": "cosine"},
    "dpo": {"task": "dpo", "learning_rate": 5e-7, "epochs": 1, "global_batch_size": 32, "lr_scheduler": "linear",
            "beta": 0.1},
    # Scorers: hkust-nlp/deita examples/train/train_scorers.sh (6 epochs, lr 2e-5, warmup 0.1, cosine, global
    # batch 512, max length 2048), wherever a scorer is trained.
    "scorer": {"task": "scorer", "learning_rate": 2e-5, "epochs": 6, "global_batch_size": 512, "warmup_ratio": 0.1,
               "lr_scheduler": "cosine", "max_length": 2048},
    "deita-mistral-7b-sft": {"task": "sft", "learning_rate": 2e-5, "epochs": 6, "global_batch_size": 512,
                             "warmup_ratio": 0.1, "lr_scheduler": "cosine", "max_length": 2048},
    "deita-llama1-13b-sft": {"task": "sft", "learning_rate": 1e-5, "epochs": 6, "global_batch_size": 128,
                             "warmup_ratio": 0.03, "lr_scheduler": "cosine", "max_length": 2048},
    "deita-llama2-13b-sft": {"task": "sft", "learning_rate": 2e-5, "epochs": 6, "global_batch_size": 128,
                             "warmup_ratio": 0.1, "lr_scheduler": "cosine", "max_length": 2048},
    "deita-mistral-7b-dpo": {"task": "dpo", "beta": 0.1, "learning_rate": 5e-7, "epochs": 9, "global_batch_size": 32,
                             "lr_scheduler": "linear", "warmup_ratio": 0.1, "max_prompt_length": 512, "max_length": 2048,
                             "max_pairs": 10000, "seed": 42},
}
@section
class TrainConfig:
    """Every option of `deita-ray train` (and of a run's sft:/dpo: sections), declared once: its YAML key,
    its flag, its help and its range. Defaults here are the fallbacks; the task's and the preset's win."""

    task: Literal["sft", "dpo", "scorer"] = option(help="sft | dpo | scorer", flag=False, section=False)
    model: str | None = option(None, "model to start from (HF directory, or hub name where a hub can be reached)")
    data: list[str] = option(default_factory=list, help="training files or directories", flag=False)
    output: str = option("", "run directory (local or s3://...): checkpoints/, model/, prepared/", flag=False,
                         section=False)
    kind: Literal["complexity", "quality"] = option("complexity", "scorer only: which Deita scorer")
    template: Literal["vicuna", "model"] = option("vicuna", "vicuna (FastChat v1.1, as Deita) or the tokenizer's "
                                                            "chat template")
    learning_rate: float = option(2e-5, "peak learning rate", gt=0, aliases=("--lr",))
    epochs: int = option(3, "epochs over the data", ge=1)
    global_batch_size: int = option(128, "sequences per optimizer step, whatever the number of workers", ge=1)
    per_device_batch_size: int = option(1, "micro-batch; gradient accumulation = global / (micro x workers)", ge=1)
    warmup_ratio: float = option(0.1, "fraction of the steps spent warming up", ge=0, lt=1)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = option("cosine", "schedule")
    weight_decay: float = option(0.0, "AdamW weight decay", ge=0)
    max_length: int = option(2048, "tokens per sequence (longer ones are cut)", ge=1)
    max_prompt_length: int = option(512, "dpo: a pair longer than max_length keeps the last this-many tokens of its "
                                         "prompt (then its answers are cut), as TRL 0.7 did for Deita", ge=1)
    max_pairs: int | None = option(None, "dpo: train on this many pairs drawn at random with --seed (Deita: 10,000 "
                                         "of UltraFeedback, seed 42); default all", ge=1)
    beta: float = option(0.1, "dpo: strength of the KL penalty", gt=0)
    ref_model: str | None = option(None, "dpo: the frozen reference model (default: --model)")
    deepspeed: str = option("none", "none, zero2, zero3 (shipped configs) or a DeepSpeed JSON file")
    num_workers: int = option(1, "Ray Train workers (one per GPU with --gpu)", ge=1, aliases=("--workers",))
    use_gpu: bool = option(False, "one GPU per worker (NCCL)", aliases=("--gpu",))
    cpus_per_worker: float = option(1.0, "CPUs reserved per worker", gt=0)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = option("auto", "auto: bf16 on GPU, fp32 on CPU")
    gradient_checkpointing: bool = option(False, "recompute activations to save memory")
    max_steps: int = option(-1, "stop after this many optimizer steps (> 0: smoke runs)")
    logging_steps: int = option(1, "log the loss every this many steps", ge=1)
    save_every_epoch: bool = option(True, "a checkpoint to OUTPUT/checkpoints at each epoch end")
    keep_checkpoints: int = option(2, "checkpoints kept", ge=1)
    seed: int = option(42, "random seed")
    resume: bool = option(True, "rerunning on the same output continues from its latest checkpoint", flag=False,
                          section=False)
    allow_partial: bool = option(False, "train on data (or from a model) whose step did not finish (recorded in "
                                        "the summary)")
    preset: str | None = option(None, "named settings over the defaults: " + ", ".join(PRESETS) + " (default: the "
                                      "task's own)")
    # Every other TRL option, passed to SFTConfig / DPOConfig as TRL documents it (report_to, logging_dir,
    # loss_type, neftune_noise_alpha, ...); a key here wins over the value derived from the fields above.
    trl: dict = option(default_factory=dict, help="more TRL config fields, passed untouched (e.g. report_to: "
                                                  "tensorboard); KEY=VALUE on the command line")

    def models(self) -> list[tuple[str, str, str]]:
        """(field, model, engine) of the models the training loads (checked before Ray starts)."""
        return [(key, getattr(self, key), "hf") for key in ("model", "ref_model") if getattr(self, key)]

    @property
    def grad_accumulation(self) -> int:
        return self.global_batch_size // (self.per_device_batch_size * self.num_workers)

    def deepspeed_config(self) -> dict | None:
        if self.deepspeed == "none":
            return None
        path = DEEPSPEED_DIR / f"{self.deepspeed}.json" if self.deepspeed in DEEPSPEED_SHIPPED else Path(self.deepspeed)
        return json.loads(path.read_text())


# TRL fields the run owns: where the workers write, which device, DeepSpeed (the `deepspeed` option), the batch
# split, and the lengths the rows were prepared to on the driver.
TRL_RESERVED = ("output_dir", "use_cpu", "deepspeed", "per_device_train_batch_size", "gradient_accumulation_steps",
                "max_length", "max_prompt_length")


def check(config: TrainConfig, prefix: str = "") -> None:
    """What the fields cannot say alone (raised before any worker starts, naming the key)."""
    def bad(key: str, message: str):
        raise ConfigError(f"{prefix}{key}: {message}")

    per_step = config.per_device_batch_size * config.num_workers
    if config.global_batch_size % per_step:
        bad("global_batch_size", f"{config.global_batch_size} is not a multiple of per_device_batch_size x num_workers "
            f"= {per_step}; the global batch must split evenly into micro-batches")
    if config.deepspeed not in ("none",) + DEEPSPEED_SHIPPED and not config.deepspeed.endswith(".json"):
        bad("deepspeed", f"must be none, zero2, zero3 or a DeepSpeed JSON file, got {config.deepspeed!r}")
    reserved = sorted(set(config.trl) & set(TRL_RESERVED))
    if reserved:
        bad(f"trl.{reserved[0]}", "is set by deita-ray (use output, use_gpu, deepspeed, per_device_batch_size, "
                                  "global_batch_size, max_length, max_prompt_length)")


def check_paths(config: TrainConfig) -> None:
    """The files a training reads are there (a run checks these when the step starts, after upstream steps)."""
    if not config.model:
        raise ConfigError("model: give the model to start from (--model)")
    if config.deepspeed.endswith(".json") and not Path(config.deepspeed).is_file():
        raise ConfigError(f"deepspeed: {config.deepspeed} does not exist")
    for key in ("model", "ref_model"):
        value = getattr(config, key)
        if value and _must_exist(value):
            raise ConfigError(f"{key}: model path {value} does not exist")
    if not config.data:
        raise ConfigError("data: give at least one training file or directory")
    for path in config.data:
        if "://" not in path and not Path(os.path.expanduser(path)).exists():
            raise ConfigError(f"data: {path} does not exist")


def check_trl_keys(config: TrainConfig) -> None:
    """Every `trl` key is a field of the TRL config class the task uses (imports TRL: call it where a training
    is about to start, not when a run config loads)."""
    import dataclasses

    from deita_ray.runner.quiet import deepspeed_on_cpu_told

    with deepspeed_on_cpu_told():
        from trl import DPOConfig, SFTConfig

    cls = DPOConfig if config.task == "dpo" else SFTConfig
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(config.trl) - known)
    if unknown:
        raise ConfigError(f"trl.{unknown[0]}: not a field of trl.{cls.__name__} (see TRL's documentation)")


def task_defaults(task: str) -> dict:
    """Every option's value for `task` when no preset and no flag says otherwise (the field defaults under the
    task's own preset): what `deita-ray train TASK --help` shows."""
    defaults = {name: info.default for name, info in TrainConfig.__pydantic_fields__.items()
                if info.default is not PydanticUndefined}
    return {**defaults, **{k: v for k, v in PRESETS[task].items() if k != "task"}}


def resolve(task: str, values: dict, prefix: str = "") -> TrainConfig:
    """A TrainConfig from the user's values over the preset they name (or the task's own) over the defaults;
    checked (`check`), but no file is looked for yet (`check_paths`)."""
    if task not in TASKS:
        raise ConfigError(f"task must be one of {TASKS}, got {task!r}")
    if values.get("task", task) != task:
        raise ConfigError(f"{prefix}task: the config says {values['task']!r} but the command is `train {task}`")
    preset = values.get("preset") or task
    if preset not in PRESETS:
        raise ConfigError(f"{prefix}preset must be one of {sorted(PRESETS)}, got {preset!r}")
    if PRESETS[preset]["task"] != task:
        raise ConfigError(f"{prefix}preset {preset} is for `train {PRESETS[preset]['task']}`, not `train {task}`")
    raw = _merge({k: v for k, v in PRESETS[preset].items() if k != "task"}, {**values, "task": task, "preset": preset})
    if isinstance(raw.get("data"), str):
        raw["data"] = [raw["data"]]
    config = _build(TrainConfig, raw, prefix.rstrip("."))
    check(config, prefix)
    return config


def load_train_config(task: str, data: dict | None = None, preset: str | None = None, path: str | None = None,
                      overrides: list[str] | None = None) -> TrainConfig:
    """`deita-ray train TASK`'s config: a YAML file, then `data` (the flags), then `overrides` (KEY=VALUE)."""
    raw: dict = {}
    if path:
        loaded = load_yaml_text(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        raw = loaded
    raw = _merge(raw, {k: v for k, v in (data or {}).items() if v is not None})
    for override in overrides or []:
        _apply_override(raw, override)
    if preset is not None:
        raw["preset"] = preset
    missing = [k for k in ("model", "data", "output") if not raw.get(k)]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)}: give them on the command line (--model, DATA..., -o) "
                          "or in the --config file")
    config = resolve(task, raw)
    check_paths(config)
    return config
