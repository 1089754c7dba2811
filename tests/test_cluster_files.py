"""cluster/ manifests and documented commands: they parse, and every command they give names a real
subcommand, real flags and (for `run`) a real config with valid override keys."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from deita_ray.cli import build_parser
from deita_ray.recipe.config import load_config

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "cluster" / "README.md",
        *sorted((REPO / "cluster").rglob("*.yaml"))]


def _commands(text: str) -> list[list[str]]:
    """deita-ray command lines in a text (shell continuations joined, `python -m deita_ray.cli` normalised)."""
    text = re.sub(r"\\\n\s*#?\s*", " ", text)
    found = []
    for line in text.splitlines():
        line = line.split("#", 1)[0] if not line.lstrip().startswith("#") else line.lstrip("# ")
        for match in re.finditer(r"(?:deita-ray|python -m deita_ray\.cli)\s+([a-z-]+\b.*)", line):
            words = shlex.split(match.group(1))
            if words and words[0] in {"run", "score", "embed", "select", "quickstart", "make-models", "make-pool", "train",
                                      "evolve", "judge", "labels", "report", "doctor"}:
                found.append(words)
    return found


RAYJOBS = sorted((REPO / "cluster" / "kuberay").glob("rayjob*.yaml"))


def _rayjob_entrypoint(path: Path = REPO / "cluster" / "kuberay" / "rayjob.yaml") -> list[str]:
    doc = yaml.safe_load(path.read_text())
    words = shlex.split(doc["spec"]["entrypoint"])
    assert words[0] == "deita-ray"
    return words[1:]


def test_manifests_parse():
    rayjob = yaml.safe_load((REPO / "cluster" / "kuberay" / "rayjob.yaml").read_text())
    assert rayjob["kind"] == "RayJob" and rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]
    gpus = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]
    assert "nvidia.com/gpu" in gpus["limits"]
    launcher = yaml.safe_load((REPO / "cluster" / "launcher" / "aws-gpu.yaml").read_text())
    assert launcher["head_node_type"] in launcher["available_node_types"]
    runtime = yaml.safe_load((REPO / "cluster" / "runtime_env.yaml").read_text())
    assert ".venv/" in runtime["excludes"]


def _code(doc: Path) -> str:
    """Markdown: the fenced code blocks only (prose mentions are not commands); YAML: all of it."""
    text = doc.read_text()
    return "\n".join(re.findall(r"```[a-z]*\n(.*?)```", text, re.S)) if doc.suffix == ".md" else text


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_documented_commands_are_real(doc):
    commands = _commands(_code(doc))
    if doc in RAYJOBS:
        commands.append(_rayjob_entrypoint(doc))
    parser = build_parser()
    for words in commands:
        args = parser.parse_args(words)  # exits on an unknown subcommand or flag
        if args.command == "run":
            config = load_config(args.config, list(args.set or []))  # unknown keys / wrong types raise
            assert config.output
        if args.command == "train":  # flags parsed above; presets and --set keys must be real too
            from deita_ray.train.config import PRESETS, TrainConfig

            preset = getattr(args, "preset", None)
            assert preset is None or PRESETS[preset]["task"] == args.task
            assert all(kv.split("=", 1)[0] in TrainConfig.__dataclass_fields__ for kv in args.set or [])


def test_every_doc_with_cluster_commands_was_checked():
    assert len(_commands(_code(REPO / "README.md"))) >= 3
    assert sum(len(_commands(_code(doc))) for doc in DOCS if doc.parent.name == "docs") >= 10
    assert _commands(_code(REPO / "cluster" / "README.md"))
    assert len(RAYJOBS) == 2 and all(_rayjob_entrypoint(p)[0] == "run" for p in RAYJOBS)


def test_shipped_clusters_keep_token_auth_on_and_the_dashboard_inside():
    """A manifest that turns Ray's token authentication off, or exposes the dashboard, fails here."""
    for path in RAYJOBS:
        spec = yaml.safe_load(path.read_text())["spec"]["rayClusterSpec"]
        assert spec["authOptions"]["mode"] == "token" and spec["authOptions"]["secretName"], path
        assert spec["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP", path
    launcher = yaml.safe_load((REPO / "cluster" / "launcher" / "aws-gpu.yaml").read_text())
    starts = launcher["head_start_ray_commands"] + launcher["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if c.strip().split()[-1] != "stop" and "ray start" in c)
    head = next(c for c in launcher["head_start_ray_commands"] if "ray start" in c)
    assert "--dashboard-host=127.0.0.1" in head
    assert "~/.ray/auth_token" in launcher["file_mounts"]
    for doc in sorted((REPO / "cluster").rglob("*.yaml")):
        assert not re.search(r"RAY_AUTH_MODE\s*[=:]\s*\"?disabled", doc.read_text()), doc


# pip install of the project by a bare name (from an index): `deita-ray`, `deita_ray[gpu]`, "deita-ray==0.1", ...
# A path (./x, ~/x, ${HOME}/x, /x), a wheel file or a git URL pinned to a commit is what a manifest may install.
_BARE = re.compile(r"""^["']?deita[-_]ray(?:\[[^\]]*\])?(?:[=<>~!].*)?["']?$""", re.I)


def _installs_by_bare_name(text: str) -> list[str]:
    found = []
    for command in re.findall(r"pip3?\s+install\s+([^\n#`]*)", text):
        words = [w for w in shlex.split(command, posix=True) if not w.startswith("-")]
        found += [w for w in words if _BARE.match(w)]
    return found


def test_no_manifest_installs_the_project_by_an_unpublished_name():
    """Supply chain: nothing is published as deita-ray, so a bare-name install would run whoever registers it."""
    assert _installs_by_bare_name('setup_commands:\n  - pip install "deita-ray[gpu]"\n') == ["deita-ray[gpu]"]
    assert _installs_by_bare_name("pip install -U deita_ray==0.1.0") == ["deita_ray==0.1.0"]
    assert not _installs_by_bare_name('pip install "${HOME}/deita_ray[gpu]" ./deita_ray dist/deita_ray-0.1-py3-none-any.whl')
    for doc in [*DOCS, *sorted((REPO / "scripts").glob("*")), *sorted((REPO / ".ci").glob("*"))]:
        assert not _installs_by_bare_name(doc.read_text()), f"{doc.relative_to(REPO)} installs deita-ray by name"
    launcher = yaml.safe_load((REPO / "cluster" / "launcher" / "aws-gpu.yaml").read_text())
    assert launcher["file_mounts"].get("~/deita_ray") == "."  # the checkout itself travels to every node
