"""Scoring on a simulated 3-node Ray cluster: actors spread over the nodes, scores equal the in-process run.

The cluster needs its own Ray, and the test run already holds one, so a subprocess drives it."""

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from conftest import run_step

pytestmark = pytest.mark.ray

DRIVER = r"""
import json, sys
import ray
from ray.cluster_utils import Cluster
from ray.util.state import list_actors
from deita_ray.steps import STEPS

pool, out, complexity, quality = sys.argv[1:5]
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
for _ in range(2):
    cluster.add_node(num_cpus=2)
ray.init(address=cluster.address)
cluster.wait_for_nodes()
step = STEPS["score"]
summary = step.execute(step.config(inputs=[pool], output=out, complexity_model=complexity, quality_model=quality,
                                   replicas=2, cpus_per_replica=1, batch_rows=16, block_rows=40, chunk_bytes=20_000))
nodes = sorted({a.node_id for a in list_actors(address=cluster.address, detail=True, limit=1000)
                if "ScoreStage" in a.class_name})  # this cluster, whatever other Ray runs on the host
print(json.dumps({"summary": summary, "actor_nodes": nodes, "cluster_nodes": len(ray.nodes())}))
ray.shutdown()
cluster.shutdown()
"""


def test_scoring_spreads_over_nodes_and_matches_single_node(tiny_models, scorers, pool_dir, tmp_path):
    pool = pool_dir / "sharegpt.jsonl"  # one file of the pool (multi-turn rows), in several read tasks of 20 KB
    result = subprocess.run([sys.executable, "-c", DRIVER, str(pool), str(tmp_path / "multi"),
                             str(tiny_models["scorer-complexity"]), str(tiny_models["scorer-quality"])],
                            capture_output=True, text=True, timeout=480)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["cluster_nodes"] == 3
    assert len(report["actor_nodes"]) >= 2, f"scoring actors all ran on one node: {report['actor_nodes']}"
    assert report["summary"]["reconciled"]

    run_step("score", inputs=[str(pool)], output=str(tmp_path / "single"), **scorers)
    multi = {r["id"]: r for r in pq.read_table(str(tmp_path / "multi" / "scored")).to_pylist()}
    single = {r["id"]: r for r in pq.read_table(str(tmp_path / "single" / "scored")).to_pylist()}
    assert multi.keys() == single.keys()
    for sid, row in single.items():
        assert multi[sid]["evol_score"] == pytest.approx(row["evol_score"], abs=1e-4)
        assert multi[sid]["quality_scores"] == pytest.approx(row["quality_scores"], abs=1e-5)
