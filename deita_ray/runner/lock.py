"""One run per output: a lock file with a heartbeat, on the output's own filesystem (so also on S3).

    with hold_output("s3://bucket/out"):
        ...   # a second run on the same output refuses within seconds, naming this one

The holder rewrites `<output>/_run.lock` (host, pid, process space, since, heartbeat, token) every
HEARTBEAT_S seconds. A lock whose heartbeat is older than STALE_S, or whose holder on this host is no
longer alive, belongs to a run that died and is taken over. A free output is claimed by an exclusive
create (a hard link of a complete file on disk, a conditional PUT on S3), so of two runs starting
together exactly one gets it. Taking over a dead run's lock cannot be exclusive (the file exists): the
taker writes its token, waits SETTLE_S and reads it back, and only the last writer proceeds;
filesystems without exclusive create use that path too. Nested holds of one output in one process are free.
A holder whose heartbeat finds another run's token in the lock (it stalled past STALE_S and was
presumed dead) stops at once: two runs must never write one output. The heartbeat signals the main
thread, whose hold ends in OutputLocked naming the run that took over (a process that has not
stopped LOST_GRACE_S later exits).
"""

from __future__ import annotations

import json
import os
import posixpath
import signal
import socket
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone

from deita_ray.io import fs

HEARTBEAT_S = 5.0
# Generous: a live run presumed dead is stopped when its lock is taken over, and one object-store call
# can hang for a minute (botocore's read timeout). A dead holder on this machine is seen at once (its pid).
STALE_S = 120.0
SETTLE_S = 0.5
# A run whose lock was taken over is stopped by this signal (not SIGINT: Ray Train installs its own SIGINT
# handler in the driver and keeps it), and exits outright if it is still running LOST_GRACE_S later.
LOST_SIGNAL = signal.SIGUSR2
LOST_GRACE_S = 30.0
LOST_EXIT_CODE = 75
_held: dict[str, int] = {}


class OutputLocked(RuntimeError):
    """Another live run holds this output."""


def lock_path(output: str) -> str:
    from deita_ray.runner.layout import LOCK_FILE

    return posixpath.join(output, LOCK_FILE)


def process_space() -> str:
    """Where a pid means the same process: this boot of this kernel, this pid namespace. Containers can
    share a host name (host networking) and still not see each other's pids."""
    def read(path: str, link: bool = False) -> str:
        try:
            if link:
                return os.readlink(path)
            with open(path) as f:
                return f.read().strip()
        except OSError:
            return "?"

    return f"{read('/proc/sys/kernel/random/boot_id')}/{read('/proc/self/ns/pid', link=True)}"


