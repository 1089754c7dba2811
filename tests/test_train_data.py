"""Training rows without Ray: Vicuna/chat-template masks, preference styles, scorer labels, skips, config."""

import json

import pytest
from transformers import AutoTokenizer

from deita_ray.recipe.config import ConfigError
from deita_ray.prompts import chat
from deita_ray.train import data
from deita_ray.train.config import load_train_config

CONV = [{"from": "human", "value": "Name a colour."}, {"from": "gpt", "value": "Blue."},
        {"from": "human", "value": "Another?"}, {"from": "gpt", "value": "Green, of course."}]


@pytest.fixture(scope="module")
def tokenizer(tiny_models):
    return AutoTokenizer.from_pretrained(str(tiny_models["scorer-complexity"]))


def _write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def _masked_text(tokenizer, row) -> str:
    return tokenizer.decode([t for t, m in zip(row["input_ids"], row["assistant_masks"]) if m])


@pytest.mark.parametrize("template", ["vicuna", "model"])
def test_sft_loss_mask_covers_exactly_the_assistant_turns(tmp_path, tokenizer, template):
    path = _write_jsonl(tmp_path / "sel.jsonl", [{"conversations": CONV}])
    table, stats = data.prepare_sft([path], tokenizer, template=template, max_length=512)
    row = table.to_pylist()[0]
    masked = _masked_text(tokenizer, row)
    # Both answers and their end-of-turn token, nothing of the user turns or the system prompt.
    assert masked.replace(" ", "") == "Blue.</s>Green,ofcourse.</s>"
    unmasked = tokenizer.decode([t for t, m in zip(row["input_ids"], row["assistant_masks"]) if not m])
    assert "Name a colour." in unmasked and "Another?" in unmasked and "Blue" not in unmasked
    if template == "vicuna":
        assert tokenizer.decode(row["input_ids"]).startswith("<s>A chat between a curious user")
    assert stats.pop("quarantine").num_rows == 0
    assert stats == {"rows_in": 1, "rows_used": 1, "rows_skipped": 0, "skipped": {}, "rows_cut_to_fit": 0}


def test_sft_counts_bad_and_fully_truncated_rows(tmp_path, tokenizer):
    long_question = {"conversations": [{"from": "human", "value": "word " * 400}, {"from": "gpt", "value": "ok"}]}
    rows = [{"conversations": CONV}, long_question, "{not json", {"conversations": [{"from": "human", "value": "hi"}]}]
    table, stats = data.prepare_sft([_write_jsonl(tmp_path / "s.jsonl", rows)], tokenizer, max_length=160)
    assert table.num_rows == 1 and stats["rows_in"] == 4 and stats["rows_skipped"] == 3
    assert stats["skipped"]["no assistant token within max_length 160"] == 1
    assert sum(stats["skipped"].values()) == 3  # the JSON error and the unanswered turn, each by reason
    quarantine = stats["quarantine"].to_pylist()  # each skipped row is kept for quarantine, with its reason
    assert len(quarantine) == 3 and {q["stage"] for q in quarantine} == {"train"} and all(q["raw"] for q in quarantine)
    assert sorted(q["reason"] for q in quarantine) == sorted(r for r, n in stats["skipped"].items() for _ in range(n))
    with pytest.raises(data.NoTrainingRows, match="no usable SFT rows out of 1"):
        data.prepare_sft([_write_jsonl(tmp_path / "bad.jsonl", [long_question])], tokenizer, max_length=160)


def test_dpo_reads_plain_ultrafeedback_and_sharegpt_preference_styles(tmp_path, tokenizer):
    rows = [
        {"prompt": "Pick a fruit.", "chosen": "Apple.", "rejected": "Rock."},
        {"prompt": "Pick a fruit.", "chosen": [{"role": "user", "content": "Pick a fruit."},
                                               {"role": "assistant", "content": "Apple."}],
         "rejected": [{"role": "user", "content": "Pick a fruit."}, {"role": "assistant", "content": "Rock."}]},
        {"conversations": [{"from": "human", "value": "Pick a fruit."}],
         "chosen": {"from": "gpt", "value": "Apple."}, "rejected": {"from": "gpt", "value": "Rock."}},
        {"prompt": "Same?", "chosen": "x", "rejected": "x"},
        {"prompt": "No rejected", "chosen": "x"},
    ]
    table, stats = data.prepare_dpo([_write_jsonl(tmp_path / "p.jsonl", rows)], tokenizer)
    out = table.to_pylist()
    assert len(out) == 3 and out[0] == out[1] == out[2]  # the three styles render identically
    assert out[0]["prompt"] == "<s>" + chat.VICUNA_SYSTEM + " USER: Pick a fruit. ASSISTANT:"
    assert out[0]["chosen"] == " Apple.</s>" and out[0]["rejected"] == " Rock.</s>"
    assert stats["skipped"] == {"chosen equals rejected": 1, "a preference row needs chosen and rejected": 1}


