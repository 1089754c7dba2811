"""The stages' one failure policy (stages/failures.py): by type, per row, and a bug is never a quarantined row."""

import pytest

from deita_ray.engines.config import EngineUnusableError
from deita_ray.io.quarantine import PERMANENT, TRANSIENT
from deita_ray.stages.failures import classify, each_or_one


def test_classified_by_type():
    torch = pytest.importorskip("torch")
    assert classify(TimeoutError("slow"))[1] == classify(ConnectionError("gone"))[1] == TRANSIENT
    assert classify(MemoryError())[1] == classify(torch.OutOfMemoryError("CUDA out of memory"))[1] == TRANSIENT
    assert classify(RuntimeError("rejected"))[1] == classify(ValueError("bad input"))[1] == PERMANENT
    assert classify(RuntimeError("Timeout in the name is not a timeout"))[1] == PERMANENT  # type, not text
    assert classify(ValueError("x"))[0] == "engine error: ValueError: x"
    for fatal in (EngineUnusableError("HTTP 401"), TypeError("bug"), AttributeError("bug"), AssertionError()):
        with pytest.raises(type(fatal)):
            classify(fatal)


def test_a_failing_batch_is_retried_one_row_at_a_time():
    calls = []

    def run(rows):
        calls.append(list(rows))
        if "bad" in rows:
            raise ValueError("bad row")
        return [r.upper() for r in rows]

    out = each_or_one(run, ["a", "bad", "c"])
    assert out[0] == "A" and out[2] == "C" and isinstance(out[1], ValueError)
    assert calls == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]
    assert each_or_one(run, ["a", "b"]) == ["A", "B"] and isinstance(each_or_one(run, ["bad"])[0], ValueError)


def test_a_bug_in_our_code_crashes_the_stage_instead_of_quarantining_rows(tiny_models):
    import pyarrow as pa

    from deita_ray.engines.config import LLMConfig
    from deita_ray.stages.score import ScoreStage

    class Buggy:  # an engine whose code has a bug: a TypeError on every call
        context_length = 1024
        name = "buggy"

        def token_logits(self, prompts, token_ids):
            return len(None)

    stage = ScoreStage("complexity", LLMConfig(model=str(tiny_models["scorer-complexity"]), engine="hf"),
                       engine=Buggy())
    table = pa.table({"id": ["a"], "conversations": [[{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]]})
    with pytest.raises(TypeError):
        stage(table)
