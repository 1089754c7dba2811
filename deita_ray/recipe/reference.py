"""The config reference, generated from the step configs: every key of a run config, its default and its meaning.

    python -m deita_ray.recipe.reference            # print the full reference (what docs/config.md holds)
    python -m deita_ray.recipe.reference --write    # rewrite docs/config.md and the README's compact reference
    python -m deita_ray.recipe.reference --check    # exit 1 when either is out of step with the code

The README and docs/config.md hold it between `<!-- config-reference: compact|full -->` and
`<!-- end config-reference -->`; tests/test_docs.py keeps them in step.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import textwrap
import typing
from pathlib import Path

from deita_ray.configlib import field_info, section_keys

REPO = Path(__file__).resolve().parents[2]
TARGETS = {"compact": REPO / "README.md", "full": REPO / "docs" / "config.md"}


def sections() -> list[tuple[str, type, list[str], dict]]:
    """(YAML key, config class, its keys, the defaults that apply) for every section of a run config."""
    from deita_ray.recipe.config import AblationSection, GenerationSection, RaySection, RunConfig, SamplePoolSection
    from deita_ray.steps import STEPS
    from deita_ray.steps.train import ONLY
    from deita_ray.train.config import TrainConfig, task_defaults

    def keys(cls, without=()):
        return [k for k in section_keys(cls) if k not in without and not dataclasses.is_dataclass(_hint(cls, k))]

    def defaults(cls):
        return {k: field_info(cls, k)["default"] for k in section_keys(cls) if not field_info(cls, k)["required"]}

    def only_for(task):  # the training keys that mean nothing to this task
        return tuple(name for other, names in ONLY.items() if other != task for name in names)

    train = {task: {**defaults(TrainConfig), **{k: v for k, v in task_defaults(task).items() if k in defaults(TrainConfig)}}
             for task in ("sft", "dpo", "scorer")}
    return [
        ("(top level)", RunConfig, keys(RunConfig), defaults(RunConfig)),
        ("sample_pool / sample_seeds / sample_preferences / sample_questions", SamplePoolSection, keys(SamplePoolSection),
         defaults(SamplePoolSection)),
        ("score", STEPS["score"].config, keys(STEPS["score"].config), defaults(STEPS["score"].config)),
        ("embed", STEPS["embed"].config, keys(STEPS["embed"].config), defaults(STEPS["embed"].config)),
        ("select", STEPS["select"].config, keys(STEPS["select"].config), defaults(STEPS["select"].config)),
        ("sft", TrainConfig, keys(TrainConfig, ("data",) + only_for("sft")), train["sft"]),
        ("dpo", TrainConfig, keys(TrainConfig, only_for("dpo")), train["dpo"]),
        ("generation", GenerationSection, keys(GenerationSection), defaults(GenerationSection)),
        ("generation.evolve", STEPS["evolve"].config, keys(STEPS["evolve"].config), defaults(STEPS["evolve"].config)),
        ("generation.judge", STEPS["judge"].config, keys(STEPS["judge"].config), defaults(STEPS["judge"].config)),
        ("generation.scorer", TrainConfig, keys(TrainConfig, ("data", "kind") + only_for("scorer")), train["scorer"]),
        ("ablation", AblationSection, keys(AblationSection), defaults(AblationSection)),
        ("ablation.eval", STEPS["eval"].config, keys(STEPS["eval"].config), defaults(STEPS["eval"].config)),
        ("ray", RaySection, keys(RaySection), defaults(RaySection)),
    ]


def _hint(cls, name):
    hint = typing.get_type_hints(cls)[name]
    options = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) in (
        typing.Union, __import__("types").UnionType) else [hint]
    return options[0] if len(options) == 1 else hint


def _value(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if value == "":
        return '""'
    return str(value)


def full() -> str:
    out = []
    for title, cls, keys, defaults in sections():
        out += [f"### `{title}`", "", "| key | default | meaning |", "| --- | --- | --- |"]
        for key in keys:
            text = field_info(cls, key)["help"].replace("|", "\\|").replace("\n", " ")
            default = "(required)" if key not in defaults else _value(defaults[key])
            out.append(f"| `{key}` | {default.replace('|', chr(92) + '|')} | {text} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def compact() -> str:
    out = []
    for title, cls, keys, defaults in sections():
        words = [f"{k}=(required)" if k not in defaults else f"{k}={_value(defaults[k])}" for k in keys]
        out += textwrap.wrap(f"{title}: " + ", ".join(words), width=116, subsequent_indent="    ",
                             break_long_words=False, break_on_hyphens=False)
    return "```\n" + "\n".join(out) + "\n```\n"


def _block(kind: str) -> re.Pattern:
    return re.compile(rf"(<!-- config-reference: {kind} -->\n)(.*?)(<!-- end config-reference -->)", re.S)


def current(kind: str) -> str | None:
    match = _block(kind).search(TARGETS[kind].read_text())
    return match.group(2) if match else None


def write(kind: str) -> None:
    text = TARGETS[kind].read_text()
    if not _block(kind).search(text):
        raise SystemExit(f"{TARGETS[kind]} has no <!-- config-reference: {kind} --> block")
    TARGETS[kind].write_text(_block(kind).sub(lambda m: m.group(1) + RENDER[kind]() + m.group(3), text))


RENDER = {"compact": compact, "full": full}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the README's and docs/config.md's blocks")
    parser.add_argument("--check", action="store_true", help="exit 1 when a block is out of step with the code")
    args = parser.parse_args(argv)
    if args.write:
        for kind in RENDER:
            write(kind)
        return 0
    if args.check:
        stale = [str(TARGETS[k]) for k in RENDER if current(k) != RENDER[k]()]
        if stale:
            print(f"out of step with the code: {', '.join(stale)} (python -m deita_ray.recipe.reference --write)",
                  file=sys.stderr)
        return 1 if stale else 0
    print(full(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
