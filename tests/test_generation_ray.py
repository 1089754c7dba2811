"""The generation half on Ray: the Ray path equals the in-process one (fake and hf engines), an actor
killed mid-generation changes nothing, and a driver SIGKILLed mid-run resumes at the seed level to
the clean result."""

import json
import os

import pyarrow.parquet as pq
import pytest
from processes import run_and_kill

from conftest import run_step

pytestmark = pytest.mark.ray

CHAIN_COLUMNS = ["id", "variants", "operations", "stop_reason", "generated_tokens"]


def _rows(directory, columns):
    return sorted(pq.read_table(str(directory), columns=columns).to_pylist(), key=lambda r: r["id"])


@pytest.mark.parametrize("engine", ["fake", "hf"])
def test_ray_path_equals_in_process(ray_session, tiny_models, pool_dir, tmp_path, engine):
    model = str(tiny_models["generator"])
    # The fake engine takes the whole pool; the real model one file of it (61 rows: real generation is the cost).
    inputs = [str(pool_dir)] if engine == "fake" else [str(pool_dir / "messages.parquet")]
    evolve = dict(model=model, engine=engine, max_new_tokens=32, rounds=3, batch_rows=16, cpus_per_replica=0.5,
                  replicas=2)
    judge = dict(model=str(tiny_models["scorer-complexity"]), engine=engine, batch_rows=16, cpus_per_replica=0.5,
                 max_length=512)
    summaries = {}
    for path in ("ray", "local"):
        out = tmp_path / path
        summaries[path] = run_step("evolve", path, inputs=inputs, output=str(out), **evolve)
        summaries[path + "-judge"] = run_step("judge", path, inputs=[str(out / "evolved")], output=str(out), **judge)
    for key, summary in summaries.items():
        assert summary["reconciled"], (key, summary)
    assert summaries["ray"]["rows_out"] == summaries["local"]["rows_out"] > (200 if engine == "fake" else 40)
    assert summaries["ray"]["counts"] == summaries["local"]["counts"]
    assert _rows(tmp_path / "ray" / "evolved", CHAIN_COLUMNS) == _rows(tmp_path / "local" / "evolved", CHAIN_COLUMNS)
    judged = ["id", "judge_status", "scores", "judgement"]
    assert _rows(tmp_path / "ray" / "judged", judged) == _rows(tmp_path / "local" / "judged", judged)
    assert summaries["ray-judge"]["rows_in"] == summaries["ray"]["rows_out"]


def test_actor_killed_mid_generation_changes_nothing(ray_session, tiny_models, pool_dir, tmp_path):
    """The fake engine SIGKILLs its own actor process on its first generate call; Ray restarts the actor
    and retries the batch, and since every request's seed comes from (seed id, round) the chains are
    the ones an undisturbed run gives."""
    model = str(tiny_models["generator"])
    marker = tmp_path / "died"
    common = dict(model=model, engine="fake", max_new_tokens=24, rounds=4, batch_rows=32, cpus_per_replica=0.5)
    killed = run_step("evolve", "ray", inputs=[str(pool_dir)], output=str(tmp_path / "killed"),
                      engine_kwargs={"die_once": str(marker)}, **common)
    assert marker.exists(), "the actor did not die"
    assert int(marker.read_text()) != os.getpid()  # it was a Ray worker that died, not this process
    clean = run_step("evolve", inputs=[str(pool_dir)], output=str(tmp_path / "clean"), **common)
    assert killed["reconciled"] and killed["rows_out"] == clean["rows_out"]
    assert _rows(tmp_path / "killed" / "evolved", CHAIN_COLUMNS) == _rows(tmp_path / "clean" / "evolved", CHAIN_COLUMNS)


def _seeds(pool_dir) -> str:
    """One file of the pool (61 rows, 8 parts of 8): enough parts to die between, little real generation."""
    return str(pool_dir / "messages.parquet")


def _generation_args(tiny_models):
    return ["--model", str(tiny_models["generator"]), "--max-new-tokens", "32", "--rounds", "3", "--batch-rows", "8",
            "--local"]


def _judge_args(tiny_models, evolved):
    return ["judge", str(evolved), "--model", str(tiny_models["scorer-complexity"]), "--max-length", "512",
            "--batch-rows", "8", "--local"]


@pytest.fixture(scope="module")
def clean_generation(tiny_models, pool_dir, tmp_path_factory):
    """One undisturbed evolve and judge, the result both resume tests must reach."""
    from deita_ray.cli import main

    clean = tmp_path_factory.mktemp("clean-generation")
    assert main(["evolve", _seeds(pool_dir), "-o", str(clean), *_generation_args(tiny_models)]) == 0
    args = _judge_args(tiny_models, clean / "evolved")
    assert main([*args[:2], "-o", str(clean), *args[2:]]) == 0
    return clean


@pytest.mark.parametrize("command", ["evolve", "judge"])
def test_sigkilled_run_resumes_at_the_seed_level(ray_session, tiny_models, pool_dir, tmp_path, clean_generation,
                                                 command):
    from deita_ray.cli import main

    clean = clean_generation
    if command == "evolve":
        args, out_dir = ["evolve", _seeds(pool_dir), *_generation_args(tiny_models)], "evolved"
    else:
        args, out_dir = _judge_args(tiny_models, clean / "evolved"), "judged"
    killed = tmp_path / "killed"
    parts = lambda: list((killed / out_dir).glob("*.parquet")) if (killed / out_dir).exists() else []  # noqa: E731
    run_and_kill([*args[:2], "-o", str(killed), *args[2:]], lambda: len(parts()) >= 3, cwd=tmp_path)
    done_before = len(parts())
    assert not (killed / f"{command}_summary.json").exists()  # it really died mid-run
    assert main([*args[:2], "-o", str(killed), *args[2:], "--resume"]) == 0
    summary = json.loads((killed / f"{command}_summary.json").read_text())
    assert summary["reconciled"] and len(parts()) > done_before
    columns = CHAIN_COLUMNS if command == "evolve" else ["id", "judge_status", "scores"]
    assert _rows(killed / out_dir, columns) == _rows(clean / out_dir, columns)  # nothing lost, nothing twice
