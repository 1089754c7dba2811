"""The `deita-ray run` configuration: one typed section per step, loaded from YAML and checked whole before any work.

    from deita_ray.recipe.config import load_config
    config = load_config("run.yaml", overrides=["select.budget=10000", "score.replicas=4"])

A section is its step's own config class (steps/): `score:` is what `deita-ray score` takes, `sft:` what
`deita-ray train sft` takes, `generation.evolve:` what `deita-ray evolve` takes; the keys the run sets itself
(inputs, output, the selection SFT trains on, ...) are refused there. Unknown keys, wrong types, values out of
range and missing local model paths are errors that name the key. A bare name (`quickstart`, `deita-6k`,
`deita-10k`, ...) loads a config shipped in deita_ray/configs/. `preset: deita-6k` applies the paper's selection
settings first (tau 0.9, budget 6,000 or 10,000, evol score = sum over turns, 2,048 embedded tokens); the file's
own keys then win. Model values `tiny:scorer-complexity`, `tiny:scorer-quality`, `tiny:embedder`,
`tiny:generator` name the offline tiny models, built under `models_dir`.
"""

from __future__ import annotations

import dataclasses
import posixpath
from pathlib import Path
from typing import Literal

from deita_ray.configlib import (ConfigError, apply_override, build, build_section, load_yaml, merge, must_exist,
                                 option, section, user_keys)
from deita_ray.runner.layout import selection_dir
from deita_ray.steps import STEPS
from deita_ray.steps.embed import EmbedConfig
from deita_ray.steps.eval import EvalConfig
from deita_ray.steps.evolve import EvolveConfig
from deita_ray.steps.judge import JudgeConfig
from deita_ray.steps.score import ScoreConfig
from deita_ray.steps.select import SelectConfig
from deita_ray.train.config import TrainConfig, resolve

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
PRESETS = {
    "deita-6k": {"select": {"strategy": "diverse", "budget": 6000, "threshold": 0.9}, "score": {"aggregation": "sum"},
                 "embed": {"max_length": 2048}},
    "deita-10k": {"select": {"strategy": "diverse", "budget": 10000, "threshold": 0.9}, "score": {"aggregation": "sum"},
                  "embed": {"max_length": 2048}},
}
# The sections that are a step's config (the others are the run's own), and the step each one is.
STEP_SECTIONS = {"score": "score", "embed": "embed", "select": "select", "sft": "sft", "dpo": "dpo"}
GENERATION_SECTIONS = {"evolve": "evolve", "judge": "judge", "scorer": "scorer"}


@section
class SamplePoolSection:
    dir: str = option("", "generate the project's sample data here if missing (\"\": don't)")
    samples: int = option(3000, "samples to generate", ge=1)
    seed: int = option(0, "seed of the generated data")


@section
class GenerationSection:
    """The generation half inside a run: evolve the seeds, judge the chains, export labels and train the scorers
    that the score step then uses (instead of `score.complexity_model`/`quality_model`)."""

    seeds: list[str] = option(default_factory=list, help="seed files or directories (kept apart from the pool)")
    modes: list[Literal["complexity", "quality"]] = option(
        default_factory=lambda: ["complexity", "quality"], help="which scorers to make: complexity, quality")
    evolve: EvolveConfig = option(help="the options of `deita-ray evolve` (model: the rewriter)")
    judge: JudgeConfig = option(help="the options of `deita-ray judge` (model: the judge)")
    scorer: TrainConfig = option(help="the options of `deita-ray train scorer` for every scorer (model: the base "
                                      "model; Deita's recipe by default: 6 epochs, lr 2e-5, batch 512)")


ARM_STRATEGIES = {"deita": "diverse", "random": "random", "evol": "evol", "complexity": "complexity",
                  "quality": "quality", "length": "length"}


@section
class AblationSection:
    """The paper's comparison in the same run: each arm selects at one budget, trains (the sft: and dpo: sections),
    and is evaluated on MT-Bench; every arm is then judged pairwise against the baseline arm."""

    arms: list[Literal["deita", "random", "evol", "complexity", "quality", "length"]] = option(
        default_factory=lambda: ["deita", "random"], help="deita: the Repr Filter over evol score (the select: "
                                                          "section's tau); the others: baselines without diversity")
    baseline: str = option("random", "the arm every other one is compared with")
    budget: int | None = option(None, "samples each arm selects (default: select.budget)", ge=1)
    questions: list[str] = option(default_factory=list, help="FastChat question.jsonl files every arm answers")
    eval: EvalConfig | None = option(None, "the options of `deita-ray eval` (the judge, the template, answer "
                                           "lengths); judge_model is required")


@section
class RaySection:
    address: str | None = option(None, "Ray address (default: RAY_ADDRESS, else a local Ray)")
    num_cpus: int | None = option(None, "local Ray only: logical CPUs (default max(4, cores))", ge=1)
    local: bool = option(False, "run every step but training in this process, without Ray Data or actors (as the "
                                "step commands' --local): small pools, debugging. The same outputs; training still "
                                "starts Ray Train")


