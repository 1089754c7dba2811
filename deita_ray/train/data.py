"""Training rows for SFT, DPO and scorer training: read, validate, render, tokenize, count what is skipped.

    from deita_ray.train.data import prepare_sft
    table, skipped = prepare_sft(["selection/selected.jsonl"], tokenizer, template="vicuna", max_length=2048)

Plain Python over Arrow, no Ray. Every row that cannot be used is counted under its reason
(`skipped`), never dropped silently; `prepare_*` raise when nothing usable is left.
- SFT: any pool format the reader takes (the selected set's Parquet or ShareGPT JSONL, Alpaca,
  OpenAI messages). Rendered with Vicuna v1.1 (FastChat's, as Deita trains) or the tokenizer's
  own chat template; `assistant_masks` marks the assistant turns (with their end-of-turn token):
  the loss is on those tokens only.
- DPO: prompt/chosen/rejected as strings (plain), as message lists (UltraFeedback-binarized),
  or ShareGPT preference rows (`conversations` + `chosen`/`rejected` turns). `max_pairs` draws
  that many at random first (Deita: 10K UltraFeedback pairs, seed 42). Rendered into plain
  prompt/chosen/rejected text for TRL, cut the way the TRL of the paper's time cut: only a pair
  longer than `max_length` loses the start of its prompt (to `max_prompt_length`), then answer ends.
- Scorer: (instruction[, response], score) labels, or Deita's released scorer data (a human turn
  holding the filled template and a gpt turn holding the digit). The exact scorer template is
  tokenized as `deita-ray score` tokenizes it, and the only loss token is the score digit.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pyarrow as pa

from deita_ray.prompts import complexity_prompt, quality_prompt, scorer_fields
from deita_ray.prompts import chat

SFT_SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("assistant_masks", pa.list_(pa.int8()))])
DPO_SCHEMA = pa.schema([("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string())])
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


class NoTrainingRows(ValueError):
    pass


class Skips(Counter):
    """Rows left out of training, counted by reason and kept (with their raw record) for quarantine."""

    def __init__(self, *args):
        super().__init__(*args)
        self.rows: list[tuple[str | None, str, str]] = []

    def add(self, reason: str, record, rid: str | None = None) -> None:
        self[reason] += 1
        raw = record if isinstance(record, str) else json.dumps(record, ensure_ascii=False, default=str)
        self.rows.append((rid, reason, raw))

    def table(self) -> pa.Table:
        from deita_ray.io.quarantine import quarantine_rows

        ids = [rid or hashlib.sha1(raw.encode("utf-8", "surrogatepass")).hexdigest()[:16] for rid, _, raw in self.rows]
        return quarantine_rows(ids, "train", [r for _, r, _ in self.rows], [raw for _, _, raw in self.rows])


def _finish(rows: list[dict], schema: pa.Schema, skipped: Counter, total: int, what: str,
            cut: int = 0) -> tuple[pa.Table, dict]:
    """The table and its stats: rows in = rows used + rows skipped (by reason); `cut` rows were
    shortened to fit (kept)."""
    if not rows:
        reasons = "; ".join(f"{n} x {r}" for r, n in skipped.most_common(5)) or "the input is empty"
        raise NoTrainingRows(f"no usable {what} rows out of {total} ({reasons})")
    if len(rows) + sum(skipped.values()) != total:
        raise AssertionError(f"{what} rows do not reconcile: {total} in, {len(rows)} used, {sum(skipped.values())} skipped")
    stats = {"rows_in": total, "rows_used": len(rows), "rows_skipped": sum(skipped.values()),
             "skipped": dict(skipped), "rows_cut_to_fit": cut,
             # Skipped rows with their reasons, for OUTPUT/quarantine/ (launch.py writes them).
             "quarantine": skipped.table() if isinstance(skipped, Skips) else None}
    return pa.Table.from_pylist(rows, schema=schema), stats


# ---- SFT ------------------------------------------------------------------------------------

def render_vicuna_spans(conversation: list[dict], eos: str = "</s>") -> tuple[str, list[tuple[int, int]]]:
    """FastChat vicuna_v1.1 text and the character spans of the assistant answers (with their eos)."""
    body = [t for t in conversation if t["from"] != "system"]
    return chat.render_vicuna_spans([(h["value"], g["value"]) for h, g in zip(body[0::2], body[1::2])], eos)


def render_template_spans(tokenizer, conversation: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The tokenizer's chat template; each answer's span is what its message adds to the rendering."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("template 'model' needs a tokenizer with a chat template; use template 'vicuna'")
    messages = [{"role": _ROLES[t["from"]], "content": t["value"]} for t in conversation]
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        upto = tokenizer.apply_chat_template(messages[:i + 1], tokenize=False)
        if not upto.startswith(before):
            raise ValueError("the chat template renders a conversation's prefix differently from the whole; "
                             "assistant spans cannot be found (use template 'vicuna')")
        spans.append((len(before), len(upto)))
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    return text, spans


def tokenize_spans(tokenizer, text: str, spans: list[tuple[int, int]], max_length: int,
                   add_special_tokens: bool) -> tuple[list[int], list[int]]:
    """Token ids of `text` (first max_length kept) and a 0/1 mask of tokens inside `spans`."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("SFT masking needs a fast tokenizer (character offsets)")
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=add_special_tokens)
    ids, offsets = enc["input_ids"][:max_length], enc["offset_mapping"][:max_length]
    mask = [int(end > start and any(start < b and end > a for a, b in spans)) for start, end in offsets]
    return ids, mask


