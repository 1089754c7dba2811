"""A scorer that ships only a SentencePiece `tokenizer.model` (as the released Deita scorers do) is encoded
exactly as sentencepiece encodes, with BOS (the reference's environment), not as transformers 5 converts it.
Uses Mistral-7B's real SentencePiece model from mistral-common (installed with vLLM); nothing is downloaded."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from deita_ray.prompts import complexity_prompt, quality_prompt
from deita_ray.prompts.tokens import SentencePieceTokenizer, digit_token_ids, load_tokenizer

CODE = "Fix this:\ndef f(x):\n    if x:\n\treturn  x\n    return 0"


@pytest.fixture(scope="module")
def spm_scorer(tmp_path_factory):
    mistral_common = pytest.importorskip("mistral_common")
    source = Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"
    if not source.exists():
        pytest.skip("mistral-common without its tokenizer.model.v1")
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("spm-scorer")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32000, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(config).save_pretrained(path)
    shutil.copy(source, path / "tokenizer.model")  # no tokenizer.json: like the released scorers
    return path


def test_prompts_are_encoded_as_sentencepiece_does(spm_scorer):
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(spm_scorer / "tokenizer.model"))
    tok = load_tokenizer(str(spm_scorer))
    assert isinstance(tok, SentencePieceTokenizer)
    for prompt in (complexity_prompt(CODE), quality_prompt(CODE, "    indented\n\n\tanswer  ")):
        assert tok([prompt])["input_ids"][0] == [sp.bos_id()] + sp.encode(prompt)
    assert sp.encode("\n    return", out_type=str)[-2:] == ["▁▁▁", "▁return"]
    assert digit_token_ids(tok) == [sp.piece_to_id(d) for d in "123456"]


def test_transformers_conversion_would_differ(spm_scorer):
    """Why: transformers 5's converted tokenizer splits indentation differently."""
    from transformers import AutoTokenizer

    try:
        converted = AutoTokenizer.from_pretrained(str(spm_scorer))
    except Exception as exc:  # a build that cannot convert at all makes the same point
        pytest.skip(f"transformers cannot convert this tokenizer here: {exc}")
    ours = load_tokenizer(str(spm_scorer))
    prompt = complexity_prompt(CODE)
    assert converted([prompt])["input_ids"][0] != ours([prompt])["input_ids"][0]


def test_scoring_with_a_sentencepiece_scorer(spm_scorer):
    import sentencepiece

    from deita_ray.engines.config import LLMConfig
    from deita_ray.preflight import check_model
    from deita_ray.stages.score import TurnScorer

    check_model("score.complexity_model", str(spm_scorer))  # loads before Ray would start
    scorer = TurnScorer("complexity", LLMConfig(model=str(spm_scorer), engine="hf"))
    sp = sentencepiece.SentencePieceProcessor(model_file=str(spm_scorer / "tokenizer.model"))
    ids, truncated = scorer.build_prompts([(CODE, "")])
    assert ids[0] == [1] + sp.encode(complexity_prompt(CODE)) and truncated == [False]
    scores, *_ = scorer.score_pairs([(CODE, ""), ("What is 2 + 2?", "")])
    assert np.all((scores >= 1) & (scores <= 6))
