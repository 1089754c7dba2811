"""The generation commands against a scripted OpenAI-compatible server on 127.0.0.1 (started here, stopped by its
pid), as a user runs them: a refused key stops the command and blames no row, a dead server ends non-zero, no
server behaviour outlasts the configured timeouts, and an interrupted judge is never labelled as whole."""

import json
import time

import pyarrow.parquet as pq
import pytest

from deita_ray.cli import main
from servers import stub_server

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def api():
    with stub_server() as base:
        yield base


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    path = tmp_path_factory.mktemp("seeds") / "seeds.jsonl"
    path.write_text("".join(json.dumps({"id": f"s{i}", "instruction": f"Describe lake number {i}.",
                                        "output": "It is wet."}) + "\n" for i in range(24)))
    return path


def _error(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("deita-ray: error:")]
    assert len(lines) == 1, lines
    return lines[0]


def _evolve(seeds, out, api, model, *extra):
    return main(["evolve", str(seeds), "-o", str(out), "--engine", "http", "--api-base", api, "--model", model,
                 "--rounds", "2", "--batch-rows", "4", *extra])


def test_a_refused_key_stops_the_command_and_blames_no_row(ray_session, api, seeds, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DEITA_TEST_KEY", raising=False)
    started = time.time()
    assert _evolve(seeds, tmp_path, api, "auth", "--api-key-env", "DEITA_TEST_KEY") == 2  # on Ray
    line = _error(capsys)
    assert "EngineUnusableError" in line and "HTTP 401 (authentication failed: $DEITA_TEST_KEY is not set)" in line
    assert time.time() - started < 60
    quarantine = tmp_path / "evolve_quarantine"
    assert not quarantine.exists() or not [p for p in quarantine.glob("*.parquet") if "permanent" in p.name]
    # The fix, then --resume does every seed (in this process: the shared Ray's workers keep the environment
    # they started with, where a user's new command starts a Ray of its own).
    monkeypatch.setenv("DEITA_TEST_KEY", "secret")
    assert _evolve(seeds, tmp_path, api, "auth", "--api-key-env", "DEITA_TEST_KEY", "--resume", "--local") == 0
    summary = json.loads((tmp_path / "evolve_summary.json").read_text())
    assert summary["rows_out"] == 24 and summary["rows_quarantined"] == 0 and summary["totals"]["variants_generated"] == 48


def test_a_server_that_refuses_every_connection_ends_non_zero(api, seeds, tmp_path, capsys):
    from servers import free_port

    assert _evolve(seeds, tmp_path, f"http://127.0.0.1:{free_port()}/v1", "ok", "--local", "--max-retries", "1") == 1
    assert "evolve: not one of 24 rows succeeded; top reason (24 rows): engine error: ConnectionError" in _error(capsys)
    summary = json.loads((tmp_path / "evolve_summary.json").read_text())
    assert summary["quarantine_classes"] == {"transient": 24}  # retried by --resume once the server is back


@pytest.mark.parametrize("model", ["drip", "day"])
def test_no_server_behaviour_outlasts_the_request_timeout(api, seeds, tmp_path, capsys, model):
    started = time.time()
    assert _evolve(seeds, tmp_path, api, model, "--local", "--request-timeout", "2") == 1
    assert time.time() - started < 30  # 24 seeds, all in flight at once: about one request_timeout
    assert "transient" in json.dumps(json.loads((tmp_path / "evolve_summary.json").read_text())["quarantine_classes"])
    _error(capsys)


def test_an_interrupted_judge_is_refused_by_labels_then_resumed(api, seeds, tmp_path, capsys):
    from processes import run_and_kill

    out = tmp_path / "out"
    assert _evolve(seeds, out, api, "rewriter", "--local") == 0
    judge = ["judge", str(out / "evolved"), "-o", str(out), "--engine", "http", "--api-base", api,
             "--model", "judge-keyword-slow", "--batch-rows", "2", "--local"]
    run_and_kill(judge, ready=lambda: len(list((out / "judged").glob("part-*.parquet"))) >= 2, seconds=120)
    judged = len(pq.read_table(out / "judged"))
    assert 0 < judged < 24
    capsys.readouterr()
    assert main(["labels", str(out)]) == 2  # not "14 of 24 chains ... (= labels of every valid chain)"
    line = _error(capsys)
    assert "judged is incomplete" in line and "judge run that wrote it did not finish" in line
    assert f"({judged:,} rows in" in line and not (out / "labels").exists()
    assert main(["labels", str(out), "--allow-partial", "--no-report"]) == 0  # on purpose, and it says so
    assert "!! PARTIAL" in capsys.readouterr().out
    assert json.loads((out / "labels_summary.json").read_text())["partial_inputs"] == [str(out / "judged")]
    assert main(judge + ["--resume"]) == 0
    assert main(["labels", str(out), "--overwrite", "--no-report"]) == 0
    labels = json.loads((out / "labels_summary.json").read_text())
    assert labels["chains_in"] == 24 and labels["labels_out"] == 24 * 3 and labels["partial_inputs"] == []
