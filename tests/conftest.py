"""Shared fixtures: tiny models and a small pool built once per run, one local Ray session per run (per
pytest-xdist worker: the suite runs on two workers by default, `-n 0` runs it in one process)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_configure(config):
    """Each xdist worker gets a Ray temp directory of its own: `ray.init()` would otherwise join the other
    worker's Ray (it finds the cluster named under RAY_TMPDIR), and a test that looks for Ray's processes
    must find only its own. vLLM on the CPU reserves 1 GiB for its KV cache instead of a fifth of the RAM
    (plenty for the tiny models; two workers' engines at 4.9 GB each exhausted the 24 GiB). Ray Train checks
    its workers every 0.5 s instead of 2 (each tiny training ends up to 2 s sooner; nothing else changes)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        base = os.environ.get("RAY_TMPDIR", "/tmp")
        os.environ["RAY_TMPDIR"] = os.path.join(base, f"rt-{worker}")
        os.makedirs(os.environ["RAY_TMPDIR"], exist_ok=True)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")


# The longest test files, longest first: with `--dist loadfile` the workers take files in collection order, so
# these start early and the run does not end on one worker finishing a long file alone (measured on 2 cores).
LONGEST_FIRST = ("test_recipe", "test_pipeline", "test_benchmarks", "test_train", "test_vllm_engine",
                 "test_object_store", "test_ablation", "test_docs", "test_generation_ray", "test_generation",
                 "test_select_job", "test_multinode", "test_job_submit", "test_faults", "test_run_lock",
                 "test_ray_scoring", "test_stage_failures", "test_bench_gpu", "test_resources", "test_http_engine")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__, len(rank)))  # stable: a file's order is kept


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    from deita_ray.tools.tiny_models import make_tiny_models

    return make_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def pool_dir(tmp_path_factory) -> Path:
    from deita_ray.tools.sample_pool import make_pool

    path = tmp_path_factory.mktemp("pool")
    make_pool(path, samples=300, seed=7)
    return path


@pytest.fixture(scope="session")
def hf_configs(tiny_models):
    from deita_ray.engines.config import LLMConfig

    return {kind: LLMConfig(model=str(tiny_models[f"scorer-{kind}"]), engine="hf") for kind in ("complexity", "quality")}


@pytest.fixture(scope="session")
def scorers(tiny_models) -> dict:
    """The two tiny scorers as `score` options: ScoreConfig(**scorers, ...)."""
    return {f"{kind}_model": str(tiny_models[f"scorer-{kind}"]) for kind in ("complexity", "quality")}


def run_step(name: str, mode: str = "local", stages: list | None = None, **options) -> dict:
    """One step of the registry, run from its config's options (`mode`: local, or ray)."""
    from deita_ray.steps import STEPS

    step = STEPS[name]
    return step.execute(step.config(**options), mode=mode, stages=stages)


@pytest.fixture(scope="session")
def ray_session():
    """One embedded Ray for the whole run (starting Ray costs seconds); 4 logical CPUs so that
    read tasks and two actor pools with fractional CPUs fit on a 2-core machine."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (a fresh clone has no shared/)")
    return SHARED_DATA