@section
class RunConfig:
    output: str = option(help="the run's directory (local or an object store): every step's output goes under it")
    inputs: list[str] = option(default_factory=list, help="the pool: files, directories or globs")
    input_format: Literal["sharegpt", "alpaca", "messages"] | None = option(
        None, "force the pool's format (default: detect per file)")
    models_dir: str = option("models", "where tiny:* models are built")
    preset: Literal["deita-6k", "deita-10k"] | None = option(None, "the paper's selection settings, under the file's")
    overwrite: bool = option(False, "redo every step even if a finished one is there")
    report: bool = option(True, "write report/index.html (reads small pool-wide columns on the driver)")
    sample_pool: SamplePoolSection = option(default_factory=SamplePoolSection, help="a generated pool")
    sample_seeds: SamplePoolSection = option(default_factory=SamplePoolSection, help="generated seeds")
    sample_preferences: SamplePoolSection = option(default_factory=SamplePoolSection,
                                                   help="generated DPO preference pairs")
    sample_questions: SamplePoolSection = option(default_factory=SamplePoolSection,
                                                 help="generated MT-Bench-style questions (question.jsonl)")
    generation: GenerationSection | None = option(None, "the generation half (evolve, judge, labels, scorers)")
    score: ScoreConfig = option(default_factory=ScoreConfig, help="the options of `deita-ray score`")
    embed: EmbedConfig = option(default_factory=EmbedConfig, help="the options of `deita-ray embed`")
    select: SelectConfig = option(default_factory=SelectConfig, help="the options of `deita-ray select`")
    sft: TrainConfig | None = option(None, "the options of `deita-ray train sft`: SFT on the selection")
    dpo: TrainConfig | None = option(None, "the options of `deita-ray train dpo` (model: the SFT model by default)")
    ablation: AblationSection | None = option(None, "arms selected, trained and evaluated side by side")
    ray: RaySection = option(default_factory=RaySection, help="where the run's Ray is")


def shipped_configs() -> dict[str, str]:
    """The configs shipped in deita_ray/configs/, each with the first line of its own comment."""
    found = {}
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        first = next((line for line in path.read_text().splitlines() if line.startswith("#")), "# ")
        found[path.stem] = first.lstrip("# ").split(":")[0].split(" (")[0].rstrip(".")
    return found


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
    if not raw.get("output"):
        raise ConfigError("output: missing (required): the run's directory")
    sections = {"generation", "ablation", *STEP_SECTIONS}
    unknown = sorted(set(raw) - set(RunConfig.__pydantic_fields__))
    if unknown:
        raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                          f"(known: {', '.join(RunConfig.__pydantic_fields__)})")
    top = build(RunConfig, {k: v for k, v in raw.items() if k not in sections})  # the run's own keys first
    pool = list(top.inputs) or ([top.sample_pool.dir] if top.sample_pool.dir else [])
    config = dataclasses.replace(top, **step_sections(raw, top.output, pool, top.input_format))
    validate(config)
    return config


def step_sections(raw: dict, out: str, pool: list[str], input_format: str | None) -> dict:
    """Every step section, typed, with the values the run gives it (the models the run makes come later)."""
    sections = {
        "score": build_section(STEPS["score"].config, raw.get("score"), "score",
                               run={"inputs": pool, "output": out, "input_format": input_format, "overwrite": True}),
        "embed": build_section(STEPS["embed"].config, raw.get("embed"), "embed",
                               run={"inputs": [posixpath.join(out, "scored")], "output": out, "overwrite": True}),
        "select": build_section(STEPS["select"].config, raw.get("select"), "select",
                                run={"scored": posixpath.join(out, "scored"), "output": selection_dir(out),
                                     "embeddings": posixpath.join(out, "embeddings"), "overwrite": True}),
    }
    if raw.get("sft") is not None:
        run = {"data": [posixpath.join(selection_dir(out), "selected.jsonl")], "output": posixpath.join(out, "sft")}
        sections["sft"] = resolve("sft", {**user_keys(TrainConfig, raw["sft"], "sft", run), **run}, "sft.")
    if raw.get("dpo") is not None:
        run = {"output": posixpath.join(out, "dpo")}
        given = user_keys(TrainConfig, raw["dpo"], "dpo", run)
        if not given.get("model") and raw.get("sft") is not None:
            run["model"] = posixpath.join(out, "sft", "model")  # the model flows from SFT to DPO
        sections["dpo"] = resolve("dpo", {**given, **run}, "dpo.")
    if raw.get("generation") is not None:
        sections["generation"] = generation_section(raw["generation"])
    if raw.get("ablation") is not None:
        sections["ablation"] = ablation_section(raw["ablation"])
    return sections


