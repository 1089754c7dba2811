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
from typing import Literal

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
class GenerationSection:
    """The generation half inside a run: evolve the seeds, judge the chains, export labels and train
    the scorers that the score step then uses (instead of `score.complexity_model`/`quality_model`)."""

    seeds: list[str] = option(default_factory=list, help="seed files or directories (kept apart from the pool)")
    modes: list[Literal["complexity", "quality"]] = option(
        default_factory=lambda: ["complexity", "quality"], help="which scorers to make: complexity, quality")
    evolve: dict = option(default_factory=dict, help="keys of `deita-ray evolve` (model: the rewriter)")
    judge: dict = option(default_factory=dict, help="keys of `deita-ray judge` (model: the judge)")
    scorer: dict = option(default_factory=dict, help="keys of `deita-ray train scorer` for every scorer (model: the "
                                                     "base model; Deita's recipe: preset-free, 6 epochs, lr 2e-5)")

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
    sample_seeds: SamplePoolSection = option(default_factory=SamplePoolSection)        # generated seeds
    sample_preferences: SamplePoolSection = option(default_factory=SamplePoolSection)  # generated DPO pairs
    generation: GenerationSection | None = None
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


def _check_generation(gen: GenerationSection, config: RunConfig) -> None:
    from deita_ray.evolve_job import EvolveSection
    from deita_ray.judge_job import JudgeSection
    from deita_ray.train.config import TrainConfig

    if not gen.seeds and not config.sample_seeds.dir:
        raise ConfigError("generation.seeds: give seed files (or sample_seeds.dir to generate them)")
    if not gen.modes:
        raise ConfigError("generation.modes: name at least one of complexity, quality")
    for key, part, cls in (("evolve", gen.evolve, EvolveSection), ("judge", gen.judge, JudgeSection)):
        if "model" not in part:
            raise ConfigError(f"generation.{key}.model: give the {'rewriting' if key == 'evolve' else 'judge'} model")
        if "mode" in part:
            raise ConfigError("generation.evolve.mode: the modes come from generation.modes")
        build(cls, part, f"generation.{key}")
    scorer = gen.scorer
    if "model" not in scorer:
        raise ConfigError("generation.scorer.model: give the base model the scorers are trained from")
    for key in ("data", "output", "kind", "task"):
        if key in scorer:
            raise ConfigError(f"generation.scorer.{key} comes from the run; remove it")
    build(TrainConfig, {"task": "scorer", "data": ["d"], "output": "o", **scorer}, "generation.scorer")


def validate(config: RunConfig) -> None:
    """Checks across sections, before any work starts (each section checked its own ranges when built)."""
    from deita_ray.engines.config import MINILM

    if config.generation is not None:
        _check_generation(config.generation, config)

    for task in ("sft", "dpo"):
        section = getattr(config, task)
        if section is not None:
            _check_train_section(task, section, config.sft is not None)

    if config.input_format not in (None, "sharegpt", "alpaca", "messages"):
        raise ConfigError(f"input_format must be sharegpt, alpaca or messages, got {config.input_format!r}")
    if not config.inputs and not config.sample_pool.dir:
        raise ConfigError("inputs: give at least one pool path (or sample_pool.dir to generate one)")
    trained = set(config.generation.modes) if config.generation is not None else set()
    models = [(f"score.{kind}_model", getattr(config.score, f"{kind}_model")) for kind in ("complexity", "quality")
              if kind not in trained]  # a scorer the run trains is not looked for
    gen_models = [] if config.generation is None else [
        ("generation.evolve.model", config.generation.evolve["model"]), ("generation.judge.model",
                                                                        config.generation.judge["model"]),
        ("generation.scorer.model", config.generation.scorer["model"])]
    generation_engines = {} if config.generation is None else {
        "generation.evolve.model": config.generation.evolve.get("engine"),
        "generation.judge.model": config.generation.judge.get("engine")}
    for key, model in models + [("embed.model", config.embed.model)] + \
            [(k, m) for k, m in gen_models if generation_engines.get(k) != "http"]:
        if model.startswith("tiny:"):
            from deita_ray.tools.tiny_models import MODEL_NAMES

            if model[5:] not in MODEL_NAMES:
                raise ConfigError(f"{key}: unknown tiny model {model!r} (known: {', '.join('tiny:' + m for m in MODEL_NAMES)})")
        elif model not in (MINILM, f"sentence-transformers/{MINILM}") and must_exist(model):
            raise ConfigError(f"{key}: model path does not exist: {model}")
