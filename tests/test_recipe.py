"""The whole recipe as one `deita-ray run`: seeds -> Evol -> judge -> labels -> scorers -> score -> embed ->
select -> SFT -> DPO on CPU with tiny models; a rerun skips every step; a changed upstream input re-runs
the steps after it; a config without a generation section uses the scorers it is given."""

import json

import pytest

from deita_ray.config import load_config
from deita_ray.pipeline import build_steps, format_run, run_pipeline

pytestmark = pytest.mark.ray

STEPS = ["evolve_complexity", "judge_complexity", "labels_complexity", "scorer_complexity", "evolve_quality",
         "judge_quality", "labels_quality", "scorer_quality", "score", "embed", "select", "sft", "dpo"]


def _recipe(tmp, models_dir, **changes):
    overrides = [f"output={tmp}/out", f"models_dir={models_dir}", f"sample_seeds.dir={tmp}/seeds",
                 f"sample_pool.dir={tmp}/pool", f"sample_preferences.dir={tmp}/preferences",
                 f"dpo.data=[{tmp}/preferences]"]
    overrides += [f"{k}={v}" for k, v in changes.items()]
    return load_config("recipe-quickstart", overrides)


@pytest.fixture(scope="module")
def models_dir(tiny_models):
    return str(tiny_models["generator"].parent)


def test_the_recipe_end_to_end_then_every_step_skipped(ray_session, models_dir, tmp_path):
    lines = []
    run = run_pipeline(_recipe(tmp_path, models_dir), log=lines.append)
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
    assert summary["config"]["complexity"]["model"].endswith("scorers/complexity/model")  # scored by what it trained
    assert summary["config"]["quality"]["model"].endswith("scorers/quality/model")
    assert stages["select"]["rows_out"] == 100 and stages["sft"]["global_step"] == 4 and stages["dpo"]["global_step"] == 4
    assert (tmp_path / "out" / "dpo" / "model" / "config.json").exists()
    report = (tmp_path / "out" / "report" / "index.html").read_text()
    assert "training.png" in report and "generation/complexity/report/generation.html" in report
    table = format_run(run)
    assert "scorer_quality" in table and "share" in table

    lines.clear()
    again = run_pipeline(_recipe(tmp_path, models_dir), log=lines.append)
    assert sum("already done for this config, skipped" in line for line in lines) == len(STEPS)
    assert again["stages"] == run["stages"]


def test_a_changed_input_reruns_the_steps_after_it(models_dir, tmp_path):
    base = {s.name: s.fingerprint for s in build_steps(_recipe(tmp_path, models_dir), ["pool"], ["seeds"])}
    changed = {s.name: s.fingerprint for s in build_steps(
        _recipe(tmp_path, models_dir, **{"generation.judge.batch_rows": 8}), ["pool"], ["seeds"])}
    same = [n for n in STEPS if base[n] == changed[n]]
    # Both judges changed; the complexity evolution and the quality evolution did not.
    assert same == ["evolve_complexity", "evolve_quality"]
    select_only = {s.name: s.fingerprint for s in build_steps(
        _recipe(tmp_path, models_dir, **{"select.budget": 50}), ["pool"], ["seeds"])}
    assert [n for n in STEPS if base[n] != select_only[n]] == ["select", "sft", "dpo"]


def test_released_scorers_skip_the_generation_half(models_dir, tmp_path, tiny_models):
    config = load_config(None, data={
        "output": str(tmp_path / "out"), "inputs": [str(tmp_path)], "models_dir": models_dir,
        "score": {"complexity_model": str(tiny_models["scorer-complexity"]),
                  "quality_model": str(tiny_models["scorer-quality"])}})
    steps = build_steps(config, [str(tmp_path)])
    assert [s.name for s in steps] == ["score", "embed", "select"]


def test_generation_section_is_checked_before_any_work(models_dir, tmp_path):
    from deita_ray.configlib import ConfigError

    with pytest.raises(ConfigError, match="generation.evolve.rounds must be >= 1, got 0"):
        _recipe(tmp_path, models_dir, **{"generation.evolve.rounds": 0})
    with pytest.raises(ConfigError, match="generation.scorer.data comes from the run"):
        _recipe(tmp_path, models_dir, **{"generation.scorer.data": "[x]"})
    with pytest.raises(ConfigError, match="generation.evolve.mode: the modes come from generation.modes"):
        _recipe(tmp_path, models_dir, **{"generation.evolve.mode": "quality"})
