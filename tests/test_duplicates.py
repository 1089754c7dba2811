"""Duplicate ids are caught at the end of the first stage: the first occurrence kept, the others quarantined
as duplicates, counts reconciled; an integer id 3 and a string id "3" do not silently become one sample."""

import json

import pyarrow.parquet as pq

from deita_ray.engines.base import EngineConfig
from deita_ray.score_job import ScoreJobConfig, score_local


def test_duplicate_ids_are_quarantined_after_the_first(tiny_models, tmp_path):
    rows = [{"id": 3, "instruction": "int three", "output": "a"},
            {"id": "x", "instruction": "first x", "output": "a"},
            {"id": "3", "instruction": "string three", "output": "a"},
            {"id": "y", "instruction": "only y", "output": "a"},
            {"id": "x", "instruction": "second x", "output": "a"}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:3]) + "\n")
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows[3:]) + "\n")
    fake = {k: EngineConfig(model=str(tiny_models[f"scorer-{k}"]), engine="fake") for k in ("complexity", "quality")}
    summary = score_local(ScoreJobConfig(inputs=[str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")],
                                         output=str(tmp_path / "out"), batch_rows=1, **fake))
    assert summary["reconciled"] and summary["rows_in"] == 5
    assert summary["rows_out"] == 3 and summary["rows_quarantined"] == 2
    scored = pq.read_table(str(tmp_path / "out" / "scored")).to_pylist()
    assert sorted((r["id"], r["conversations"][0]["value"]) for r in scored) == [
        ("3", "int three"), ("x", "first x"), ("y", "only y")]
    quarantine = pq.read_table(str(tmp_path / "out" / "quarantine")).to_pylist()
    assert all("duplicate id" in q["reason"] and q["stage"] == "score" for q in quarantine)
    assert sorted(json.loads(q["raw"])["conversations"][0]["value"] for q in quarantine) == ["second x", "string three"]
