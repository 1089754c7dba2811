"""The runner: transient failures are retried on resume (permanent ones are not), and a stage can read an
upstream stage's Parquet parts as they are (every column kept), identically on Ray and in-process."""

import json

import pyarrow.parquet as pq
import pytest

from deita_ray.engines.base import load_tokenizer
from conftest import run_step
from deita_ray.engines.config import LLMConfig


def _scorers(tiny_models, **faults):
    """Both scorers on the fake engine, failing as `faults` say (fail_on_token, fail_with)."""
    return {"complexity_model": str(tiny_models["scorer-complexity"]), "quality_model": str(tiny_models["scorer-quality"]),
            "engine": "fake", "engine_kwargs": dict(faults)}


def test_transient_failures_are_retried_on_resume_and_permanent_ones_are_not(tiny_models, pool_dir, tmp_path):
    tok = load_tokenizer(str(tiny_models["scorer-complexity"]))
    why, plan = (tok.encode(w, add_special_tokens=False)[0] for w in ("Why", "Plan"))
    manifest = json.loads((pool_dir / "_manifest.json").read_text())
    out = str(tmp_path / "out")
    common = dict(inputs=[str(pool_dir)], output=out, batch_rows=8)
    # First run: "Why" rows time out (transient), "Plan" rows are rejected (permanent).
    first = _scorers(tiny_models, fail_on_token=why, fail_with="TimeoutError")
    summary = run_step("score", **common, **first)
    assert summary["reconciled"] and summary["quarantine_classes"]["transient"] > 0
    transient = {q["id"] for q in pq.read_table(out + "/quarantine").to_pylist() if q["failure"] == "transient"}
    # Resume with the machine healthy again: the transient rows are scored now, nothing else re-runs.
    healthy = _scorers(tiny_models)
    again = run_step("score", **common, **healthy, resume=True)
    assert again["reconciled"] and again["rows_in"] == manifest["rows"]
    assert again["rows_out"] == manifest["samples"] and again["rows_quarantined"] == manifest["malformed"]
    assert "transient" not in again["quarantine_classes"]
    scored = pq.read_table(out + "/scored", columns=["id"]).column("id").to_pylist()
    assert transient <= set(scored) and len(scored) == len(set(scored))
    # A permanent failure stays quarantined on resume.
    out2 = str(tmp_path / "out2")
    permanent = _scorers(tiny_models, fail_on_token=plan)
    failed = run_step("score", inputs=[str(pool_dir)], output=out2, batch_rows=8, **permanent)
    kept = run_step("score", inputs=[str(pool_dir)], output=out2, batch_rows=8, resume=True, **healthy)
    assert failed["rows_quarantined"] == kept["rows_quarantined"] > manifest["malformed"] and kept["reconciled"]


@pytest.fixture(scope="module")
def scored(tiny_models, pool_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("scored")
    run_step("score", inputs=[str(pool_dir)], output=str(out), batch_rows=32, **_scorers(tiny_models))
    return out


def _probe_spec(tiny_models):
    from deita_ray.runner.layout import StageLayout
    from deita_ray.runner.spec import ActorStep, StageSpec
    from deita_ray.stages.embed import EmbedStage

    engine = LLMConfig(model=str(tiny_models["embedder"]), engine="fake")
    return StageSpec(layout=StageLayout("probe", "probe", "probe_quarantine", "probe_read_stats"),
                     actors=[ActorStep(EmbedStage, (engine, "vicuna", "float32"), option="probe", cpus=0.5,
                                       batch_rows=16)],
                     source="parts", noun="probed")


@pytest.mark.parametrize("mode", ["local", "ray"])
def test_a_stage_reads_upstream_parts_as_they_are(mode, request, scored, tiny_models, tmp_path):
    from deita_ray.runner.map_job import run_map_job

    if mode == "ray":
        request.getfixturevalue("ray_session")
    summary = run_map_job(_probe_spec(tiny_models), [str(scored / "scored")], str(tmp_path), mode=mode)
    upstream = {r["id"]: r for r in pq.read_table(str(scored / "scored")).to_pylist()}
    probed = {r["id"]: r for r in pq.read_table(str(tmp_path / "probe")).to_pylist()}
    assert summary["reconciled"] and summary["rows_in"] == len(upstream) == summary["rows_out"] == len(probed)
    for sid, row in upstream.items():  # every upstream column arrives untouched, the stage's own are added
        assert {k: probed[sid][k] for k in row} == row
        assert probed[sid]["embedding"] is not None and "embed_tokens" in probed[sid]


def test_resuming_with_another_read_chunk_size_counts_every_row_once(tiny_models, pool_dir, tmp_path):
    """Read counts and the reader's quarantine are rewritten by a resumed run, not added to: with another
    chunk size the read tasks have other names, and the old parts would otherwise count twice."""
    manifest = json.loads((pool_dir / "_manifest.json").read_text())
    common = dict(inputs=[str(pool_dir)], output=str(tmp_path / "out"), batch_rows=64, **_scorers(tiny_models))
    first = run_step("score", **common)
    tasks_before = len(list((tmp_path / "out" / "read_stats").glob("*.parquet")))
    again = run_step("score", **common, chunk_bytes=4096, resume=True)
    for summary in (first, again):
        assert summary["reconciled"] and summary["rows_in"] == manifest["rows"]
        assert summary["rows_quarantined"] == manifest["malformed"] and summary["rows_out"] == manifest["samples"]
    assert len(list((tmp_path / "out" / "read_stats").glob("*.parquet"))) > tasks_before  # the JSONL files were split


def test_a_step_gets_its_local_paths_absolute(tmp_path, monkeypatch, tiny_models):
    """Ray workers on a joined cluster run in another directory: relative paths are made absolute before a step
    runs; URLs, hub names and the config given stay as they are."""
    from deita_ray.steps import STEPS
    from deita_ray.steps.base import absolute_paths

    (tmp_path / "models").symlink_to(tiny_models["scorer-complexity"].parent)
    monkeypatch.chdir(tmp_path)
    config = STEPS["score"].config(inputs=["pool/*.jsonl", "s3://bucket/pool/"], output="out",
                                   complexity_model="models/scorer-complexity", quality_model="org/quality-scorer")
    fixed = absolute_paths(config)
    assert fixed.inputs == [str(tmp_path / "pool/*.jsonl"), "s3://bucket/pool/"] and fixed.output == str(tmp_path / "out")
    assert fixed.complexity_model == str(tmp_path / "models/scorer-complexity")
    assert fixed.quality_model == "org/quality-scorer" and config.output == "out"
