"""Scorer tokenisation: the tokenizer a scorer is read with, and the ids of its score digits.

    tok = load_tokenizer("models/deita-complexity-scorer")
    ids = tok(["prompt"])["input_ids"]; digits = digit_token_ids(tok)

The released Deita scorers ship only a SentencePiece `tokenizer.model`. The reference scored in an
environment (transformers 4.35) where that meant plain sentencepiece plus BOS; transformers 5
converts the model into a fast tokenizer that splits runs of spaces, tabs and indentation
differently (`"\\n    return"`: `['▁▁▁▁', 'return']` instead of `['▁▁▁', '▁return']`), so code and
formatted text would be scored on sequences the scorer never saw. A model directory with a
`tokenizer.model` and no `tokenizer.json` is therefore encoded by sentencepiece itself.
"""

from __future__ import annotations

import os

from deita_ray.prompts import SCORE_DIGITS


class SentencePieceTokenizer:
    """The slice of the transformers tokenizer interface that scoring and scorer training use,
    encoding exactly as sentencepiece does (BOS first, as LLaMA's tokenizer adds it)."""

    is_fast = False

    def __init__(self, model_file: str):
        import sentencepiece

        self.sp = sentencepiece.SentencePieceProcessor(model_file=model_file)
        self.bos_token_id = self.sp.bos_id() if self.sp.bos_id() >= 0 else None
        self.eos_token_id = self.sp.eos_id() if self.sp.eos_id() >= 0 else None
        self.unk_token_id = self.sp.unk_id()
        self.pad_token_id = self.sp.pad_id() if self.sp.pad_id() >= 0 else None
        self.bos_token = self.sp.id_to_piece(self.bos_token_id) if self.bos_token_id is not None else None
        self.eos_token = self.sp.id_to_piece(self.eos_token_id) if self.eos_token_id is not None else None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = self.sp.encode(text)
        return [self.bos_token_id] + ids if add_special_tokens and self.bos_token_id is not None else ids

    def __call__(self, texts, add_special_tokens: bool = True) -> dict:
        if isinstance(texts, str):
            return {"input_ids": self.encode(texts, add_special_tokens)}
        return {"input_ids": [self.encode(t, add_special_tokens) for t in texts]}

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self.sp.decode([int(i) for i in ids])

    def convert_tokens_to_ids(self, token: str) -> int:
        return self.sp.piece_to_id(token)

    def __len__(self) -> int:
        return self.sp.get_piece_size()


def sentencepiece_model(model: str) -> str | None:
    """The `tokenizer.model` of a local model directory that has no fast tokenizer file, else None."""
    path = os.path.expanduser(model)
    if os.path.isdir(path) and os.path.exists(os.path.join(path, "tokenizer.model")) \
            and not os.path.exists(os.path.join(path, "tokenizer.json")):
        return os.path.join(path, "tokenizer.model")
    return None


def load_tokenizer(model: str):
    """The scorer's tokenizer: sentencepiece itself where the model ships only a SentencePiece model."""
    spm = sentencepiece_model(model)
    if spm is not None:
        return SentencePieceTokenizer(spm)
    return hf_tokenizer(model)


def hf_tokenizer(model: str):
    """The model's transformers tokenizer. Every cut to a context is ours (to the engine's, flagged where it
    happens), so the tokenizer's own limit is lifted: its warning about long inputs would only repeat ours."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.model_max_length = int(1e30)
    return tokenizer


def digit_token_ids(tokenizer) -> list[int]:
    """Ids of "1".."6" in the scorer's own tokenizer (never LLaMA's hard-coded 29896...).

    A digit that is a vocabulary entry of its own is taken directly; otherwise the tokenizer
    must encode it to exactly one token once empty pieces (a SentencePiece "▁") are removed.
    """
    ids = []
    for digit in SCORE_DIGITS:
        tid = tokenizer.convert_tokens_to_ids(digit)
        if tid is None or tid == tokenizer.unk_token_id:
            pieces = [t for t in tokenizer.encode(digit, add_special_tokens=False)
                      if tokenizer.decode([t]).strip()]
            if len(pieces) != 1 or pieces[0] == tokenizer.unk_token_id:
                raise ValueError(f"scorer tokenizer does not encode {digit!r} as a single token (got {pieces}); "
                                 "a Deita scorer needs the digits 1-6 as single tokens")
            tid = pieces[0]
        ids.append(int(tid))
    if len(set(ids)) != 6:
        raise ValueError(f"digit token ids are not distinct: {ids}")
    return ids
