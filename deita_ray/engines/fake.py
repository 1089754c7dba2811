"""Deterministic fake engine for plumbing tests: every output is a hash of the input's token ids.

No model weights are read (only `max_length` from the config), so Ray and I/O tests run in
milliseconds. Never used for real results; the real engines have their own tests. `engine_kwargs`:
`fail_on_token` makes any input holding that token id raise `fail_with` (RuntimeError by default;
TimeoutError or MemoryError for transient failures), to test per-row failures; `die_once` (a file
path) kills the first process that generates, once; `judge_keyword` (a word) makes it a scripted MT-Bench judge:
a rating prompt gets `Rating: [[1 + times the word appears]]` (at most 10), a pairwise prompt (one that asks for
[[A]]) `[[A]]`, `[[B]]` or `[[C]]` by who says the word more (the ablation quickstart's judge, and the tests').
"""

from __future__ import annotations

import hashlib

import numpy as np

from deita_ray.engines.config import Generation, LLMConfig, Sampling

WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu")


def _digest(ids, salt: bytes = b"") -> bytes:
    return hashlib.sha256(salt + np.asarray(ids, dtype=np.int64).tobytes()).digest()


class FakeEngine:
    name = "fake"

    def __init__(self, config: LLMConfig):
        self.config = config
        self.context_length = config.max_length or 512
        self.fail_on_token = config.engine_kwargs.get("fail_on_token")
        # The exception class raised there: RuntimeError (a permanent failure) or e.g. TimeoutError (transient).
        self.fail_with = {"RuntimeError": RuntimeError, "TimeoutError": TimeoutError,
                          "MemoryError": MemoryError}[config.engine_kwargs.get("fail_with", "RuntimeError")]
        # A file path: the first process to generate creates it and kills itself (SIGKILL), once per path,
        # so tests can kill an actor mid-generation.
        self.die_once = config.engine_kwargs.get("die_once")
        self.judge_keyword = config.engine_kwargs.get("judge_keyword")

    def _maybe_die(self) -> None:
        import os
        import signal

        try:
            fd = os.open(self.die_once, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)

    def _check(self, ids) -> None:
        if self.fail_on_token is not None and not isinstance(ids, str) and self.fail_on_token in ids:
            raise self.fail_with(f"fake engine failure on token {self.fail_on_token}")

    def token_logits(self, prompts: list[list[int]], token_ids: list[int]) -> np.ndarray:
        out = np.empty((len(prompts), len(token_ids)), dtype=np.float32)
        for row, prompt in enumerate(prompts):
            self._check(prompt)
            out[row] = np.frombuffer(_digest(prompt)[: 4 * len(token_ids)], dtype=np.uint32) / 2**32 * 4.0
        return out

    def embed(self, prompts: list[list[int]]) -> np.ndarray:
        out = np.empty((len(prompts), 64), dtype=np.float32)
        for i, p in enumerate(prompts):
            self._check(p)
            seed = int.from_bytes(_digest(p)[:8], "little")
            out[i] = np.random.default_rng(seed).standard_normal(64)
        return out

    def generate(self, prompts: list, sampling: Sampling, seeds: list[int | None] | None = None) -> list[Generation]:
        """Words drawn from a hash of (prompt, request seed); at most max_new_tokens of them."""
        results = []
        seeds = list(seeds) if seeds is not None else [sampling.seed] * len(prompts)
        for prompt, request_seed in zip(prompts, seeds):
            self._check(prompt)
            if self.die_once is not None:
                self._maybe_die()
            if self.judge_keyword is not None:
                text = scripted_judgement(_text(prompt), self.judge_keyword)
                results.append(Generation(text=text, token_ids=list(range(len(text.split()))), finish_reason="stop"))
                continue
            text = _text(prompt)
            key = text.encode() if isinstance(prompt, str) or text else _digest(prompt)
            seed = int.from_bytes(hashlib.sha256(key + str(request_seed).encode()).digest()[:8], "little")
            rng = np.random.default_rng(seed)
            n = int(rng.integers(1, 2 * sampling.max_new_tokens + 1))
            words = [WORDS[i] for i in rng.integers(0, len(WORDS), min(n, sampling.max_new_tokens))]
            text = " ".join(words)
            reason = "length" if n >= sampling.max_new_tokens else "stop"
            for stop in sampling.stop:
                if stop in text:
                    text, reason = text[: text.index(stop)], "stop"
            results.append(Generation(text=text, token_ids=[WORDS.index(w) for w in words], finish_reason=reason))
        return results


def _text(prompt) -> str:
    """A prompt's text: itself, or its chat messages' contents in order."""
    if isinstance(prompt, str):
        return prompt
    if prompt and isinstance(prompt[0], dict):
        return "\n\n".join(m["content"] for m in prompt)
    return ""


def scripted_judgement(prompt: str, keyword: str) -> str:
    """An MT-Bench judgement that follows one property of the answers: how often they say `keyword`. The
    questions and judge prompts never contain it, so counting in the whole prompt counts in the answers; a
    pairwise prompt is split where assistant B's part begins."""
    if "[[A]]" in prompt:
        a, _, b = prompt.partition("Assistant B")
        said_a, said_b = a.count(keyword), b.count(keyword)
        verdict = "A" if said_a > said_b else "B" if said_b > said_a else "C"
        return f"Assistant A says {keyword!r} {said_a} times, assistant B {said_b} times. [[{verdict}]]"
    said = prompt.count(keyword)
    return f"The answer says {keyword!r} {said} times. Rating: [[{min(10, 1 + said)}]]"

