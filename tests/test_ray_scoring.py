"""The Ray Data job over several actors equals the in-process run; counts reconcile; output is refused twice."""

import json

import pyarrow.parquet as pq
import pytest

from conftest import run_step

pytestmark = pytest.mark.ray


def _by_id(directory):
    table = pq.read_table(str(directory))
    return {row["id"]: row for row in table.to_pylist()}


def test_ray_run_over_several_actors_equals_in_process(ray_session, pool_dir, scorers, tmp_path):
    manifest = json.loads((pool_dir / "_manifest.json").read_text())
    common = dict(inputs=[str(pool_dir)], **scorers, block_rows=40, batch_rows=16, chunk_bytes=20_000)
    local = run_step("score", output=str(tmp_path / "local"), **common)
    distributed = run_step("score", "ray", output=str(tmp_path / "ray"), replicas=2, cpus_per_replica=0.5, **common)

    for summary in (local, distributed):
        assert summary["reconciled"]
        assert summary["rows_in"] == manifest["rows"]
        assert summary["rows_out"] == manifest["samples"]
        assert summary["rows_quarantined"] == manifest["malformed"]
        assert summary["tokens"] > 0
    assert json.loads((tmp_path / "ray" / "score_summary.json").read_text())["rows_out"] == manifest["samples"]

    ours, ref = _by_id(tmp_path / "ray" / "scored"), _by_id(tmp_path / "local" / "scored")
    assert ours.keys() == ref.keys() and len(ours) == manifest["samples"]  # nothing lost or doubled
    for sid, row in ref.items():
        assert ours[sid]["complexity_scores"] == pytest.approx(row["complexity_scores"], abs=1e-5)
        assert ours[sid]["quality_scores"] == pytest.approx(row["quality_scores"], abs=1e-5)
        assert ours[sid]["evol_score"] == pytest.approx(row["evol_score"], abs=1e-4)
        assert ours[sid]["conversations"] == row["conversations"]

    quarantine = pq.read_table(str(tmp_path / "ray" / "quarantine"))
    assert sorted(quarantine.column("id").to_pylist()) == sorted(
        pq.read_table(str(tmp_path / "local" / "quarantine")).column("id").to_pylist())


def test_existing_output_is_not_overwritten_silently(pool_dir, scorers, tmp_path):
    cfg = dict(inputs=[str(pool_dir / "alpaca.json")], output=str(tmp_path / "o"), **scorers)
    run_step("score", **cfg)
    with pytest.raises(FileExistsError, match="--overwrite"):
        run_step("score", **cfg)
    assert run_step("score", overwrite=True, **cfg)["reconciled"]
