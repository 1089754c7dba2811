"""`deita-ray run`: the whole job, its stats and report, determinism, and resuming after the driver is killed. The
clean run is on Ray; most reruns are local runs (`ray.local`), which must give the same outputs, so they are
compared with it."""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import yaml

from deita_ray.recipe.config import load_config
from deita_ray.recipe.pipeline import run_pipeline

pytestmark = pytest.mark.ray


def _config(tiny_models, pool_dir, out, local=False):
    return {
        "output": str(out), "inputs": [str(pool_dir)], "ray": {"local": local},
        "score": {"complexity_model": str(tiny_models["scorer-complexity"]),
                  "quality_model": str(tiny_models["scorer-quality"]), "batch_rows": 64},
        "embed": {"model": str(tiny_models["embedder"]), "engine": "hf", "replicas": 1, "cpus_per_replica": 0.5,
                  "batch_rows": 64},
        "select": {"budget": 100, "threshold": 0.97, "block_size": 64},
    }


def _selected(out):
    return pq.read_table(str(out / "selection" / "selected.parquet"), columns=["id"]).column("id").to_pylist()


def _run_and_kill(config_path, ready, poll: float = 0.05) -> None:
    """Start `deita-ray run` as its own process (its own local Ray, or none for a local run) and SIGKILL its whole
    process group as soon as `ready()` is true; fail if the run ends or stalls first."""
    proc = subprocess.Popen([sys.executable, "-m", "deita_ray.cli", "run", str(config_path)],
                            env=dict(os.environ, RAY_ADDRESS=""), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not ready():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "the run did not reach the kill point in time"
            time.sleep(poll)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def clean_run(ray_session, tiny_models, pool_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    run = run_pipeline(load_config(None, data=_config(tiny_models, pool_dir, out)), log=lambda *_: None)
    return out, run


def test_run_outputs_stats_and_report(clean_run, pool_dir):
    out, run = clean_run
    manifest = json.loads((pool_dir / "_manifest.json").read_text())
    stages = json.loads((out / "run_stats.json").read_text())["stages"]
    assert stages["score"]["rows_in"] == manifest["rows"] and stages["score"]["rows_out"] == manifest["samples"]
    assert stages["score"]["rows_quarantined"] == manifest["malformed"] and stages["score"]["reconciled"]
    assert stages["embed"]["rows_out"] == manifest["samples"] and stages["embed"]["reconciled"]
    assert stages["select"]["rows_out"] == 100 == len(_selected(out))
    assert all(s["seconds"] > 0 and s["samples_per_s"] > 0 for s in stages.values())
    page = (out / "report" / "index.html").read_text()
    for png in ("scores.png", "acceptance.png", "similarity.png", "composition.png", "steps.png"):
        assert (out / "report" / png).stat().st_size > 5000 and png in page
    assert run["report"].endswith("index.html")


def test_same_input_and_config_give_the_same_selection_and_new_rows_are_scored(clean_run, tiny_models, pool_dir,
                                                                              tmp_path):
    import shutil

    import numpy as np

    out, clean = clean_run
    pool = tmp_path / "pool"
    shutil.copytree(pool_dir, pool)  # the same files elsewhere: the same ids
    config = _config(tiny_models, pool, tmp_path / "out", local=True)  # in this process: no Ray Data, no actors
    first = run_pipeline(load_config(None, data=config), log=lambda *_: None)
    assert _selected(tmp_path / "out") == _selected(out)
    assert {k: v["rows_out"] for k, v in first["stages"].items()} == {k: v["rows_out"] for k, v in clean["stages"].items()}
    scores = [pq.read_table(str(o / "scored"), columns=["id", "evol_score"]).sort_by("id") for o in (out, tmp_path / "out")]
    assert scores[0].column("id").equals(scores[1].column("id"))
    np.testing.assert_allclose(scores[0].column("evol_score").to_numpy(zero_copy_only=False),
                               scores[1].column("evol_score").to_numpy(zero_copy_only=False), atol=1e-4)
    # A file of 10 rows added to the pool: the step's fingerprint covers what it read, so scoring runs again
    # (and everything after it) instead of "already done, skipped".
    (pool / "more.jsonl").write_text("".join(json.dumps({"id": f"new-{i}", "conversations": [
        {"from": "human", "value": f"New question {i}?"}, {"from": "gpt", "value": f"New answer {i}."}]}) + "\n"
        for i in range(10)))
    logs = []
    again = run_pipeline(load_config(None, data=config), log=logs.append)
    assert "[1/3] scoring" in logs and not any("already done" in line for line in logs)
    assert again["stages"]["score"]["rows_in"] == first["stages"]["score"]["rows_in"] + 10
    assert again["stages"]["embed"]["rows_out"] == first["stages"]["embed"]["rows_out"] + 10


def test_rerun_skips_finished_stages(clean_run, tiny_models, pool_dir, tmp_path):
    import shutil

    out, _ = clean_run
    logs = []
    # Local or on Ray, a step's outputs are the same: where it ran is not part of its fingerprint.
    run_pipeline(load_config(None, data=_config(tiny_models, pool_dir, out, local=True)), log=logs.append)
    assert any("scoring: already done" in line for line in logs)
    assert any("embedding: already done" in line for line in logs)
    # A changed scoring config invalidates scoring and everything after it (on a copy: the clean run stays whole).
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    changed = _config(tiny_models, pool_dir, copy, local=True)
    changed["score"]["aggregation"] = "mean"
    logs.clear()
    run_pipeline(load_config(None, data=changed), log=logs.append)
    assert "[1/3] scoring" in logs and "[2/3] embedding with " + str(tiny_models["embedder"]) in logs


def test_killed_driver_resumes_to_the_clean_result(clean_run, tiny_models, pool_dir, tmp_path):
    out, _ = clean_run
    crashed = tmp_path / "crashed"
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(_config(tiny_models, pool_dir, crashed, local=True)))
    record = crashed / "score_summary.json"  # kill once scoring is recorded done
    _run_and_kill(config_path, lambda: record.exists() and "fingerprint" in record.read_text(), poll=0.2)
    assert not (crashed / "selection" / "selected.parquet").exists()
    logs = []
    run_pipeline(load_config(str(config_path)), log=logs.append)
    assert any("scoring: already done" in line for line in logs)
    assert _selected(crashed) == _selected(out)
    ids = pq.read_table(str(crashed / "scored"), columns=["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 300  # no sample lost or doubled


def test_driver_killed_inside_a_stage_resumes_only_what_is_missing(clean_run, tiny_models, pool_dir, tmp_path):
    out, _ = clean_run
    crashed = tmp_path / "mid"
    config = _config(tiny_models, pool_dir, crashed)
    config["score"]["batch_rows"] = 1  # one part per sample: the kill lands between parts
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(config))
    _run_and_kill(config_path, lambda: bool(list((crashed / "scored").glob("part-*.parquet"))), poll=0.01)
    assert not (crashed / "score_summary.json").exists(), "the kill came after scoring finished"
    done_before = pq.read_table(str(crashed / "scored"), columns=["id"]).num_rows
    assert 0 < done_before < 300
    logs = []
    # Resumed in this process: what the killed run's actors wrote is kept, the rest is scored here.
    run = run_pipeline(load_config(str(config_path), ["ray.local=true"]), log=logs.append)
    assert "[1/3] scoring (resuming an interrupted run)" in logs
    ids = pq.read_table(str(crashed / "scored"), columns=["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 300  # nothing lost or doubled
    assert run["stages"]["score"]["reconciled"]
    assert _selected(crashed) == _selected(out)


def test_train_sections_are_checked_at_load(tiny_models, pool_dir, tmp_path):
    from deita_ray.recipe.config import ConfigError

    base = _config(tiny_models, pool_dir, tmp_path)
    for section, message in (({"sft": {"modle": "x"}}, "unknown key 'modle' in sft"),
                             ({"sft": {"model": "m", "epochs": "many"}}, "sft.epochs must be int"),
                             ({"dpo": {"data": ["p"]}}, "dpo.model: give the model"),
                             ({"sft": {"model": "m", "preset": "deita-mistral-7b-dpo"}}, "is for `train dpo`"),
                             ({"sft": {"model": "m", "preset": "deita-7k"}}, "sft.preset must be one of"),
                             ({"sft": {"model": "org/m", "data": ["x"]}}, "sft.data comes from the run"),
                             ({"sft": {"model": "./no/such/model"}}, "sft.model: model path does not exist")):
        with pytest.raises(ConfigError, match=message):
            load_config(None, data={**base, **section})
