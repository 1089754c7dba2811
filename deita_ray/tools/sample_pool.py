"""Generate the project's own instruction pool for the quickstart, tests and benchmarks.

    deita-ray make-pool pool/ --samples 3000     # or: python -m deita_ray.tools.sample_pool pool/

Writes three files in three formats so every reader path is exercised:
`sharegpt.jsonl` (ShareGPT, 1-4 turns, ids given), `alpaca.json` (Alpaca, some with input and
history, no ids) and `messages.parquet` (OpenAI messages, some with a system turn). Instructions
span simple to compound tasks, responses 1-12 sentences; about 10% are planted near-duplicates
(one word changed) and a handful of rows are malformed on purpose, one per quarantine reason.
`_manifest.json` records the counts so a run's reconciliation can be checked. Same seed, same files.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

TOPICS = [
    "binary search", "photosynthesis", "the French revolution", "compound interest", "hash tables", "climate models",
    "the water cycle", "TCP congestion control", "vaccines", "supply and demand", "recursion", "plate tectonics",
    "neural networks", "the Roman republic", "sorting algorithms", "black holes", "inflation", "gene expression",
    "database indexes", "the printing press", "probability", "volcanoes", "public key cryptography", "poetry meter",
    "garbage collection", "ocean currents", "the immune system", "game theory", "linear regression", "jazz harmony",
    "solar panels", "the Silk Road", "graph traversal", "sleep cycles", "bridges", "memory caches", "tides",
    "microeconomics", "the Renaissance", "unit testing",
]
AUDIENCES = ["a child", "a beginner", "a university student", "an expert", "a busy manager", "a journalist"]
CONSTRAINTS = [
    "use fewer than 100 words", "include a worked example", "compare two competing views", "list the main risks",
    "give a step-by-step plan", "cite one historical case", "end with a short quiz", "use a table",
    "avoid technical jargon", "address common misconceptions", "estimate the costs", "propose an experiment",
]
SIMPLE = ["What is {t}?", "Define {t}.", "Name one fact about {t}.", "Is {t} important?"]
MEDIUM = ["Explain {t} to {a}.", "How does {t} relate to {u}?", "Summarise the history of {t}.",
          "Write a short paragraph about {t} for {a}."]
COMPLEX = ["Design a lesson on {t} for {a}; {c}, and {c2}.",
           "Critically compare {t} and {u} for {a}: {c}, {c2}, and justify every claim.",
           "Write a detailed technical report on {t} that must {c}, {c2} and {c3}.",
           "Plan a research project connecting {t} with {u}; {c}, {c2}, then {c3}."]
FOLLOW_UPS = ["Can you give an example?", "Why is that?", "Make it shorter.", "How does this apply to {u}?",
              "What are the limitations?", "Explain it again for {a}."]
FACTS = [
    "{T} is often described in terms of simple parts that interact.", "A common mistake is to confuse {t} with {u}.",
    "Historically, {t} developed over many decades.", "Experts measure {t} with careful experiments.",
    "In practice, {t} depends on the context and the available resources.", "One useful analogy compares {t} to {u}.",
    "The key idea behind {t} is balance between competing forces.", "Many textbooks introduce {t} with a diagram.",
    "Step one is to state the problem clearly; step two is to test each assumption.",
    "For {a}, the most important point is why {t} matters in daily life.",
    "Numbers help: 3 out of 4 examples show the same pattern.", "A careful answer also names what is still unknown.",
]
MALFORMED_JSONL_LINES = [
    '{"id": "bad-json", "conversations": [{"from": "human", "value": "unterminated',   # malformed JSON
    '[1, 2, 3]',                                                                       # not an object
    '{"id": "bad-missing", "messages_typo": []}',                                      # no known fields
    '{"id": "bad-type", "conversations": [{"from": "human", "value": 42}, {"from": "gpt", "value": "x"}]}',
    '{"id": "bad-role", "conversations": [{"from": "narrator", "value": "Once"}, {"from": "gpt", "value": "x"}]}',
    '{"id": "bad-empty", "conversations": []}',
    '{"id": "bad-order", "conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]}',
    '{"id": "bad-blank", "conversations": [{"from": "human", "value": "   "}, {"from": "gpt", "value": "x"}]}',
    '{"id": "bad-trailing", "conversations": [{"from": "human", "value": "hi"}]}',
]
MALFORMED_UTF8_LINE = b'{"id": "bad-utf8", "conversations": [{"from": "human", "value": "caf\xe9"}, {"from": "gpt", "value": "x"}]}'
MALFORMED_ALPACA = [{"instruction": "No output here."}, {"instruction": 7, "input": "", "output": "seven"}]
MALFORMED_MESSAGES = [[{"role": "tool", "content": "result"}, {"role": "assistant", "content": "ok"}]]


class _Writer:
    def __init__(self, rng: random.Random):
        self.rng = rng

    def fill(self, template: str) -> str:
        r = self.rng
        t, u = r.sample(TOPICS, 2)
        c, c2, c3 = r.sample(CONSTRAINTS, 3)
        return template.format(t=t, T=t[0].upper() + t[1:], u=u, a=r.choice(AUDIENCES), c=c, c2=c2, c3=c3)

    def instruction(self) -> str:
        level = self.rng.choices([SIMPLE, MEDIUM, COMPLEX], weights=[3, 4, 3])[0]
        return self.fill(self.rng.choice(level))

    def response(self) -> str:
        n = self.rng.choice([1, 1, 2, 3, 4, 6, 8, 12])
        return " ".join(self.fill(self.rng.choice(FACTS)) for _ in range(n))

    def turns(self) -> list[tuple[str, str]]:
        n = self.rng.choices([1, 2, 3, 4], weights=[6, 2, 1, 1])[0]
        pairs = [(self.instruction(), self.response())]
        pairs += [(self.fill(self.rng.choice(FOLLOW_UPS)), self.response()) for _ in range(n - 1)]
        return pairs

    def near_duplicate(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Same conversation with one word of the last response replaced: a planted near-duplicate."""
        q, a = pairs[-1]
        words = a.split()
        words[self.rng.randrange(len(words))] = self.rng.choice(["indeed", "clearly", "often", "usually"])
        return pairs[:-1] + [(q, " ".join(words))]