def test_dpo_cuts_as_the_trl_of_the_paper_did(tmp_path, tokenizer):
    """TRL 0.7.2 (what Deita's dpo_train.py ran): a prompt is cut only when prompt + the longer answer exceed
    max_length; then to its last max_prompt_length tokens, and answers to max_length - max_prompt_length."""
    long_prompt = "start " + "filler " * 300 + "the real question?"
    rows = [{"prompt": long_prompt, "chosen": "a", "rejected": "b"},                       # fits max_length: kept whole
            {"prompt": long_prompt, "chosen": "word " * 400, "rejected": "b"}]             # does not: cut
    path = _write_jsonl(tmp_path / "p.jsonl", rows)
    table, stats = data.prepare_dpo([path], tokenizer, max_prompt_length=32, max_length=1400)  # prompt: ~1.2K tokens
    whole, cut = table.to_pylist()
    assert "start" in whole["prompt"] and stats["rows_cut_to_fit"] == 1
    assert cut["prompt"].endswith("the real question? ASSISTANT:") and "start" not in cut["prompt"]
    assert len(tokenizer(cut["prompt"], add_special_tokens=False)["input_ids"]) <= 33
    assert len(tokenizer(cut["chosen"], add_special_tokens=False)["input_ids"]) <= 1400 - 32 + 1
    assert cut["rejected"] == " b</s>"


def test_dpo_max_pairs_draws_as_deitas_sample_ultrafeedback(tmp_path, tokenizer):
    import random

    rows = [{"prompt": f"Question {i}?", "chosen": f"Good {i}.", "rejected": f"Bad {i}."} for i in range(50)]
    table, stats = data.prepare_dpo([_write_jsonl(tmp_path / "p.jsonl", rows)], tokenizer, max_pairs=10, seed=42)
    random.seed(42)  # src/deita/data/sample_ultrafeedback.py: random.seed(42); random.sample(range(len(data)), n)
    expected = random.sample(range(50), 10)
    assert [r["chosen"] for r in table.to_pylist()] == [f" Good {i}.</s>" for i in expected]
    assert stats["sampling"] == {"pairs_read": 50, "max_pairs": 10, "seed": 42}
    assert stats["rows_in"] == stats["rows_used"] == 10
    everything, stats = data.prepare_dpo([_write_jsonl(tmp_path / "p.jsonl", rows)], tokenizer, max_pairs=100)
    assert everything.num_rows == 50 and stats["sampling"] is None


def test_dpo_on_the_shared_preference_demo(shared_data, tokenizer):
    table, stats = data.prepare_dpo([str(shared_data / "dpo_en_demo.json")], tokenizer)
    assert stats["rows_in"] == 300 and stats["rows_used"] + stats["rows_skipped"] == 300
    assert stats["rows_used"] > 250 and table.column("chosen")[0].as_py().endswith("</s>")


def test_the_same_labels_in_another_order_give_the_same_training_rows(tmp_path, tokenizer):
    """A resumed judge writes its parts in another order: the scorer must still train on the same sequence."""
    rows = [{"id": f"s{i}/r{i % 3}", "instruction": f"Task number {i} about rivers", "score": 1 + i % 6}
            for i in range(12)]
    one, _ = data.prepare_scorer([_write_jsonl(tmp_path / "a.jsonl", rows)], tokenizer, "complexity")
    other, _ = data.prepare_scorer([_write_jsonl(tmp_path / "b.jsonl", rows[7:] + rows[:7][::-1])], tokenizer,
                                   "complexity")
    assert one.to_pylist() == other.to_pylist()


