"""The whole recipe as one `deita-ray run`: seeds -> Evol -> judge -> labels -> scorers -> score -> embed ->
select -> SFT -> DPO on CPU with tiny models; a rerun skips every step; a changed upstream input re-runs
the steps after it; a config without a generation section uses the scorers it is given."""

import json

import pyarrow.parquet as pq
import pytest
from processes import run_and_kill

from deita_ray.recipe.config import load_config
from deita_ray.recipe.pipeline import plan, run_pipeline
from deita_ray.recipe.table import format_run

pytestmark = pytest.mark.ray

STEPS = ["evolve_complexity", "judge_complexity", "labels_complexity", "scorer_complexity", "evolve_quality",
         "judge_quality", "labels_quality", "scorer_quality", "score", "embed", "select", "sft", "dpo"]


def _overrides(tmp, models_dir, **changes):
    overrides = [f"output={tmp}/out", f"models_dir={models_dir}", f"sample_seeds.dir={tmp}/seeds",
                 f"sample_pool.dir={tmp}/pool", f"sample_preferences.dir={tmp}/preferences",
                 f"dpo.data=[{tmp}/preferences]"]
    return overrides + [f"{k}={v}" for k, v in changes.items()]


def _recipe(tmp, models_dir, **changes):
    return load_config("recipe-quickstart", _overrides(tmp, models_dir, **changes))


@pytest.fixture(scope="module")
def models_dir(tiny_models):
    return str(tiny_models["generator"].parent)


