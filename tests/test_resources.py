"""No combination of options hangs: a stage's request is checked against the cluster before it starts.
On a local Ray CPUs per actor are sized to fit (one line says so); on a cluster, or for GPUs that are not
there, the command stops in seconds with one line naming the options to change."""

import os
import subprocess
import sys
import time

import pytest

from deita_ray.runner.session import ActorRequest, ResourceError, fit_actors


def test_local_ray_sizes_actors_to_fit():
    lines = []
    fitted = fit_actors("score", [ActorRequest("score", 1, 1.0, 0.0)] * 2, task_ops=2, local=True,
                        cluster={"CPU": 2.0}, log=lines.append)
    assert sum(a.cpus for a in fitted) + 0.5 <= 2.0 and all(a.cpus > 0 for a in fitted)
    assert len(lines) == 1 and "sized to" in lines[0]


def test_requests_that_fit_are_left_alone():
    asked = [ActorRequest("embed", 2, 0.5, 0.0)]
    assert fit_actors("embed", asked, task_ops=2, local=False, cluster={"CPU": 4.0}, log=None) == asked


def test_cluster_request_too_big_names_the_options():
    with pytest.raises(ResourceError, match=r"score asks for 8.5 CPUs .* cluster has 4: lower score.replicas / "
                                            r"score.cpus_per_replica"):
        fit_actors("score", [ActorRequest("score", 4, 1.0, 0.0)] * 2, task_ops=2, local=False, cluster={"CPU": 4.0})


def test_missing_gpus_fail_even_on_a_local_ray():
    with pytest.raises(ResourceError, match="asks for 2 GPUs but the cluster has 0: lower embed.replicas / "
                                            "embed.gpus_per_replica"):
        fit_actors("embed", [ActorRequest("embed", 2, 1.0, 1.0)], task_ops=2, local=True, cluster={"CPU": 16.0})


def _score_on_two_cpus(pool, model, out, *extra, timeout=240):
    """`deita-ray score` with only its required options, on a local Ray of 2 CPUs (a 2-core laptop)."""
    code = ("import ray, sys; ray.init(num_cpus=2, include_dashboard=False); from deita_ray.cli import main; "
            "raise SystemExit(main(sys.argv[1:]))")
    started = time.time()
    proc = subprocess.run([sys.executable, "-c", code, "score", str(pool), "-o", str(out), "--complexity-model", str(model),
                           "--quality-model", str(model), *extra], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, RAY_ADDRESS=""))
    return proc, time.time() - started


@pytest.mark.ray
def test_score_with_default_options_finishes_on_two_cpus(tiny_models, pool_dir, tmp_path):
    # One file of the pool: what is tested is that the default request is sized to fit, not the scoring.
    proc, _ = _score_on_two_cpus(pool_dir / "messages.parquet", tiny_models["scorer-complexity"], tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sized to" in proc.stderr and "(= scored + quarantined)" in proc.stdout


@pytest.mark.ray
def test_gpus_that_are_not_there_fail_in_seconds_with_one_line(tiny_models, pool_dir, tmp_path):
    proc, seconds = _score_on_two_cpus(pool_dir, tiny_models["scorer-complexity"], tmp_path / "out",
                                       "--gpus-per-replica", "1", timeout=120)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("deita-ray: error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    assert "asks for 2 GPUs but the cluster has 0" in errors[0] and "score.gpus_per_replica" in errors[0]
    assert seconds < 60


def test_an_actor_larger_than_any_node_fails_even_when_the_cluster_total_fits():
    two_nodes = {"CPU": 8.0, "GPU": 2.0}
    with pytest.raises(ResourceError, match="2 GPUs per actor but no node has more than 1: lower score.gpus_per_replica"):
        fit_actors("score", [ActorRequest("score", 1, 1.0, 2.0)], task_ops=2, local=False, cluster=two_nodes,
                   largest_node={"CPU": 4.0, "GPU": 1.0})
    with pytest.raises(ResourceError, match="6 CPUs per actor but no node has more than 4"):
        fit_actors("embed", [ActorRequest("embed", 1, 6.0, 0.0)], task_ops=2, local=False, cluster=two_nodes,
                   largest_node={"CPU": 4.0, "GPU": 1.0})