def test_scorer_rows_end_in_the_score_digit_which_is_the_only_loss_token(tmp_path, tokenizer):
    from deita_ray.engines.base import digit_token_ids
    from deita_ray.prompts import complexity_prompt, quality_prompt

    digits = digit_token_ids(tokenizer)
    rows = [{"instruction": "Explain gravity.", "score": 4}, {"instruction": "Hi", "score": 7},
            {"instruction": "Hi", "score": "2.5"}, {"instruction": "", "score": 3},
            {"conversations": [{"from": "human", "value": complexity_prompt("Explain gravity.")},
                               {"from": "gpt", "value": "4"}]}]
    table, stats = data.prepare_scorer([_write_jsonl(tmp_path / "l.jsonl", rows)], tokenizer, "complexity")
    a, b = table.to_pylist()
    assert a == b  # the released-data style and the label style give the same row
    assert a["input_ids"][:-1] == tokenizer.encode(complexity_prompt("Explain gravity."))  # as `deita-ray score` does
    assert a["input_ids"][-1] == digits[3] and a["assistant_masks"] == [0] * (len(a["input_ids"]) - 1) + [1]
    assert stats["rows_skipped"] == 3 and stats["skipped"]["score must be an integer from 1 to 6"] == 2
    q, _ = data.prepare_scorer([_write_jsonl(tmp_path / "q.jsonl", [{"instruction": "I", "response": "R", "score": 1}])],
                               tokenizer, "quality")
    assert q.to_pylist()[0]["input_ids"][:-1] == tokenizer.encode(quality_prompt("I", "R"))


def test_a_filled_label_prompt_over_the_context_is_cut_the_way_score_cuts(tmp_path, tokenizer):
    """Not at its end: the digit must follow `##Complexity: ` / `##Quality: ` in training as in scoring."""
    from deita_ray.engines.base import digit_token_ids
    from deita_ray.prompts import complexity_prompt, quality_prompt
    from deita_ray.prompts.truncate import fit_prompt

    digits = digit_token_ids(tokenizer)
    long = "a very long question " * 200
    rows = [{"conversations": [{"from": "human", "value": complexity_prompt(long)}, {"from": "gpt", "value": "5"}]}]
    table, stats = data.prepare_scorer([_write_jsonl(tmp_path / "c.jsonl", rows)], tokenizer, "complexity",
                                       max_length=128)
    ids = table.to_pylist()[0]["input_ids"]
    assert stats["rows_cut_to_fit"] == 1 and len(ids) <= 128 and ids[-1] == digits[4]
    assert tokenizer.decode(ids[:-1]).endswith("  \n##Complexity: ")
    assert ids[:-1] == fit_prompt(lambda f: complexity_prompt(f[0]), [long], tokenizer, 127)[0]  # as score does
    rows = [{"conversations": [{"from": "human", "value": quality_prompt("Q?", long)}, {"from": "gpt", "value": "2"}]}]
    table, _ = data.prepare_scorer([_write_jsonl(tmp_path / "q.jsonl", rows)], tokenizer, "quality", max_length=128)
    ids = table.to_pylist()[0]["input_ids"]
    assert tokenizer.decode(ids[:-1]).endswith(" \n##Quality: ") and ids[-1] == digits[1]


def test_presets_are_the_papers_appendix_a(tiny_models, tmp_path):
    """Appendix A: 13B runs 6 epochs at batch 128 (LLaMA-1: lr 1e-5, warmup 0.03; LLaMA-2: lr 2e-5, warmup 0.1);
    every experiment at max length 2048; scorers as train_scorers.sh; DPO on 10K pairs, seed 42."""
    model = str(tiny_models["scorer-complexity"])
    base = {"model": model, "data": _write_jsonl(tmp_path / "s.jsonl", [{"conversations": CONV}]),
            "output": str(tmp_path / "o")}
    keys = ("learning_rate", "epochs", "global_batch_size", "warmup_ratio", "max_length")
    for preset, values in [("deita-llama1-13b-sft", (1e-5, 6, 128, 0.03, 2048)),
                           ("deita-llama2-13b-sft", (2e-5, 6, 128, 0.1, 2048)),
                           ("deita-mistral-7b-sft", (2e-5, 6, 512, 0.1, 2048))]:
        cfg = load_train_config("sft", data=base, preset=preset)
        assert tuple(getattr(cfg, k) for k in keys) == values, preset
    scorer = load_train_config("scorer", data=base)  # no preset: train_scorers.sh wherever a scorer is trained
    assert tuple(getattr(scorer, k) for k in keys) + (scorer.lr_scheduler,) == (2e-5, 6, 512, 0.1, 2048, "cosine")
    dpo = load_train_config("dpo", data=base, preset="deita-mistral-7b-dpo")
    assert (dpo.max_pairs, dpo.seed, dpo.max_length) == (10000, 42, 2048)