def _alive_here(record: dict) -> bool | None:
    """Whether the holder's process is alive, when its pid can be checked from here (None: it cannot:
    another host, or another pid namespace, or a record that does not say)."""
    if record.get("host") != socket.gethostname() or record.get("process_space") != process_space():
        return None
    try:
        os.kill(int(record["pid"]), 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _stale(record: dict, now: float) -> bool:
    alive = _alive_here(record)
    if alive is False:
        return True
    return now - float(record.get("heartbeat", 0)) > STALE_S


def describe(record: dict) -> str:
    since = datetime.fromtimestamp(float(record.get("since", 0)), timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"host {record.get('host')}, pid {record.get('pid')}, since {since}"


def _key(output: str) -> str:
    """One spelling per output (a relative and an absolute path to one directory are one output)."""
    return output.rstrip("/") if "://" in output else fs.absolute(output)


def _ancestors(output: str) -> list[str]:
    """The directories above `output`, nearest first, up to the filesystem root or the bucket."""
    key = _key(output)
    if "://" in key:
        protocol, rest = key.split("://", 1)
        parts = rest.split("/")
        return [f"{protocol}://{'/'.join(parts[:i])}" for i in range(len(parts) - 1, 0, -1)]
    found, parent = [], os.path.dirname(key)
    while parent and parent != key:
        found.append(parent)
        key, parent = parent, os.path.dirname(parent)
    return found


class RunLock:
    def __init__(self, output: str, inside: tuple[str, ...] = ()):
        self.output = output
        self.inside = inside  # directories under the output that other commands lock on their own
        self.path = lock_path(output)
        self.token = uuid.uuid4().hex
        self.since = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.taken_over: dict | None = None  # the stale lock this run took over, if any
        self.lost_to: dict | None = None      # the run that took this one's lock over, if any
        self.signal_installed = False         # hold_output's handler for LOST_SIGNAL is in place

    def _record(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "process_space": process_space(),
                "since": self.since, "heartbeat": time.time(), "token": self.token}

    def _read(self) -> dict | None:
        """The lock's record; one written this instant by an exclusive create may not be complete yet."""
        for _ in range(3):
            try:
                return fs.read_json(self.path)
            except ValueError:
                time.sleep(SETTLE_S)
        # Still unreadable after a moment: not a write in progress but a broken file, so no live holder.
        return {"host": "unknown (unreadable lock file)", "pid": "?", "since": 0, "heartbeat": 0}

    def _refuse(self, current: dict, when: str = "") -> OutputLocked:
        return OutputLocked(f"{self.output} is in use by another run ({describe(current)}){when}; wait for it to end "
                            f"or use another output")

    def _check_neighbours(self) -> None:
        """One writer per output also across nesting: a directory above this output, or one below it that a
        command writes on its own (OUT/selection), held by another live run refuses this one."""
        for other, where in [(a, "inside") for a in _ancestors(self.output)] + [(d, "above") for d in self.inside]:
            if _held.get(_key(other)):
                continue  # this process holds it
            try:
                record = fs.read_json(lock_path(other))
            except ValueError:
                continue  # a broken lock file holds nothing
            if record and not _stale(record, time.time()):
                raise OutputLocked(f"{self.output} is {where} {other}, which is in use by another run "
                                   f"({describe(record)}); wait for it to end or use another output")

    def acquire(self) -> "RunLock":
        self._check_neighbours()
        current = self._read()
        created = False
        if current is None:
            try:
                created = fs.create_exclusive(self.path, json.dumps(self._record()).encode())
            except NotImplementedError:
                pass  # no exclusive create here: claim it by write, settle, read back
            else:
                if not created:
                    raise self._refuse(self._read() or {}, " that started at the same moment")
        elif current.get("token") != self.token and not _stale(current, time.time()):
            raise self._refuse(current)
        if not created:
            self.taken_over = current
            fs.write_json(self.path, self._record())
        # Read back after a moment, except after an exclusive create on a local disk (a hard link is exclusive):
        # an S3-compatible store that ignores If-None-Match would otherwise let two runs in.
        if not (created and fs.is_local(self.path)):
            time.sleep(SETTLE_S)
        winner = self._read()
        if not winner or winner.get("token") != self.token:
            raise self._refuse(winner or {}, " that started at the same moment")
        return self._start_heartbeat()

    def _start_heartbeat(self) -> "RunLock":
        self._thread = threading.Thread(target=self._beat, name="deita-ray-run-lock", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                current = fs.read_json(self.path)
                if current and current.get("token") != self.token:
                    self._lost(current)
                    return
                fs.write_json(self.path, self._record())
            except Exception:  # a missed beat is not fatal; STALE_S allows several
                continue

    def _lost(self, current: dict) -> None:
        """Taken over (this run was presumed dead): stop writing, and stop the run itself. The hold's
        signal handler raises OutputLocked in the main thread (a real signal also wakes a blocking
        call); if the run has not stopped within LOST_GRACE_S (no handler: held from another thread;
        or the exception was swallowed), the process exits, since two runs must not write one output."""
        self.lost_to = current
        print(f"deita-ray: {self.lost_message()}", file=sys.stderr, flush=True)
        if self.signal_installed:
            signal.pthread_kill(threading.main_thread().ident, LOST_SIGNAL)
        if not self._stop.wait(LOST_GRACE_S):
            os._exit(LOST_EXIT_CODE)

    def lost_message(self) -> str:
        return (f"{self.output}: another run took this output over ({describe(self.lost_to or {})}) after this "
                f"one's heartbeat stalled for over {STALE_S:g} s; this run stops so that the two do not write one "
                f"output")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=HEARTBEAT_S + 5)
        current = fs.read_json(self.path)
        if current and current.get("token") == self.token:
            fs.remove(self.path)


@contextmanager
def hold_output(output: str, inside: tuple[str, ...] = ()):
    """Hold `output` for the duration of the block (re-entrant within one process). Refused while another run
    holds it, a directory above it, or one of the directories `inside` it (those other commands lock)."""
    key = _key(output)
    if _held.get(key):
        _held[key] += 1
        try:
            yield None
        finally:
            _held[key] -= 1
        return
    lock = RunLock(output, inside)
    previous = None
    if threading.current_thread() is threading.main_thread():
        def on_lost(signum, frame):
            if lock.lost_to is not None:
                raise OutputLocked(lock.lost_message())

        previous = signal.signal(LOST_SIGNAL, on_lost)
        lock.signal_installed = True
    try:
        lock.acquire()
        _held[key] = 1
        try:
            yield lock
        finally:
            _held.pop(key, None)
            lock.release()
    finally:
        if previous is not None:
            signal.signal(LOST_SIGNAL, previous)
