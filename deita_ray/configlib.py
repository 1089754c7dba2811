"""Typed configs declared once: a dataclass field is a YAML key, a command-line flag, its help and its range.

    @dataclass(kw_only=True)
    class Resources:
        replicas: int = option(1, "actors (engine replicas)", ge=1)
        def __post_init__(self): check(self)

    build(Resources, {"replicas": 2}, "score")     # types checked; ConfigError names the key
    add_flags(parser, Resources)                    # --replicas N, help and default from the same field
    given(args, Resources)                          # the flags the user gave, as a dict for build()

A bare value `option(default, help, ge=..., le=..., gt=..., lt=...)` is all a field needs. Ranges
are checked on construction (`check`), so the YAML loader, the command line and the Python API
refuse the same values with the same message. Merging files, presets and `--set key=value`
overrides (`merge`, `apply_override`) work on plain dicts before `build`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import re
import types
import typing
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A config problem, with the dotted key it concerns."""


_MISSING = dataclasses.MISSING


def option(default=_MISSING, help: str = "", *, ge=None, gt=None, le=None, lt=None, aliases: tuple = (),
           default_factory=_MISSING, flag: bool = True):
    """A config field: default, help text and range in one declaration."""
    metadata = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "aliases": aliases, "flag": flag}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    if default is _MISSING:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check(obj) -> None:
    """Check every field's choices (Literal types) and declared range (None passes where the type allows it)."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        allowed = _literal_choices(hints[f.name])
        if allowed is not None and value is not None and value not in allowed:
            raise ConfigError(f"{f.name} must be one of {', '.join(map(str, allowed))}, got {value!r}")
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        m = f.metadata
        for key, ok, word in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                              ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")):
            bound = m.get(key)
            if bound is not None and not ok(value, bound):
                raise ConfigError(f"{f.name} must be {word} {bound}, got {value}")


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _literal_choices(hint) -> tuple | None:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if typing.get_origin(arg) is typing.Literal:
                return typing.get_args(arg)
    return None


def _check_type(value, hint, key: str):
    """Value converted to `hint` (int -> float allowed), or ConfigError naming the key."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option_type in (a for a in options if a is not type(None)):
            try:
                return _check_type(value, option_type, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, allowed))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {type(value).__name__}")
        return build(hint, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {type(value).__name__}")
        return [_check_type(v, typing.get_args(hint)[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {type(value).__name__}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"{key} must be {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def build(cls, data: dict, prefix: str = ""):
    """An instance of dataclass `cls` from a dict: unknown keys, wrong types and out-of-range values
    are ConfigErrors naming the dotted key."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f" in {prefix}" if prefix else ""
        raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}{where} "
                          f"(known: {', '.join(names)})")
    kwargs = {name: _check_type(data[name], hints[name], f"{prefix}.{name}" if prefix else name)
              for name in names if name in data}
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # a range check: name the section
        raise ConfigError(f"{prefix}.{exc}" if prefix else str(exc)) from None
    except TypeError as exc:  # a required key is missing
        raise ConfigError(f"{prefix or 'config'}: {exc}") from None


def merge(base: dict, extra: dict) -> dict:
    """`extra` over `base`, recursively for mappings."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def apply_override(data: dict, override: str) -> None:
    """Apply one `section.key=value` (value parsed as YAML) to a config dict."""
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


def load_yaml(path: str | Path) -> dict:
    loaded = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return loaded


def must_exist(model: str) -> bool:
    """True when `model` looks like a local path that is not there (hub names `org/name` pass)."""
    if Path(os.path.expanduser(model)).exists():
        return False
    return not re.fullmatch(r"[\w.-]+/[\w.-]+", model)


# ---------------------------------------------------------------- command-line flags from the same fields

def _flag_type(hint):
    """(argparse kwargs) for a field type, or None when it is not a flag (mappings, nested sections)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _flag_type(options[0]) if len(options) == 1 else None
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is typing.Literal:
        return {"choices": list(typing.get_args(hint)), "type": type(typing.get_args(hint)[0])}
    if origin is list:
        return {"nargs": "+", "type": typing.get_args(hint)[0]}
    if hint in (int, float, str):
        return {"type": hint}
    return None


def add_flags(parser, cls, skip: tuple = (), required: tuple = (), title: str | None = None) -> None:
    """One `--flag` per field of `cls` (help, range and default from its declaration). Flags the
    user does not give stay absent from the namespace, so `given` returns only the user's values."""
    group = parser.add_argument_group(title) if title else parser
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.metadata.get("flag", True):
            continue
        kwargs = _flag_type(hints[f.name])
        if kwargs is None:
            continue
        m = f.metadata
        bounds = ", ".join(f"{w} {m[k]}" for k, w in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
                           if m.get(k) is not None)
        default = f.default if f.default is not _MISSING else None
        text = m.get("help", "")
        if bounds:
            text += f" ({bounds})"
        if f.default is not _MISSING and default is not None and kwargs.get("action") is None:
            text += f" (default: {default})"
        elif f.default is not _MISSING and isinstance(default, bool):
            text += f" (default: {'on' if default else 'off'})"
        names = [f"--{f.name.replace('_', '-')}", *m.get("aliases", ())]
        group.add_argument(*names, dest=f.name, default=argparse.SUPPRESS, help=text,
                           required=f.name in required, **kwargs)


def given(args: argparse.Namespace, cls) -> dict:
    """The values of `cls`'s fields that the user gave on the command line."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}
