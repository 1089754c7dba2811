"""The import rules of DESIGN §5, pinned by walking every module's imports (function-level ones too).

Layers, top down: cli -> pipeline -> jobs -> runner -> stages -> engines -> prompts / io / configlib.
An arrow never points up; training reaches only IO, prompts and config (plus the one Ray start policy);
the selection core never imports torch (but for the kept index's torch backend); stages and engines never import Ray; heavy libraries are
imported where they are used, never when a module loads."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "deita_ray"
HEAVY = {"ray", "torch", "vllm", "faiss", "transformers", "deepspeed", "trl", "matplotlib", "sentence_transformers",
         "datasets", "s3fs", "boto3"}

# What each part may import from deita_ray (besides itself).
ALLOWED = {
    "configlib": set(),
    "io": {"io"},
    "prompts": {"prompts"},
    "engines": {"engines", "prompts", "configlib"},
    "stages": {"stages", "engines", "prompts", "io", "configlib"},
    "select": {"select", "io"},
    "runner": {"runner", "io", "configlib"},
    "train": {"train", "io", "prompts", "configlib", "runner.session", "runner.lock", "runner.completion",
              "runner.layout", "runner.peak", "engines.flops", "preflight"},
}


def _part(module: str) -> str:
    rest = module.split(".")[1:]
    return rest[0] if rest else ""


def _imports(path: Path):
    """(module name, line, at module level) for every deita_ray or heavy import in a file."""
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names if node.module == "deita_ray"]
        for name in names:
            yield name, node.lineno, id(node) in top_level


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        yield ".".join(p for p in rel.parts if p != "__init__"), path


def _allowed(importer: str, imported: str) -> bool:
    part = _part(importer)
    if part not in ALLOWED:
        return True
    target = imported[len("deita_ray."):]
    return any(target == a or target.startswith(a + ".") for a in ALLOWED[part] | {part})


@pytest.mark.parametrize("module, path", list(_modules()), ids=lambda x: x if isinstance(x, str) else "")
def test_module_respects_the_layers(module, path):
    for name, line, top in _imports(path):
        root = name.split(".")[0]
        if root in HEAVY:
            assert not top, f"{path.name}:{line} imports {name} when the module loads (import it where it is used)"
            if _part(module) in ("stages", "engines"):
                assert root != "ray", f"{path.name}:{line}: stages and engines do not import Ray"
            if _part(module) == "select" and module != "deita_ray.select.kept_index":
                # The filter is numpy (+ FAISS); only the kept index's optional torch backend (for GPUs
                # without FAISS's GPU build) touches torch, and only when that backend is built.
                assert root != "torch", f"{path.name}:{line}: the selection core never imports torch"
        if name.startswith("deita_ray."):
            assert "cli" not in name.split(".")[1:2] or _part(module) in ("cli", "train"), \
                f"{path.name}:{line} imports the CLI"
            assert _allowed(module, name), f"{path.name}:{line}: {module} may not import {name}"


def test_import_deita_ray_is_cheap():
    import subprocess
    import sys

    code = "import sys, deita_ray.config, deita_ray.pipeline, deita_ray.cli; print(sorted(m for m in %r if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code % sorted(HEAVY)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
