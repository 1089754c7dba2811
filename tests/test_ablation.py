"""The paper's comparison in one run: arms that select, train and are evaluated on MT-Bench, then compared with the
baseline arm; finished arms are skipped on a rerun and a new arm runs alone. And a falsifiable end-to-end check on
CPU: with a pool where one property of the answers varies, scorers trained to prefer it, and a judge that rewards
it, the Deita arm's model beats the random arm's by a margin outside the bootstrap interval (with the selection
replaced by random, the two arms are the same and the test fails)."""

import json
import random

import pytest
from servers import stub_server

from deita_ray.recipe.config import load_config
from deita_ray.recipe.pipeline import run_pipeline

pytestmark = pytest.mark.ray


def _quickstart(tmp, models_dir, **changes):
    overrides = [f"output={tmp}/out", f"models_dir={models_dir}", f"sample_pool.dir={tmp}/pool",
                 f"sample_questions.dir={tmp}/questions", f"ablation.questions=[{tmp}/questions]"]
    return load_config("ablation-quickstart", overrides + [f"{k}={v}" for k, v in changes.items()])


def _pool_with_a_property(path, n: int, seed: int, share: float):
    """Instructions on varied topics; a `share` of the answers talk about rivers, the rest do not."""
    from deita_ray.tools.sample_pool import AUDIENCES, TOPICS

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic, audience = rng.choice(TOPICS), rng.choice(AUDIENCES)
        instruction = f"Tell {audience} about {topic}, case {i}."
        river = rng.random() < share
        answer = ("The river, the river bank and the river mouth: a river river river story." if river else
                  f"A plain note on {topic} with a few careful details.")
        rows.append({"id": f"p{i}", "instruction": instruction, "response": answer, "river": river})
    path.write_text("".join(json.dumps({"id": r["id"], "conversations": [
        {"from": "human", "value": r["instruction"]}, {"from": "gpt", "value": r["response"]}]}) + "\n" for r in rows))
    return rows


def test_the_deita_arm_beats_the_random_arm_then_a_rerun_skips_every_arm_and_a_new_arm_runs_alone(
        ray_session, tiny_models, tmp_path):
    """The ablation-quickstart config on a pool where one property varies, judged over HTTP by a judge that rewards
    it: every arm selects, trains, is evaluated and compared; Deita's arm wins outside both intervals. Then the
    same config with one more arm: the finished arms are skipped and only the new arm's steps run."""
    from deita_ray.report.eval import ablation_rows
    from deita_ray.train.config import load_train_config
    from deita_ray.train.launch import train

    models_dir = str(tiny_models["generator"].parent)
    _pool_with_a_property(tmp_path / "pool.jsonl", 300, seed=1, share=0.25)
    labels = _pool_with_a_property(tmp_path / "unused.jsonl", 240, seed=2, share=0.5)
    (tmp_path / "labels.jsonl").write_text("".join(json.dumps({
        "instruction": r["instruction"], "response": r["response"], "score": 6 if r["river"] else 1}) + "\n"
        for r in labels))
    train(load_train_config("scorer", data={
        "model": str(tiny_models["scorer-quality"]), "data": [str(tmp_path / "labels.jsonl")],
        "output": str(tmp_path / "scorer"), "kind": "quality", "num_workers": 1, "global_batch_size": 16,
        "per_device_batch_size": 16, "epochs": 4, "learning_rate": 3e-3, "warmup_ratio": 0.05, "max_length": 256,
        "save_every_epoch": False}), log=lambda *_: None)
    with stub_server() as api:
        run = _run_with_the_judge_at(api, tmp_path, models_dir)
        arms = ["select_deita", "sft_deita", "eval_deita", "select_random", "sft_random", "eval_random",
                "compare_deita"]
        assert list(run["stages"])[3:] == arms and all(s["reconciled"] for s in run["stages"].values())
        rows = {r["arm"]: r for r in ablation_rows(str(tmp_path / "out"))}
        assert rows["deita"]["samples"] == rows["random"]["samples"] == 60
        assert rows["deita"]["mt_bench"]["n"] == 32 and rows["deita"]["pairwise"]["turns"] == 32
        assert rows["random"]["against"] is None and rows["deita"]["against"] == "random"
        assert "<h2>Ablation</h2>" in (tmp_path / "out" / "report" / "index.html").read_text()
        lines = []  # a local rerun (where the steps ran is not part of their fingerprints): only the new arm runs
        _run_with_the_judge_at(api, tmp_path, models_dir, lines.append, arms="[deita, random, length]", local=True)
        ran = [line for line in lines if not line.endswith("skipped") and line.startswith("[")]
        assert all("arm length" in line for line in ran) and len(ran) == 4, lines  # select, SFT, eval, compare
    deita, rand = rows["deita"]["mt_bench"], rows["random"]["mt_bench"]
    selected = [json.loads(line) for line in (tmp_path / "out" / "arms" / "deita" / "selection" /
                                              "selected.jsonl").read_text().splitlines()]
    assert sum("river" in s["conversations"][1]["value"] for s in selected) > 0.8 * len(selected)  # scorers prefer it
    assert deita["low"] > rand["high"], (deita, rand)  # outside both intervals
    pairwise = rows["deita"]["pairwise"]
    assert pairwise["win"] > pairwise["loss"], pairwise


def _run_with_the_judge_at(api: str, tmp_path, models_dir: str, log=lambda *_: None,
                           arms: str = "[deita, random]", local: bool = False) -> dict:
    """The quickstart's arms on the river pool, judged over HTTP by the stub's MT-Bench judge for "river"."""
    config = _quickstart(tmp_path, models_dir, **{"ablation.arms": arms, "ray.local": str(local).lower(),
        "inputs": f"[{tmp_path / 'pool.jsonl'}]", "sample_pool.dir": '""',
        "score.quality_model": str(tmp_path / "scorer" / "model"), "select.threshold": 0.999,
        "select.budget": 60, "sft.max_steps": 24, "sft.learning_rate": 2e-3, "sft.lr_scheduler": "constant",
        "sft.warmup_ratio": 0.0, "ablation.eval": json.dumps({
            "engine": "hf", "max_new_tokens": 16, "max_length": 512, "cpus_per_replica": 0.5, "batch_rows": 16,
            "judge_model": "mt-judge-river", "judge_engine": "http", "judge_api_base": api,
            "judge_cpus_per_replica": 0.25})})
    return run_pipeline(config, log=log)