@pytest.fixture(scope="module")
def clean(ray_session, models_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recipe")
    lines = []
    return tmp, run_pipeline(_recipe(tmp, models_dir), log=lines.append), lines


def test_the_recipe_end_to_end_then_every_step_skipped(clean, models_dir):
    tmp_path, run, lines = clean
    assert list(run["stages"]) == STEPS
    for name, stats in run["stages"].items():
        assert stats["reconciled"], (name, stats)
    stages = run["stages"]
    for mode in ("complexity", "quality"):
        assert stages[f"evolve_{mode}"]["rows_in"] == 40 + 13  # the generated seeds hold 13 malformed rows
        assert stages[f"judge_{mode}"]["rows_in"] == stages[f"evolve_{mode}"]["rows_out"]
        assert stages[f"labels_{mode}"]["rows_out"] == stages[f"scorer_{mode}"]["rows_in"] > 0
        assert (tmp_path / "out" / "scorers" / mode / "model" / "config.json").exists()
    summary = json.loads((tmp_path / "out" / "score_summary.json").read_text())
    assert summary["config"]["complexity_model"].endswith("scorers/complexity/model")  # scored by what it trained
    assert summary["config"]["quality_model"].endswith("scorers/quality/model")
    assert stages["select"]["rows_out"] == 100 and stages["sft"]["global_step"] == 4 and stages["dpo"]["global_step"] == 4
    sft, dpo = stages["sft"], stages["dpo"]
    assert sft["rows_in"] == 100 and sft["rows_out"] + sft["rows_quarantined"] == 100  # SFT trains on the selection
    assert sft["model"] == str(tmp_path / "out" / "sft" / "model") and dpo["reconciled"]
    assert (tmp_path / "out" / "dpo" / "model" / "config.json").exists()
    dpo_config = json.loads((tmp_path / "out" / "dpo" / "train_summary.json").read_text())["config"]
    assert dpo_config["model"] == sft["model"]  # DPO tunes the SFT model
    report = (tmp_path / "out" / "report" / "index.html").read_text()
    assert "training.png" in report and "generation/complexity/report/generation.html" in report
    table = format_run(run)
    assert "scorer_quality" in table and "share" in table

    lines.clear()
    again = run_pipeline(_recipe(tmp_path, models_dir), log=lines.append)
    assert sum("already done for this config, skipped" in line for line in lines) == len(STEPS)
    assert again["stages"] == run["stages"]


def test_a_changed_input_reruns_the_steps_after_it(models_dir, tmp_path):
    base = {s.name: s.fingerprint for s in plan(_recipe(tmp_path, models_dir))}
    changed = {s.name: s.fingerprint for s in plan(
        _recipe(tmp_path, models_dir, **{"generation.judge.batch_rows": 8}))}
    same = [n for n in STEPS if base[n] == changed[n]]
    # Both judges changed; the complexity evolution and the quality evolution did not.
    assert same == ["evolve_complexity", "evolve_quality"]
    select_only = {s.name: s.fingerprint for s in plan(
        _recipe(tmp_path, models_dir, **{"select.budget": 50}))}
    assert [n for n in STEPS if base[n] != select_only[n]] == ["select", "sft", "dpo"]
    # Training added to (or dropped from) a finished run leaves every step before it as it was: they are reused.
    untrained = {s.name: s.fingerprint for s in plan(_recipe(tmp_path, models_dir, sft="null", dpo="null"))}
    assert untrained == {n: f for n, f in base.items() if n not in ("sft", "dpo")}


def test_released_scorers_skip_the_generation_half(models_dir, tmp_path, tiny_models):
    config = load_config(None, data={
        "output": str(tmp_path / "out"), "inputs": [str(tmp_path)], "models_dir": models_dir,
        "score": {"complexity_model": str(tiny_models["scorer-complexity"]),
                  "quality_model": str(tiny_models["scorer-quality"])}})
    steps = plan(config)
    assert [s.name for s in steps] == ["score", "embed", "select"]


def test_generation_section_is_checked_before_any_work(models_dir, tmp_path):
    from deita_ray.configlib import ConfigError

    with pytest.raises(ConfigError, match="generation.evolve.rounds must be >= 1, got 0"):
        _recipe(tmp_path, models_dir, **{"generation.evolve.rounds": 0})
    with pytest.raises(ConfigError, match="generation.scorer.data comes from the run"):
        _recipe(tmp_path, models_dir, **{"generation.scorer.data": "[x]"})
    with pytest.raises(ConfigError, match="generation.evolve.mode comes from the run"):
        _recipe(tmp_path, models_dir, **{"generation.evolve.mode": "quality"})


def test_sigkill_in_two_steps_then_rerun_gives_the_clean_result(clean, models_dir, tmp_path):
    clean_tmp, clean_run, _ = clean
    out = tmp_path / "out"
    # Without SFT and DPO (the last steps, after both kill points): the clean run's records cover every step left.
    trimmed = _overrides(tmp_path, models_dir) + ["sft=null", "dpo=null"]
    # The killed runs are local runs (their steps in the killed process, the scorers' training on Ray Train); the
    # rerun that finishes them is on Ray, so what one left, the other resumes. Kills inside a stage on Ray Data:
    # test_pipeline, test_generation_ray, test_object_store.
    args = ["run", "recipe-quickstart", "--local", *[f"--set={o}" for o in trimmed]]
    judged = out / "generation" / "complexity" / "judged"
    # 1. inside judge_complexity, once it has written a part
    run_and_kill(args, lambda: judged.exists() and any(judged.glob("*.parquet")))
    assert not (out / "judge_complexity_summary.json").exists()
    # 2. inside the quality scorer's training (its step started, not finished)
    run_and_kill(args, lambda: (out / "_scorer_quality_started.json").exists())
    assert not (out / "scorer_quality_summary.json").exists()
    lines = []
    run = run_pipeline(load_config("recipe-quickstart", trimmed), log=lines.append)
    assert any("already done for this config, skipped" in line for line in lines)  # steps 1-7 are not redone
    assert list(run["stages"]) == STEPS[:-2]
    for name, stats in run["stages"].items():
        assert stats["reconciled"], (name, stats)
        assert (stats["rows_in"], stats["rows_out"], stats["rows_quarantined"]) == \
            tuple(clean_run["stages"][name][k] for k in ("rows_in", "rows_out", "rows_quarantined")), name

    def labels(root, mode):
        rows = pq.read_table(root / "out" / "generation" / mode / "labels" / "labels.parquet").to_pylist()
        return sorted((r["id"], r["score"]) for r in rows)

    for mode in ("complexity", "quality"):
        assert labels(tmp_path, mode) == labels(clean_tmp, mode)  # nothing lost, nothing twice
    selected = lambda root: sorted(pq.read_table(root / "out" / "selection" / "selected.parquet",  # noqa: E731
                                                 columns=["id"]).column("id").to_pylist())
    assert selected(tmp_path) == selected(clean_tmp)


def test_scorers_the_recipe_trains_rank_held_out_judged_variants(ray_session, models_dir, tmp_path):
    """The scripted-judge path: a rewriter and a judge served over HTTP (127.0.0.1, stopped by pid) whose
    score follows a keyword; the complexity scorer the recipe trains on those labels must rank unseen
    judged variants the way the judge does. A local run (`ray.local`): the steps in this process, the scorer's
    training on Ray Train."""
    import numpy as np
    import pyarrow as pa

    from deita_ray.engines.config import LLMConfig, Sampling
    from deita_ray.stages.evolve import EvolveStage
    from deita_ray.stages.judge import JudgeStage
    from deita_ray.stages.score import ScoreStage
    from servers import stub_server

    with stub_server() as api:
        http = {"engine": "http", "api_base": api}
        config = _recipe(tmp_path, models_dir, **{
            "generation.modes": "[complexity]", "sample_seeds.samples": 160, "sample_pool.samples": 60,
            "generation.evolve": json.dumps({"model": "rewriter", "rounds": 5, **http}),
            "generation.judge": json.dumps({"model": "judge-keyword", **http}),
            "generation.scorer": json.dumps({"model": models_dir + "/scorer-complexity", "num_workers": 1,
                                             "epochs": 6, "learning_rate": 3e-3, "warmup_ratio": 0.05,
                                             "global_batch_size": 16, "per_device_batch_size": 16,
                                             "max_length": 256, "save_every_epoch": False}),
            "select.budget": 20, "sft": "null", "dpo": "null", "ray.local": "true"})
        run = run_pipeline(config, log=lambda *_: None)
        assert run["stages"]["labels_complexity"]["rows_out"] > 600
        # Held-out chains: other seeds, the same scripted rewriter and judge.
        seeds = pa.Table.from_pylist([{"id": f"h{i}", "conversations": [
            {"from": "human", "value": f"Describe place number {i} in one line."}, {"from": "gpt", "value": "ok"}]}
            for i in range(16)])
        engine = LLMConfig(model="rewriter", **http)
        chains = EvolveStage("complexity", engine, Sampling(temperature=1.0), rounds=5, seed=99)(seeds)
        judged = JudgeStage(LLMConfig(model="judge-keyword", **http))(chains).to_pylist()
    pairs = [(v, s) for row in judged if row["scores"] for v, s in zip(row["variants"], row["scores"])]
    pool = pa.Table.from_pylist([{"id": str(i), "conversations": [{"from": "human", "value": v},
                                                                  {"from": "gpt", "value": "ok"}]}
                                 for i, (v, _) in enumerate(pairs)])
    trained = LLMConfig(model=str(tmp_path / "out" / "scorers" / "complexity" / "model"), engine="hf")
    predicted = np.array([s[0] for s in ScoreStage("complexity", trained)(pool).column("complexity_scores").to_pylist()])
    truth = np.array([s for _, s in pairs])
    rank = lambda x: np.argsort(np.argsort(x, kind="stable"), kind="stable")  # noqa: E731
    spearman = np.corrcoef(rank(predicted), rank(truth))[0, 1]
    assert len(pairs) >= 80 and spearman > 0.5, (spearman, list(zip(truth, predicted.round(2)))[:20])
