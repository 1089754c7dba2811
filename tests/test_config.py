"""`deita-ray run` configs: shipped configs load, presets apply, and every mistake is a clear error naming its key."""

import pytest

from deita_ray.recipe.config import ConfigError, load_config


def test_every_shipped_config_loads_typed():
    """Every config in deita_ray/configs loads; its sections are the steps' own config classes."""
    from deita_ray.recipe.config import CONFIG_DIR
    from deita_ray.steps import STEPS

    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert names
    for name in names:
        config = load_config(name)
        for section in ("score", "embed", "select"):
            assert isinstance(getattr(config, section), STEPS[section].config), (name, section)
        assert config.score.output == config.output and config.select.output.startswith(config.output)


def test_overrides_are_typed():
    config = load_config("quickstart", ["select.budget=250", "score.replicas=3", "select.threshold=0.85",
                                        "embed.engine=hf", "inputs=[a.jsonl, b.parquet]"])
    assert config.select.budget == 250 and config.score.replicas == 3 and config.select.threshold == 0.85
    assert config.embed.engine == "hf" and config.inputs == ["a.jsonl", "b.parquet"]


def test_preset_first_then_file_keys_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("preset: deita-10k\noutput: out\ninputs: [pool/]\nselect: {budget: 123}\n")
    config = load_config(str(path))
    assert config.select.budget == 123 and config.select.threshold == 0.9


