"""The scoring stage on the real transformers engine (tiny model): equality with the reference
scorer, per-turn columns, evol score, truncation and failure paths."""

import numpy as np
import pyarrow as pa
import pytest

from deita_ray.engines.base import LLMConfig, digit_token_ids, load_tokenizer
from deita_ray.io.reader import plan_reads, read_all
from deita_ray.prompts import complexity_prompt, quality_prompt
from deita_ray.reference import ReferenceScorer
from deita_ray.stages.score import ScoreStage, TurnScorer, finalize_scores, score_table
from deita_ray.prompts.truncate import CUT_MARK, water_fill


@pytest.fixture(scope="module")
def pool(pool_dir):
    good, _ = read_all(plan_reads([str(pool_dir)]))
    return good


@pytest.fixture(scope="module")
def stages(hf_configs):
    built = {kind: ScoreStage(kind, cfg) for kind, cfg in hf_configs.items()}
    for stage in built.values():
        stage.setup()  # loads the engine (a stage's constructor is cheap)
    return built


def test_digit_ids_come_from_the_scorers_tokenizer(tiny_models):
    tok = load_tokenizer(str(tiny_models["scorer-quality"]))
    ids = digit_token_ids(tok)
    assert [tok.decode([i]) for i in ids] == ["1", "2", "3", "4", "5", "6"]
    assert 29896 not in ids  # not LLaMA's hard-coded id


def test_digit_ids_error_when_digits_are_not_single_tokens():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "123": 2}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]")
    with pytest.raises(ValueError, match="single token"):
        digit_token_ids(tok)


def test_batched_scores_equal_the_reference_scorer(stages, tiny_models, pool):
    pairs = [p for conv in pool.column("conversations").to_pylist()[:12]
             for p in [(t["value"]) for t in conv if t["from"] != "system"]]
    instructions, outputs = pairs[0::2], pairs[1::2]
    ours, _, _, reasons = stages["quality"].scorer.score_pairs(list(zip(instructions, outputs)))
    ref = ReferenceScorer(str(tiny_models["scorer-quality"]))
    expected = [ref.score(quality_prompt(q, a)) for q, a in zip(instructions, outputs)]
    assert reasons == [None] * len(expected)
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    assert np.ptp(ours) > 1e-3  # the random scorer does tell prompts apart, so equality means something

    ours_c, *_ = stages["complexity"].scorer.score_pairs([(q, "") for q in instructions[:5]])
    ref_c = ReferenceScorer(str(tiny_models["scorer-complexity"]))
    np.testing.assert_allclose(ours_c, [ref_c.score(complexity_prompt(q)) for q in instructions[:5]], atol=1e-5)


def test_stage_columns_per_turn_and_evol_score(stages, pool):
    batch = pool.slice(0, 40)
    out = score_table(batch, stages["complexity"], stages["quality"])
    assert out.column_names[:len(batch.column_names)] == batch.column_names  # columns appended, rows kept
    assert out.column("id").to_pylist() == batch.column("id").to_pylist()
    for row in out.to_pylist():
        assert len(row["complexity_scores"]) == len(row["quality_scores"]) == row["num_turns"]
        assert all(1.0 <= s <= 6.0 for s in row["complexity_scores"] + row["quality_scores"])
        expected = sum(c * q for c, q in zip(row["complexity_scores"], row["quality_scores"]))
        assert row["evol_score"] == pytest.approx(expected)
        assert row["truncated"] is False and row["score_reason"] is None
    multi = [r for r in out.to_pylist() if r["num_turns"] > 1]
    assert multi, "the sample pool must contain multi-turn conversations"
    # Turns are scored alone, without history: the second turn's score equals scoring that pair by itself.
    row = multi[0]
    pairs = [(t["value"]) for t in row["conversations"] if t["from"] != "system"]
    alone, *_ = stages["quality"].scorer.score_pairs([(pairs[2], pairs[3])])
    assert row["quality_scores"][1] == pytest.approx(alone[0], abs=1e-6)


