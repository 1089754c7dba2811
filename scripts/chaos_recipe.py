"""Chaos run of the whole recipe: kill Ray workers and actors of the run (and its driver once) until it finishes.

    .venv/bin/python scripts/chaos_recipe.py --workdir /tmp/chaos            # ~10-20 min on 2 CPU cores
    .venv/bin/python scripts/chaos_recipe.py --workdir /tmp/chaos --every 20 --seed 1 --json chaos.json

1. A clean `deita-ray run recipe-quickstart` (its own local Ray) into WORKDIR/clean.
2. The same run into WORKDIR/chaos while this script SIGKILLs a random Ray worker or actor process of that run
   (a `ray::` process below its driver) every ~EVERY seconds, and the driver with everything under it once; a
   run that ends without success is started again (it resumes), until one ends with exit code 0.
3. The two runs must agree: every step's counts, the scorer labels (ids and scores) and the selected ids.
Prints one JSON record (kills, attempts, seconds, verdict) and exits 1 when the runs differ.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

RECIPE = "recipe-quickstart"
BUSY = ("MapWorker", "MapBatches", "RayTrainWorker", "TrainController", "KeptIndex", "ReadParquet", "_read_blocks")


def _command(workdir: Path, name: str) -> list[str]:
    return [sys.executable, "-m", "deita_ray.cli", "run", RECIPE, "--set", f"output={workdir / name}",
            "--set", f"models_dir={workdir / 'models'}", "--set", f"sample_seeds.dir={workdir / 'seeds'}",
            "--set", f"sample_pool.dir={workdir / 'pool'}", "--set", f"sample_preferences.dir={workdir / 'prefs'}",
            "--set", f"dpo.data=[{workdir / 'prefs'}]"]


def _start(workdir: Path, name: str, log) -> subprocess.Popen:
    env = dict(os.environ, RAY_ADDRESS="", RAY_TMPDIR=str(workdir / f"ray-{name}"))
    Path(env["RAY_TMPDIR"]).mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(_command(workdir, name), env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _ray_workers(driver: int) -> list:
    """The Ray worker and actor processes of one run: `ray::...` processes below its driver."""
    import psutil

    try:
        below = psutil.Process(driver).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for p in below:
        try:
            if p.cmdline() and p.cmdline()[0].startswith("ray::"):
                found.append(p)
        except psutil.Error:
            continue
    return found


def _outcome(out: Path) -> dict:
    """What two runs must agree on: per-step counts, labels, selected ids."""
    import pyarrow.parquet as pq

    stats = json.loads((out / "run_stats.json").read_text())["stages"]
    counts = {name: {k: s.get(k) for k in ("rows_in", "rows_out", "rows_quarantined")} for name, s in stats.items()}
    labels = {}
    for mode in ("complexity", "quality"):
        path = out / "generation" / mode / "labels" / "labels.parquet"
        if path.exists():
            table = pq.read_table(path, columns=["id", "score"]).to_pylist()
            labels[mode] = sorted((r["id"], r["score"]) for r in table)
    selected = pq.read_table(out / "selection" / "selected.parquet", columns=["id"]).column("id").to_pylist()
    return {"counts": counts, "labels": labels, "selected": selected}


def chaos(workdir: Path, every: float, seed: int, max_attempts: int, log_path: Path) -> dict:
    rng = random.Random(seed)
    kills: list[dict] = []
    attempts, driver_killed, started = 0, False, time.time()
    with open(log_path, "a") as log:
        while attempts < max_attempts:
            attempts += 1
            proc = _start(workdir, "chaos", log)
            kill_driver_at = time.time() + rng.uniform(30, 90) if not driver_killed else None
            stop = threading.Event()

            def killer(proc=proc, kill_driver_at=kill_driver_at):
                nonlocal driver_killed
                while not stop.wait(rng.uniform(0.5, 1.5) * every):
                    if kill_driver_at is not None and time.time() >= kill_driver_at and not driver_killed:
                        kills.append({"t": round(time.time() - started, 1), "what": "driver"})
                        driver_killed = True
                        os.killpg(proc.pid, signal.SIGKILL)
                        return
                    workers = _ray_workers(proc.pid)
                    # The run's own actors and tasks first (stage actors, Ray Train's workers and controller, the
                    # kept index, busy workers), else any Ray process below the driver.
                    busy = [w for w in workers if any(k in " ".join(w.cmdline()) for k in BUSY)] or workers
                    if busy:
                        victim = rng.choice(busy)
                        try:
                            name = victim.cmdline()[0]
                            victim.kill()
                            kills.append({"t": round(time.time() - started, 1), "what": name[:80]})
                        except Exception:
                            pass

            thread = threading.Thread(target=killer, daemon=True)
            thread.start()
            code = proc.wait()
            stop.set()
            thread.join()
            try:  # whatever the run left of its Ray goes with it
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            print(f"attempt {attempts}: exit {code} after {time.time() - started:.0f} s, {len(kills)} kills so far",
                  file=sys.stderr, flush=True)
            if code == 0:
                break
    return {"attempts": attempts, "kills": kills, "seconds": round(time.time() - started, 1), "finished": code == 0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, type=Path, help="where both runs, their models and data go")
    parser.add_argument("--every", type=float, default=20.0, help="seconds between kills, on average (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill schedule")
    parser.add_argument("--max-attempts", type=int, default=12, help="runs started at most (default 12)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    log_path = args.workdir / "runs.log"
    if not (args.workdir / "clean" / "run_stats.json").exists():
        started = time.time()
        with open(log_path, "a") as log:
            assert _start(args.workdir, "clean", log).wait() == 0, f"the clean run failed; see {log_path}"
        print(f"clean run: {time.time() - started:.0f} s", file=sys.stderr)
    result = chaos(args.workdir, args.every, args.seed, args.max_attempts, log_path)
    if result["finished"]:
        clean, chaotic = _outcome(args.workdir / "clean"), _outcome(args.workdir / "chaos")
        result["same"] = {key: clean[key] == chaotic[key] for key in clean}
        result["selected"] = len(chaotic["selected"])
        result["labels"] = {mode: len(rows) for mode, rows in chaotic["labels"].items()}
        result["counts"] = chaotic["counts"]
    result["verdict"] = "equal" if result["finished"] and all(result["same"].values()) else "DIFFERENT"
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if result["verdict"] == "equal" else 1


if __name__ == "__main__":
    raise SystemExit(main())
