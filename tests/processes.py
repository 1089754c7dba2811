"""Test helper: run `deita-ray ...` in its own process group and SIGKILL the whole group at a chosen moment."""

import os
import signal
import subprocess
import sys
import time


def run_and_kill(args: list[str], ready, cwd=None, seconds: float = 300) -> None:
    """Start `python -m deita_ray.cli ARGS` (its own local Ray) and SIGKILL its process group as soon as
    `ready()` holds; fail if the run ends or stalls first."""
    proc = subprocess.Popen([sys.executable, "-m", "deita_ray.cli", *args], env=dict(os.environ, RAY_ADDRESS=""),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=cwd)
    try:
        deadline = time.time() + seconds
        while not ready():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "the run did not reach the kill point in time"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