def test_help_shows_what_each_task_uses_and_dry_run_prints_it(tiny_models, tmp_path):
    import json
    import subprocess
    import sys

    def run(*args):
        return subprocess.run([sys.executable, "-m", "deita_ray.cli", "train", *args], capture_output=True, text=True,
                              timeout=120)

    help_text = " ".join(run("dpo", "--help").stdout.split())
    assert "peak learning rate (> 0) (default: 5e-07)" in help_text and "epochs over the data (>= 1) (default: 1)" in help_text
    assert "(default: 512)" in " ".join(run("scorer", "--help").stdout.split())
    data = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Q?", "chosen": "a", "rejected": "b"}])
    out = run("dpo", data, "--model", str(tiny_models["scorer-quality"]), "-o", str(tmp_path / "dpo"),
              "--preset", "deita-mistral-7b-dpo", "--epochs", "2", "--dry-run")
    assert out.returncode == 0, out.stderr
    resolved = json.loads(out.stdout)
    assert (resolved["learning_rate"], resolved["epochs"], resolved["max_pairs"], resolved["beta"]) == (5e-7, 2, 10000, 0.1)
    assert "Ray" not in out.stderr and not (tmp_path / "dpo").exists()
    common = (data, "--model", str(tiny_models["scorer-quality"]), "-o", str(tmp_path / "dpo"), "--dry-run")
    out = run("dpo", *common, "--trl", "report_to=tensorboard", "--trl", "loss_type=[ipo]")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["trl"] == {"report_to": "tensorboard", "loss_type": ["ipo"]}
    for bad, message in ((("--trl", "nope=1"), "trl.nope: not a field of trl.DPOConfig"),
                         (("--trl", "output_dir=/tmp/x"), "trl.output_dir: is set by deita-ray")):
        out = run("dpo", *common, *bad)
        assert out.returncode == 2 and out.stderr.startswith(f"deita-ray: error: {message}"), out.stderr
        assert out.stderr.count("\n") == 1, out.stderr


def test_train_config_presets_overrides_and_errors(tiny_models, tmp_path):
    model = str(tiny_models["scorer-complexity"])
    sel = _write_jsonl(tmp_path / "s.jsonl", [{"conversations": CONV}])
    base = {"model": model, "data": sel, "output": str(tmp_path / "o")}
    cfg = load_train_config("sft", data=base, preset="deita-mistral-7b-sft", overrides=["num_workers=8"])
    assert (cfg.learning_rate, cfg.epochs, cfg.global_batch_size, cfg.warmup_ratio, cfg.lr_scheduler, cfg.max_length) == \
        (2e-5, 6, 512, 0.1, "cosine", 2048)
    assert cfg.grad_accumulation == 64 and cfg.data == [sel]
    dpo = load_train_config("dpo", data=base, preset="deita-mistral-7b-dpo")
    assert (dpo.beta, dpo.learning_rate, dpo.epochs, dpo.global_batch_size, dpo.lr_scheduler, dpo.max_prompt_length) == \
        (0.1, 5e-7, 9, 32, "linear", 512)
    with pytest.raises(ConfigError, match="global_batch_size: 512 is not a multiple"):
        load_train_config("sft", data=base, preset="deita-mistral-7b-sft", overrides=["num_workers=3"])
    with pytest.raises(ConfigError, match="unknown key 'learning_rat'"):
        load_train_config("sft", data=base, overrides=["learning_rat=1"])
    with pytest.raises(ConfigError, match="model path .* does not exist"):
        load_train_config("sft", data={**base, "model": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match="is for `train dpo`"):
        load_train_config("sft", data=base, preset="deita-mistral-7b-dpo")
    with pytest.raises(ConfigError, match="deepspeed"):
        load_train_config("sft", data=base, overrides=["deepspeed=zero9"])
    assert load_train_config("sft", data=base, overrides=["deepspeed=zero3"]).deepspeed_config()["zero_optimization"]["stage"] == 3


def test_dpo_with_the_models_own_chat_template(tmp_path, tokenizer):
    path = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Pick a fruit.", "chosen": "Apple.", "rejected": "Rock."}])
    row = data.prepare_dpo([path], tokenizer, template="model")[0].to_pylist()[0]
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "Pick a fruit."},
                                              {"role": "assistant", "content": "Apple."}], tokenize=False)
    assert row["prompt"] + row["chosen"] == rendered and row["chosen"].endswith(tokenizer.eos_token)


def test_sft_rows_from_the_shared_real_pools_reconcile(shared_data, tokenizer):
    inputs = [str(shared_data / name) for name in ("lima.json", "alpaca_en_demo.json", "sharegpt_dummy_conversation.json")]
    table, stats = data.prepare_sft(inputs, tokenizer, max_length=1024)
    assert stats["rows_in"] == 1029 + 999 + 500 == stats["rows_used"] + stats["rows_skipped"]
    assert table.num_rows == stats["rows_used"] > 2400
    assert all(1 in m for m in table.column("assistant_masks").to_pylist())