@pytest.mark.parametrize("yaml_text, message", [
    ("output: o\ninputs: [p]\nscroe: {}\n", "unknown key 'scroe'"),
    ("output: o\ninputs: [p]\nselect: {budgte: 5}\n", "unknown key 'budgte' in select"),
    ("output: o\ninputs: [p]\nselect: {budget: lots}\n", "select.budget must be int"),
    ("output: o\ninputs: [p]\nselect: {threshold: true}\n", "select.threshold must be float"),
    ("output: o\ninputs: p.jsonl\n", "inputs must be a list"),
    ("inputs: [p]\n", "output"),
    ("output: o\n", "inputs: give at least one pool path"),
    ("output: o\ninputs: [p]\nscore: {complexity_model: ./no/such/model}\n", "score.complexity_model: model path does not exist"),
    ("output: o\ninputs: [p]\nscore: {quality_model: tiny:nope}\n", "unknown tiny model"),
    ("output: o\ninputs: [p]\nscore: {engine: tensorrt}\n", "engine must be one of"),
    ("output: o\ninputs: [p]\nselect: {strategy: best}\n", "strategy must be one of"),
    ("output: o\ninputs: [p]\npreset: deita-7k\n", "preset must be one of"),
    ("- a\n- b\n", "top level must be a mapping"),
])
def test_config_errors_name_the_key(tmp_path, yaml_text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config(str(path))


def test_hub_ids_are_not_checked_offline_but_local_paths_are(tmp_path):
    ok = load_config(None, data={"output": "o", "inputs": ["p"], "score": {"complexity_model": "hkust-nlp/deita-complexity-scorer"}})
    assert ok.score.complexity_model == "hkust-nlp/deita-complexity-scorer"
    with pytest.raises(ConfigError, match="config not found"):
        load_config(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config("quickstart", ["budget"])


@pytest.mark.parametrize("override, message", [
    ("select.threshold=1.5", "select.threshold must be <= 1, got 1.5"),
    ("select.threshold=-2", "select.threshold must be >= -1"),
    ("select.budget=0", "select.budget must be >= 1"),
    ("embed.replicas=-1", "embed.replicas must be >= 1, got -1"),
    ("embed.cpus_per_replica=-1", "embed.cpus_per_replica must be > 0"),
    ("score.gpus_per_replica=-0.5", "score.gpus_per_replica must be >= 0"),
    ("score.gpu_memory_utilization=1.5", "score.gpu_memory_utilization must be <= 1"),
    ("score.max_length=4", "score.max_length must be >= 16"),
    ("sample_pool.samples=0", "sample_pool.samples must be >= 1"),
    ("score.engine=sentence-transformers", "score.engine must be one of"),
])
def test_every_option_is_range_checked_at_load(override, message):
    """Checked when the config loads, before any stage runs (scoring would otherwise run first)."""
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config("quickstart", [override])


def test_a_flag_and_a_section_key_set_the_same_option(capsys):
    """`deita-ray score --replicas 3` and `score: {replicas: 3}` give the same step config (one declaration)."""
    import json

    from deita_ray.cli import main

    assert main(["score", "pool", "-o", "out", "--complexity-model", "c/m", "--quality-model", "q/m", "--replicas", "3",
                 "--engine", "fake", "--dry-run"]) == 0
    from_cli = json.loads(capsys.readouterr().out)
    run = load_config(None, data={"output": "out", "inputs": ["pool"], "score": {
        "complexity_model": "c/m", "quality_model": "q/m", "replicas": 3, "engine": "fake"}})
    from deita_ray.steps.base import snapshot

    from_run = snapshot(run.score)
    assert {k: v for k, v in from_cli.items() if k != "overwrite"} == {k: v for k, v in from_run.items()
                                                                       if k != "overwrite"}
    with pytest.raises(SystemExit):
        main(["select", "out", "--threshold", "x"])


def test_the_paper_presets_apply_under_the_file():
    """preset: deita-6k sets the paper's selection (tau 0.9, 6,000, sum over turns, 2,048 embedded tokens) where
    the file says nothing, and the file's keys win where it does."""
    plain = load_config(None, data={"output": "o", "inputs": ["p"], "embed": {"max_length": 512},
                                    "select": {"budget": 10}})
    preset = load_config(None, data={"output": "o", "inputs": ["p"], "preset": "deita-6k", "embed": {"max_length": 512}})
    assert (preset.select.budget, preset.select.threshold, preset.score.aggregation) == (6000, 0.9, "sum")
    assert preset.embed.max_length == 512 == plain.embed.max_length  # the file's key wins over the preset's 2048
    assert load_config(None, data={"output": "o", "inputs": ["p"], "preset": "deita-10k"}).embed.max_length == 2048


def test_exponent_floats_read_as_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("output: o\ninputs: [p]\nselect: {threshold: 9e-1}\n")
    assert load_config(str(path)).select.threshold == 0.9
    assert load_config("quickstart", ["select.threshold=8.5e-1"]).select.threshold == 0.85


def test_the_recipe_sections_are_the_steps_configs_with_the_run_paths():
    """sft trains on the selection, DPO starts from the SFT model, a preset resolves under the section's keys."""
    from deita_ray.steps.evolve import EvolveConfig
    from deita_ray.train.config import TrainConfig

    config = load_config(None, data={
        "output": "o", "inputs": ["p"], "sft": {"model": "org/base", "preset": "deita-mistral-7b-sft", "epochs": 2},
        "dpo": {"data": ["pairs/"], "preset": "deita-mistral-7b-dpo"},
        "generation": {"seeds": ["s"], "evolve": {"model": "org/gen", "rounds": 2}, "judge": {"model": "org/judge"},
                       "scorer": {"model": "org/base"}}})
    assert isinstance(config.generation.evolve, EvolveConfig) and config.generation.evolve.rounds == 2
    assert isinstance(config.sft, TrainConfig) and config.sft.data == ["o/selection/selected.jsonl"]
    assert (config.sft.epochs, config.sft.learning_rate, config.sft.global_batch_size) == (2, 2e-5, 512)
    assert config.dpo.model == "o/sft/model" and config.dpo.output == "o/dpo" and config.dpo.learning_rate == 5e-7
    assert config.generation.scorer.task == "scorer" and config.generation.scorer.epochs == 6  # train_scorers.sh
    for bad, message in ((("sft", "data"), "sft.data comes from the run"), (("dpo", "output"), "dpo.output comes from "
                                                                                                "the run")):
        with pytest.raises(ConfigError, match=message):
            load_config(None, data={"output": "o", "inputs": ["p"], bad[0]: {"model": "org/m", "data": ["x"],
                                                                              bad[1]: ["x"] if bad[1] == "data" else "x"}})
