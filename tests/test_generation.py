"""The generation half in one process: evolution chains (elimination, reproducibility whatever the
batching), the judge regex-constrained on vLLM (a random tiny model always gives valid judgements; the other
judge methods are in test_judge_stage.py), labels with lineage, the CLI from seeds to a trained scorer."""

import json
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from deita_ray.engines.config import Generation, LLMConfig, Sampling
from deita_ray.prompts import evol, judge
from deita_ray.stages.evolve import EvolveStage
from deita_ray.stages.judge import JudgeStage
from test_judge_stage import CHAINS, _judge_input

SEEDS = ["Name a river in Europe.", "Explain recursion to a child.", "Write a haiku about rain.",
         "List three prime numbers.", "Why is the sky blue?", "Translate 'good morning' to French.",
         "Sort these numbers: 5, 2, 9.", "Give a synonym for happy.", "Describe a cat in one sentence.",
         "What is 12 times 7?"]


def _seed_table(n=len(SEEDS)):
    rows = [{"id": f"s{i}", "conversations": [{"from": "human", "value": SEEDS[i % len(SEEDS)]},
                                              {"from": "gpt", "value": f"An answer number {i}."}]} for i in range(n)]
    return pa.Table.from_pylist(rows)


class ScriptedEngine:
    """Answers each rewrite prompt by the round it asks for (a test double for the chain logic only)."""

    name = "scripted"

    def __init__(self, script):
        self.script, self.calls = script, []

    def generate(self, prompts, sampling, seeds=None):
        self.calls.append(len(prompts))
        out = []
        for prompt in prompts:
            given = prompt.split("#Given Prompt#:\n")[1].split("\n#Rewritten Prompt#:")[0]
            text, reason = self.script(given)
            out.append(Generation(text=text, token_ids=[1] * 3, finish_reason=reason))
        return out


def test_a_failed_round_is_retried_with_a_new_seed_and_every_attempt_is_kept():
    seen = Counter()

    def script(given):  # round k's input carries k-1 "+" marks
        k = given.count("+") + 1
        seen[given] += 1
        if given.startswith("Name") and k == 3:  # an apology is a text like any other (Deita eliminates nothing)
            return given + " Sorry, no more than that. +", "stop"
        if given.startswith("Why") and k == 2 and seen[given] == 1:  # empty once: the retry succeeds
            return "", "stop"
        if given.startswith("Explain") and k == 2:  # always copies the rewriting prompt's markers
            return "#Rewritten Prompt#: the given prompt again", "stop"
        if given.startswith("Write") and k == 1:  # always hands back the same text
            return given, "stop"
        if given.startswith("List") and k == 4:
            return given + " and more and more", "length"
        return given + " +", "stop"

    engine = ScriptedEngine(script)
    out = EvolveStage("complexity", LLMConfig(model="x", engine="fake"), Sampling(), engine=engine)(_seed_table(5))
    rows = {r["id"]: r for r in out.to_pylist()}
    assert rows["s0"]["rounds_completed"] == 5 and rows["s0"]["stop_reason"] == "completed"
    assert rows["s4"]["rounds_completed"] == 5 and rows["s4"]["failed_attempts"] == [
        {"round": 2, "attempt": 0, "operation": evol.operation("s4", 2, "complexity"), "reason": "empty", "text": ""}]
    assert rows["s1"]["rounds_completed"] == 1 and "copies the rewriting prompt" in rows["s1"]["stop_rule"]
    assert rows["s1"]["stop_reason"].endswith("(3 attempts)") and [a["attempt"] for a in rows["s1"]["failed_attempts"]] \
        == [0, 1, 2]
    assert rows["s2"]["variants"] == [SEEDS[2]] and rows["s2"]["stop_rule"] == "identical to the previous variant"
    assert rows["s3"]["rounds_completed"] == 3 and rows["s3"]["stop_rule"] == "cut by the token limit"
    assert rows["s3"]["eliminated_text"].endswith("and more and more")
    assert rows["s0"]["operations"][0] is None
    assert rows["s0"]["operations"][1:] == [evol.operation("s0", k, "complexity") for k in range(1, 6)]
    assert rows["s0"]["generated_tokens"] == 15
    # Each request's seed: (seed id, round, attempt), so a retry samples anew and a rerun repeats it all.
    assert evol.request_seed(0, "complexity", "s4", 2, 1) != evol.request_seed(0, "complexity", "s4", 2, 0)
    again = EvolveStage("complexity", LLMConfig(model="x", engine="fake"), Sampling(), engine=ScriptedEngine(script))
    seen.clear()
    assert again(_seed_table(5)).to_pylist() == out.to_pylist()


