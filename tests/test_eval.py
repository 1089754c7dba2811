"""MT-Bench evaluation as FastChat's llm_judge runs it: two turns (the second after the model's own first), the
category's temperature, strict verdicts counted when invalid and never guessed, reference answers for the math
judge, pairwise judging in both orders; the eval and compare steps end to end in this process, with resume."""

import json

import pyarrow as pa

from deita_ray.engines.config import Generation, LLMConfig
from deita_ray.prompts import mt_bench
from deita_ray.report.eval import bootstrap, pairwise_stats, rating_stats
from deita_ray.stages.answer import AnswerStage
from deita_ray.stages.grade import GradeStage, combine


class Recorder:
    """An engine that answers from a script and remembers every request (prompt, temperature, seed)."""

    def __init__(self, reply):
        self.reply, self.requests = reply, []

    def generate(self, prompts, sampling, seeds=None):
        seeds = seeds or [None] * len(prompts)
        self.requests += [(p, sampling.temperature, s) for p, s in zip(prompts, seeds)]
        return [Generation(text=self.reply(p), token_ids=[1, 2, 3], finish_reason="stop") for p in prompts]

    def close(self):
        pass


QUESTIONS = pa.Table.from_pylist([
    {"id": "q1", "category": "writing", "turns": ["Write a poem.", "Now shorter."], "reference": None},
    {"id": "q2", "category": "math", "turns": ["What is 2+2?", "And 3+3?"], "reference": ["4", "6"]},
])


def test_verdicts_are_strict():
    assert mt_bench.parse_rating("Good. Rating: [[7]]") == (7.0, None)
    assert mt_bench.parse_rating("Rating: [[7.5]]")[0] == 7.5
    for text in ("Rating: [7]", "[[7]] or maybe [[8]]", "[[11]]", "seven", ""):
        assert mt_bench.parse_rating(text)[0] is None and mt_bench.parse_rating(text)[1]
    assert mt_bench.parse_verdict("so [[B]]") == ("B", None)
    assert mt_bench.parse_verdict("[[A]] ... no, [[B]]")[0] is None and mt_bench.parse_verdict("A")[0] is None
    assert [combine(a, b) for a, b in (("A", "B"), ("B", "A"), ("A", "A"), ("A", "C"), ("C", "C"), (None, "B"))] == \
        ["a", "b", "tie", "tie", "tie", None]


def test_the_second_turn_follows_the_models_own_first_answer():
    engine = Recorder(lambda p: f"answer-{len(p)}")
    out = AnswerStage(LLMConfig(model="m", engine="fake"), template="model", engine=engine)(QUESTIONS).to_pylist()
    first, second = engine.requests[:2], engine.requests[2:]
    assert [len(p) for p, _, _ in first] == [1, 1] and [len(p) for p, _, _ in second] == [3, 3]
    for (prompt, temperature, seed), row in zip(sorted(second, key=lambda r: r[0][0]["content"]),
                                                sorted(out, key=lambda r: r["turns"][0])):
        assert prompt[1] == {"role": "assistant", "content": row["answers"][0]}  # its own first answer
        assert prompt[2]["content"] == row["turns"][1]
    temperatures = {p[0]["content"]: t for p, t, _ in engine.requests}
    assert temperatures["Write a poem."] == 0.7 and temperatures["What is 2+2?"] == 0.0  # FastChat's per category
    assert len({s for _, _, s in engine.requests}) == 4  # a seed per request
    vicuna = Recorder(lambda p: "fine")
    AnswerStage(LLMConfig(model="m", engine="fake"), engine=vicuna)(QUESTIONS.slice(0, 1))
    assert vicuna.requests[1][0].endswith("USER: Write a poem. ASSISTANT: fine</s>USER: Now shorter. ASSISTANT:")


def _answered():
    return QUESTIONS.append_column("answers", pa.array([["roses", "short"], ["4", "7"]]))


def test_invalid_judgements_are_counted_and_never_guessed():
    replies = iter(["Rating: [[8]]", "Rating: [8]", "no verdict at all", "[[3]]"])
    engine = Recorder(lambda p: next(replies))
    rows = GradeStage(LLMConfig(model="j", engine="fake"), engine=engine)(_answered()).to_pylist()
    assert [r["ratings"] for r in rows] == [[8.0, None], [None, 3.0]]
    assert [r["judge_status"] for r in rows] == [["valid", "invalid"], ["invalid", "valid"]]
    stats = rating_stats(rows)
    assert stats["invalid_judgements"] == 2 and stats["overall"]["n"] == 2 and stats["overall"]["mean"] == 5.5


def test_reference_answers_reach_the_math_judge_and_turn_two_uses_the_multi_turn_prompt():
    engine = Recorder(lambda p: "[[5]]")
    rows = GradeStage(LLMConfig(model="j", engine="fake"), engine=engine)(_answered()).to_pylist()
    math = [p for p, _, _ in engine.requests if "2+2" in p[-1]["content"]]
    assert all("[Reference" in p[-1]["content"] and "\n4\n" in p[-1]["content"] for p in math)
    assert "\n6\n" in math[1][-1]["content"] and "Answer 2]\n7" in math[1][-1]["content"]
    assert rows[1]["judge_prompt"] == ["deita-single-math", "deita-single-math-multi-turn"]
    assert all(t == 0.0 for _, t, _ in engine.requests)  # the judge is greedy


