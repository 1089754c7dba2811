"""A stage that failed outright, and the exception a Ray worker raised, found through Ray's wrappers.

    raise StageError("score", "out/scored", cause, save_traceback(exc))   # one line for the user, the rest in a log
"""

from __future__ import annotations

import re
import traceback

from deita_ray.io.reader import InputError


class StageError(RuntimeError):
    """A stage failed outright (disk full, permission denied, an engine that cannot start)."""

    def __init__(self, stage: str, path: str, cause: BaseException, log_file: str | None = None):
        self.stage, self.path, self.cause, self.log_file = stage, path, cause, log_file
        where = f" (traceback: {log_file})" if log_file else ""
        super().__init__(f"stage {stage} failed on {path}: {cause_name(cause)}: {str(cause).splitlines()[0] if str(cause) else ''}"
                         f"{where}")


class RemoteError(Exception):
    """An exception raised in a Ray worker that reached the driver only as text (Ray Data's
    UserCodeException keeps the original in its traceback string, not as an object)."""

    def __init__(self, remote_type: str, message: str):
        super().__init__(message)
        self.remote_type = remote_type


_EXCEPTION_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)(?:\([\w.]+\))?): (.*)$", re.M)


def root_cause(exc: BaseException) -> BaseException:
    """The exception a Ray task or actor raised, through Ray's wrappers."""
    seen, chain = set(), []
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        inner = getattr(exc, "cause", None) or exc.__cause__
        exc = inner if isinstance(inner, BaseException) else None
    last = chain[-1]
    if not type(last).__module__.startswith("ray"):
        return last
    text = "\n".join(str(getattr(e, "traceback_str", "") or "") + "\n" + str(e) for e in chain)
    found = [m for m in _EXCEPTION_LINE.finditer(text) if not m.group(1).startswith("ray.")
             and not any(w in m.group(1) for w in ("UserCodeException", "RayTaskError", "RayActorError"))]
    if not found:
        return last
    name, message = found[-1].group(1), found[-1].group(2).strip()
    if name.split(".")[-1] == "InputError":
        return InputError(message)
    return RemoteError(name.split(".")[-1], message)


def cause_name(exc: BaseException) -> str:
    return getattr(exc, "remote_type", type(exc).__name__)


def save_traceback(exc: BaseException) -> str | None:
    """The whole traceback to a local log file (the one line printed names it)."""
    import tempfile

    try:
        handle = tempfile.NamedTemporaryFile("w", prefix="deita-ray-error-", suffix=".log", delete=False)
        with handle:
            traceback.print_exception(exc, file=handle)
        return handle.name
    except OSError:
        return None
