"""A command that cannot finish ends in one line naming the stage, the path and the cause, with the traceback
kept in a log file; models are checked before Ray starts; the run stops at a step whose counts do not reconcile."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest


def _score(pool, out, complexity, quality, *extra, timeout=240):
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "deita_ray.cli", "score", str(pool), "-o", str(out),
                           "--complexity-model", str(complexity), "--quality-model", str(quality), *extra],
                          capture_output=True, text=True, timeout=timeout, env=dict(os.environ, RAY_ADDRESS=""))
    return proc, time.time() - started


def _one_error_line(proc) -> str:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("deita-ray: error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    assert proc.stderr.rstrip().splitlines()[-1] == errors[0]  # the last thing the user reads
    return errors[0]


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.ray
def test_full_disk_is_one_line_with_the_traceback_in_a_log(small_disk, pool_dir, tiny_models):
    proc, _ = _score(pool_dir, small_disk / "out", tiny_models["scorer-complexity"], tiny_models["scorer-quality"],
                     "--engine", "fake")
    line = _one_error_line(proc)
    assert f"stage score failed on {small_disk / 'out' / 'scored'}: OSError: [Errno 28] No space left on device" in line
    log = line.rsplit("(traceback: ", 1)[1].rstrip(")")
    assert "Traceback" in open(log).read()


def test_an_engine_that_cannot_start_is_one_line(pool_dir, tiny_models, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_models["scorer-complexity"], broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    proc, _ = _score(pool_dir / "alpaca.json", tmp_path / "out", broken, tiny_models["scorer-quality"], "--local")
    line = _one_error_line(proc)
    assert "stage score failed on" in line and "SafetensorError" in line and "(traceback: " in line


@pytest.mark.parametrize("case", ["missing", "no-tokenizer"])
def test_models_are_checked_before_ray_starts(case, pool_dir, tiny_models, tmp_path):
    model = tmp_path / "nonexistent" / "model"
    if case == "no-tokenizer":
        model = tmp_path / "no-tokenizer"
        shutil.copytree(tiny_models["scorer-complexity"], model)
        for name in os.listdir(model):
            if name.startswith(("tokenizer", "special_tokens")):
                os.remove(model / name)
    proc, seconds = _score(pool_dir, tmp_path / "out", model, tiny_models["scorer-quality"], timeout=60)
    line = _one_error_line(proc)
    expected = "model not found" if case == "missing" else "has no tokenizer files"
    assert "--complexity-model: " in line and expected in line, line
    assert "Ray" not in proc.stderr and seconds < 20


def test_the_run_stops_at_a_step_whose_work_failed(tiny_models, scorers, tmp_path):
    """A pool whose every row is malformed: the score step fails as a whole, the run stops there with one line,
    nothing after it runs, and no completion record lets a rerun skip it."""
    from deita_ray.recipe.config import load_config
    from deita_ray.recipe.pipeline import PipelineError, run_pipeline
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"id": 1}\n{"conversations": "not a list"}\n')
    out = tmp_path / "out"
    config = load_config(None, data={"output": str(out), "inputs": [str(pool)], "report": False,
                                     "ray": {"local": True},  # the run's policy, wherever its steps run
                                     "score": {**scorers, "engine": "fake"},
                                     "embed": {"model": str(tiny_models["embedder"]), "engine": "fake"}})
    with pytest.raises(PipelineError, match="score: not one of 2 rows succeeded.*; the run stops here"):
        run_pipeline(config, log=lambda *_: None)
    assert not (out / "embeddings").exists() and not (out / "selection").exists()
    summary = json.loads((out / "score_summary.json").read_text())  # the stage's own, never stamped as done
    assert summary["rows_out"] == 0 and "fingerprint" not in summary