def test_chains_in_every_script_reach_six_variants_through_an_http_rewriter():
    """Chinese, Japanese, Russian and English seeds through a scripted OpenAI-compatible rewriter on 127.0.0.1:
    no variant is eliminated for its script or for being an apology (the old word rules did both)."""
    from servers import stub_server

    seeds = {"zh": "写一封道歉信，说明为什么迟到。", "ja": "遅刻したことを謝る手紙を書いてください。",
             "ru": "Напишите письмо с извинениями за опоздание.", "en": "Write an apology note for being late."}
    table = pa.Table.from_pylist([{"id": lang, "conversations": [{"from": "human", "value": text},
                                                                 {"from": "gpt", "value": text + " ok"}]}
                                  for lang, text in seeds.items()])
    with stub_server() as api:
        config = LLMConfig(model="rewriter-lang", engine="http", api_base=api)
        for mode in ("complexity", "quality"):
            rows = EvolveStage(mode, config, Sampling(temperature=1.0))(table).to_pylist()
            assert [len(r["variants"]) for r in rows] == [6] * 4, [r["stop_reason"] for r in rows]
            assert all(r["stop_reason"] == "completed" and not r["failed_attempts"] for r in rows)
            assert rows[0]["variants"][-1].count("河") == 5 and rows[2]["variants"][-1].count("реку") == 5
        # WizardLM's response rules, asked for: the English apology, a response under 80 words, fails them.
        rows = EvolveStage("quality", LLMConfig(model="rewriter-sorry", engine="http", api_base=api),
                           Sampling(temperature=1.0), wizardlm_rules=True)(table).to_pylist()
        assert [len(r["variants"]) for r in rows] == [1] * 4
        assert all(r["stop_rule"] == "an apology shorter than 80 words (WizardLM rule)" for r in rows)
        assert all(len(r["failed_attempts"]) == 1 + evol.RETRIES for r in rows)


def test_a_rewrite_prompt_over_the_context_ends_the_chain(generator):
    from deita_ray.engines.base import make_engine

    engine = make_engine(generator, "generate")  # 1,024 positions; a 600-word seed grows past them
    table = pa.Table.from_pylist([{"id": "long", "conversations": [
        {"from": "human", "value": "Summarise: " + "the river runs far " * 250}, {"from": "gpt", "value": "ok"}]}])
    row = EvolveStage("complexity", generator, Sampling(temperature=1.0, max_new_tokens=16), engine=engine)(table)
    row = row.to_pylist()[0]
    assert row["variants"] == [table.column("conversations")[0][0]["value"].as_py()] and row["_failure_reason"] is None
    assert row["stop_rule"] == "rewrite prompt does not fit the context" and "does not fit the context of 1024" in \
        row["stop_reason"]


def test_quality_mode_rewrites_the_response_for_the_seed_instruction():
    prompts = []

    class Recorder(ScriptedEngine):
        def generate(self, batch, sampling, seeds=None):
            prompts.extend(batch)
            return [Generation(text=f"A better answer {len(prompts)}.", token_ids=[1], finish_reason="stop")
                    for _ in batch]

    out = EvolveStage("quality", LLMConfig(model="x", engine="fake"), Sampling(), rounds=2,
                      engine=Recorder(None))(_seed_table(1)).to_pylist()[0]
    assert out["variants"] == ["An answer number 0.", "A better answer 1.", "A better answer 2."]
    assert out["instruction"] == SEEDS[0]
    op = evol.operation("s0", 2, "quality")
    assert prompts[1] == evol.rewrite_prompt("quality", op, SEEDS[0], "A better answer 1.")


