"""The generation half's pure parts (issue 10, first piece): prompt templates byte for byte against the notes,
reproducible operations, WizardLM's elimination rules, the tolerant judgement parser on adversarial texts,
and labels with lineage that `deita-ray train scorer` reads."""

import re
from collections import Counter
from pathlib import Path

import pytest

from deita_ray.prompts import complexity_prompt, evol, judge, quality_prompt

NOTES = Path(__file__).resolve().parents[1].parent / "shared" / "notes" / "evol-judge.md"


@pytest.fixture(scope="module")
def note_blocks():
    if not NOTES.exists():
        pytest.skip("../shared/notes is absent (a fresh clone has no shared/)")
    return re.findall(r"```\n(.*?)```", NOTES.read_text(), re.S)


def test_rewrite_templates_are_the_notes_byte_for_byte(note_blocks):
    assert evol.COMPLEXITY_TEMPLATE == note_blocks[0]
    assert evol.QUALITY_TEMPLATE == note_blocks[1]
    text = NOTES.read_text()
    for mode in evol.MODES:
        for line in evol.OPERATIONS[mode].values():
            assert f"`{line}`" in text, line


def test_judge_templates_are_the_notes_byte_for_byte(note_blocks):
    complexity, quality = note_blocks[2], note_blocks[3]
    head, items = complexity.split("[1] {instruction 1}\n")
    assert judge.COMPLEXITY_HEAD == head and items == "[2] {instruction 2}\n...\n"
    head, items = quality.split("#Question#: {instruction}\n")
    assert judge.QUALITY_HEAD == head
    assert items == "#Response List#:\n[Response 1] {response 1}\n[Response 2] {response 2}\n...\n"
    assert judge.judge_prompt("complexity", ["a", "b"]) == judge.COMPLEXITY_HEAD + "[1] a\n[2] b\n"
    assert judge.judge_prompt("quality", ["x", "y"], "Q?") == \
        judge.QUALITY_HEAD + "#Question#: Q?\n#Response List#:\n[Response 1] x\n[Response 2] y\n"


def test_filled_rewrite_prompts():
    p = evol.rewrite_prompt("complexity", "deepen", "Name a river.")
    assert p.endswith("#Given Prompt#:\nName a river.\n#Rewritten Prompt#:\n") and evol.OPERATIONS["complexity"]["deepen"] in p
    q = evol.rewrite_prompt("quality", "depth", "Name a river.", "The Nile.")
    assert q.endswith("#Given Prompt#:\nName a river.\n#Given Response#:\nThe Nile.\n#Rewritten Response#:\n")
    with pytest.raises(ValueError):
        evol.rewrite_prompt("quality", "depth", "Name a river.")


def test_operations_are_reproducible_and_spread():
    ops = [evol.operation(f"seed-{i}", r, "complexity") for i in range(200) for r in range(1, 6)]
    assert ops == [evol.operation(f"seed-{i}", r, "complexity") for i in range(200) for r in range(1, 6)]
    counts = Counter(ops)
    assert set(counts) == set(evol.OPERATIONS["complexity"]) and min(counts.values()) > 150  # ~250 each
    assert set(evol.operation("s", r, "quality") for r in range(40)) == set(evol.OPERATIONS["quality"])


@pytest.mark.parametrize("mode, text, finish, reason", [
    ("complexity", "Explain photosynthesis in three steps, citing one equation.", "stop", None),
    ("complexity", "", "stop", "empty"),
    ("complexity", "   \n ", "stop", "empty"),
    ("complexity", "Sorry, I cannot rewrite that.", "stop", "an apology"),
    ("complexity", "Sorry " + "word " * 90, "stop", None),  # a long text that happens to say sorry is kept
    ("complexity", "... !!! ?", "stop", "only punctuation and stop words"),
    ("complexity", "it is what it is", "stop", "only punctuation and stop words"),
    ("complexity", "#Rewritten Prompt#: Name two rivers.", "stop", "copies the rewriting prompt"),
    ("complexity", "Rewrite the given prompt so that it asks for two rivers.", "stop", "copies the rewriting prompt"),
    ("quality", "The Given Response is improved: the Nile.", "stop", "copies the rewriting prompt"),
    ("quality", "The Nile, about 6,650 km long, flows north.", "length", "cut by the token limit"),
])
def test_elimination_rules(mode, text, finish, reason):
    got = evol.elimination_reason(mode, text, finish)
    assert (got is None) if reason is None else (got is not None and got.startswith(reason)), got