def prepare_sft(inputs: list[str], tokenizer, template: str = "vicuna", max_length: int = 2048) -> tuple[pa.Table, dict]:
    from deita_ray.io.reader import plan_reads, read_all

    pool, quarantine = read_all(plan_reads(inputs))
    skipped = Skips()
    for row in quarantine.to_pylist():
        skipped.add(row["reason"], row["raw"], row["id"])
    rows, cut = [], 0
    for conversation in pool.column("conversations").to_pylist():
        if template == "vicuna":
            text, spans = render_vicuna_spans(conversation, tokenizer.eos_token or "</s>")
        else:
            text, spans = render_template_spans(tokenizer, conversation)
        ids, mask = tokenize_spans(tokenizer, text, spans, max_length, add_special_tokens=template == "vicuna")
        if not any(mask):
            skipped.add(f"no assistant token within max_length {max_length}", {"conversations": conversation})
            continue
        cut += len(ids) == max_length
        rows.append({"input_ids": ids, "assistant_masks": mask})
    return _finish(rows, SFT_SCHEMA, skipped, pool.num_rows + quarantine.num_rows, "SFT", cut)


# ---- DPO ------------------------------------------------------------------------------------

def read_records(inputs: list[str]) -> tuple[list[dict], Skips]:
    """JSON records from .json (array), .jsonl and .parquet files or directories of them."""
    import fsspec
    import pyarrow.parquet as pq

    from deita_ray.io.reader import expand_inputs

    records, bad = [], Skips()
    for url in inputs:
        for path in expand_inputs(url):
            with fsspec.open(path, "rb") as f:
                if path.endswith(".parquet"):
                    records += pq.read_table(f).to_pylist()
                elif path.endswith((".jsonl", ".ndjson")):
                    for line in f.read().decode("utf-8").splitlines():
                        if line.strip():
                            try:
                                records.append(json.loads(line))
                            except json.JSONDecodeError:
                                bad.add("unreadable JSON line", line)
                else:
                    data = json.loads(f.read().decode("utf-8"))
                    records += data if isinstance(data, list) else [data]
    return records, bad


def _messages(value, where: str) -> list[dict]:
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise ValueError(f"{where} must be a list of messages")
    out = []
    for m in value:
        role, content = (m.get("role"), m.get("content")) if "role" in m else (m.get("from"), m.get("value"))
        if role not in _ROLES or not isinstance(content, str):
            raise ValueError(f"{where} has a message without a known role and text content")
        out.append({"role": _ROLES[role], "content": content})
    return out


