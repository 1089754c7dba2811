"""Real public pools from ../shared/data (skipped in a fresh clone): they read, reconcile and score."""

import json

import pytest

from deita_ray.io.reader import plan_reads, read_all
from deita_ray.stages.score import ScoreStage, score_table

FILES = {"lima.json": "alpaca", "alpaca_en_demo.json": "alpaca", "sharegpt_dummy_conversation.json": "sharegpt"}


@pytest.mark.parametrize("name", sorted(FILES))
def test_real_pools_read_and_reconcile(shared_data, name):
    rows = len(json.loads((shared_data / name).read_text()))
    good, bad = read_all(plan_reads([str(shared_data / name)]))
    assert good.num_rows + bad.num_rows == rows
    assert good.num_rows > 0.9 * rows
    assert set(good.column("source_format").to_pylist()) == {FILES[name]}
    for reason in bad.column("reason").to_pylist():
        assert reason  # every quarantined row says why


def test_real_text_scores_with_truncation(shared_data, hf_configs):
    good, _ = read_all(plan_reads([str(shared_data / "lima.json")]))
    # LIMA answers are long: on the tiny scorers' 512-token context some must be truncated, and say so.
    lengths = [sum(len(t["value"]) for t in conv) for conv in good.column("conversations").to_pylist()]
    longest = sorted(range(len(lengths)), key=lengths.__getitem__)[-8:]
    batch = good.take(longest + list(range(8)))
    out = score_table(batch, ScoreStage("complexity", hf_configs["complexity"]), ScoreStage("quality", hf_configs["quality"]))
    rows = out.to_pylist()
    assert sum(r["truncated"] for r in rows) >= 1
    assert all(r["evol_score"] is not None and r["score_reason"] is None for r in rows)
