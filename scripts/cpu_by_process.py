"""Where a command's CPU goes, by kind of process (Ray actors, Ray's own daemons, vLLM, pytest workers, ...).

    python scripts/cpu_by_process.py -- .venv/bin/python -m pytest -q tests/test_pipeline.py
    python scripts/cpu_by_process.py --top 40 -- .venv/bin/deita-ray run quickstart

Reads /proc every half second while the command runs and sums each process's CPU time (user + system) by
what the process is (Ray names its workers `ray::ClassName`). `/usr/bin/time` cannot say this: it counts
only the children its command waited for, and Ray's workers are not among them. Processes that live less
than half a second are missed; Linux only.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time

TICKS = os.sysconf("SC_CLK_TCK")
RAY_DAEMONS = ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "runtime_env", "ray.util.client")


def read_process(pid: str) -> tuple[str, int, str] | None:
    """(start time, CPU ticks so far, name) of one process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    comm = stat[stat.index("(") + 1:stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[19], int(fields[11]) + int(fields[12]), kind(comm, cmdline)


def kind(comm: str, cmdline: str) -> str:
    for title in (cmdline, comm):  # Ray's title: ray::MapWorker(MapBatches(ScoreStage)) -> ray::MapWorker
        if title.startswith("ray::"):
            return title.split("(")[0].split()[0]
    if "pytest" in cmdline:
        return "pytest"
    if "VLLM" in comm:
        return comm
    if "deita_ray.cli" in cmdline or "deita-ray" in cmdline:
        return "deita-ray command"
    for daemon in RAY_DAEMONS:
        if daemon in cmdline:
            return f"ray daemon: {daemon}"
    if comm.startswith("python"):
        return python_kind(cmdline.split())
    return comm


def python_kind(words: list[str]) -> str:
    """`python -m torch._inductor.compile_worker ...` -> python -m torch._inductor.compile_worker; a script by its
    file name; `-c` code by its first words (multiprocessing's spawn and forkserver say who they are there)."""
    for i, word in enumerate(words[1:], 1):
        if word == "-m" and i + 1 < len(words):
            return f"python -m {words[i + 1]}"
        if word == "-c":
            return "python -c " + " ".join(words[i + 1:i + 4])[:60]
        if not word.startswith("-"):
            return f"python {os.path.basename(word)}"
    return "python"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--top", type=int, default=25, help="kinds to print (default 25)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    before = {pid: info[:2] for pid in os.listdir("/proc") if pid.isdigit() and (info := read_process(pid))}
    seen: dict[tuple[str, str], list] = {}  # (pid, start) -> [ticks at first sight or 0, last ticks, kind]
    proc = subprocess.Popen(command)
    started = time.time()
    while True:
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or (info := read_process(pid)) is None:
                continue
            start, ticks, name = info
            key = (pid, start)
            if key not in seen:
                old = before.get(pid)  # a process older than the command: only what it spent since counts
                seen[key] = [old[1] if old and old[0] == start else 0, ticks, name]
            else:
                seen[key][1] = ticks
                if name.startswith("ray::"):  # Ray renames a worker when it takes an actor or a task
                    seen[key][2] = name
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    wall = time.time() - started
    by_kind, count = collections.Counter(), collections.Counter()
    for first, last, name in seen.values():
        by_kind[name] += (last - first) / TICKS
        count[name] += 1
    total = sum(by_kind.values())
    print(f"\n{total:,.0f} CPU-seconds in {wall:,.0f} s of wall time ({total / max(wall, 1e-9):.2f} cores busy on "
          f"average; every process on the machine counts)", file=sys.stderr)
    for name, seconds in by_kind.most_common(args.top):
        print(f"{seconds:9.1f} s {100 * seconds / max(total, 1e-9):5.1f}% {count[name]:5d} processes  {name}",
              file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