def preference_parts(record) -> tuple[list[dict], str, str]:
    """(history ending on a user message, chosen answer, rejected answer) of any supported style."""
    if not isinstance(record, dict) or "chosen" not in record or "rejected" not in record:
        raise ValueError("a preference row needs chosen and rejected")
    chosen, rejected = record["chosen"], record["rejected"]
    if "conversations" in record:  # ShareGPT preference: the history, then one gpt turn each
        history = _messages(record["conversations"], "conversations")
        answers = [c.get("value") if isinstance(c, dict) else c for c in (chosen, rejected)]
    elif isinstance(chosen, list):  # UltraFeedback-binarized: full message lists, the last is the answer
        full_c, full_r = _messages(chosen, "chosen"), _messages(rejected, "rejected")
        if not full_c or not full_r or full_c[-1]["role"] != "assistant" or full_r[-1]["role"] != "assistant":
            raise ValueError("chosen/rejected message lists must end with an assistant message")
        history = full_c[:-1]
        if not history:
            prompt = record.get("prompt")
            history = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else _messages(prompt, "prompt")
        answers = [full_c[-1]["content"], full_r[-1]["content"]]
    else:  # plain strings
        prompt = record.get("prompt")
        history = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else _messages(prompt, "prompt")
        answers = [chosen, rejected]
    if not history or history[-1]["role"] != "user" or not history[-1]["content"].strip():
        raise ValueError("the prompt must end with a non-empty user message")
    if not all(isinstance(a, str) and a.strip() for a in answers):
        raise ValueError("chosen and rejected must be non-empty text")
    if answers[0] == answers[1]:
        raise ValueError("chosen equals rejected")
    return history, answers[0], answers[1]


def render_vicuna_prompt(history: list[dict], eos: str = "</s>") -> str:
    """The Vicuna prompt of a history of messages that ends on the user's turn."""
    body = [m for m in history if m["role"] != "system"]
    pairs = [(u["content"], a["content"]) for u, a in zip(body[0::2], body[1::2])]
    if len(body) % 2:
        pairs.append((body[-1]["content"], None))
    return chat.render_vicuna_prompt(pairs, eos)


def sample_pairs(records: list, max_pairs: int | None, seed: int) -> tuple[list, dict | None]:
    """At most `max_pairs` records drawn at random, as Deita's src/deita/data/sample_ultrafeedback.py draws its
    10K UltraFeedback pairs (`random.seed(42); random.sample(range(len(data)), n)`, in that order): with the same
    seed and the same records, the same pairs. Returns them and what was done (None: all kept)."""
    if max_pairs is None or len(records) <= max_pairs:
        return records, None
    import random

    picks = random.Random(seed).sample(range(len(records)), max_pairs)
    return [records[i] for i in picks], {"pairs_read": len(records), "max_pairs": max_pairs, "seed": seed}


def fit_preference(tokenizer, prompt: str, chosen: str, rejected: str, max_length: int,
                   max_prompt_length: int) -> tuple[str, str, str, bool]:
    """TRL's truncation at the version Deita trained with (trl 0.7.2, DPODataCollatorWithPadding): only when the
    prompt and the longer answer exceed `max_length` is the prompt cut to its last `max_prompt_length` tokens;
    if that is still too long, both answers keep their first `max_length - max_prompt_length` tokens."""
    def ids(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    p_ids, c_ids, r_ids = ids(prompt), ids(chosen), ids(rejected)
    longer = max(len(c_ids), len(r_ids))
    if len(p_ids) + longer <= max_length:
        return prompt, chosen, rejected, False
    if len(p_ids) > max_prompt_length:  # keep the end: the question right before the answer
        p_ids = p_ids[len(p_ids) - max_prompt_length:]
        prompt = tokenizer.decode(p_ids)
    if len(p_ids) + longer > max_length:
        keep = max_length - max_prompt_length
        chosen = tokenizer.decode(c_ids[:keep]) if len(c_ids) > keep else chosen
        rejected = tokenizer.decode(r_ids[:keep]) if len(r_ids) > keep else rejected
    return prompt, chosen, rejected, True


def prepare_dpo(inputs: list[str], tokenizer, template: str = "vicuna", max_prompt_length: int = 512,
                max_length: int = 2048, max_pairs: int | None = None, seed: int = 42) -> tuple[pa.Table, dict]:
    records, skipped = read_records(inputs)
    records, sampling = sample_pairs(records, max_pairs, seed)
    total = len(records) + sum(skipped.values())
    eos = tokenizer.eos_token or "</s>"
    # TRL tokenizes without special tokens; a model that expects a BOS gets it in the text.
    bos = tokenizer.bos_token if tokenizer.bos_token and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id] else ""
    rows, cut = [], 0
    for record in records:
        try:
            history, chosen, rejected = preference_parts(record)
        except ValueError as exc:
            skipped.add(str(exc), record)
            continue
        if template == "vicuna":
            prompt, chosen, rejected = render_vicuna_prompt(history, eos), f" {chosen}{eos}", f" {rejected}{eos}"
        else:
            prompt = tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
            pick = [tokenizer.apply_chat_template(history + [{"role": "assistant", "content": a}], tokenize=False)
                    for a in (chosen, rejected)]
            if not all(p.startswith(prompt) for p in pick):
                raise ValueError("the chat template renders the prompt differently inside a conversation; use template 'vicuna'")
            chosen, rejected, bos = pick[0][len(prompt):], pick[1][len(prompt):], ""
        prompt, chosen, rejected, was_cut = fit_preference(tokenizer, prompt, chosen, rejected, max_length,
                                                           max_prompt_length)
        cut += was_cut
        rows.append({"prompt": bos + prompt, "chosen": chosen, "rejected": rejected})
    table, stats = _finish(rows, DPO_SCHEMA, skipped, total, "DPO", cut)
    stats["sampling"] = sampling  # recorded in the summary: which pairs, out of how many, by which seed
    return table, stats


