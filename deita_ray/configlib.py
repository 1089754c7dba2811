"""Typed configs declared once: a field is a YAML key, a command-line flag, its help and its range.

    @section
    class Resources:
        replicas: int = option(1, "actors (engine replicas)", ge=1)

    build(Resources, {"replicas": 2}, "score")     # ConfigError naming the key: "score.replicas must be >= 1, got 0"
    add_flags(parser, Resources)                    # --replicas N, help, range and default from the same field
    given(args, Resources)                          # the flags the user gave, as a dict for build()

Validation is pydantic's (dataclasses in strict mode, unknown keys forbidden): types, choices
(`Literal`), ranges and required keys are checked whenever a section is built, from YAML, from the
command line or from Python, with the same messages. Strict mode means no silent coercion (`true`
is not a number, `"5"` not an int); an int is accepted where a float is asked for. Merging files,
presets and `--set key=value` overrides (`merge`, `apply_override`) work on plain dicts before `build`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import types
import typing
from pathlib import Path

import yaml
from pydantic import ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass as _pydantic_dataclass
from pydantic_core import PydanticUndefined


class ConfigError(ValueError):
    """A config problem, with the dotted key it concerns."""


SECTION_CONFIG = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)


def section(cls=None, *, kw_only: bool = True):
    """Decorator: a validated config dataclass (every field checked on construction)."""
    def wrap(c):
        return _pydantic_dataclass(c, config=SECTION_CONFIG, kw_only=kw_only)
    return wrap if cls is None else wrap(cls)


def option(default=PydanticUndefined, help: str = "", *, ge=None, gt=None, le=None, lt=None, aliases: tuple = (),
           default_factory=None, flag: bool = True, section: bool = True):
    """A config field: default, help text and range in one declaration. `flag`: a command-line flag of its own;
    `section`: a key of the step's section in a run config (False: the run sets it, e.g. inputs and output)."""
    extra = {"aliases": list(aliases), "flag": flag, "section": section}
    if default_factory is not None:
        return Field(default_factory=default_factory, description=help, ge=ge, gt=gt, le=le, lt=lt,
                     json_schema_extra=extra)
    return Field(default, description=help, ge=ge, gt=gt, le=le, lt=lt, json_schema_extra=extra)


def _is_section(hint) -> type | None:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _is_section(options[0]) if len(options) == 1 else None
    return hint if dataclasses.is_dataclass(hint) else None


_KIND = {"int_type": "int", "float_type": "float", "string_type": "str", "bool_type": "bool", "list_type": "a list",
         "dict_type": "a mapping", "int_from_float": "int"}


def _message(error: dict, prefix: str) -> str:
    key = ".".join(([prefix] if prefix else []) + [str(p) for p in error["loc"]])
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    for name, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if name in ctx and kind.startswith(("greater", "less")):
            bound = ctx[name]
            bound = int(bound) if isinstance(bound, float) and bound.is_integer() else bound
            return f"{key} must be {word} {bound}, got {value}"
    if kind == "literal_error":
        return f"{key} must be one of {ctx.get('expected')}, got {value!r}"
    if kind in _KIND:
        return f"{key} must be {_KIND[kind]}, got {type(value).__name__} {value!r}"
    if kind == "missing":
        return f"{key}: missing (required)"
    if kind == "value_error":
        text = str(ctx.get("error", error["msg"]))
        return f"{prefix}: {text}" if prefix else text
    return f"{key}: {error['msg']}"


def one_line(exc: ValidationError, prefix: str = "") -> str:
    """A pydantic validation error as the one line a user reads (the first problem, naming its key)."""
    return _message(exc.errors()[0], prefix)


def build(cls, data: dict, prefix: str = ""):
    """An instance of section `cls` from a dict: unknown keys, wrong types and out-of-range values
    are ConfigErrors naming the dotted key."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f" in {prefix}" if prefix else ""
        raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}{where} "
                          f"(known: {', '.join(names)})")
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        value, sub = data[name], _is_section(hints[name])
        key = f"{prefix}.{name}" if prefix else name
        if sub is not None and value is not None and not isinstance(value, sub):  # a section built already passes
            if not isinstance(value, dict):
                raise ConfigError(f"{key} must be a mapping, got {type(value).__name__}")
            value = build(sub, value, key)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ValidationError as exc:
        raise ConfigError(one_line(exc, prefix)) from None


def build_section(cls, data, prefix: str, run: dict | None = None):
    """A step's section of a run config: the user's keys (never one the run sets, nor a field that is no section
    key), then the values the run gives (inputs, output, ...)."""
    return build(cls, {**user_keys(cls, data, prefix, run), **(run or {})}, prefix)


def user_keys(cls, data, prefix: str, run: dict | None = None) -> dict:
    """The keys a user gave a section, checked to be none that the run sets (nor a field that is no section key)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix} must be a mapping, got {type(data).__name__}")
    fixed = set(run or {}) | {f.name for f in dataclasses.fields(cls) if not field_info(cls, f.name)["section"]}
    taken = sorted(set(data) & fixed)
    if taken:
        raise ConfigError(f"{prefix}.{taken[0]} comes from the run; remove it")
    return data


def field_info(cls, name: str) -> dict:
    """The declaration of a field: {"help", "default", "flag", "section", "aliases"}."""
    info = cls.__pydantic_fields__[name]
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    default = None if info.default is PydanticUndefined else info.default
    if info.default_factory is not None:
        default = info.default_factory()
    return {"help": info.description or "", "default": default, "flag": extra.get("flag", True),
            "section": extra.get("section", True), "aliases": extra.get("aliases", []),
            "required": info.default is PydanticUndefined and info.default_factory is None}


def section_keys(cls) -> list[str]:
    """The fields of `cls` a run config's section may set (the others come from the run)."""
    return [f.name for f in dataclasses.fields(cls) if field_info(cls, f.name)["section"]]


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `2e-5` as a string (it wants `2.0e-5`); a config means the number."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml_text(text: str):
    return yaml.load(text, Loader=_Loader)


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
    node[parts[-1]] = load_yaml_text(raw)


def load_yaml(path: str | Path) -> dict:
    loaded = load_yaml_text(Path(path).read_text()) or {}
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


def add_flags(parser, cls, skip: tuple = (), required: tuple = (), title: str | None = None,
              defaults: dict | None = None) -> None:
    """One `--flag` per field of `cls` (help, range and default from its declaration; `defaults`: the values
    that really apply where another layer sets them, e.g. a training task's). Flags the user does not give stay
    absent from the namespace, so `given` returns only the user's values."""
    group = parser.add_argument_group(title) if title else parser
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        info = cls.__pydantic_fields__[f.name]
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if f.name in skip or not extra.get("flag", True):
            continue
        kwargs = _flag_type(hints[f.name])
        if kwargs is None:
            continue
        bounds = ", ".join(f"{word} {getattr(m, name)}" for m in info.metadata
                           for name, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if hasattr(m, name))
        default = None if info.default is PydanticUndefined else info.default
        default = (defaults or {}).get(f.name, default)
        text = info.description or ""
        if bounds:
            text += f" ({bounds})"
        if f.name in required:
            text += " (required)"
        elif isinstance(default, bool):
            text += f" (default: {'on' if default else 'off'})"
        elif default is not None:
            text += f" (default: {default})"
        names = [f"--{f.name.replace('_', '-')}", *extra.get("aliases", ())]
        group.add_argument(*names, dest=f.name, default=argparse.SUPPRESS, help=text,
                           required=f.name in required, **kwargs)


def given(args: argparse.Namespace, cls) -> dict:
    """The values of `cls`'s fields that the user gave on the command line."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}
