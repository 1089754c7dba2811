"""The judge stage in one process: teacher-forced on transformers (a random tiny model always gives valid
judgements, each digit the model's argmax), free-text judgements and engine failures, the method per engine.
The vLLM judge (regex-constrained) is in test_generation.py, beside the vLLM engine it shares."""

import pyarrow as pa
import pytest

from deita_ray.engines.config import Generation, LLMConfig
from deita_ray.prompts import judge
from deita_ray.stages.judge import JudgeStage


def _judge_input(mode, chains):
    return pa.Table.from_pylist([{"id": f"c{i}", "mode": mode, "instruction": "Name a river.", "variants": v}
                                 for i, v in enumerate(chains)])


CHAINS = [["Name a river.", "Name a river in France.", "Name a river in France longer than 500 km."],
          ["Why?", "Why is the sky blue?", "Why is the sky blue at noon and red at dusk?", "Explain Rayleigh.",
           "Explain Rayleigh scattering with one equation.", "Derive it."],
          ["Only one variant."]]


@pytest.mark.parametrize("mode", ["complexity", "quality"])
def test_teacher_forced_judge_on_a_random_model_always_parses(tiny_models, mode):
    stage = JudgeStage(LLMConfig(model=str(tiny_models["scorer-complexity"]), engine="hf"))
    assert stage.method == "teacher-force"
    out = stage(_judge_input(mode, CHAINS)).to_pylist()
    assert [r["judge_status"] for r in out] == ["valid", "valid", "skipped"]
    for row, chain in zip(out[:2], CHAINS):
        assert len(row["scores"]) == len(chain) and all(1 <= s <= 6 for s in row["scores"])
        assert row["judgement"] == judge.judgement_text(mode, row["scores"])
    assert out[2]["scores"] is None and out[2]["judge_reason"] == "one variant: nothing to rank"


def test_teacher_forced_digits_are_the_models_argmax(tiny_models):
    """Slot by slot, the chosen digit is the argmax of the six digit logits after the written format."""
    import numpy as np

    from deita_ray.engines.base import make_engine
    from deita_ray.prompts.chat import user_prompt_ids
    from deita_ray.prompts.tokens import digit_token_ids
    from transformers import AutoTokenizer

    config = LLMConfig(model=str(tiny_models["scorer-quality"]), engine="hf")
    row = JudgeStage(config)(_judge_input("complexity", CHAINS[:1])).to_pylist()[0]
    tok = AutoTokenizer.from_pretrained(config.model)
    engine = make_engine(config, "token_logits")
    prompt = user_prompt_ids(tok, judge.judge_prompt("complexity", CHAINS[0]), True)
    for slot in range(1, 4):
        done = judge.judgement_text("complexity", row["scores"][:slot - 1])
        cue = (done + "\n" if done else "") + judge.slot_cue("complexity", slot)
        logits = engine.token_logits([prompt + tok(cue, add_special_tokens=False)["input_ids"]], digit_token_ids(tok))
        assert int(np.argmax(logits[0])) + 1 == row["scores"][slot - 1]


def test_judge_failures_and_free_text_judgements():
    class Free:
        name = "free"

        def __init__(self, texts):
            self.texts = texts

        def generate(self, prompts, sampling, seeds=None):
            assert sampling.temperature == 0 and sampling.regex is None
            if len(prompts) > 1:
                raise RuntimeError("batch failed")  # the stage retries one by one
            text = self.texts.pop(0)
            if text is None:
                raise RuntimeError("engine exploded")
            return [Generation(text=text, token_ids=[], finish_reason="stop", n_tokens=7)]

    texts = ["Sure. [3] Score: 2\n[1] Score: 1\n[2] Score: 6", "[1] Score: 1\n[2] Score: 7\n[3] Score: 2", None]
    chains = [CHAINS[0], CHAINS[0], CHAINS[0]]
    stage = JudgeStage(LLMConfig(model="x", engine="http"), engine=Free(texts))
    assert stage.method == "none"
    out = stage(_judge_input("complexity", chains))
    rows = out.to_pylist()
    assert rows[0]["judge_status"] == "valid" and rows[0]["scores"] == [1, 6, 2] and rows[0]["judge_tokens"] == 7
    assert rows[1]["judge_status"] == "invalid" and rows[1]["scores"] is None
    assert "7 is outside 1..6" in rows[1]["judge_reason"] and rows[1]["judgement"].startswith("[1] Score: 1")
    assert rows[2]["judge_status"] == "failed" and rows[2]["_failure_reason"].startswith("engine error: RuntimeError")


def test_judge_methods_per_engine():
    from deita_ray.configlib import ConfigError, build
    from deita_ray.stages.judge import resolve_method
    from deita_ray.steps.judge import JudgeConfig

    assert [resolve_method("auto", e) for e in ("vllm", "hf", "fake", "http")] == \
        ["regex", "teacher-force", "teacher-force", "none"]
    with pytest.raises(ConfigError, match="cannot be teacher-forced"):
        build(JudgeConfig, {"model": "m", "engine": "http", "method": "teacher-force"}, "judge")
    with pytest.raises(ConfigError, match="cannot constrain decoding"):
        build(JudgeConfig, {"model": "m", "engine": "hf", "method": "regex"}, "judge")
