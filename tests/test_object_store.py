"""`deita-ray run` with its output on S3: a real S3-compatible server (moto's server mode) on 127.0.0.1,
started and stopped by its pid. Every record (completion records, run_stats.json, the report, the run
lock) lands in the bucket, nothing in a local directory named `s3:`; a driver SIGKILLed mid-scoring
resumes from what the bucket holds, and the selection equals a run on local disk."""

import os
import signal
import socket
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import yaml
from servers import free_port

pytestmark = pytest.mark.ray
BUCKET = "deita-test"


@pytest.fixture(scope="module")
def s3_env():
    pytest.importorskip("moto")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "moto server did not start"
                time.sleep(0.2)
        import boto3

        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield env
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _config(tiny_models, pool_dir, out):
    # One file of the pool (105 good rows, ~53 parts of 2 on S3): parts enough to die between, few slow PUTs to moto.
    return {"output": out, "inputs": [str(pool_dir / "alpaca.json")],
            "score": {"complexity_model": str(tiny_models["scorer-complexity"]),
                      "quality_model": str(tiny_models["scorer-quality"]), "batch_rows": 2},
            "embed": {"model": str(tiny_models["embedder"]), "engine": "hf", "cpus_per_replica": 0.5, "batch_rows": 64},
            "select": {"budget": 40, "threshold": 0.97, "block_size": 16}}


def _run(config_path, cwd, env):
    return subprocess.Popen([sys.executable, "-m", "deita_ray.cli", "run", str(config_path)], cwd=cwd,
                            env=dict(os.environ, RAY_ADDRESS="", **env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_two_runs_racing_for_an_output_on_s3_get_it_once(s3_env, monkeypatch):
    """On S3 the free output is claimed by a conditional PUT (If-None-Match), so a run that read "no lock"
    an instant before another created it is refused, not let in beside it."""
    from test_run_lock import race_against

    from deita_ray.runner.lock import OutputLocked, RunLock, hold_output

    output = f"s3://{BUCKET}/race"
    with hold_output(output) as holder:
        race_against(monkeypatch, output)
        with pytest.raises(OutputLocked, match="that started at the same moment"):
            RunLock(output).acquire()
        monkeypatch.undo()
        from deita_ray.io import fs

        assert fs.read_json(f"{output}/_run.lock")["token"] == holder.token  # the holder's record, whole
    assert not fs.exists(f"{output}/_run.lock")


def test_run_on_s3_keeps_its_records_there_and_resumes_after_sigkill(s3_env, ray_session, tiny_models, pool_dir,
                                                                      tmp_path):
    import s3fs

    from deita_ray.recipe.config import load_config
    from deita_ray.recipe.pipeline import run_pipeline

    out = f"s3://{BUCKET}/run"
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(_config(tiny_models, pool_dir, out)))
    store = s3fs.S3FileSystem()

    # 1. SIGKILL the driver (and its local Ray) once scoring has written parts to the bucket.
    proc = _run(config_path, tmp_path, s3_env)
    try:
        deadline = time.time() + 240
        while not (store.exists(f"{BUCKET}/run/scored") and store.ls(f"{BUCKET}/run/scored")):
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.time() < deadline, "no scored part reached the bucket in time"
            store.invalidate_cache()
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    store.invalidate_cache()
    assert store.exists(f"{BUCKET}/run/_score_started.json") and store.exists(f"{BUCKET}/run/_run.lock")
    assert not store.exists(f"{BUCKET}/run/score_summary.json")

    # 2. A rerun from another "driver" (a fresh process) finds the records in the bucket and resumes.
    proc = _run(config_path, tmp_path, s3_env)
    log = proc.communicate(timeout=400)[0]
    assert proc.returncode == 0, log[-3000:]
    assert "[1/3] scoring (resuming an interrupted run)" in log
    assert not (tmp_path / "s3:").exists()  # nothing went to a local directory named after the scheme
    store.invalidate_cache()
    for record in ("score_summary.json", "embed_summary.json", "select_summary.json", "run_stats.json",
                   "report/index.html", "report/scores.png", "selection/selected.jsonl"):
        assert store.exists(f"{BUCKET}/run/{record}"), record
    assert not store.exists(f"{BUCKET}/run/_run.lock")  # released at the end
    with store.open(f"{BUCKET}/run/selection/selected.parquet") as f:
        on_s3 = pq.read_table(f, columns=["id"]).column("id").to_pylist()
    scored = pq.read_table(f"{BUCKET}/run/scored", filesystem=store, columns=["id"]).column("id").to_pylist()
    from deita_ray.io.reader import plan_reads, read_all

    good = read_all(plan_reads(_config(tiny_models, pool_dir, out)["inputs"]))[0].num_rows
    assert len(scored) == len(set(scored)) == good > 100  # nothing lost or doubled by the kill

    # 3. A third run (in this process, on the test run's Ray) skips every step.
    lines = []
    run_pipeline(load_config(str(config_path)), log=lines.append)
    assert sum("already done for this config, skipped" in line for line in lines) == 3, lines

    # 4. The same config on local disk (a local run: in this process) selects the same samples.
    local = {**_config(tiny_models, pool_dir, str(tmp_path / "local")), "ray": {"local": True}}
    run_pipeline(load_config(None, data=local), log=lambda *_: None)
    assert pq.read_table(str(tmp_path / "local" / "selection" / "selected.parquet"),
                         columns=["id"]).column("id").to_pylist() == on_s3
