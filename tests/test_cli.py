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
    for needle in ("quickstart", "make-models", "make-pool", "score", "ray job submit", "--engine vllm"):
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


def test_console_script_is_installed():
    exe = Path(sys.executable).with_name("deita-ray")
    if not exe.exists():
        pytest.skip("package not installed as a console script in this environment")
    result = subprocess.run([str(exe), "make-models", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "tiny" in result.stdout.lower()
