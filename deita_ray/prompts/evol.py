"""Evol Complexity and Evol Quality: the rewriting prompts, the operation of each round, what makes a variant fail.

    from deita_ray.prompts import evol
    op = evol.operation("seed-17", round=3, mode="complexity")          # reproducible from (seed id, round)
    prompt = evol.rewrite_prompt("complexity", op, previous_instruction)
    text = evol.extract_rewrite("complexity", generation_text)
    reason = evol.failure_reason("complexity", text, previous, finish_reason)   # None: the variant is kept

The prompt texts are the method's own specification (the Deita paper's Tables 12-13 and 16-17;
WizardLM's in-depth operations), pinned byte for byte by tests against an independent transcription.
Deita describes no elimination: every chain has M+1 = 6 variants (paper §2.3, "6 variations in total").
So by default a variant fails only when it is not a usable text (empty, cut by the token limit, the
previous variant again, or copying the rewriting prompt's markers); the round is then retried with a
new sampling seed (notes/evol-judge.md §3). WizardLM's rules about the answer to an evolved
instruction ("sorry" in fewer than 80 words; only punctuation and stop words) are an option, applied to
Evol Quality variants only, since those are responses. Words are counted on every script: a CJK
character counts as one word, any other run of letters or digits as one.
"""

from __future__ import annotations

import hashlib
import re

MODES = ("complexity", "quality")
ROUNDS = 5  # M in the paper: six variants per chain, the seed included

COMPLEXITY_TEMPLATE = (
    "I want you act as a Prompt Rewriter.\n"
    "Your objective is to rewrite a given prompt into a more complex version to make those famous AI systems "
    "(e.g., ChatGPT and GPT4) a bit harder to handle.\n"
    "But the rewritten prompt must be reasonable and must be understood and responded by humans.\n"
    "Your rewriting cannot omit the non-text parts such as the table and code in #Given Prompt#:. Also, please do "
    "not omit the input in #Given Prompt#.\n"
    "You SHOULD complicate the given prompt using the following method:\n"
    "{method}\n"
    "You should try your best not to make the #Rewritten Prompt# become verbose, #Rewritten Prompt# can only add 10 "
    "to 20 words into #Given Prompt#.\n"
    "'#Given Prompt#', '#Rewritten Prompt#', 'given prompt' and 'rewritten prompt' are not allowed to appear in "
    "#Rewritten Prompt#\n"
    "#Given Prompt#:\n"
    "{instruction}\n"
    "#Rewritten Prompt#:\n"
)
QUALITY_TEMPLATE = (
    "I want you to act as a Response Rewriter\n"
    "Your goal is to enhance the quality of the response given by an AI assistant to the #Given Prompt# through "
    "rewriting.\n"
    "But the rewritten response must be reasonable and must be understood by humans.\n"
    "Your rewriting cannot omit the non-text parts such as the table and code in #Given Prompt# and #Given "
    "Response#. Also, please do not omit the input in #Given Prompt#.\n"
    "You Should enhance the quality of the response using the following method:\n"
    "{method}\n"
    "You should try your best not to make the #Rewritten Response# become verbose, #Rewritten Response# can only "
    "add 10 to 20 words into #Given Response#.\n"
    "'#Given Response#', '#Rewritten Response#', 'given response' and 'rewritten response' are not allowed to "
    "appear in #Rewritten Response#\n"
    "#Given Prompt#:\n"
    "{instruction}\n"
    "#Given Response#:\n"
    "{response}\n"
    "#Rewritten Response#:\n"
)

# WizardLM's in-depth operations (Evol Complexity) and Deita's five response operations (Evol Quality).
OPERATIONS = {
    "complexity": {
        "constraints": "Please add one more constraints/requirements into #Given Prompt#",
        "deepen": "If #Given Prompt# contains inquiries about certain issues, the depth and breadth of the inquiry "
                  "can be increased.",
        "concretizing": "Please replace general concepts with more specific concepts.",
        "reasoning": "If #Given Prompt# can be solved with just a few simple thinking processes, you can rewrite it "
                     "to explicitly request multiple-step reasoning.",
    },
    "quality": {
        "helpfulness": "Please make the Response more helpful to the user.",
        "relevance": "Please make the Response more relevant to #Given Prompt#.",
        "depth": "Please make the Response more in-depth.",
        "creativity": "Please increase the creativity of the response.",
        "details": "Please increase the detail level of Response.",
    },
}
MARKERS = {"complexity": "#Rewritten Prompt#:", "quality": "#Rewritten Response#:"}
# Words of the evolving prompt that must not leak into a variant (WizardLM's copy rule).
LEAKS = {"complexity": ("#Given Prompt#", "#Rewritten Prompt#", "given prompt", "rewritten prompt"),
         "quality": ("#Given Response#", "#Rewritten Response#", "given response", "rewritten response")}
