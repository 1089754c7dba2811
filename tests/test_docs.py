"""The documentation says what the code does: the config reference in the README and docs/config.md is the one
generated from the step configs, and every relative link in the README and docs/ points at a file that exists."""

import re
from pathlib import Path

from deita_ray.recipe import reference

REPO = Path(__file__).resolve().parents[1]


def test_the_config_reference_is_generated_from_the_code():
    for kind, render in reference.RENDER.items():
        assert reference.current(kind) == render(), (
            f"{reference.TARGETS[kind]} is out of step: python -m deita_ray.recipe.reference --write")


def test_the_reference_names_every_key_a_section_takes():
    from deita_ray.configlib import section_keys
    from deita_ray.steps import STEPS

    text = reference.full()
    for name in ("score", "embed", "select", "evolve", "judge"):
        for key in section_keys(STEPS[name].config):
            assert f"| `{key}` |" in text, (name, key)


def test_relative_links_point_at_files():
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "README.md"]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.relative_to(REPO)} links to {target}, which is not there"


README = REPO / "README.md"
BLOCK = re.compile(r"<!-- readme-block: ([^>]*?) -->\n```(\w+)\n(.*?)```", re.S)


def _blocks(kind: str) -> list[tuple[str, str]]:
    return [(lang, code) for mark, lang, code in BLOCK.findall(README.read_text()) if mark.startswith(kind)]


def test_every_code_block_of_the_readme_says_how_it_is_checked():
    marked = BLOCK.findall(README.read_text())
    assert len(marked) == len(re.findall(r"^```\w+", README.read_text(), re.M)), "a code block without a marker"
    assert {mark.split(" (")[0] for mark, _, _ in marked} <= {"install", "checked", "runs offline"}


def test_the_blocks_that_need_a_cluster_or_a_gpu_are_valid():
    """Not run (a GPU, a hub or a cluster is needed), but every command parses with the real CLI, every config
    loads with the real validator, every Python block compiles."""
    import shlex

    import yaml

    from deita_ray.cli import build_parser
    from deita_ray.recipe.config import load_config

    parser = build_parser()
    for lang, code in _blocks("checked") + _blocks("runs offline"):
        if lang == "yaml":
            assert load_config(None, data=yaml.safe_load(code)).output
        elif lang == "python":
            compile(code, "README.md", "exec")
        else:
            joined = re.sub(r"\\\n\s*", " ", code)
            for line in joined.splitlines():
                words = shlex.split(line, comments=True)
                if "deita_ray.cli" in words:
                    words = words[words.index("deita_ray.cli") + 1:]
                elif "deita-ray" in words:
                    words = words[words.index("deita-ray") + 1:]
                else:
                    continue
                args = parser.parse_args(words)
                if args.command == "run":
                    assert load_config(args.config, list(args.set or [])).output


def test_the_offline_blocks_run_as_written(tmp_path):
    """The README's step-by-step blocks, run by bash and python exactly as written, in a fresh directory beside
    the install (a link to .venv). Their commands share one Ray head of this test's (RAY_ADDRESS), as on a machine
    where Ray is up: each would otherwise start a local Ray of its own, which the kill tests and test_resources do."""
    import os
    import subprocess
    import tempfile

    from servers import ray_head

    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rt-readme-", dir="/tmp")  # not the tests' Ray
    env["RAY_AUTH_MODE"] = "token"  # a `ray start` head's default in Ray 2.60; the commands then join with its token
    with ray_head(env) as (address, _):
        env["RAY_ADDRESS"] = address
        for lang, code in _blocks("runs offline"):
            command = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [
                str(REPO / ".venv/bin/python"), "-c", code]
            done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, (code[:200], done.stderr[-3000:])
    assert (tmp_path / "out" / "report" / "index.html").exists()
    assert (tmp_path / "runs" / "sft" / "model" / "config.json").exists()
    assert "selected samples" in done.stdout
