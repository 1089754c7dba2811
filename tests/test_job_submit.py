"""`ray job submit` for real: our own Ray head on loopback (token auth on, Ray 2.60's default),
`deita-ray run quickstart` (pool to selection) and then `deita-ray train sft` on its selection with two Ray Train
workers, submitted with the shipped runtime env, outputs checked, and only that head stopped."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import ray_head

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[1]


def test_ray_job_submit_runs_the_pipeline(tiny_models, pool_dir, tmp_path):
    ray_bin = Path(sys.executable).with_name("ray")
    if not ray_bin.exists():
        pytest.skip("the ray CLI is not installed next to this Python")
    env = dict(os.environ, PATH=f"{ray_bin.parent}:{os.environ['PATH']}", RAY_AUTH_MODE="token")
    env.pop("RAY_ADDRESS", None)
    out = tmp_path / "out"
    # The quickstart (pool -> score -> embed -> select) as one job, then the training on the selection as a job of
    # its own below: what is tested here is the submission (test_recipe runs every step of the recipe on Ray).
    recipe = ["quickstart", f"--set=output={out}", f"--set=models_dir={tiny_models['generator'].parent}",
              f"--set=sample_pool.dir={tmp_path / 'sample_pool'}", "--set=sample_pool.samples=300",
              "--set=select.budget=100", "--set=embed.replicas=1"]
    with ray_head(env) as (_, dashboard):
        def submit(*entrypoint: str) -> str:
            command = [str(ray_bin), "job", "submit", "--address", dashboard, "--working-dir",
                       str(REPO), "--runtime-env", str(REPO / "cluster" / "runtime_env.yaml"), "--", *entrypoint]
            deadline = time.time() + 120
            while True:
                done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=480, cwd=REPO)
                log = done.stdout + done.stderr
                # Right after `ray start` the head's job agent may not be up yet; Ray says to try again.
                if "No available agent to submit job" not in log or time.time() > deadline:
                    break
                time.sleep(3)
            assert done.returncode == 0, log[-4000:]
            assert "succeeded" in log.lower(), log[-4000:]
            return log

        submit("python", "-m", "deita_ray.cli", "run", *recipe)
        stages = json.loads((out / "run_stats.json").read_text())["stages"]
        assert all(s["reconciled"] for s in stages.values()) and list(stages) == ["score", "embed", "select"]
        assert stages["select"]["rows_out"] == 100
        assert len((out / "selection" / "selected.jsonl").read_text().splitlines()) == 100
        # Then train on the selection, as a second job on the same cluster (2 Ray Train workers).
        runs = tmp_path / "sft"
        submit("python", "-m", "deita_ray.cli", "train", "sft", str(out / "selection" / "selected.jsonl"),
               "--model", str(tiny_models["scorer-quality"]), "-o", str(runs), "--workers", "2",
               "--global-batch-size", "4", "--per-device-batch-size", "2", "--max-steps", "2", "--max-length", "256")
        summary = json.loads((runs / "train_summary.json").read_text())
        assert summary["rows"]["rows_used"] == 100 and summary["global_step"] == 2 and summary["world_size"] == 2
        assert (runs / "model" / "model.safetensors").exists()