def generate_conversations(n: int, seed: int = 0, dup_fraction: float = 0.1) -> list[list[tuple[str, str]]]:
    writer = _Writer(random.Random(seed))
    originals = [writer.turns() for _ in range(n - int(n * dup_fraction))]
    dups = [writer.near_duplicate(writer.rng.choice(originals)) for _ in range(n - len(originals))]
    convs = originals + dups
    writer.rng.shuffle(convs)
    return convs


def corpus_sentences() -> list[str]:
    """Text to train the tiny models' tokenizer on (the same vocabulary the pool uses)."""
    return [turn for conv in generate_conversations(400, seed=1234) for pair in conv for turn in pair]


def _sharegpt(pairs, system=None):
    turns = [{"from": "system", "value": system}] if system else []
    for q, a in pairs:
        turns += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    return turns


def _messages(pairs, system=None):
    msgs = [{"role": "system", "content": system}] if system else []
    for q, a in pairs:
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return msgs


def _alpaca(pairs, rng):
    (q, a), history = pairs[-1], [list(p) for p in pairs[:-1]]
    record = {"instruction": q, "input": "", "output": a}
    if rng.random() < 0.25:
        record["input"] = f"Context: {rng.choice(TOPICS)}."
    if history:
        record["history"] = history
    return record


