"""The import rules of DESIGN §5, pinned by walking every module's imports (function-level ones too).

Floors, top down (an arrow never points up, and a floor reaches only what ALLOWED names):
    cli -> recipe -> steps -> train / tools / report / preflight -> runner / stages / select -> engines
        -> prompts / io / configlib
Training reaches only IO, prompts and config plus the runner's session, lock, completion, layout, peak,
summary and console filters (quiet); the selection core never imports torch (but for the kept index's torch backend); stages and engines
never import Ray; heavy libraries are imported where they are used, never when a module loads; and no module
imports another that imports it back (no circles, function-level imports included)."""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "deita_ray"
HEAVY = {"ray", "torch", "vllm", "faiss", "transformers", "deepspeed", "trl", "matplotlib", "sentence_transformers",
         "datasets", "s3fs", "boto3"}

# What each floor may import from deita_ray (besides itself). Every module of the package belongs to one.
ALLOWED = {
    "configlib": set(),
    "io": set(),
    "prompts": set(),
    "engines": {"prompts", "configlib"},
    "stages": {"engines", "prompts", "io", "configlib"},
    "select": {"io"},
    "runner": {"io", "configlib"},
    "report": {"io", "runner.layout"},
    "preflight": {"configlib", "engines.config", "runner.completion"},
    "reference": {"engines", "prompts", "io"},
    "train": {"io", "prompts", "configlib", "runner.session", "runner.lock", "runner.completion", "runner.layout",
              "runner.peak", "runner.summary", "runner.quiet", "engines.flops"},
    "tools": {"engines", "prompts", "io", "configlib", "runner", "stages", "select"},
    "steps": {"configlib", "engines", "io", "prompts", "runner", "select", "stages", "report", "train"},
    "recipe": {"configlib", "engines.config", "io", "preflight", "report", "runner", "steps", "tools", "train.config"},
    "cli": {"configlib", "io", "preflight", "recipe", "report", "runner", "steps", "tools"},
    "": set(),  # deita_ray/__init__.py
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
    target = imported[len("deita_ray."):]
    return any(target == a or target.startswith(a + ".") for a in ALLOWED[part] | {part})


@pytest.mark.parametrize("module, path", list(_modules()), ids=lambda x: x if isinstance(x, str) else "")
def test_module_respects_the_layers(module, path):
    assert _part(module) in ALLOWED, f"{module}: a floor test_layers.ALLOWED does not name"
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
            assert _allowed(module, name), f"{path.name}:{line}: {module} may not import {name}"


def _graph() -> dict[str, set[str]]:
    modules = {name for name, _ in _modules()}
    graph = defaultdict(set)
    for module, path in _modules():
        for name, _, _ in _imports(path):
            while name and name not in modules:  # `from deita_ray.steps import STEPS` -> deita_ray.steps
                name = name.rpartition(".")[0]
            if name and name != module and name.startswith("deita_ray."):
                graph[module].add(name)
    return graph


def test_no_import_circles():
    graph, circles = _graph(), []
    index, low, stack, on_stack, counter = {}, {}, [], set(), [0]

    def visit(node):  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            packages = {m for m in component if (PACKAGE.parent / m.replace(".", "/") / "__init__.py").exists()}
            if len(component - packages) > 1:  # a package's __init__ importing its own modules is no circle
                circles.append(sorted(component))

    for module in list(graph):
        if module not in index:
            visit(module)
    assert not circles, circles


def test_import_deita_ray_is_cheap():
    import subprocess
    import sys

    code = ("import sys, deita_ray.recipe.pipeline, deita_ray.steps, deita_ray.cli; "
            "print(sorted(m for m in %r if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code % sorted(HEAVY)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