def ablation_section(raw: dict) -> AblationSection:
    if not isinstance(raw, dict):
        raise ConfigError(f"ablation must be a mapping, got {type(raw).__name__}")
    evaluation = build_section(EvalConfig, raw.get("eval"), "ablation.eval")
    return build(AblationSection, {**{k: v for k, v in raw.items() if k != "eval"}, "eval": evaluation}, "ablation")


def generation_section(raw: dict) -> GenerationSection:
    if not isinstance(raw, dict):
        raise ConfigError(f"generation must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(GenerationSection.__pydantic_fields__))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in generation (known: "
                          f"{', '.join(GenerationSection.__pydantic_fields__)})")
    for key in GENERATION_SECTIONS:
        if not (raw.get(key) or {}).get("model"):
            what = {"evolve": "rewriting model", "judge": "judge model", "scorer": "base model the scorers are "
                                                                                    "trained from"}[key]
            raise ConfigError(f"generation.{key}.model: give the {what}")
    evolve = build_section(EvolveConfig, raw["evolve"], "generation.evolve")
    judge = build_section(JudgeConfig, raw["judge"], "generation.judge")
    scorer_run = {"data": [], "output": "", "kind": "complexity"}  # per mode, when the run builds its steps
    scorer = resolve("scorer", {**user_keys(TrainConfig, raw["scorer"], "generation.scorer", scorer_run)},
                     "generation.scorer.")
    rest = {k: v for k, v in raw.items() if k not in GENERATION_SECTIONS}
    return GenerationSection(**rest, evolve=evolve, judge=judge, scorer=scorer)


def models(config: RunConfig) -> list[tuple[str, str, str]]:
    """(key, model, engine) of every model the run loads but does not make itself (tiny:* it builds; the scorers
    it trains and the SFT model DPO starts from are under its output)."""
    found = []
    for name, part in [(n, getattr(config, n)) for n in STEP_SECTIONS] + (
            [(f"generation.{n}", getattr(config.generation, n)) for n in GENERATION_SECTIONS]
            if config.generation is not None else []) + (
            [("ablation.eval", config.ablation.eval)] if config.ablation is not None else []):
        if part is None or not hasattr(part, "models"):
            continue
        trained = set(config.generation.modes) if config.generation is not None and name == "score" else set()
        for key, model, engine in part.models():
            if key.split("_")[0] in trained or model.startswith(config.output.rstrip("/") + "/"):
                continue
            found.append((f"{name}.{key}", model, engine))
    return found


def _check_ablation(config: RunConfig) -> None:
    ablation = config.ablation
    if config.sft is None:
        raise ConfigError("ablation: give an sft: section (how every arm is trained)")
    if not ablation.questions:
        raise ConfigError("ablation.questions: give FastChat question.jsonl files to evaluate the arms on")
    if not ablation.eval.judge_model:
        raise ConfigError("ablation.eval.judge_model: give the judge")
    if len(set(ablation.arms)) != len(ablation.arms) or len(ablation.arms) < 2:
        raise ConfigError(f"ablation.arms: name at least two different arms, got {ablation.arms}")
    if ablation.baseline not in ablation.arms:
        raise ConfigError(f"ablation.baseline must be one of the arms {ablation.arms}, got {ablation.baseline!r}")


def validate(config: RunConfig) -> None:
    """Checks across sections, before any work starts (each section checked its own values when built)."""
    from deita_ray.engines.config import MINILM

    gen = config.generation
    if gen is not None and not gen.seeds and not config.sample_seeds.dir:
        raise ConfigError("generation.seeds: give seed files (or sample_seeds.dir to generate them)")
    if gen is not None and not gen.modes:
        raise ConfigError("generation.modes: name at least one of complexity, quality")
    if not config.inputs and not config.sample_pool.dir:
        raise ConfigError("inputs: give at least one pool path (or sample_pool.dir to generate one)")
    if config.sft is not None and not config.sft.model:
        raise ConfigError("sft.model: give the model to fine-tune on the selection")
    if config.dpo is not None and not config.dpo.data:
        raise ConfigError("dpo.data: give the preference pairs (files or directories)")
    if config.dpo is not None and not config.dpo.model:
        raise ConfigError("dpo.model: give the model to tune (or an sft: section, whose model is used)")
    if config.ablation is not None:
        _check_ablation(config)
    for key, model, engine in models(config):
        if engine == "http":
            continue
        if model.startswith("tiny:"):
            from deita_ray.tools.tiny_models import MODEL_NAMES

            if model[5:] not in MODEL_NAMES:
                raise ConfigError(f"{key}: unknown tiny model {model!r} (known: "
                                  f"{', '.join('tiny:' + m for m in MODEL_NAMES)})")
        elif model not in (MINILM, f"sentence-transformers/{MINILM}") and must_exist(model):
            raise ConfigError(f"{key}: model path does not exist: {model}")