def test_extract_rewrite():
    assert evol.extract_rewrite("complexity", "Sure!\n#Rewritten Prompt#:\n  Name two rivers. ") == "Name two rivers."
    assert evol.extract_rewrite("quality", " The Nile. ") == "The Nile."


@pytest.mark.parametrize("text, expected", [
    ("[1] Score: 2\n[2] Score: 3\n[3] Score: 6", [2, 3, 6]),
    ("Here is my ranking of the questions:\n\n[1] Score: 2\n[2] Score: 3\n[3] Score: 6\nThanks!", [2, 3, 6]),
    ("[3] Score: 6\n[1] Score: 2\n[2] Score: 3", [2, 3, 6]),                               # out of order
    ("[1] Score: 2 (simple)\n[2] score : 3, a bit harder\n[3] **Score:** 6", [2, 3, 6]),  # prose, case, markdown
    ("Question 1 is easy. [1] Score: 2. Then 5 more words. [2] Score: 3 and [3] Score: 6", [2, 3, 6]),
    ("[1] Score: 2\n[2] Score: 3\n[2] Score: 3\n[3] Score: 6", [2, 3, 6]),               # repeated, same value
])
def test_valid_judgements_parse_by_index(text, expected):
    assert judge.parse_judgement("complexity", text, 3) == (expected, None)


@pytest.mark.parametrize("text, reason", [
    ("I think they are all fine.", "no '[i] Score: d' entries"),
    ("[1] Score: 2\n[3] Score: 6", "no score for variant [2]"),
    ("[1] Score: 2\n[2] Score: 3\n[3] Score: 6\n[4] Score: 1", "scores for variants [4] but there are 3"),
    ("[1] Score: 0\n[2] Score: 3\n[3] Score: 6", "variant 1: 0 is outside 1..6"),
    ("[1] Score: 2\n[2] Score: 3\n[3] Score: 7", "variant 3: 7 is outside 1..6"),
    ("[1] Score: 2\n[2] Score: 3.5\n[3] Score: 6", "variant 2: 3.5 is not an integer"),
    ("[1] Score: 2\n[2] Score: 3\n[2] Score: 4\n[3] Score: 6", "variant 2 scored more than once"),
    ("", "no '[i] Score: d' entries"),
])
def test_invalid_judgements_say_why_and_guess_nothing(text, reason):
    scores, why = judge.parse_judgement("complexity", text, 3)
    assert scores is None and reason in why


def test_quality_labels_and_format():
    text = judge.judgement_text("quality", [1, 4, 6])
    assert text == "[Response 1] Score: 1\n[Response 2] Score: 4\n[Response 3] Score: 6"
    assert judge.parse_judgement("quality", text, 3) == ([1, 4, 6], None)
    assert re.fullmatch(judge.judgement_regex("quality", 3), text)
    assert re.fullmatch(judge.judgement_regex("complexity", 2), "[1] Score: 5\n[2] Score: 1")
    assert not re.fullmatch(judge.judgement_regex("complexity", 2), "[1] Score: 7\n[2] Score: 1")


def test_label_rows_have_lineage_and_train_scorer_reads_them():
    from deita_ray.train.data import scorer_label

    rows = judge.label_rows("complexity", "seed-9", ["Name a river.", "Name two rivers."], [1, 3], [None, "deepen"])
    assert [r["id"] for r in rows] == ["seed-9/r0", "seed-9/r1"] and rows[1]["operation"] == "deepen"
    assert rows[1]["conversations"][0]["value"] == complexity_prompt("Name two rivers.")
    assert scorer_label(rows[1], "complexity") == ([complexity_prompt("Name two rivers.")], 3)
    quality = judge.label_rows("quality", "s", ["The Nile."], [5], [None], instruction="Name a river.")
    assert scorer_label(quality[0], "quality") == ([quality_prompt("Name a river.", "The Nile.")], 5)