@pytest.fixture(scope="module")
def generator(tiny_models):
    return LLMConfig(model=str(tiny_models["generator"]), engine="hf")


def test_hf_chains_do_not_depend_on_the_batch(generator):
    from deita_ray.engines.base import make_engine

    engine = make_engine(generator, "generate")
    sampling = Sampling(temperature=1.0, max_new_tokens=48)
    together = EvolveStage("complexity", generator, sampling, rounds=3, seed=5, engine=engine)(_seed_table())
    alone = [EvolveStage("complexity", generator, sampling, rounds=3, seed=5, engine=engine)(_seed_table().slice(i, 1))
             for i in (0, 4, 9)]
    for i, single in zip((0, 4, 9), alone):
        assert single.column("variants").to_pylist()[0] == together.column("variants").to_pylist()[i]
    other_seed = EvolveStage("complexity", generator, sampling, rounds=3, seed=6, engine=engine)(_seed_table())
    assert other_seed.column("variants").to_pylist() != together.column("variants").to_pylist()
    lengths = together.column("rounds_completed").to_pylist()
    assert max(lengths) == 3 and sum(lengths) >= 10  # the tiny generator ends its texts: chains do evolve


@pytest.mark.vllm
def test_vllm_async_chains_equal_the_batched_path_and_a_stuck_request_times_out(vllm_generator):
    """vLLM's async engine (every chain on its own) gives the chains one batched `generate` per round gives,
    token for token (per-request seeds); a request that outlives request_timeout is aborted and its chain
    fails as transient, and the engine goes on serving."""
    from deita_ray.io.quarantine import CLASS, REASON, TRANSIENT

    config, engine = vllm_generator

    class GenerateOnly:  # the same engine without `submit`: EvolveStage takes its batched path
        def __init__(self, inner):
            self.generate, self.context_length, self.tokenizer = inner.generate, inner.context_length, inner.tokenizer

    sampling = Sampling(temperature=1.0, max_new_tokens=32)
    try:
        async_out = EvolveStage("complexity", config, sampling, rounds=2, seed=5, engine=engine)(_seed_table())
        batched = EvolveStage("complexity", config, sampling, rounds=2, seed=5, engine=GenerateOnly(engine))(_seed_table())
        assert async_out.column("variants").to_pylist() == batched.column("variants").to_pylist()
        assert sum(async_out.column("rounds_completed").to_pylist()) >= 10
        assert REASON not in async_out.column_names or async_out.column(REASON).null_count == async_out.num_rows

        engine.start("submit")
        engine._async.timeout = 0.01  # this engine now gives a request 10 ms: far less than 400 tokens take
        stuck = EvolveStage("complexity", config, Sampling(temperature=1.0, max_new_tokens=400), rounds=2, seed=5,
                            engine=engine)(_seed_table(3))
        assert stuck.column(CLASS).to_pylist() == [TRANSIENT] * 3
        assert all("no answer within 0.01 s" in r for r in stuck.column(REASON).to_pylist())
        engine._async.timeout = 600.0
        again = engine.submit("Name a river.", Sampling(max_new_tokens=4)).result(timeout=60)
        assert again.token_ids  # the aborted requests left the engine serving
    finally:
        engine._async.timeout = config.request_timeout


@pytest.fixture(scope="module")
def vllm_generator(tiny_models):
    """One vLLM engine on the tiny generator for this module's vLLM tests (each engine start costs ~10 s here)."""
    pytest.importorskip("vllm")
    from deita_ray.engines.vllm import VLLMEngine

    config = LLMConfig(model=str(tiny_models["generator"]), engine="vllm", max_length=512)
    engine = VLLMEngine(config)
    yield config, engine
    engine.close()


