"""Exact Deita templates, the score math against a hand-computed softmax, and evol-score aggregation."""

import math

import numpy as np
import pytest

from deita_ray import prompts


def test_complexity_template_is_exact():
    # Written out character by character from the Deita scorer: note "query. \n" and the two spaces before "\n##Complexity".
    expected = ("You are a helpful assistant. Please identify the complexity score of the following user query. \n"
                "##Query: Sort a list.  \n##Complexity: ")
    assert prompts.complexity_prompt("Sort a list.") == expected


def test_quality_template_is_exact():
    expected = ("You are a helpful assistant. Please identify the quality score of the Response corresponding to the "
                "Question. \n #Question#:\nSort a list.\n#Response#:\nUse sorted(). \n##Quality: ")
    assert prompts.quality_prompt("Sort a list.", "Use sorted().") == expected


def test_templates_leave_braces_in_text_alone():
    assert "{x}" in prompts.complexity_prompt("print {x}")
    assert "{y}" in prompts.quality_prompt("a", "{y}")


def test_expected_score_matches_hand_computed_softmax():
    logits = [0.5, -1.0, 2.0, 0.0, 1.5, -0.3]
    exps = [math.exp(v) for v in logits]
    hand = sum((i + 1) * e for i, e in enumerate(exps)) / sum(exps)
    scores, reasons = prompts.expected_scores(np.array([logits]))
    assert scores[0] == pytest.approx(hand, abs=1e-12)
    assert reasons == [None]


def test_expected_score_known_values():
    uniform = np.zeros((1, 6))
    proportional = np.log(np.arange(1, 7, dtype=float))[None, :]  # p_i ∝ i  ->  sum i^2 / sum i = 91/21
    peaked = np.array([[0, 0, 0, 0, 0, 100.0]])
    scores, _ = prompts.expected_scores(np.vstack([uniform, proportional, peaked]))
    assert scores[0] == pytest.approx(3.5)
    assert scores[1] == pytest.approx(91 / 21)
    assert scores[2] == pytest.approx(6.0)


def test_large_logits_are_stable_and_bounded():
    scores, _ = prompts.expected_scores(np.array([[1000.0, 999.0, 0, 0, 0, -1000.0]]))
    assert 1.0 <= scores[0] <= 6.0 and np.isfinite(scores[0])


def test_non_finite_logits_give_no_score_and_a_reason():
    scores, reasons = prompts.expected_scores(np.array([[0, 0, np.nan, 0, 0, 0], [0, 0, 0, 0, 0, 0],
                                                        [np.inf, 0, 0, 0, 0, 0]]))
    assert np.isnan(scores[0]) and np.isnan(scores[2])
    assert scores[1] == pytest.approx(3.5)  # never 3.0 invented for the bad rows
    assert reasons[0] == reasons[2] == "non-finite digit logits" and reasons[1] is None


def test_expected_scores_rejects_wrong_shape():
    with pytest.raises(ValueError):
        prompts.expected_scores(np.zeros((2, 5)))


def test_evol_score_aggregations():
    c, q = [2.0, 3.0, 4.0], [5.0, 1.0, 2.0]
    assert prompts.aggregate_evol_score(c, q, "sum") == pytest.approx(10 + 3 + 8)
    assert prompts.aggregate_evol_score(c, q, "mean") == pytest.approx(21 / 3)
    assert prompts.aggregate_evol_score(c, q, "last") == pytest.approx(8)


def test_evol_score_missing_turn_gives_none():
    assert prompts.aggregate_evol_score([2.0, None], [1.0, 2.0]) is None
    assert prompts.aggregate_evol_score([2.0, float("nan")], [1.0, 2.0]) is None
    assert prompts.aggregate_evol_score([], []) is None
    with pytest.raises(ValueError):
        prompts.aggregate_evol_score([1.0], [1.0], "median")
