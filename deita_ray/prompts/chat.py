"""The Vicuna v1.1 conversation format (FastChat's, as Deita embeds and trains), in one place.

    render_vicuna([("Hi", "Hello!")])   # 'A chat between ... USER: Hi ASSISTANT: Hello!</s>'

Embedding, SFT (with the answers' character spans for the loss mask), DPO prompts and the tiny
models' chat template are all built from these pieces, so they cannot drift apart.
"""

from __future__ import annotations

VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")
USER, ASSISTANT = "USER:", "ASSISTANT:"

# The same format as a Jinja chat template (for tokenizers built by the project).
VICUNA_CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] + ' ' }}"
    "{% elif m['role'] == 'user' %}{{ '" + USER + " ' + m['content'] + ' ' }}"
    "{% else %}{{ '" + ASSISTANT + " ' + m['content'] + eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '" + ASSISTANT + "' }}{% endif %}"
)


def render_vicuna_spans(pairs: list[tuple[str, str]], eos: str = "</s>") -> tuple[str, list[tuple[int, int]]]:
    """`{system} USER: {q} ASSISTANT: {a}{eos}USER: ...` and the character spans of the answers (with eos)."""
    text = VICUNA_SYSTEM + " "
    spans = []
    for question, answer in pairs:
        text += f"{USER} {question} {ASSISTANT} "
        start = len(text)
        text += answer + eos
        spans.append((start, len(text)))
    return text, spans


def render_vicuna(pairs: list[tuple[str, str]], eos: str = "</s>") -> str:
    return render_vicuna_spans(pairs, eos)[0]


def render_vicuna_prompt(history: list[tuple[str, str | None]], eos: str = "</s>") -> str:
    """A prompt ending in `ASSISTANT:` (the answer to the last question follows as ` {answer}{eos}`)."""
    done = [(q, a) for q, a in history if a is not None]
    text = render_vicuna(done, eos)
    last = history[-1][0] if history and history[-1][1] is None else None
    return text + (f"{USER} {last} {ASSISTANT}" if last is not None else "")


def uses_chat(tokenizer, chat: bool | None) -> bool:
    """Whether generation prompts go through the tokenizer's chat template (None: when it has one)."""
    has = bool(getattr(tokenizer, "chat_template", None))
    if chat and not has:
        raise ValueError("chat=True but the model's tokenizer has no chat template; pass chat=False to send raw text")
    return has if chat is None else chat


def user_prompt_ids(tokenizer, text: str, chat: bool) -> list[int]:
    """Token ids of one user message: rendered by the chat template (ending where the assistant
    speaks) when `chat`, else the text as is, with the tokenizer's usual special tokens."""
    if not chat:
        return list(tokenizer(text)["input_ids"])
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    bos = getattr(tokenizer, "bos_token", None)
    # A template that writes BOS itself must not get a second one from the tokenizer.
    return list(tokenizer(rendered, add_special_tokens=not (bos and rendered.startswith(bos)))["input_ids"])


def is_messages(prompt) -> bool:
    """A prompt given as chat messages ([{"role": ..., "content": ...}, ...]) rather than text or token ids."""
    return isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], dict)


def messages_prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of a conversation that the assistant continues: rendered by the model's chat template; a model
    without one gets the contents joined by blank lines (a system message first, as written)."""
    if not getattr(tokenizer, "chat_template", None):
        return list(tokenizer("\n\n".join(m["content"] for m in messages))["input_ids"])
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    bos = getattr(tokenizer, "bos_token", None)
    return list(tokenizer(rendered, add_special_tokens=not (bos and rendered.startswith(bos)))["input_ids"])


def prompt_ids(tokenizer, prompt, chat: bool) -> list[int]:
    """Any generation prompt as token ids: a user message (text), chat messages, or token ids as they are."""
    if isinstance(prompt, str):
        return user_prompt_ids(tokenizer, prompt, chat)
    if is_messages(prompt):
        return messages_prompt_ids(tokenizer, prompt)
    return list(prompt)

