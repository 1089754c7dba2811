"""Duplicate ids are caught at the end of the first stage: the first occurrence kept, the others quarantined
as duplicates, counts reconciled; an integer id 3 and a string id "3" do not silently become one sample."""

import json

import pyarrow.parquet as pq

from conftest import run_step


def test_duplicate_ids_are_quarantined_after_the_first(scorers, tmp_path):
    rows = [{"id": 3, "instruction": "int three", "output": "a"},
            {"id": "x", "instruction": "first x", "output": "a"},
            {"id": "3", "instruction": "string three", "output": "a"},
            {"id": "y", "instruction": "only y", "output": "a"},
            {"id": "x", "instruction": "second x", "output": "a"}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:3]) + "\n")
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows[3:]) + "\n")
    summary = run_step("score", inputs=[str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")],
                       output=str(tmp_path / "out"), batch_rows=1, engine="fake", **scorers)
    assert summary["reconciled"] and summary["rows_in"] == 5
    assert summary["rows_out"] == 3 and summary["rows_quarantined"] == 2
    scored = pq.read_table(str(tmp_path / "out" / "scored")).to_pylist()
    assert sorted((r["id"], r["conversations"][0]["value"]) for r in scored) == [
        ("3", "int three"), ("x", "first x"), ("y", "only y")]
    quarantine = pq.read_table(str(tmp_path / "out" / "quarantine")).to_pylist()
    assert all("duplicate id" in q["reason"] and q["stage"] == "score" for q in quarantine)
    assert sorted(json.loads(q["raw"])["conversations"][0]["value"] for q in quarantine) == ["second x", "string three"]


def _duplicated_pool(path):
    rows = [{"id": "x", "instruction": "first x", "output": "a"}, {"id": "y", "instruction": "only y", "output": "a"},
            {"id": "x", "instruction": "second x", "output": "a"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_duplicates_on_an_object_store_layout(scorers, tmp_path):
    """dedupe rewrites parts through the output's own filesystem (paths inside a bucket are not URLs)."""
    import fsspec

    _duplicated_pool(tmp_path / "a.jsonl")
    out = "memory://dedupe-test/out"
    summary = run_step("score", inputs=[str(tmp_path / "a.jsonl")], output=out, batch_rows=1, engine="fake", **scorers)
    assert summary["reconciled"] and summary["rows_out"] == 2 and summary["rows_quarantined"] == 1
    memory = fsspec.filesystem("memory")
    assert not any("inprogress" in p for p in memory.find("/dedupe-test"))


def test_resume_keeps_the_second_copy_of_a_duplicated_id(tiny_models, tmp_path):
    """A crash after copy 1 of an id was written and before copy 2: resume must still read copy 2
    (rows are skipped by id, source and position), so the stage can quarantine it and reconcile."""
    from deita_ray.io.reader import plan_reads, read_all
    from deita_ray.runner.layout import stage_layout
    from deita_ray.runner.execute import write_part_atomic
    from deita_ray.runner.resume import prepare_output, skip_done

    _duplicated_pool(tmp_path / "a.jsonl")
    good, _ = read_all(plan_reads([str(tmp_path / "a.jsonl")]))
    layout = stage_layout("score", str(tmp_path / "out"))
    write_part_atomic(good.slice(0, 1), layout.parts)  # copy 1 of "x" finished before the crash
    assert prepare_output(layout, overwrite=False, resume=True) == 1
    left = skip_done(good, layout)
    assert [r["conversations"][0]["value"] for r in left.to_pylist()] == ["only y", "second x"]