def make_pool(out_dir: str | Path, samples: int = 3000, seed: int = 0) -> dict:
    """Write the pool files and manifest; returns the manifest."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from deita_ray.io.outputs import check_replaceable

    out = Path(out_dir)
    check_replaceable(str(out), ("sharegpt.jsonl", "alpaca.json", "messages.parquet"), "_manifest.json")
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed + 1)
    convs = generate_conversations(samples, seed=seed)
    n_share, n_alpaca = int(samples * 0.45), int(samples * 0.35)
    share, alpaca, msgs = convs[:n_share], convs[n_share:n_share + n_alpaca], convs[n_share + n_alpaca:]
    system = "You are a careful, friendly assistant."

    lines = [json.dumps({"id": f"sg-{i:06d}", "conversations": _sharegpt(c, system if i % 10 == 0 else None)}).encode()
             for i, c in enumerate(share)]
    bad_lines = [line.encode() for line in MALFORMED_JSONL_LINES] + [MALFORMED_UTF8_LINE]
    for k, bad in enumerate(bad_lines):  # spread the bad lines through the file
        lines.insert((k + 1) * len(lines) // (len(bad_lines) + 1), bad)
    (out / "sharegpt.jsonl").write_bytes(b"\n".join(lines) + b"\n")

    alpaca_rows = [_alpaca(c, rng) for c in alpaca] + MALFORMED_ALPACA
    (out / "alpaca.json").write_text(json.dumps(alpaca_rows, indent=1))

    msg_rows = [{"messages": _messages(c, system if i % 7 == 0 else None)} for i, c in enumerate(msgs)]
    msg_rows += [{"messages": m} for m in MALFORMED_MESSAGES]
    pq.write_table(pa.Table.from_pylist(msg_rows), out / "messages.parquet")

    bad = len(bad_lines) + len(MALFORMED_ALPACA) + len(MALFORMED_MESSAGES)
    manifest = {"samples": samples, "rows": samples + bad, "malformed": bad, "seed": seed,
                "near_duplicates": samples - (samples - int(samples * 0.1)),
                "files": {"sharegpt.jsonl": len(share) + len(bad_lines), "alpaca.json": len(alpaca_rows),
                          "messages.parquet": len(msg_rows)}}
    (out / "_manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def make_preferences(out_dir: str | Path, pairs: int = 200, seed: int = 0) -> dict:
    """Preference pairs for a DPO smoke run: {prompt, chosen, rejected}, the chosen answer one the
    pool generator writes for the question, the rejected one a short unhelpful reply. Returns the manifest."""
    from deita_ray.io.outputs import check_replaceable

    out = Path(out_dir)
    check_replaceable(str(out), ("preferences.jsonl",), "_manifest.json")
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed + 2)
    refusals = ["I don't know.", "Not sure, sorry.", "Maybe.", "Ask someone else.", "That depends."]
    rows = [{"prompt": conv[0][0], "chosen": conv[0][1], "rejected": rng.choice(refusals)}
            for conv in generate_conversations(pairs, seed=seed, dup_fraction=0.0)]
    (out / "preferences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = {"pairs": pairs, "seed": seed, "files": {"preferences.jsonl": pairs}}
    (out / "_manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


QUESTION_CATEGORIES = ["writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"]


def make_questions(out_dir: str | Path, questions: int = 16, seed: int = 0) -> dict:
    """MT-Bench-style questions in FastChat's question.jsonl format: two turns each, FastChat's categories, a
    reference answer for the categories judged against one (math, reasoning, coding). Returns the manifest."""
    from deita_ray.io.outputs import check_replaceable

    out = Path(out_dir)
    check_replaceable(str(out), ("question.jsonl",), "_manifest.json")
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed + 3)
    rows = []
    for k in range(questions):
        topic, other = rng.sample(TOPICS, 2)
        category = QUESTION_CATEGORIES[k % len(QUESTION_CATEGORIES)]
        first = rng.choice(MEDIUM).format(t=topic, a=rng.choice(AUDIENCES), u=other)
        # Never the word the quickstart's scripted judge counts ("example"): only answers may move its rating.
        second = rng.choice([f for f in FOLLOW_UPS if "example" not in f]).format(a=rng.choice(AUDIENCES), u=other)
        row = {"question_id": 1000 + k, "category": category, "turns": [first, second]}
        if category in ("math", "reasoning", "coding"):
            row["reference"] = [f"A short, correct account of {topic}.", f"The same, adapted: {second}"]
        rows.append(row)
    (out / "question.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = {"questions": questions, "seed": seed, "files": {"question.jsonl": questions}}
    (out / "_manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", nargs="?", default="pool", help="directory to write the pool into (default: pool)")
    parser.add_argument("--samples", type=int, default=3000, help="number of good samples (malformed rows come on top)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same pool")


def run(args: argparse.Namespace) -> int:
    manifest = make_pool(args.out_dir, samples=args.samples, seed=args.seed)
    print(f"wrote {manifest['rows']} rows ({manifest['samples']} good, {manifest['malformed']} malformed on purpose) "
          f"to {args.out_dir}: " + ", ".join(f"{k} ({v})" for k, v in manifest["files"].items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deita-ray make-pool", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
