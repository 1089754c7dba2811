"""The `deita-ray run` configuration: typed sections, loaded from YAML, validated on load.

    from deita_ray.config import load_config
    config = load_config("run.yaml", overrides=["select.budget=10000", "score.replicas=4"])

Unknown keys, wrong types and missing local model paths are errors that name the key. A bare
name (`quickstart`, `deita-6k`, `deita-10k`) loads a config shipped in deita_ray/configs/.
`preset: deita-6k` inside a config applies the paper's selection settings first (tau 0.9, budget
6,000 or 10,000, evol score = sum over turns); the file's own keys then win. Model values
`tiny:scorer-complexity`, `tiny:scorer-quality`, `tiny:embedder` name the offline tiny models,
built under `models_dir` when missing.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

CONFIG_DIR = Path(__file__).parent / "configs"
PRESETS = {
    "deita-6k": {"select": {"strategy": "diverse", "budget": 6000, "threshold": 0.9}, "score": {"aggregation": "sum"}},
    "deita-10k": {"select": {"strategy": "diverse", "budget": 10000, "threshold": 0.9}, "score": {"aggregation": "sum"}},
}


class ConfigError(ValueError):
    """A config problem, with the dotted key it concerns."""


@dataclass
class ScoreSection:
    complexity_model: str = "tiny:scorer-complexity"
    quality_model: str = "tiny:scorer-quality"
    engine: str = "hf"
    dtype: str = "float32"
    max_length: int | None = None
    batch_size: int = 32
    tensor_parallel_size: int = 1
    enforce_eager: bool = True
    aggregation: str = "sum"
    replicas: int = 1
    cpus_per_replica: float = 0.5
    gpus_per_replica: float = 0.0
    batch_rows: int = 256


@dataclass
class EmbedSection:
    model: str = "all-MiniLM-L6-v2"
    engine: str | None = None          # default: sentence-transformers for MiniLM, else hf
    pooling: str = "last"
    template: str = "auto"
    dtype: str = "float32"
    store_dtype: str = "float16"
    max_length: int | None = None
    batch_size: int = 32
    tensor_parallel_size: int = 1
    enforce_eager: bool = True
    replicas: int = 1
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    batch_rows: int = 256


@dataclass
class SelectSection:
    strategy: str = "diverse"
    budget: int = 6000
    threshold: float = 0.9
    block_size: int = 1024
    seed: int = 0
    device: str = "auto"
    index: str = "actor"
    sort_on: str = "auto"              # auto | driver | ray: where candidates are sorted (ray keeps the driver flat)


@dataclass
class SamplePoolSection:
    dir: str = ""                      # generate the project's sample pool here if missing ("" = don't)
    samples: int = 3000
    seed: int = 0


@dataclass
class RaySection:
    address: str | None = None         # default: RAY_ADDRESS, else a local Ray
    num_cpus: int | None = None        # local Ray only: logical CPUs (default max(4, cores))


@dataclass
class RunConfig:
    output: str
    inputs: list[str] = field(default_factory=list)
    input_format: str | None = None
    models_dir: str = "models"         # where tiny:* models are built
    preset: str | None = None
    overwrite: bool = False
    report: bool = True                # write report/index.html (reads small pool-wide columns on the driver)
    sample_pool: SamplePoolSection = field(default_factory=SamplePoolSection)
    score: ScoreSection = field(default_factory=ScoreSection)
    embed: EmbedSection = field(default_factory=EmbedSection)
    select: SelectSection = field(default_factory=SelectSection)
    ray: RaySection = field(default_factory=RaySection)


def _check(value, hint, key: str):
    """Value converted to `hint` (int -> float allowed), or ConfigError naming the key."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        return _check(value, next(a for a in options if a is not type(None)), key)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {type(value).__name__}")
        return _build(hint, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {type(value).__name__}")
        return [_check(v, typing.get_args(hint)[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"{key} must be {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def _build(cls, data: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f" in {prefix}" if prefix else ""
        raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}{where} "
                          f"(known: {', '.join(names)})")
    kwargs = {name: _check(data[name], hints[name], f"{prefix}.{name}" if prefix else name) for name in names if name in data}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required key is missing
        raise ConfigError(f"{prefix or 'config'}: {exc}") from None


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _apply_override(data: dict, override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"override {override!r} must look like section.key=value")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {part} is not a section")
    node[parts[-1]] = yaml.safe_load(raw)


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
        loaded = yaml.safe_load(resolve_config_path(name_or_path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{name_or_path}: the top level must be a mapping")
        raw = _merge(raw, loaded)
    for override in overrides or []:
        _apply_override(raw, override)
    preset = raw.get("preset")
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        raw = _merge(PRESETS[preset], raw)
    config = _build(RunConfig, raw)
    validate(config)
    return config


def _must_exist(model: str) -> bool:
    """Local paths must exist; `org/name` (a hub id) and the MiniLM alias are not checked offline."""
    from deita_ray.engines.config import MINILM

    if model in (MINILM, f"sentence-transformers/{MINILM}") or Path(os.path.expanduser(model)).exists():
        return False
    return not re.fullmatch(r"[\w.-]+/[\w.-]+", model)


def validate(config: RunConfig) -> None:
    """Cross-field checks with the stage configs' own validation, before any work starts."""
    from deita_ray.engines.base import EngineConfig
    from deita_ray.engines.config import EmbedderConfig
    from deita_ray.select_job import SelectJobConfig

    if not config.inputs and not config.sample_pool.dir:
        raise ConfigError("inputs: give at least one pool path (or sample_pool.dir to generate one)")
    for key, model in (("score.complexity_model", config.score.complexity_model),
                       ("score.quality_model", config.score.quality_model), ("embed.model", config.embed.model)):
        if model.startswith("tiny:"):
            from deita_ray.tools.tiny_models import MODEL_NAMES

            if model[5:] not in MODEL_NAMES:
                raise ConfigError(f"{key}: unknown tiny model {model!r} (known: {', '.join('tiny:' + m for m in MODEL_NAMES)})")
        elif _must_exist(model):
            raise ConfigError(f"{key}: model path does not exist: {model}")
    try:
        EngineConfig(model="x", engine=config.score.engine, dtype=config.score.dtype, batch_size=config.score.batch_size)
        EmbedderConfig(model="x", engine=config.embed.engine or "hf", pooling=config.embed.pooling, dtype=config.embed.dtype)
        SelectJobConfig(scored="x", output="x", embeddings="x", strategy=config.select.strategy,
                        budget=config.select.budget, block_size=config.select.block_size, index=config.select.index,
                        sort_on=config.select.sort_on)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if config.score.aggregation not in ("sum", "mean", "last"):
        raise ConfigError(f"score.aggregation must be sum, mean or last, got {config.score.aggregation!r}")
    if config.embed.store_dtype not in ("float16", "float32"):
        raise ConfigError("embed.store_dtype must be float16 or float32")
