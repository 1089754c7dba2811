"""The one failure policy of the stages: a batch that fails is retried one row at a time, so only the rows the
engine fails on are lost (to quarantine, with their reason and class); a failure that is not a row's stops the stage.

    results = each_or_one(lambda rows: engine.token_logits(rows, digits), prompts)   # values, or exceptions per row
    reason, kind = classify(exc)                                                      # (text, permanent | transient)

Classified by type, never by name:
- fatal, raised again (the stage stops, the command fails in one line, no row is blamed): an engine that cannot
  serve anything as configured (`fatal = True`: a refused API key, a wrong URL), and programming errors in our
  own code (TypeError, AttributeError, NameError, AssertionError, ImportError, ...): a bug must crash loudly,
  never turn into quarantined rows;
- transient (a resumed run retries the row): out of memory (host or device), timeouts, lost connections, an
  engine process that died;
- permanent: anything else an engine raises on a row (a prompt it rejects, an input it cannot encode).
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence

from deita_ray.io.quarantine import PERMANENT, TRANSIENT

PROGRAMMING_ERRORS = (TypeError, AttributeError, NameError, AssertionError, ImportError, NotImplementedError,
                      SyntaxError, RecursionError)


def _transient_types() -> tuple[type, ...]:
    """Out of memory, timeouts, lost connections, and the libraries' own such types where they are loaded."""
    found: list[type] = [MemoryError, TimeoutError, ConnectionError]
    torch = sys.modules.get("torch")
    if torch is not None:
        found += [t for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None))
                  if isinstance(t, type)]
    vllm_errors = sys.modules.get("vllm.v1.engine.exceptions")
    if vllm_errors is not None:
        found += [t for t in (getattr(vllm_errors, "EngineDeadError", None),
                              getattr(vllm_errors, "EngineGenerateError", None)) if isinstance(t, type)]
    return tuple(found)


def is_fatal(exc: BaseException) -> bool:
    return bool(getattr(exc, "fatal", False)) or isinstance(exc, PROGRAMMING_ERRORS)


def classify(exc: BaseException) -> tuple[str, str]:
    """(reason, class) for an exception an engine raised on some rows; a fatal one is raised again."""
    if is_fatal(exc):
        raise exc
    kind = TRANSIENT if isinstance(exc, _transient_types()) else PERMANENT
    return f"engine error: {type(exc).__name__}: {exc}"[:500], kind


def each_or_one(run: Callable[[Sequence], Sequence], items: Sequence) -> list:
    """`run(items)`, or, when that fails (not fatally), `run([item])` for each item: a result or the exception it
    raised, per item. The caller decides what an exception means for its row (usually `classify`)."""
    try:
        return list(run(items))
    except Exception as exc:
        if is_fatal(exc):
            raise
        if len(items) == 1:
            return [exc]
    out: list = []
    for item in items:
        try:
            out.append(run([item])[0])
        except Exception as exc:
            if is_fatal(exc):
                raise
            out.append(exc)
    return out