# A compact English stop-word list (NLTK's, minus contractions) for WizardLM's "nothing but stop words" rule.
STOP_WORDS = frozenset("""a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had has have having he
her here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now of
off on once only or other our ours ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were what when where which while
who whom why will with would you your yours yourself yourselves""".split())


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def operation(seed_id: str, round: int, mode: str) -> str:
    """The operation of one round, drawn reproducibly from (mode, seed id, round): the same chain
    evolves the same way on every run and every worker, whatever the batching."""
    _check_mode(mode)
    names = sorted(OPERATIONS[mode])
    digest = hashlib.sha256(f"{mode}\0{seed_id}\0{round}".encode("utf-8", "surrogatepass")).digest()
    return names[int.from_bytes(digest[:8], "little") % len(names)]


def request_seed(base: int, mode: str, seed_id: str, round: int, attempt: int = 0) -> int:
    """The sampling seed of one rewrite request, from (run seed, mode, seed id, round, attempt): a chain's
    text does not depend on the batch, the worker or a rerun, and a retried round samples anew (31 bits:
    every backend takes it)."""
    key = f"{base}\0{mode}\0{seed_id}\0{round}" + (f"\0{attempt}" if attempt else "")
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def rewrite_prompt(mode: str, op: str, instruction: str, response: str | None = None) -> str:
    """The filled rewriting prompt: `instruction` is the previous variant (complexity) or the seed
    instruction (quality, with `response` the previous response variant)."""
    _check_mode(mode)
    method = OPERATIONS[mode][op]
    if mode == "complexity":
        return COMPLEXITY_TEMPLATE.format(method=method, instruction=instruction)
    if response is None:
        raise ValueError("Evol Quality rewrites a response: give the previous response")
    return QUALITY_TEMPLATE.format(method=method, instruction=instruction, response=response)


def extract_rewrite(mode: str, text: str) -> str:
    """The variant in a generation: the text after the rewrite marker if the model repeated it, else all of it."""
    marker = MARKERS[mode]
    if marker in text:
        text = text.rsplit(marker, 1)[1]
    return text.strip()


# One word: a CJK ideograph, kana or hangul syllable (those scripts write no spaces), or a run of letters,
# digits and apostrophes of any other script.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_WORDS = re.compile(f"[{_CJK}]|(?:(?![{_CJK}])[\\w'])+")
RETRIES = 2  # attempts after the first one of a round that failed, each with its own sampling seed


def words(text: str) -> list[str]:
    """The words of `text`, on every script (so a rule that counts words never sees Russian or Chinese as empty)."""
    return _WORDS.findall(text)


def failure_reason(mode: str, variant: str, previous: str, finish_reason: str = "stop",
                   wizardlm_rules: bool = False) -> str | None:
    """Why a rewrite is not a usable variant, or None when it is kept. Only text that cannot serve fails by
    default; `wizardlm_rules` adds WizardLM's rules about responses, for Evol Quality variants only."""
    _check_mode(mode)
    if finish_reason == "length":
        return "cut by the token limit"
    if not variant.strip():
        return "empty"
    if variant.strip() == previous.strip():
        return "identical to the previous variant"
    lowered = variant.lower()
    for leak in LEAKS[mode]:
        if (leak.lower() in lowered) if leak.islower() else (leak in variant):
            return f"copies the rewriting prompt ({leak!r})"
    if wizardlm_rules and mode == "quality":
        found = words(variant)
        if "sorry" in lowered and len(found) < 80:
            return "an apology shorter than 80 words (WizardLM rule)"
        if all(w.lower().strip("'") in STOP_WORDS for w in found):  # also true when there are no words at all
            return "only punctuation and stop words (WizardLM rule)"
    return None
