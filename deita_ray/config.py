"""The `deita-ray run` configuration: the jobs' own sections, loaded from YAML, checked whole before any work.

    from deita_ray.config import load_config
    config = load_config("run.yaml", overrides=["select.budget=10000", "score.replicas=4"])

Each section is its job's options class (score_job.ScoreSection, embed_job.EmbedSection,
select_job.SelectOptions): the same declaration gives the YAML keys, the flags of `deita-ray score`
/ `embed` / `select`, their help, defaults and ranges. Unknown keys, wrong types, values out of
range and missing local model paths are errors that name the key. A bare name (`quickstart`,
`deita-6k`, `deita-10k`) loads a config shipped in deita_ray/configs/. `preset: deita-6k` applies the
paper's selection settings first (tau 0.9, budget 6,000 or 10,000, evol score = sum over turns,
2,048 embedded tokens); the file's own keys then win. Model values `tiny:scorer-complexity`,
`tiny:scorer-quality`, `tiny:embedder` name the offline tiny models, built under `models_dir`.
"""

from __future__ import annotations

from pathlib import Path

from deita_ray.configlib import ConfigError, apply_override, build, check, load_yaml, merge, must_exist, option, section
from deita_ray.embed_job import EmbedSection
from deita_ray.score_job import ScoreSection
from deita_ray.select_job import SelectOptions

__all__ = ["ConfigError", "RunConfig", "load_config", "PRESETS"]

CONFIG_DIR = Path(__file__).parent / "configs"
PRESETS = {
    "deita-6k": {"select": {"strategy": "diverse", "budget": 6000, "threshold": 0.9}, "score": {"aggregation": "sum"},
                 "embed": {"max_length": 2048}},
    "deita-10k": {"select": {"strategy": "diverse", "budget": 10000, "threshold": 0.9}, "score": {"aggregation": "sum"},
                  "embed": {"max_length": 2048}},
}


@section
class SamplePoolSection:
    dir: str = option("", "generate the project's sample pool here if missing (\"\": don't)")
    samples: int = option(3000, "samples in the generated pool", ge=1)
    seed: int = option(0, "seed of the generated pool")

    def __post_init__(self):
        check(self)


@section
class RaySection:
    address: str | None = option(None, "Ray address (default: RAY_ADDRESS, else a local Ray)")
    num_cpus: int | None = option(None, "local Ray only: logical CPUs (default max(4, cores))", ge=1)

    def __post_init__(self):
        check(self)


@section
class RunConfig:
    output: str
    inputs: list[str] = option(default_factory=list)
    input_format: str | None = None
    models_dir: str = "models"         # where tiny:* models are built
    preset: str | None = None
    overwrite: bool = False
    report: bool = True                # write report/index.html (reads small pool-wide columns on the driver)
    sample_pool: SamplePoolSection = option(default_factory=SamplePoolSection)
    score: ScoreSection = option(default_factory=ScoreSection)
    embed: EmbedSection = option(default_factory=EmbedSection)
    select: SelectOptions = option(default_factory=SelectOptions)
    # Optional training on the selection: the keys of `deita-ray train sft|dpo` (train/config.py), e.g.
    # sft: {model: mistralai/Mistral-7B-v0.1, preset: deita-mistral-7b-sft, num_workers: 8, use_gpu: true}
    # dpo: {data: [s3://b/ultrafeedback/], preset: deita-mistral-7b-dpo}   (model: the SFT model by default)
    sft: dict | None = None
    dpo: dict | None = None
    ray: RaySection = option(default_factory=RaySection)


def resolve_config_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = CONFIG_DIR / f"{name_or_path}.yaml"
    if shipped.exists():
        return shipped
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"config not found: {name_or_path} (a YAML file, or one of: {known})")


def load_config(name_or_path: str | None, overrides: list[str] | None = None, data: dict | None = None) -> RunConfig:
    raw = dict(data or {})
    if name_or_path:
        raw = merge(raw, load_yaml(resolve_config_path(name_or_path)))
    for override in overrides or []:
        apply_override(raw, override)
    preset = raw.get("preset")
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        raw = merge(PRESETS[preset], raw)
    config = build(RunConfig, raw)
    validate(config)
    return config


def _check_train_section(task: str, section: dict, has_sft: bool) -> None:
    """Keys and types of an sft:/dpo: section, checked now (paths that later steps produce are not)."""
    from deita_ray.train.config import PRESETS as TRAIN_PRESETS, TrainConfig

    if "output" in section or (task == "sft" and "data" in section):
        raise ConfigError(f"{task}: output{' and data' if task == 'sft' else ''} come from the run (OUTPUT/{task}"
                          f"{', the selection' if task == 'sft' else ''}); remove them")
    build(TrainConfig, {"task": task, "model": "m", "data": ["d"], "output": "o", **section}, task)  # keys, types
    if task == "sft" and not section.get("model"):
        raise ConfigError("sft.model: give the model to fine-tune on the selection")
    if task == "dpo" and not section.get("data"):
        raise ConfigError("dpo.data: give the preference pairs (files or directories)")
    if task == "dpo" and not section.get("model") and not has_sft:
        raise ConfigError("dpo.model: give the model to tune (or an sft: section, whose model is used)")
    preset = section.get("preset")
    if preset is not None and (preset not in TRAIN_PRESETS or TRAIN_PRESETS[preset]["task"] != task):
        known = sorted(k for k, v in TRAIN_PRESETS.items() if v["task"] == task)
        raise ConfigError(f"{task}.preset must be one of {known}, got {preset!r}")


def validate(config: RunConfig) -> None:
    """Checks across sections, before any work starts (each section checked its own ranges when built)."""
    from deita_ray.engines.config import MINILM

    for task in ("sft", "dpo"):
        section = getattr(config, task)
        if section is not None:
            _check_train_section(task, section, config.sft is not None)

    if config.input_format not in (None, "sharegpt", "alpaca", "messages"):
        raise ConfigError(f"input_format must be sharegpt, alpaca or messages, got {config.input_format!r}")
    if not config.inputs and not config.sample_pool.dir:
        raise ConfigError("inputs: give at least one pool path (or sample_pool.dir to generate one)")
    for key, model in (("score.complexity_model", config.score.complexity_model),
                       ("score.quality_model", config.score.quality_model), ("embed.model", config.embed.model)):
        if model.startswith("tiny:"):
            from deita_ray.tools.tiny_models import MODEL_NAMES

            if model[5:] not in MODEL_NAMES:
                raise ConfigError(f"{key}: unknown tiny model {model!r} (known: {', '.join('tiny:' + m for m in MODEL_NAMES)})")
        elif model not in (MINILM, f"sentence-transformers/{MINILM}") and must_exist(model):
            raise ConfigError(f"{key}: model path does not exist: {model}")
