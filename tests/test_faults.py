"""Faults on a real Ray run: a scoring actor killed mid-run is restarted and its work retried (same
output as a clean run); a row that makes the engine fail is quarantined with its reason, not fatal."""

import os
import signal
import threading
import time

import psutil
import pyarrow.parquet as pq
import pytest

from conftest import run_step
from deita_ray.engines.base import load_tokenizer

pytestmark = pytest.mark.ray


def _scoring_actor_at_work(min_cpu_seconds: float):
    """A scoring actor of this test run's Ray (its processes inherit our RAY_TMPDIR; another Ray on the machine,
    such as the other pytest worker's, is left alone)."""
    for proc in psutil.process_iter(["cmdline"]):
        if " ".join(proc.info["cmdline"] or []).startswith("ray::MapWorker(MapBatches(ScoreStage"):
            try:
                if proc.environ().get("RAY_TMPDIR") != os.environ.get("RAY_TMPDIR"):
                    continue
                if proc.cpu_times().user >= min_cpu_seconds:  # loaded its model and has scored batches
                    return proc
            except psutil.NoSuchProcess:
                continue
    return None


def test_killed_scoring_actor_is_restarted_and_output_is_unchanged(ray_session, scorers, tmp_path):
    from deita_ray.tools.sample_pool import make_pool

    make_pool(tmp_path / "pool", samples=300, seed=11)
    common = dict(inputs=[str(tmp_path / "pool")], **scorers, batch_rows=4, block_rows=40)
    result, errors = {}, []

    def run():
        try:
            result.update(run_step("score", "ray", output=str(tmp_path / "faulty"), cpus_per_replica=0.5, **common))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    job = threading.Thread(target=run)
    job.start()
    victim, deadline = None, time.time() + 180
    while victim is None and job.is_alive() and time.time() < deadline:
        victim = _scoring_actor_at_work(min_cpu_seconds=2.0)
        time.sleep(0.1)
    assert victim is not None and job.is_alive(), "could not catch a scoring actor mid-run"
    os.kill(victim.pid, signal.SIGKILL)
    job.join(timeout=300)
    assert not errors, errors
    assert result["reconciled"] and result["rows_out"] == 300

    run_step("score", output=str(tmp_path / "clean"), **common)
    faulty = {r["id"]: r for r in pq.read_table(str(tmp_path / "faulty" / "scored")).to_pylist()}
    clean = {r["id"]: r for r in pq.read_table(str(tmp_path / "clean" / "scored")).to_pylist()}
    assert faulty.keys() == clean.keys() and len(faulty) == 300  # nothing lost, nothing doubled
    for sid, row in clean.items():
        assert faulty[sid]["evol_score"] == pytest.approx(row["evol_score"], abs=1e-4)


def test_rows_that_break_the_engine_are_quarantined(ray_session, tiny_models, scorers, pool_dir, tmp_path):
    import json

    tok = load_tokenizer(str(tiny_models["scorer-complexity"]))
    poison = tok.encode("Why", add_special_tokens=False)[0]  # "Why is that?" follow-ups break this engine
    summary = run_step("score", "ray", inputs=[str(pool_dir)], output=str(tmp_path), **scorers, engine="fake",
                       engine_kwargs={"fail_on_token": poison}, batch_rows=32, cpus_per_replica=0.5)
    manifest = json.loads((pool_dir / "_manifest.json").read_text())
    quarantine = pq.read_table(str(tmp_path / "quarantine")).to_pylist()
    engine_failures = [q for q in quarantine if q["stage"] == "score"]
    assert engine_failures, "the pool has 'Why is that?' follow-ups, so some rows must fail"
    assert all("engine error: RuntimeError: fake engine failure" in q["reason"] and q["raw"] for q in engine_failures)
    assert summary["reconciled"] and summary["rows_in"] == manifest["rows"]
    assert summary["rows_out"] == manifest["samples"] - len(engine_failures)
    scored = pq.read_table(str(tmp_path / "scored"), columns=["id", "evol_score"]).to_pylist()
    assert all(r["evol_score"] is not None for r in scored)
    assert not {q["id"] for q in engine_failures} & {r["id"] for r in scored}
