"""One run per output: a second run refuses in seconds naming the holder; a holder that died is taken over;
the lock lives on the filesystem layer (so on object stores too)."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import yaml

from deita_ray.runner.lock import OutputLocked, RunLock, hold_output, lock_path, process_space


def test_second_holder_is_refused_with_the_holders_identity(tmp_path):
    with hold_output(str(tmp_path)):
        started = time.time()
        with pytest.raises(OutputLocked, match=rf"in use by another run \(host {socket.gethostname()}, pid {os.getpid()}, since"):
            RunLock(str(tmp_path)).acquire()
        assert time.time() - started < 5
    RunLock(str(tmp_path)).acquire().release()  # released: free again


def test_holds_nest_within_one_process(tmp_path):
    with hold_output(str(tmp_path)):
        with hold_output(str(tmp_path)):
            pass
        assert os.path.exists(lock_path(str(tmp_path)))
    assert not os.path.exists(lock_path(str(tmp_path)))


@pytest.mark.parametrize("record", [
    {"host": "elsewhere", "pid": 1, "since": 0, "heartbeat": 0, "token": "old"},          # no heartbeat for long
    {"host": socket.gethostname(), "pid": 2 ** 22 + 12345, "process_space": process_space(), "since": time.time(),
     "heartbeat": time.time(), "token": "dead"},                                             # its process is gone
])
def test_a_dead_holder_is_taken_over(tmp_path, record):
    (tmp_path / "_run.lock").write_text(json.dumps(record))
    lock = RunLock(str(tmp_path)).acquire()
    try:
        assert lock.taken_over["token"] == record["token"]
        assert json.loads((tmp_path / "_run.lock").read_text())["token"] == lock.token
    finally:
        lock.release()


def test_a_holder_in_another_pid_namespace_is_judged_by_its_heartbeat(tmp_path):
    """Same host name, but a pid that means another process (a container with host networking): a pid that
    is not running here proves nothing, so a fresh heartbeat keeps the lock."""
    (tmp_path / "_run.lock").write_text(json.dumps({
        "host": socket.gethostname(), "pid": 2 ** 22 + 12345, "process_space": "another-boot/pid:[1]",
        "since": time.time(), "heartbeat": time.time(), "token": "container"}))
    with pytest.raises(OutputLocked, match=f"host {socket.gethostname()}"):
        RunLock(str(tmp_path)).acquire()


def test_a_live_holder_elsewhere_is_respected(tmp_path):
    (tmp_path / "_run.lock").write_text(json.dumps({"host": "other-host", "pid": 7, "since": time.time(),
                                                     "heartbeat": time.time(), "token": "live"}))
    with pytest.raises(OutputLocked, match="host other-host, pid 7"):
        RunLock(str(tmp_path)).acquire()


def _hold_then_take_over(tmp_path, script: str):
    """Start `script` (it holds tmp_path and prints 'holding'), then put another run's token in the lock as a
    newcomer taking over would; returns (exit code, stderr, seconds from the takeover to the exit)."""
    holder = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        (tmp_path / "_run.lock").write_text(json.dumps({"host": "other-host", "pid": 7, "since": time.time(),
                                                         "heartbeat": time.time(), "token": "newcomer"}))
        started = time.time()
        _, err = holder.communicate(timeout=60)
    finally:
        holder.kill()
    return holder.returncode, err, time.time() - started


def test_a_holder_whose_lock_is_taken_over_stops(tmp_path):
    """A run that stalled, was presumed dead and taken over must stop, not go on writing beside the new one."""
    code, err, seconds = _hold_then_take_over(tmp_path, (
        "import sys, time\n"
        "from deita_ray.runner import lock\n"
        "lock.HEARTBEAT_S = 0.2\n"
        "with lock.hold_output(sys.argv[1]):\n"
        "    print('holding', flush=True)\n"
        "    time.sleep(120)\n"))
    assert code != 0 and seconds < 10
    assert "OutputLocked" in err and "another run took this output over (host other-host, pid 7" in err
    assert json.loads((tmp_path / "_run.lock").read_text())["token"] == "newcomer"  # the newcomer's lock is left alone


def test_a_taken_over_holder_on_another_thread_exits(tmp_path):
    """Held from a thread that is not the main one (no signal handler there), the run still stops: the
    process exits once the grace period has passed."""
    code, err, _ = _hold_then_take_over(tmp_path, (
        "import sys, threading, time\n"
        "from deita_ray.runner import lock\n"
        "lock.HEARTBEAT_S, lock.LOST_GRACE_S = 0.2, 0.5\n"
        "def hold():\n"
        "    with lock.hold_output(sys.argv[1]):\n"
        "        print('holding', flush=True)\n"
        "        time.sleep(120)\n"
        "holder = threading.Thread(target=hold)\n"
        "holder.start()\n"
        "holder.join()\n"))
    assert code == 75 and "another run took this output over (host other-host, pid 7" in err


def race_against(monkeypatch, output: str) -> None:
    """Make the next read of `output`'s lock see no lock, as a run does that read an instant before the holder
    created it: the exclusive create is then all that keeps the second run out."""
    from deita_ray.io import fs

    real = fs.read_json
    calls = []

    def first_read_sees_nothing(url):
        if url == lock_path(output):
            calls.append(url)
        return None if len(calls) == 1 and url == lock_path(output) else real(url)

    monkeypatch.setattr(fs, "read_json", first_read_sees_nothing)


@pytest.mark.parametrize("where", ["local", "memory"])
def test_two_runs_racing_for_a_free_output_get_it_once(tmp_path, monkeypatch, where):
    output = str(tmp_path) if where == "local" else "memory://deita-lock-race/out"
    with hold_output(output):
        race_against(monkeypatch, output)
        with pytest.raises(OutputLocked, match="that started at the same moment"):
            RunLock(output).acquire()


def test_a_broken_lock_file_is_taken_over(tmp_path):
    (tmp_path / "_run.lock").write_text('{"host": "x", "pid"')  # a writer that died mid-write
    lock = RunLock(str(tmp_path)).acquire()
    try:
        assert lock.taken_over["host"].startswith("unknown")
    finally:
        lock.release()


def test_exclusive_create_on_local_disk_lets_exactly_one_writer_in(tmp_path):
    import threading

    from deita_ray.io import fs

    barrier, won = threading.Barrier(8), []

    def claim(i):
        barrier.wait()
        won.append(fs.create_exclusive(str(tmp_path / "claim" / "lock"), f"writer {i}".encode()))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == [False] * 7 + [True]
    assert (tmp_path / "claim" / "lock").read_text().startswith("writer ")  # whole, never half-written
    assert [p.name for p in (tmp_path / "claim").iterdir()] == ["lock"]  # no temporary left behind


def test_lock_works_on_a_filesystem_of_fsspec():
    with hold_output("memory://deita-lock-test/out"):
        with pytest.raises(OutputLocked):
            RunLock("memory://deita-lock-test/out").acquire()


@pytest.mark.ray
def test_two_runs_started_together_on_one_output(tiny_models, pool_dir, tmp_path):
    config = {"output": str(tmp_path / "out"), "inputs": [str(pool_dir)],
              "score": {"complexity_model": str(tiny_models["scorer-complexity"]),
                        "quality_model": str(tiny_models["scorer-quality"])},
              "embed": {"model": str(tiny_models["embedder"]), "engine": "hf"},
              "select": {"budget": 50, "threshold": 0.97}, "report": False,
              "ray": {"local": True}}  # what is tested is the lock, which a run takes before Ray would start
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    runs = [subprocess.Popen([sys.executable, "-m", "deita_ray.cli", "run", str(path)], env=dict(os.environ, RAY_ADDRESS=""),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    started = time.time()
    finished = {}
    while len(finished) < 2:
        for i, run in enumerate(runs):
            if i not in finished and run.poll() is not None:
                finished[i] = (run.returncode, time.time() - started, run.stderr.read())
        assert time.time() - started < 400
        time.sleep(0.2)
    codes = sorted(code for code, _, _ in finished.values())
    assert codes == [0, 2], finished
    loser = next(v for v in finished.values() if v[0] == 2)
    assert loser[1] < 60, "the second run must refuse in seconds, not after doing work"
    errors = [line for line in loser[2].splitlines() if line.startswith("deita-ray: error:")]
    assert len(errors) == 1 and "is in use by another run (host" in errors[0] and "pid" in errors[0]
    assert not (tmp_path / "out" / "_run.lock").exists()
