"""Test helpers for real servers on 127.0.0.1: a free port, waiting until one answers, stopping it by its pid,
and the scripted OpenAI-compatible server (openai_stub_server.py) as a context manager."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

STUB = Path(__file__).with_name("openai_stub_server.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, server: subprocess.Popen, seconds: float) -> None:
    deadline = time.time() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            assert server.poll() is None, f"server exited with {server.returncode}"
            assert time.time() < deadline, f"{url} did not come up in {seconds} s"
            time.sleep(0.2)


def stop(server: subprocess.Popen) -> None:
    os.kill(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.kill(server.pid, signal.SIGKILL)
        server.wait()


@contextlib.contextmanager
def stub_server():
    """The scripted OpenAI-compatible server; yields its API base (http://127.0.0.1:PORT/v1)."""
    port = free_port()
    server = subprocess.Popen([sys.executable, str(STUB), str(port)], stderr=subprocess.DEVNULL)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/stats", server, 20)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(server)
