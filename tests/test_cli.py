"""The `deita-ray` command line as a user meets it: help that teaches, clear one-line errors, a local scoring run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from deita_ray.cli import main


def test_main_help_teaches_the_workflow(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for needle in ("quickstart", "make-models", "make-pool", "score", "report", "ray job submit", "RAY_AUTH_MODE=token"):
        assert needle in out


def test_score_help_lists_engine_and_ray_options(capsys):
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    out = capsys.readouterr().out
    for needle in ("--complexity-model", "--engine", "--replicas", "--gpus-per-replica", "--aggregation", "quarantine"):
        assert needle in out


def test_wrong_path_is_one_line_error(tmp_path, capsys, tiny_models):
    model = str(tiny_models["scorer-complexity"])
    code = main(["score", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o"),
                 "--complexity-model", model, "--quality-model", model])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "input not found" in err and "missing.jsonl" in err
    assert not (tmp_path / "o").exists()  # nothing started


def test_make_pool_then_local_score(tmp_path, capsys, tiny_models):
    assert main(["make-pool", str(tmp_path / "pool"), "--samples", "60"]) == 0
    manifest = json.loads((tmp_path / "pool" / "_manifest.json").read_text())
    code = main(["score", str(tmp_path / "pool"), "-o", str(tmp_path / "out"), "--local",
                 "--complexity-model", str(tiny_models["scorer-complexity"]),
                 "--quality-model", str(tiny_models["scorer-quality"]), "--aggregation", "mean"])
    out = capsys.readouterr().out
    assert code == 0
    assert "(= scored + quarantined)" in out and f"{manifest['rows']:,}" in out
    summary = json.loads((tmp_path / "out" / "score_summary.json").read_text())
    assert summary["rows_out"] == 60 and summary["rows_quarantined"] == manifest["malformed"]
    assert summary["config"]["aggregation"] == "mean"

    # ... then embed and select from the same run directory, as the README shows.
    out = tmp_path / "out"
    assert main(["embed", str(out / "scored"), "-o", str(out), "--local", "--model", str(tiny_models["embedder"])]) == 0
    assert "(= embedded + quarantined)" in capsys.readouterr().out
    assert main(["select", str(out), "--local", "--budget", "20", "--threshold", "0.99"]) == 0
    printed = capsys.readouterr().out
    assert "selected             20" in printed and "rejections.parquet" in printed
    lines = (out / "selection" / "selected.jsonl").read_text().splitlines()
    assert len(lines) == 20 and json.loads(lines[0])["conversations"]
    assert main(["select", str(out), "--local", "--strategy", "length", "--budget", "5", "-o", str(out / "longest")]) == 0
    assert len((out / "longest" / "selected.jsonl").read_text().splitlines()) == 5


def test_run_local_is_the_run_config_s_ray_local(capsys):
    """`run --local` is `--set ray.local=true` (what a local run does: test_pipeline, test_recipe)."""
    for argv, local in ((["run", "quickstart", "--dry-run"], False), (["run", "quickstart", "--local", "--dry-run"], True)):
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out)["ray"]["local"] is local


def test_console_script_is_installed():
    """The command the README's lines use is installed with the project (scripts/setup.sh) and answers."""
    exe = Path(sys.executable).with_name("deita-ray")
    assert exe.exists(), "deita-ray is not installed as a console script next to this Python"
    result = subprocess.run([str(exe), "make-models", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "tiny" in result.stdout.lower()


def _choices(parser):
    """(flag, choices) of every option of a parser that offers a fixed set of values."""
    return [(action.option_strings[0], action.choices) for action in parser._actions
            if action.option_strings and action.choices and not isinstance(action.choices, dict)]


def _subparser(parser, *words):
    for word in words:
        parser = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices[word]
    return parser


def test_every_value_a_help_offers_is_accepted(tmp_path, capsys, tiny_models):
    """What `--help` offers, the command takes: every choice of every step's options passes the config's own
    checks (a choice that only works with another option's value names it, as the help says)."""
    from deita_ray.cli import build_parser
    from deita_ray.steps import STEPS

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]})
                    + "\n")
    model = str(tiny_models["scorer-quality"])
    base = {"score": ["pool", "-o", "o", "--complexity-model", "c/m", "--quality-model", "q/m"],
            "embed": ["pool", "-o", "o"], "select": ["out"], "evolve": ["seeds", "-o", "o", "--model", "m/m"],
            "judge": ["evolved", "-o", "o", "--model", "m/m"], "labels": ["out"],
            "sft": [str(data), "-o", str(tmp_path / "t"), "--model", model],
            "dpo": [str(data), "-o", str(tmp_path / "t"), "--model", model],
            "scorer": [str(data), "-o", str(tmp_path / "t"), "--model", model],
            "eval": ["m/m", "-o", "o", "--judge-model", "j/j", "--questions", "q"],
            "compare": ["a", "b", "-o", "o", "--judge-model", "j/j"]}
    needs = {("--method", "regex"): ["--engine", "vllm"], ("--method", "teacher-force"): ["--engine", "hf"]}
    parser = build_parser()
    tried = 0
    for name, step in STEPS.items():
        for flag, choices in _choices(_subparser(parser, *step.words)):
            for choice in choices:
                argv = [*step.words, *base[name], flag, str(choice), *needs.get((flag, choice), []), "--dry-run"]
                assert main(argv) == 0, (argv, capsys.readouterr().err)
                tried += 1
    capsys.readouterr()
    assert tried > 40


@pytest.mark.parametrize("argv, message", [
    (["select", "out", "--threshold", "1.5", "--dry-run"], "threshold must be <= 1, got 1.5"),
    (["score", "p", "-o", "o", "--complexity-model", "c/m", "--quality-model", "q/m", "--replicas", "0", "--dry-run"],
     "replicas must be >= 1, got 0"),
    (["evolve", "s", "-o", "o", "--model", "m/m", "--top-p", "2", "--dry-run"], "top_p must be <= 1, got 2"),
    (["judge", "e", "-o", "o", "--model", "m/m", "--engine", "http", "--method", "teacher-force", "--dry-run"],
     "cannot be teacher-forced"),
])
def test_a_bad_option_is_one_line_naming_it(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("deita-ray: error: ") and message in err, err