# ---- scorer ---------------------------------------------------------------------------------

def scorer_label(record, kind: str) -> tuple[list[str], int]:
    """(template fields, integer score 1..6) of a label row."""
    if not isinstance(record, dict):
        raise ValueError("a label row must be a JSON object")
    if "conversations" in record:  # Deita's released scorer data: the filled template, then the digit
        turns = _messages(record["conversations"], "conversations")
        if len(turns) != 2 or turns[0]["role"] != "user" or turns[1]["role"] != "assistant":
            raise ValueError("scorer conversations must be one human turn (the prompt) and one gpt turn (the score)")
        fields, raw = [turns[0]["content"]], turns[1]["content"].strip()
    else:
        instruction = record.get("instruction")
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError("missing or empty instruction")
        fields = [instruction]
        if kind == "quality":
            response = record.get("response", record.get("output"))
            if not isinstance(response, str) or not response.strip():
                raise ValueError("a quality label needs a non-empty response")
            fields.append(response)
        raw = record.get("score")
    try:
        score = float(raw)
    except (TypeError, ValueError):
        raise ValueError("score is not a number") from None
    if score != int(score) or not 1 <= score <= 6:
        raise ValueError("score must be an integer from 1 to 6")
    return fields, int(score)


def prepare_scorer(inputs: list[str], tokenizer, kind: str = "complexity", max_length: int = 2048) -> tuple[pa.Table, dict]:
    from deita_ray.prompts.tokens import digit_token_ids
    from deita_ray.prompts.truncate import fit_prompt

    records, skipped = read_records(inputs)
    # Labels arrive in the order the judge's parts were written, which a resumed judge changes; the trainer
    # shuffles with its seed, so one canonical order first makes the same labels train the same scorer.
    records.sort(key=lambda r: json.dumps(r, sort_keys=True, ensure_ascii=False, default=str))
    total = len(records) + sum(skipped.values())
    digits = digit_token_ids(tokenizer)
    render = (lambda f: complexity_prompt(f[0])) if kind == "complexity" else (lambda f: quality_prompt(f[0], f[1]))
    rows, cut = [], 0
    for record in records:
        try:
            fields, score = scorer_label(record, kind)
        except ValueError as exc:
            skipped.add(str(exc), record)
            continue
        if "conversations" in record:  # the prompt is already filled in: recover its fields to cut it like score
            parsed = scorer_fields(kind, fields[0])
            if parsed is not None:
                ids, was_cut = fit_prompt(render, parsed, tokenizer, max_length - 1)
            else:  # another template: its middle goes, its head and its tail (the cue before the digit) stay
                ids, was_cut = fit_prompt(lambda f: f[0], fields, tokenizer, max_length - 1)
        else:
            ids, was_cut = fit_prompt(render, fields, tokenizer, max_length - 1)  # cut as `deita-ray score` cuts
        cut += was_cut
        rows.append({"input_ids": ids + [digits[score - 1]], "assistant_masks": [0] * len(ids) + [1]})
    return _finish(rows, SFT_SCHEMA, skipped, total, "scorer", cut)
