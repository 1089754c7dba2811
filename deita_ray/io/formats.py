"""Normalise ShareGPT, Alpaca (and Self-Instruct seed tasks) and OpenAI-messages records to one canonical conversation.

The canonical form is ShareGPT's: a list of {"from": "system"|"human"|"gpt", "value": str},
an optional leading system turn, then strictly alternating human/gpt turns ending on gpt.
Every way a record can be wrong raises `BadRow` with a reason a person can act on;
the reader sends such rows to quarantine. Pure Python: `pytest tests/test_formats.py`.
"""

from __future__ import annotations

from typing import Any

FORMATS = ("sharegpt", "alpaca", "messages")

# Speaker names seen in public ShareGPT-style dumps, mapped to canonical roles.
SHAREGPT_ROLES = {
    "human": "human", "user": "human",
    "gpt": "gpt", "assistant": "gpt", "chatgpt": "gpt", "bard": "gpt", "bing": "gpt", "model": "gpt",
    "system": "system",
}
MESSAGE_ROLES = {"user": "human", "assistant": "gpt", "system": "system"}


class BadRow(ValueError):
    """A record that cannot be turned into a conversation; the message is the quarantine reason."""


def detect_format(record: Any) -> str:
    """Guess a record's format from its keys (used per file, on its first good record)."""
    if isinstance(record, dict):
        if "conversations" in record:
            return "sharegpt"
        if "messages" in record:
            return "messages"
        if "instruction" in record:
            return "alpaca"
    raise BadRow("unrecognised record: expected a 'conversations', 'messages' or 'instruction' field")


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise BadRow(f"{where} must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRow(f"{where} is not valid UTF-8") from None
    return value


def _turn_list(record: dict, field: str) -> list:
    if field not in record:
        raise BadRow(f"missing field '{field}'")
    value = record[field]
    if not isinstance(value, list):
        raise BadRow(f"'{field}' must be a list, got {type(value).__name__}")
    if not value:
        raise BadRow(f"'{field}' is empty")
    return value


def _from_sharegpt(record: dict) -> list[dict]:
    turns = []
    for i, turn in enumerate(_turn_list(record, "conversations")):
        if not isinstance(turn, dict):
            raise BadRow(f"turn {i} must be an object, got {type(turn).__name__}")
        if "from" not in turn or "value" not in turn:
            raise BadRow(f"turn {i} needs 'from' and 'value'")
        speaker = _text(turn["from"], f"turn {i} 'from'")
        role = SHAREGPT_ROLES.get(speaker.lower())
        if role is None:
            raise BadRow(f"turn {i} has unknown role {speaker!r}")
        turns.append({"from": role, "value": _text(turn["value"], f"turn {i} 'value'")})
    return turns


def _from_messages(record: dict) -> list[dict]:
    turns = []
    for i, msg in enumerate(_turn_list(record, "messages")):
        if not isinstance(msg, dict):
            raise BadRow(f"message {i} must be an object, got {type(msg).__name__}")
        if "role" not in msg or "content" not in msg:
            raise BadRow(f"message {i} needs 'role' and 'content'")
        speaker = _text(msg["role"], f"message {i} 'role'")
        role = MESSAGE_ROLES.get(speaker)
        if role is None:
            raise BadRow(f"message {i} has unknown role {speaker!r}")
        turns.append({"from": role, "value": _text(msg["content"], f"message {i} 'content'")})
    return turns


def _seed_task(record: dict) -> dict:
    """A Self-Instruct seed task (Alpaca's `seed_tasks.jsonl`: `instruction` and `instances` of
    {input, output}) read as the Alpaca record of its first instance."""
    instances = record["instances"]
    if not isinstance(instances, list) or not instances or not isinstance(instances[0], dict):
        raise BadRow("'instances' must be a non-empty list of {input, output} objects")
    return {**record, "input": instances[0].get("input", ""), "output": instances[0].get("output")}


def _from_alpaca(record: dict) -> list[dict]:
    if "output" not in record and "instances" in record:
        record = _seed_task(record)
        if record["output"] is None:
            raise BadRow("instance 0 has no 'output'")
    for field in ("instruction", "output"):
        if field not in record:
            raise BadRow(f"missing field '{field}'")
    instruction = _text(record["instruction"], "'instruction'")
    extra = record.get("input") or ""
    extra = _text(extra, "'input'")
    output = _text(record["output"], "'output'")
    turns = []
    system = record.get("system")
    if system:
        turns.append({"from": "system", "value": _text(system, "'system'")})
    history = record.get("history") or []
    if not isinstance(history, list):
        raise BadRow(f"'history' must be a list of [query, response] pairs, got {type(history).__name__}")
    for i, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise BadRow(f"history entry {i} must be a [query, response] pair")
        turns.append({"from": "human", "value": _text(pair[0], f"history {i} query")})
        turns.append({"from": "gpt", "value": _text(pair[1], f"history {i} response")})
    # Alpaca's own convention (and LLaMA-Factory's): the input follows the instruction on a new line.
    query = f"{instruction}\n{extra}" if extra.strip() else instruction
    turns.append({"from": "human", "value": query})
    turns.append({"from": "gpt", "value": output})
    return turns


_NORMALISERS = {"sharegpt": _from_sharegpt, "alpaca": _from_alpaca, "messages": _from_messages}


def to_conversation(record: Any, fmt: str) -> list[dict]:
    """Canonical conversation of `record` read as `fmt`, or BadRow with the reason."""
    if not isinstance(record, dict):
        raise BadRow(f"record must be a JSON object, got {type(record).__name__}")
    if fmt not in _NORMALISERS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    turns = _NORMALISERS[fmt](record)
    check_conversation(turns)
    return turns


def check_conversation(turns: list[dict]) -> None:
    """Optional leading system turn, then human/gpt alternating, non-empty, ending on gpt."""
    body = turns[1:] if turns and turns[0]["from"] == "system" else turns
    if not body:
        raise BadRow("conversation has no human/assistant turns")
    for i, turn in enumerate(body):
        expected = "human" if i % 2 == 0 else "gpt"
        if turn["from"] != expected:
            raise BadRow(f"conversation does not alternate human/assistant: turn {i} is {turn['from']!r}, expected {expected!r}")
        if not turn["value"].strip():
            raise BadRow(f"turn {i} ({turn['from']}) is empty")
    if len(body) % 2:
        raise BadRow("conversation ends on a human turn with no assistant response")


def turn_pairs(turns: list[dict]) -> list[tuple[str, str]]:
    """(human, gpt) pairs of a canonical conversation, system turn left out (as Deita scores them)."""
    body = [t["value"] for t in turns if t["from"] != "system"]
    return list(zip(body[0::2], body[1::2]))
