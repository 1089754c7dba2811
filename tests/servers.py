"""Test helpers for real servers on 127.0.0.1: a free port, waiting until one answers, stopping it by its pid,
the scripted OpenAI-compatible server (openai_stub_server.py) and a Ray head (`ray start --head`) as context
managers."""

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


@contextlib.contextmanager
def ray_head(env: dict, num_cpus: int = 4):
    """A Ray head of our own (`ray start --head`, every port a free one), started with `env`; yields
    (GCS address, dashboard URL) and stops only that head's processes."""
    import shutil

    ray_bin = Path(sys.executable).with_name("ray")
    temp_dir = f"/tmp/deita-head-{os.getpid()}-{free_port()}"  # short: Ray's socket paths stay under 108 bytes
    port, dashboard = free_port(), free_port()
    # The test run's own Ray may already hold the default ports (its dashboard agent on 52365 made a head's agent
    # fail: "No available agent to submit job").
    agent_ports = [f"--{flag}={free_port()}" for flag in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port",
        "node-manager-port", "object-manager-port", "ray-client-server-port")]
    start = subprocess.run([str(ray_bin), "start", "--head", f"--port={port}", "--dashboard-host=127.0.0.1",
                            f"--dashboard-port={dashboard}", f"--num-cpus={num_cpus}", f"--temp-dir={temp_dir}",
                            "--disable-usage-stats", *agent_ports], env=env, capture_output=True, text=True, timeout=120)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        yield f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard}"
    finally:
        _stop_head(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _stop_head(temp_dir: str) -> None:
    """Kill only the processes of the head started in `temp_dir` (their command lines name it)."""
    import psutil

    procs = [p for p in psutil.process_iter(["cmdline"]) if temp_dir in " ".join(p.info["cmdline"] or [])]
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)