def test_fastchat_judge_prompts_are_picked_as_llm_judge_picks_them(shared_data):
    rows = [json.loads(line) for line in (shared_data / "mt_bench_judge_prompts.jsonl").read_text().splitlines()]
    prompts = mt_bench.JudgePrompts.load(rows, "FastChat")
    math = mt_bench.Question("111", "math", ("2+2?", "3+3?"), ("4", "6"))
    writing = mt_bench.Question("81", "writing", ("Write.", "Again."))
    assert [prompts.single(math, ["4"], 1)[2], prompts.single(math, ["4", "6"], 2)[2],
            prompts.single(writing, ["a"], 1)[2], prompts.pairwise(writing, ["a", "b"], ["c", "d"], 2)[2],
            prompts.pairwise(math, ["4"], ["5"], 1)[2]] == \
        ["single-math-v1", "single-math-v1-multi-turn", "single-v1", "pair-v2-multi-turn", "pair-math-v1"]
    system, user, _ = prompts.single(math, ["4"], 1)
    assert "[The Start of Reference Answer]\n4\n" in user and system == "You are a helpful assistant."
    questions = [mt_bench.read_question(json.loads(line))
                 for line in (shared_data / "mt_bench_question.jsonl").read_text().splitlines()]
    assert len(questions) == 80 and {len(q.turns) for q in questions} == {2}


def test_pairwise_judges_both_orders_and_a_win_needs_both():
    pairs = QUESTIONS.append_column("answers_a", pa.array([["river", "river"], ["4", "6"]])).append_column(
        "answers_b", pa.array([["stone", "stone"], ["5", "7"]]))
    engine = Recorder(lambda p: "[[A]]" if "river" in p[-1]["content"].split("Assistant B")[0] else "[[B]]")
    rows = GradeStage(LLMConfig(model="j", engine="fake"), mode="pairwise", engine=engine)(pairs).to_pylist()
    assert len(engine.requests) == 8  # 2 questions x 2 turns x 2 orders
    first, swapped = engine.requests[0][0][-1]["content"], engine.requests[1][0][-1]["content"]
    assert first.index("river") < first.index("stone") and swapped.index("stone") < swapped.index("river")
    assert rows[0]["verdicts"] == ["a", "a"]  # river wins in both orders
    assert rows[1]["verdicts"] == ["tie", "tie"]  # q2: "B" in both orders, i.e. each model once: no win
    assert pairwise_stats(rows) == {"win": 2, "tie": 2, "loss": 0, "invalid": 0, "turns": 4, "win_rate": 0.75}


def test_bootstrap_interval_is_seeded_and_covers_the_mean():
    ratings = [[float(1 + (k % 10))] * 2 for k in range(40)]
    a, b = bootstrap(ratings), bootstrap(ratings)
    assert a == b and a["low"] < a["mean"] < a["high"] and a["questions"] == 40
    assert bootstrap([[]])["mean"] is None


def _questions(tmp_path, n=6):
    from deita_ray.tools.sample_pool import make_questions

    make_questions(tmp_path / "questions", n, seed=1)
    return str(tmp_path / "questions" / "question.jsonl")


def test_eval_and_compare_end_to_end_in_this_process_with_resume(tiny_models, tmp_path):
    from deita_ray.steps import STEPS

    questions = _questions(tmp_path)
    with open(questions, "a") as f:
        f.write('{"question_id": 99, "turns": []}\n')  # a bad row: quarantined with its reason, not fatal
    judge = dict(judge_model="scripted", judge_engine="fake", judge_engine_kwargs={"judge_keyword": "the"})
    runs = {}
    for name, seed in (("a", 0), ("b", 1)):
        config = STEPS["eval"].config(model=str(tiny_models["generator"]), questions=[questions], max_new_tokens=12,
                                      seed=seed, output=str(tmp_path / name), **judge)
        runs[name] = STEPS["eval"].execute(config, mode="local")
    summary = runs["a"]
    assert summary["reconciled"] and summary["rows_out"] == 6 and len(summary["questions_bad"]) == 1
    stats = summary["mt_bench"]
    assert stats["overall"]["n"] == 12 and stats["invalid_judgements"] == 0 and 1 <= stats["overall"]["mean"] <= 10
    answers = [json.loads(line) for line in (tmp_path / "a" / "answers.jsonl").read_text().splitlines()]
    judged = [json.loads(line) for line in (tmp_path / "a" / "judgements.jsonl").read_text().splitlines()]
    assert len(answers) == 6 and all(len(a["choices"][0]["turns"]) == 2 for a in answers)
    assert len(judged) == 12 and {j["judge"] for j in judged} == {"scripted"} and all(j["judge_prompt"] for j in judged)
    assert (tmp_path / "a" / "report" / "eval.html").exists()
    # Resume: nothing left to answer or judge (stages that fail on any batch are never called); the same numbers.
    def never_called(batch):
        raise AssertionError(f"resume answered or judged {batch.num_rows} rows again")

    again = STEPS["eval"].execute(dataclass_replace(config, resume=True), mode="local",
                                  stages=[never_called, never_called])
    assert again["mt_bench"] == runs["b"]["mt_bench"]
    compare = STEPS["compare"].config(evals=[str(tmp_path / "a"), str(tmp_path / "b")], output=str(tmp_path / "ab"),
                                      **judge)
    result = STEPS["compare"].execute(compare, mode="local")
    p = result["pairwise"]
    assert p["turns"] == 12 and p["win"] + p["tie"] + p["loss"] + p["invalid"] == 12


def dataclass_replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)
