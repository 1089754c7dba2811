"""Normalising ShareGPT / Alpaca / OpenAI messages, and a precise reason for every kind of bad row."""

import pytest

from deita_ray.io.formats import BadRow, detect_format, to_conversation, turn_pairs


def test_sharegpt_with_system_and_aliases():
    record = {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "user", "value": "Hi"},
                                {"from": "assistant", "value": "Hello"}, {"from": "human", "value": "Bye"},
                                {"from": "gpt", "value": "Bye!"}]}
    conv = to_conversation(record, detect_format(record))
    assert [t["from"] for t in conv] == ["system", "human", "gpt", "human", "gpt"]
    assert turn_pairs(conv) == [("Hi", "Hello"), ("Bye", "Bye!")]


def test_alpaca_with_input_and_history():
    record = {"instruction": "Translate", "input": "chat", "output": "cat", "history": [["q1", "a1"]], "system": "S"}
    conv = to_conversation(record, detect_format(record))
    assert conv[0] == {"from": "system", "value": "S"}
    assert turn_pairs(conv) == [("q1", "a1"), ("Translate\nchat", "cat")]


def test_alpaca_empty_input_is_not_appended():
    conv = to_conversation({"instruction": "Say hi", "input": "", "output": "hi"}, "alpaca")
    assert turn_pairs(conv) == [("Say hi", "hi")]


def test_openai_messages():
    record = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                           {"role": "assistant", "content": "A"}]}
    assert detect_format(record) == "messages"
    assert turn_pairs(to_conversation(record, "messages")) == [("Q", "A")]


@pytest.mark.parametrize("record, fmt, reason", [
    ([1, 2], "sharegpt", "must be a JSON object"),
    ({"conversations": []}, "sharegpt", "'conversations' is empty"),
    ({"conversation": []}, "sharegpt", "missing field 'conversations'"),
    ({"conversations": "hi"}, "sharegpt", "'conversations' must be a list"),
    ({"conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "x"}]}, "sharegpt", "must be a string"),
    ({"conversations": [{"from": "robot", "value": "a"}, {"from": "gpt", "value": "x"}]}, "sharegpt", "unknown role 'robot'"),
    ({"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "x"}]}, "sharegpt", "does not alternate"),
    ({"conversations": [{"from": "human", "value": "a"}]}, "sharegpt", "ends on a human turn"),
    ({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": " \n"}]}, "sharegpt", "is empty"),
    ({"conversations": [{"from": "human", "value": "caf\udce9"}, {"from": "gpt", "value": "x"}]}, "sharegpt", "not valid UTF-8"),
    ({"conversations": [{"from": "system", "value": "S"}]}, "sharegpt", "no human/assistant turns"),
    ({"instruction": "x"}, "alpaca", "missing field 'output'"),
    ({"instruction": "x", "output": "y", "history": [["only one"]]}, "alpaca", "history entry 0"),
    ({"messages": [{"role": "tool", "content": "r"}, {"role": "assistant", "content": "ok"}]}, "messages", "unknown role 'tool'"),
    ({"messages": [{"role": "user"}]}, "messages", "needs 'role' and 'content'"),
])
def test_bad_rows_have_specific_reasons(record, fmt, reason):
    with pytest.raises(BadRow, match=reason.replace("(", r"\(")):
        to_conversation(record, fmt)


def test_unknown_record_shape():
    with pytest.raises(BadRow, match="unrecognised record"):
        detect_format({"text": "plain"})


def test_self_instruct_seed_tasks_read_as_alpaca():
    """Alpaca's seed_tasks.jsonl: `instruction` plus `instances` of {input, output}; the first instance is used."""
    record = {"id": "seed_task_0", "instruction": "Sort the list.", "instances": [{"input": "3, 1", "output": "1, 3"}]}
    assert detect_format(record) == "alpaca"
    assert turn_pairs(to_conversation(record, "alpaca")) == [("Sort the list.\n3, 1", "1, 3")]
    with pytest.raises(BadRow, match="'instances' must be a non-empty list"):
        to_conversation({"instruction": "x", "instances": []}, "alpaca")
    with pytest.raises(BadRow, match="instance 0 has no 'output'"):
        to_conversation({"instruction": "x", "instances": [{"input": ""}]}, "alpaca")