@pytest.mark.vllm
def test_vllm_judge_is_regex_constrained_and_always_parses(vllm_generator):
    config, engine = vllm_generator
    stage = JudgeStage(config, engine=engine)
    assert stage.method == "regex"
    stage.setup()
    sampled = stage.engine.generate([judge.judge_prompt("quality", CHAINS[1], "Why?")],
                                    Sampling(temperature=1.0, max_new_tokens=200, seed=3,
                                             regex=judge.judgement_regex("quality", 6)))
    assert judge.parse_judgement("quality", sampled[0].text, 6)[0] is not None  # even sampling stays in format
    for mode in ("complexity", "quality"):
        out = stage(_judge_input(mode, CHAINS)).to_pylist()
        assert [r["judge_status"] for r in out] == ["valid", "valid", "skipped"], out
        assert all(r["judgement"] == judge.judgement_text(mode, r["scores"]) for r in out[:2])


def test_cli_seeds_to_labels_to_a_trained_scorer(ray_session, tiny_models, tmp_path, capsys):
    """As a user would: evolve seeds, judge the chains, export labels, train a scorer on them."""
    from deita_ray.cli import main
    from deita_ray.train.config import load_train_config
    from deita_ray.train.launch import train

    seeds = tmp_path / "seeds.jsonl"
    lines = [json.dumps({"id": f"seed_task_{i}", "instruction": SEEDS[i % 10] + f" (case {i})",
                         "instances": [{"input": "", "output": f"Answer {i}."}]}) for i in range(24)]
    seeds.write_text("\n".join(lines + ["{not json", json.dumps({"id": "x", "instruction": "No instances"})]) + "\n")
    out = tmp_path / "out"
    assert main(["evolve", str(seeds), "-o", str(out), "--model", str(tiny_models["generator"]),
                 "--max-new-tokens", "48", "--rounds", "3", "--local"]) == 0
    evolve = json.loads((out / "evolve_summary.json").read_text())
    assert evolve["reconciled"] and evolve["rows_in"] == 26 and evolve["rows_out"] == 24
    assert evolve["rows_quarantined"] == 2
    assert main(["judge", str(out / "evolved"), "-o", str(out), "--model", str(tiny_models["scorer-complexity"]),
                 "--local"]) == 0
    judged = json.loads((out / "judge_summary.json").read_text())
    assert judged["reconciled"] and judged["rows_in"] == 24
    assert judged["rows_out"] + judged["rows_quarantined"] == 24
    assert judged["counts"]["judge_status"].get("invalid", 0) == 0  # teacher-forced: never malformed
    assert main(["labels", str(out)]) == 0
    labels = json.loads((out / "labels_summary.json").read_text())
    table = pq.read_table(out / "labels" / "labels.parquet").to_pylist()
    chains = pq.read_table(out / "judged").to_pylist()
    valid = [c for c in chains if c["judge_status"] == "valid"]
    assert labels["reconciled"] and labels["labels_out"] == len(table) == sum(len(c["variants"]) for c in valid) > 20
    by_id = {c["id"]: c for c in valid}
    for row in table:  # lineage: <seed id>/r<round> points at that variant and its score
        chain = by_id[row["seed_id"]]
        assert row["id"] == f"{row['seed_id']}/r{row['round']}"
        assert row["score"] == chain["scores"][row["round"]] and row["operation"] == chain["operations"][row["round"]]
    assert (out / "report" / "generation.html").exists()
    report = json.loads((out / "report" / "generation.json").read_text())
    assert report["chains"] == 24 - judged["rows_quarantined"] and report["judge_validity"] == 1.0
    summary = train(load_train_config("scorer", data={
        "model": str(tiny_models["scorer-complexity"]), "data": [str(out / "labels" / "complexity.jsonl")],
        "output": str(tmp_path / "scorer"), "kind": "complexity", "num_workers": 1, "global_batch_size": 8,
        "per_device_batch_size": 8, "epochs": 1, "max_length": 256, "save_every_epoch": False}), log=lambda *_: None)
    assert summary["rows"]["rows_used"] == labels["labels_out"]
    assert (tmp_path / "scorer" / "model" / "config.json").exists()


