"""The generation half's pure parts (issue 10, first piece): prompt templates byte for byte against the notes,
reproducible operations, WizardLM's elimination rules, the tolerant judgement parser on adversarial texts,
and labels with lineage that `deita-ray train scorer` reads."""

import re
from collections import Counter

import pytest

import paper_prompt_tables as paper
from deita_ray.prompts import complexity_prompt, evol, judge, quality_prompt


def test_rewrite_prompts_are_the_papers_tables_12_13_16_17():
    for op, method in paper.TABLE_12_13_METHODS.items():
        assert evol.OPERATIONS["complexity"][op] == method
        expected = paper.TABLE_12_13.replace("<method>", method).replace("<Here is instruction>", "Name a river.")
        assert evol.rewrite_prompt("complexity", op, "Name a river.") == expected
    for op, method in paper.TABLE_16_17_METHODS.items():
        assert evol.OPERATIONS["quality"][op] == method
        expected = paper.TABLE_16_17.replace("<method>", method).replace("<Response>", "Eat well.")
        assert evol.rewrite_prompt("quality", op, "Give three tips for staying healthy.", "Eat well.") == expected
    assert set(evol.OPERATIONS["complexity"]) == set(paper.TABLE_12_13_METHODS)
    assert set(evol.OPERATIONS["quality"]) == set(paper.TABLE_16_17_METHODS)


def test_judge_prompts_are_the_papers_tables_14_and_18():
    variants = [f"variant {i}" for i in range(1, 6)]
    # The table prints its format example with escapes; the one that ends a printed line is that line's break.
    table_14 = paper.TABLE_14.replace("\\n\n", "\n").replace("\\n", "\n")
    for i, v in enumerate(variants, 1):
        table_14 = table_14.replace(f"<Instruction {i}>", v)
    assert judge.judge_prompt("complexity", variants) == table_14
    table_18 = paper.TABLE_18.replace("<Instruction>", "Q?")
    for i, v in enumerate(variants, 1):
        table_18 = table_18.replace(f"<Response {i}>", v)
    assert judge.judge_prompt("quality", variants, "Q?") == table_18
    assert "...\n" not in judge.COMPLEXITY_HEAD + judge.QUALITY_HEAD
    assert judge.judge_prompt("complexity", ["a"] * 6).endswith("[5] a\n[6] a\n")  # all six variants of a chain


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


@pytest.mark.parametrize("mode, text, previous, finish, reason", [
    ("complexity", "Explain photosynthesis in three steps, citing one equation.", "x", "stop", None),
    ("complexity", "", "x", "stop", "empty"),
    ("complexity", "   \n ", "x", "stop", "empty"),
    ("complexity", "Name a river. ", "Name a river.", "stop", "identical to the previous variant"),
    ("complexity", "#Rewritten Prompt#: Name two rivers.", "x", "stop", "copies the rewriting prompt"),
    ("complexity", "Rewrite the given prompt so that it asks for two rivers.", "x", "stop", "copies the rewriting"),
    ("quality", "The Given Response is improved: the Nile.", "x", "stop", "copies the rewriting prompt"),
    ("quality", "The Nile, about 6,650 km long, flows north.", "x", "length", "cut by the token limit"),
    # What Deita never eliminates: any script, an apology note, few or common words.
    ("complexity", "Write a short apology note to a neighbour: sorry about the noise.", "x", "stop", None),
    ("complexity", "写一封道歉信，说明为什么迟到，并提出补救办法。", "x", "stop", None),
    ("complexity", "遅刻の理由を説明し、改善策を提案する謝罪文を書いてください。", "x", "stop", None),
    ("complexity", "Напишите письмо с извинениями и объясните причину опоздания.", "x", "stop", None),
    ("quality", "Sorry, it is what it is.", "x", "stop", None),
    ("complexity", "... !!! ?", "x", "stop", None),  # odd, but a text: the judge ranks it low
])
def test_only_unusable_text_fails(mode, text, previous, finish, reason):
    got = evol.failure_reason(mode, text, previous, finish)
    assert (got is None) if reason is None else (got is not None and got.startswith(reason)), got


@pytest.mark.parametrize("mode, text, reason", [
    ("quality", "Sorry, I cannot rewrite that.", "an apology shorter than 80 words"),
    ("quality", "Sorry " + "word " * 90, None),  # a long text that happens to say sorry is kept
    ("quality", "... !!! ?", "only punctuation and stop words"),
    ("quality", "it is what it is", "only punctuation and stop words"),
    ("quality", "Извините, это так.", None),          # Russian words are words, not "only punctuation"
    ("quality", "对不起，我迟到了。", None),
    ("complexity", "Sorry, I cannot rewrite that.", None),  # instructions are not answers: never these rules
])
def test_wizardlm_rules_are_an_option_for_quality_variants(mode, text, reason):
    got = evol.failure_reason(mode, text, "x", "stop", wizardlm_rules=True)
    assert (got is None) if reason is None else (got is not None and got.startswith(reason)), got


def test_words_are_counted_on_every_script():
    assert len(evol.words("Name two rivers, please.")) == 4
    assert len(evol.words("Назовите две реки.")) == 3
    assert len(evol.words("两条河流")) == 4 and len(evol.words("川を二つ")) == 4
    assert evol.words("... !!") == []


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
    ("[1] Score: 2\n[2] Score: 3.5\n[3] Score: 6", "variant 2: '3.5' is not an integer"),
    ("[1] Score: 4/10\n[2] Score: 3\n[3] Score: 6", "variant 1: '4/10' is not an integer on the 1..6 scale"),
    ("[1] Score: 3 out of 10\n[2] Score: 3\n[3] Score: 6", "variant 1: '3 out of 10' is not an integer"),
    ("[1] Score: 2\n[2] Score: 3 of 6\n[3] Score: 6", "variant 2: '3 of 6' is not an integer"),
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


def test_the_rewriter_samples_as_wizardlm():
    """Evol_Instruct/openai_access.py: temperature=1, top_p=0.95."""
    from deita_ray.steps.evolve import EvolveConfig

    sampling = EvolveConfig(model="m").sampling()
    assert (sampling.temperature, sampling.top_p) == (1.0, 0.95)