def test_mean_and_last_aggregation(stages, pool):
    scored = stages["quality"](stages["complexity"](pool.slice(0, 30)))
    rows_mean = finalize_scores(scored, "mean").to_pylist()
    rows_last = finalize_scores(scored, "last").to_pylist()
    for m, l in zip(rows_mean, rows_last):
        products = [c * q for c, q in zip(m["complexity_scores"], m["quality_scores"])]
        assert m["evol_score"] == pytest.approx(np.mean(products))
        assert l["evol_score"] == pytest.approx(products[-1])


def test_long_prompts_are_truncated_explicitly_and_flagged(hf_configs, tiny_models):
    from dataclasses import replace

    scorer = TurnScorer("quality", replace(hf_configs["quality"], max_length=64))
    long_q = "START " + "binary search " * 200 + " END"
    ids, truncated = scorer.prompt_ids(long_q, "short answer")
    assert truncated and len(ids) <= 63
    text = scorer.tokenizer.decode(ids, skip_special_tokens=True)
    assert text.startswith("You are a helpful assistant.") and text.endswith("\n##Quality: ")  # template kept whole
    assert "START" in text and "END" in text and CUT_MARK.strip() in text  # middle of the field cut, marked
    assert "short answer" in text  # the short field is left alone
    ids, truncated = scorer.prompt_ids("short", "ok")
    assert not truncated
    scores, flags, _, reasons = scorer.score_pairs([(long_q, "short answer"), ("short", "ok")])
    assert flags == [True, False] and reasons == [None, None] and all(1 <= s <= 6 for s in scores)


def test_truncation_with_template_longer_than_context(hf_configs):
    from dataclasses import replace

    scorer = TurnScorer("quality", replace(hf_configs["quality"], max_length=20))
    ids, truncated = scorer.prompt_ids("a question " * 30, "an answer " * 30)
    assert truncated and len(ids) <= 19


def test_water_fill_cuts_longest_first():
    assert water_fill([10, 100], 60) == [10, 50]
    assert water_fill([80, 100], 100) == [50, 50]
    assert water_fill([5, 5], 100) == [5, 5]


def test_engine_failure_gives_null_score_and_reason(tiny_models):
    tok = load_tokenizer(str(tiny_models["scorer-complexity"]))
    poison = tok.encode("zebra", add_special_tokens=False)[0]
    cfg = LLMConfig(model=str(tiny_models["scorer-complexity"]), engine="fake", engine_kwargs={"fail_on_token": poison})
    stage = ScoreStage("complexity", cfg)
    table = pa.Table.from_pylist([
        {"id": "ok", "conversations": [{"from": "human", "value": "fine"}, {"from": "gpt", "value": "x"}], "num_turns": 1},
        {"id": "bad", "conversations": [{"from": "human", "value": "fine"}, {"from": "gpt", "value": "x"},
                                        {"from": "human", "value": "zebra"}, {"from": "gpt", "value": "y"}], "num_turns": 2},
    ])
    out = stage(table).to_pylist()
    assert out[0]["complexity_scores"][0] is not None and out[0]["complexity_reason"] is None
    assert out[1]["complexity_scores"][0] is not None and out[1]["complexity_scores"][1] is None
    assert "turn 1: engine error: RuntimeError" in out[1]["complexity_reason"]
    q = ScoreStage("quality", LLMConfig(model=str(tiny_models["scorer-quality"]), engine="fake"))
    final = finalize_scores(q(stage(table))).to_pylist()
    assert final[0]["evol_score"] is not None
    assert final[1]["evol_score"] is None and "engine error" in final[1]["score_reason"]  # no invented 3.0


def test_repeated_prompts_are_scored_once_with_the_same_result(stages):
    scorer = stages["complexity"].scorer
    calls = []
    real = scorer.engine.token_logits

    def counting(prompts, ids):
        calls.append(len(prompts))
        return real(prompts, ids)

    scorer.engine.token_logits = counting
    try:
        pairs = [("Why is that?", "a"), ("What is recursion?", "b"), ("Why is that?", "c")]
        scores, _, tokens, _ = scorer.score_pairs(pairs)
    finally:
        scorer.engine.token_logits = real
    assert calls == [2] and scores[0] == scores[2] and len(tokens) == 3
    alone, *_ = scorer.score_pairs([("What is recursion?", "")])
    assert scores[1] == pytest.approx(alone[0], abs=1e-6)
