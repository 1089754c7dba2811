"""`deita-ray run` configs: shipped configs load, presets apply, and every mistake is a clear error naming its key."""

import pytest

from deita_ray.config import ConfigError, load_config


def test_shipped_configs_load():
    quick = load_config("quickstart")
    assert quick.select.budget == 1000 and quick.score.complexity_model == "tiny:scorer-complexity"
    for name, budget in (("deita-6k", 6000), ("deita-10k", 10000)):
        config = load_config(name)
        assert config.select.budget == budget and config.select.threshold == 0.9
        assert config.select.strategy == "diverse" and config.score.aggregation == "sum"
        assert config.score.engine == "vllm"


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
    ("score.engine=sentence-transformers", "for scoring"),
])
def test_every_option_is_range_checked_at_load(override, message):
    """Checked when the config loads, before any stage runs (scoring would otherwise run first)."""
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config("quickstart", [override])


def test_one_default_per_option_for_cli_and_run_config():
    """`deita-ray score/embed/select` flags and the run config's sections come from one declaration."""
    from deita_ray.cli import build_parser
    from deita_ray.configlib import build, given
    from deita_ray.embed_job import EmbedSection
    from deita_ray.score_job import ScoreSection
    from deita_ray.select_job import SelectOptions

    parser = build_parser()
    args = parser.parse_args(["score", "pool", "-o", "out", "--complexity-model", "c", "--quality-model", "q"])
    from_cli = build(ScoreSection, given(args, ScoreSection))
    run = load_config(None, data={"output": "o", "inputs": ["p"]})
    for name in ("enforce_eager", "cpus_per_replica", "replicas", "batch_rows", "engine", "dtype", "batch_size"):
        assert getattr(from_cli, name) == getattr(run.score, name), name
    args = parser.parse_args(["embed", "pool", "-o", "out"])
    assert build(EmbedSection, given(args, EmbedSection)) == run.embed
    args = parser.parse_args(["select", "out"])
    assert build(SelectOptions, given(args, SelectOptions)) == run.select
    with pytest.raises(SystemExit):
        parser.parse_args(["select", "out", "--threshold", "x"])


def test_paper_presets_embed_at_most_2048_tokens():
    for name in ("deita-6k", "deita-10k"):
        assert load_config(name).embed.max_length == 2048


def test_exponent_floats_read_as_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("output: o\ninputs: [p]\nselect: {threshold: 9e-1}\n")
    assert load_config(str(path)).select.threshold == 0.9
    assert load_config("quickstart", ["select.threshold=8.5e-1"]).select.threshold == 0.85


def test_shipped_recipes_load():
    gpu = load_config("deita-recipe")
    assert gpu.generation.modes == ["complexity", "quality"] and gpu.generation.evolve["tensor_parallel_size"] == 4
    assert gpu.generation.judge["engine"] == "vllm" and gpu.generation.scorer["deepspeed"] == "zero2"
    assert gpu.generation.scorer["epochs"] == 6 and gpu.generation.scorer["global_batch_size"] == 512
    assert gpu.select.budget == 6000 and gpu.sft["preset"] == "deita-mistral-7b-sft"
    cpu = load_config("recipe-quickstart")
    assert cpu.generation.evolve["model"] == "tiny:generator" and cpu.sample_seeds.dir and cpu.sample_preferences.dir
