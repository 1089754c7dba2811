"""What a user sees while Ray works: one progress line per step at a steady interval when the output is not a
terminal (Ray's own bars when it is), and none of Ray's console lines that are no news to a user (they stay in
Ray's log files under the session directory).

    quiet_ray_data()                      # after ray.init, in the driver
    with native_noise_filtered(): ...     # around a Ray Data execution
    progress = Progress("score", "scored", log); progress.add(rows); progress.done()
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time

PROGRESS_SECONDS = 30.0
# Lines Ray's C++ core prints on the driver's stderr for every actor pool of Ray Data, about a choice Ray Data
# itself makes (its actors get their constructor arguments by reference, and are restarted when they die).
NATIVE_NOISE = (b"has constructor arguments in the object store and max_restarts",)
# Ray Data's console lines below WARNING ("Starting execution", the execution plan, progress as log blocks), and
# the warning it gives when its bars are off because the output is not a terminal.
DATA_NOISE = ("Progress bars disabled", "Progress bars for operators disabled")


def interactive() -> bool:
    return sys.stderr.isatty()


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(DATA_NOISE)


class _DropStarting(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefix)


def drop_log_lines(logger: str, prefix: str) -> None:
    """A logger's lines that start with `prefix` are not shown (once per process, however often it is asked)."""
    target = logging.getLogger(logger)
    if not any(isinstance(f, _DropStarting) and f.prefix == prefix for f in target.filters):
        target.addFilter(_DropStarting(prefix))


@contextlib.contextmanager
def deepspeed_on_cpu_told():
    """While DeepSpeed picks its accelerator (when TRL or transformers import it) in a process where CUDA shows
    no device, tell it "cpu": it would pick the CPU anyway, but with a warning that reads like a fault on every
    CPU run. Where a GPU shows, nothing changes; the variable is put back after, so processes started later
    (Ray's workers on a GPU node) detect for themselves."""
    import torch

    if "DS_ACCELERATOR" in os.environ or torch.cuda.device_count() > 0:
        yield
        return
    os.environ["DS_ACCELERATOR"] = "cpu"
    try:
        yield
    finally:
        os.environ.pop("DS_ACCELERATOR", None)


def quiet_ray_data() -> None:
    """Ray Data's bars only on a terminal (piped, our own progress lines say more in fewer lines), and its console
    handler at WARNING; its file log keeps everything."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = interactive()
    for handler in logging.getLogger("ray.data").handlers:
        if type(handler).__name__ != "SessionFileHandler" and not getattr(handler, "_deita_quiet", False):
            handler.setLevel(logging.WARNING)
            handler.addFilter(_DropNoise())
            handler._deita_quiet = True


@contextlib.contextmanager
def native_noise_filtered(noise: tuple[bytes, ...] = NATIVE_NOISE):
    """Lines written to the process's stderr (fd 2, where Ray's C++ core writes) pass through a filter that drops
    `noise`, for the duration of the block; everything else reaches the terminal in order, and all of it is
    flushed before the block ends."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to filter
        yield
        return
    read_end, write_end = os.pipe()
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        pending = b""
        with os.fdopen(read_end, "rb", buffering=0) as source:
            for chunk in iter(lambda: source.read(65536), b""):
                *lines, pending = (pending + chunk).split(b"\n")
                kept = b"".join(line + b"\n" for line in lines if not any(n in line for n in noise))
                if kept:
                    os.write(saved, kept)
        if pending and not any(n in pending for n in noise):
            os.write(saved, pending)

    thread = threading.Thread(target=pump, name="deita-stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last write end closes: the pump reads to its end and stops
        thread.join(timeout=5)
        os.close(saved)


class Progress:
    """'  score: 12,345 samples scored (410.2/s)' every PROGRESS_SECONDS when the output is not a terminal."""

    def __init__(self, stage: str, noun: str, log, every: float = PROGRESS_SECONDS, enabled: bool | None = None):
        self.stage, self.noun, self.log, self.every = stage, noun, log, every
        self.enabled = not interactive() if enabled is None else enabled
        self.started = self.last = time.time()
        self.rows = 0

    def add(self, rows: int) -> None:
        self.rows += rows
        if self.enabled and time.time() - self.last >= self.every:
            self.last = time.time()
            self._line()

    def done(self) -> None:
        if self.enabled:
            self._line()

    def _line(self) -> None:
        seconds = max(time.time() - self.started, 1e-9)
        self.log(f"  {self.stage}: {self.rows:,} samples {self.noun} ({self.rows / seconds:,.1f}/s, {seconds:,.0f} s)")