def test_labels_stream_part_by_part_and_a_failure_leaves_no_partial_file(tmp_path, monkeypatch):
    """Labels from three judged parts (one with no valid chain, one whose only operations are None) equal the
    chains' valid variants in order; an error in a later part leaves no labels file behind."""
    from deita_ray.io.writer import write_part
    from deita_ray.steps import labels as labels_job
    from deita_ray.steps.labels import LabelsConfig

    def chain(i, mode, status, n):
        return {"id": f"c{i}", "mode": mode, "instruction": f"Question {i}?", "variants": [f"v{i}.{r}" for r in range(n)],
                "operations": [None] * n if i == 0 else [None] + ["deepen"] * (n - 1),
                "scores": [1 + (i + r) % 6 for r in range(n)] if status == "valid" else None, "judge_status": status}

    parts = [[chain(0, "complexity", "valid", 2)],
             [chain(1, "quality", "invalid", 3), chain(2, "quality", "skipped", 1)],
             [chain(3, "quality", "valid", 3), chain(4, "complexity", "valid", 4)]]
    judged = tmp_path / "out" / "judged"
    for k, rows in enumerate(parts):
        write_part(pa.Table.from_pylist(rows), str(judged), f"part-{k}.parquet")
    summary = labels_job.export_labels(LabelsConfig(inputs=[str(tmp_path / "out")], report=False))
    assert summary["reconciled"] and summary["chains_in"] == 5 and summary["labels_out"] == 2 + 3 + 4
    assert summary["chains"] == {"valid": 3, "invalid": 1, "skipped": 1}
    table = pq.read_table(tmp_path / "out" / "labels" / "labels.parquet").to_pylist()
    assert [r["id"] for r in table] == ["c0/r0", "c0/r1", "c3/r0", "c3/r1", "c3/r2"] + [f"c4/r{r}" for r in range(4)]
    assert table[1]["operation"] is None and table[3]["operation"] == "deepen"
    complexity = [json.loads(line) for line in (tmp_path / "out" / "labels" / "complexity.jsonl").read_text().splitlines()]
    assert [r["id"] for r in complexity] == ["c0/r0", "c0/r1"] + [f"c4/r{r}" for r in range(4)]
    assert complexity[2]["conversations"][1]["value"] == str(table[5]["score"])

    # --overwrite with only the quality chains left: no complexity file may survive from the last export.
    for part in judged.glob("*.parquet"):
        table = pq.read_table(part)
        write_part(table.filter(pc.equal(table.column("mode"), "quality")), str(judged), part.name)
    again_summary = labels_job.export_labels(LabelsConfig(inputs=[str(tmp_path / "out")], overwrite=True,
                                                          report=False))
    assert again_summary["labels_by_kind"] == {"quality": 3}
    assert sorted(p.name for p in (tmp_path / "out" / "labels").iterdir()) == ["labels.parquet", "quality.jsonl"]

    real_label_rows = labels_job.judge.label_rows

    def failing(mode, seed_id, *args):
        if seed_id == "c3":
            raise RuntimeError("disk gone")
        return real_label_rows(mode, seed_id, *args)

    monkeypatch.setattr(labels_job.judge, "label_rows", failing)
    again = tmp_path / "again"
    with pytest.raises(RuntimeError, match="disk gone"):
        labels_job.export_labels(LabelsConfig(inputs=[str(tmp_path / "out")], output=str(again), report=False))
    assert not (again / "labels").exists() or not any((again / "labels").iterdir())  # no file, no temporary
