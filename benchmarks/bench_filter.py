"""Repr Filter speed and exactness: the reference loop, the selection job at the machine's GEMM rate, the scale.

    python benchmarks/bench_filter.py                 # full run (~10 min on 2 cores)
    python benchmarks/bench_filter.py --smoke         # tiny shapes, every part, seconds (CI runs it)

Side by side in one run, JSON to benchmarks/results/bench_filter.json:
1. reference: the naive loop (one candidate at a time, the whole kept set stacked again every step, a float32
   matrix-vector product) against deita_ray's block-resolved filter: identical kept ids, time, ratio.
2. job: `select` itself (steps/select.run_select: candidates sorted, vectors gathered from the on-disk store,
   the filter, outputs written) on an embedded pool of 24K x 4096 (float16 on disk), budget 8K, with the
   default backend and each backend by name, on one thread and on all: the machine's float32 GEMM rate
   measured the same way, the fraction of it reached (the filter's GEMM work, index search plus the in-block
   similarities, over the whole command's time), identical kept ids.
3. scale: N up to 1M, budgets 6K / 10K / 100K: time, candidates visited, fraction of the GEMM rate.
Pools are synthetic: random unit vectors, ~30% of them near-duplicates of an earlier one with cosine drawn
uniformly in [0.85, 0.99], so duplicates land on both sides of tau = 0.9.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from deita_ray.select.kept_index import KeptIndex
from deita_ray.select.repr_filter import run_filter

TAU = 0.9


class SyntheticPool:
    """Candidates in score order, generated on demand; near-duplicates copy an earlier original."""

    def __init__(self, n: int, dim: int, dup_fraction: float = 0.3, seed: int = 0):
        self.n, self.dim, self.dup_fraction = n, dim, dup_fraction
        self.rng = np.random.default_rng(seed)
        self.made = np.empty((0, dim), dtype=np.float32)
        self.originals: list[int] = []

    def _grow(self, upto: int) -> None:
        start = len(self.made)
        if upto <= start:
            return
        count = upto - start
        block = self.rng.standard_normal((count, self.dim)).astype(np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        is_dup = self.rng.random(count) < self.dup_fraction
        made = np.concatenate([self.made, block])
        for i in range(count):
            pos = start + i
            if is_dup[i] and self.originals:
                src = made[self.originals[self.rng.integers(max(0, len(self.originals) - 5000), len(self.originals))]]
                target = self.rng.uniform(0.85, 0.99)
                noise = made[pos] - (made[pos] @ src) * src
                noise /= np.linalg.norm(noise)
                made[pos] = target * src + np.sqrt(1 - target ** 2) * noise
            else:
                self.originals.append(pos)
        self.made = made

    def blocks(self, block_size: int):
        for start in range(0, self.n, block_size):
            stop = min(start + block_size, self.n)
            self._grow(stop)
            yield np.arange(start, stop), self.made[start:stop]

    def vector(self, i: int) -> np.ndarray:
        self._grow(i + 1)
        return self.made[i]


def naive_reference(pool: SyntheticPool, budget: int) -> tuple[list[int], float]:
    """Deita's loop: per candidate, stack all kept vectors again, then one matrix-vector product."""
    kept, kept_vectors = [], []
    t0 = time.perf_counter()
    for i in range(pool.n):
        x = pool.vector(i)
        if kept_vectors and float((np.stack(kept_vectors) @ x).max()) > TAU:
            continue
        kept.append(i)
        kept_vectors.append(x)
        if len(kept) == budget:
            break
    return kept, time.perf_counter() - t0


def blocked(pool: SyntheticPool, budget: int, block_size: int) -> tuple[list[int], float, int, float]:
    index = KeptIndex(pool.dim, device="auto", capacity=budget)
    flops = 0.0

    class Counting:  # count the GEMM work the filter asks of the index, for the %-of-peak column
        def query(self, block, tau):
            nonlocal flops
            flops += 2.0 * len(block) * len(index) * pool.dim
            return index.query(block, tau)

        def add(self, vectors):
            index.add(vectors)

        def __len__(self):
            return len(index)

    t0 = time.perf_counter()
    result = run_filter(pool.blocks(block_size), Counting(), budget, TAU)
    seconds = time.perf_counter() - t0
    return result.kept, seconds, result.visited, flops


def gemm_peak(dim: int = 2048, repeats: int = 3) -> float:
    """Measured float32 GEMM FLOP/s of this machine (numpy's BLAS, under the thread limit in force)."""
    a = np.random.default_rng(0).standard_normal((dim, dim)).astype(np.float32)
    a @ a
    best = min(_time(lambda: a @ a) for _ in range(repeats))
    return 2.0 * dim ** 3 / best


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def pre_generate(pool: SyntheticPool, upto: int) -> None:
    """Generate vectors before timing, so neither side pays for the synthetic data."""
    pool._grow(min(upto, pool.n))


def write_store(path: Path, n: int, dim: int, seed: int = 1) -> None:
    """An embedded, scored pool on disk as `deita-ray score` and `embed` leave it (float16 vector shards, their
    Parquet index, scored parts with their completion records), made in score order."""
    import pyarrow as pa

    from deita_ray.io import fs
    from deita_ray.io.embedding_store import write_vector_shard
    from deita_ray.runner.execute import write_part_atomic

    pool = SyntheticPool(n, dim, seed=seed)
    pool._grow(n)
    scores = np.linspace(30.0, 1.0, n)
    for start in range(0, n, 1024):
        stop = min(n, start + 1024)
        ids = [f"s{i:07d}" for i in range(start, stop)]
        vectors = pool.made[start:stop].astype(np.float16)
        rows = stop - start
        table = pa.table({"id": ids, "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
                          "embed_truncated": [False] * rows, "embed_tokens": [100] * rows,
                          "embed_reason": pa.nulls(rows, pa.string())})
        write_part_atomic(write_vector_shard(table, str(path / "embeddings" / "vectors")), str(path / "embeddings" / "index"))
        conversations = [[{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": "a"}] for i in range(start, stop)]
        write_part_atomic(pa.table({"id": ids, "evol_score": scores[start:stop], "conversations": conversations}),
                          str(path / "scored"))
    parts = (n + 1023) // 1024
    for step in ("score", "embed"):
        fs.write_json(str(path / f"{step}_summary.json"), {"reconciled": True, "parts": parts})


def select_case(store: Path, backend: str, threads: int, budget: int) -> dict:
    """`select` on the store with `backend` under a thread limit: its time, its GEMM work, the backend it took."""
    import shutil

    import torch
    from threadpoolctl import threadpool_limits

    import importlib

    from deita_ray.select import kept_index
    from deita_ray.steps.select import SelectConfig, run_select

    repr_filter = importlib.import_module("deita_ray.select.repr_filter")  # the package exports a function so named

    kept_index._fastest_cpu_search.cache_clear()  # the auto choice is measured under this thread limit
    out = store / f"selection-{backend}-{threads}"
    shutil.rmtree(out, ignore_errors=True)
    flops = 0.0
    real_query, real_gram = kept_index.KeptIndex.query, repr_filter.lower_gram

    def query(self, block, tau):  # the index search: one row per candidate against every kept vector
        nonlocal flops
        flops += 2.0 * len(block) * self.count * self.dim
        return real_query(self, block, tau)

    def gram(rows):  # the in-block similarities: bands of rows against the rows up to them
        nonlocal flops
        n = len(rows)
        flops += sum(2.0 * (min(s + repr_filter.GRAM_ROWS, n) - s) * min(s + repr_filter.GRAM_ROWS, n) * rows.shape[1]
                     for s in range(0, n, repr_filter.GRAM_ROWS))
        return real_gram(rows)

    kept_index.KeptIndex.query, repr_filter.lower_gram = query, gram
    threads_before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        with threadpool_limits(limits=threads):
            peak = gemm_peak()
            started = time.perf_counter()
            summary = run_select(SelectConfig(scored=str(store / "scored"), embeddings=str(store / "embeddings"),
                                              output=str(out), budget=budget, threshold=TAU, index="local",
                                              backend=backend, sort_on="driver"))
            seconds = time.perf_counter() - started
    finally:
        kept_index.KeptIndex.query, repr_filter.lower_gram = real_query, real_gram
        torch.set_num_threads(threads_before)
    import pyarrow.parquet as pq

    kept = pq.read_table(out / "selected.parquet", columns=["id"]).column("id").to_pylist()
    return {"backend": backend, "took": summary["index"]["backend"], "why": summary["index"].get("why"),
            "threads": threads, "seconds": round(seconds, 3), "visited": summary["visited"], "gemm_gflop": round(flops / 1e9, 1),
            "gemm_rate_gflops": round(peak / 1e9, 1), "fraction_of_gemm_rate": round(flops / seconds / peak, 3),
            "kept": kept}


def job_part(work: Path, n: int, dim: int, budget: int) -> dict:
    store = work / f"store-{n}-{dim}"
    if not (store / "embed_summary.json").exists():
        write_store(store, n, dim)
    cases = [select_case(store, backend, threads, budget) for threads in (1, os.cpu_count() or 1)
             for backend in ("auto", "faiss", "numpy", "torch")]
    identical = all(case["kept"] == cases[0]["kept"] for case in cases)
    for case in cases:
        print(f"select N={n:,} d={dim} budget {budget:,} {case['backend']:>5} ({case['took']}) {case['threads']} "
              f"thread(s): {case['seconds']:6.2f} s, {case['gemm_gflop']:,.0f} GFLOP, {case['fraction_of_gemm_rate']:.0%} "
              f"of {case['gemm_rate_gflops']:.0f} GFLOP/s", flush=True)
        case["kept"] = len(case["kept"])
    print(f"select: identical kept ids across backends and thread counts: {identical}", flush=True)
    return {"n": n, "dim": dim, "budget": budget, "identical_kept_ids": identical, "cases": cases}


def main(argv: list[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", "--quick", dest="smoke", action="store_true",
                        help="tiny pools, every part, in seconds (what CI runs)")
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--work", default=None, help="where the on-disk pools go (default: a temp dir, removed)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_filter.json"))
    args = parser.parse_args(argv)

    import faiss

    peak = gemm_peak()
    print(f"float32 GEMM rate measured: {peak / 1e9:.1f} GFLOP/s", flush=True)
    n, budget = (3_000, 300) if args.smoke else (200_000, 10_000)
    side_by_side = []
    for dim in (64, 256) if args.smoke else (384, 4096):
        pool_a, pool_b = SyntheticPool(n, dim, seed=dim), SyntheticPool(n, dim, seed=dim)
        pre_generate(pool_a, int(budget * 1.6))
        pre_generate(pool_b, int(budget * 1.6))
        ours, t_ours, visited, flops = blocked(pool_a, budget, args.block_size)
        ref, t_ref = naive_reference(pool_b, budget)
        row = {"n": n, "dim": dim, "budget": budget, "tau": TAU, "visited": visited,
               "identical_kept_ids": ours == ref, "kept": len(ours),
               "naive_seconds": round(t_ref, 3), "blocked_seconds": round(t_ours, 3),
               "speedup": round(t_ref / t_ours, 1), "gemm_fraction_of_peak": round(flops / t_ours / peak, 3)}
        side_by_side.append(row)
        print(f"N={n:,} d={dim:<5} budget={budget:,}: naive {t_ref:8.2f} s  blocked {t_ours:6.2f} s  "
              f"x{row['speedup']:<7} identical={row['identical_kept_ids']}  visited {visited:,}", flush=True)

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-filter-"))
    job = job_part(work, *((2_000, 256, 600) if args.smoke else (24_000, 4096, 8_000)))

    scale = []
    cases = [(1_000_000, 384, 6_000), (1_000_000, 384, 10_000), (1_000_000, 384, 100_000),
             (1_000_000, 4096, 6_000), (1_000_000, 4096, 10_000)]
    if args.smoke:
        cases = [(20_000, 64, 1_000)]
    for n_scale, dim, b in cases:
        pool = SyntheticPool(n_scale, dim, seed=7)
        pre_generate(pool, int(b * 1.6))
        kept, seconds, visited, flops = blocked(pool, b, args.block_size)
        row = {"n": n_scale, "dim": dim, "budget": b, "kept": len(kept), "visited": visited,
               "seconds": round(seconds, 3), "gflops": round(flops / 1e9, 1),
               "gemm_fraction_of_peak": round(flops / seconds / peak, 3)}
        scale.append(row)
        print(f"scale N={n_scale:,} d={dim:<5} budget={b:>7,}: {seconds:8.2f} s  visited {visited:>8,}  "
              f"{row['gflops']:>9,.1f} GFLOP  {100 * row['gemm_fraction_of_peak']:.0f}% of GEMM peak", flush=True)

    report = {"benchmark": "bench_filter", "when": time.strftime("%Y-%m-%d %H:%M:%S"), "smoke": args.smoke,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "faiss": faiss.__version__,
                          "gemm_peak_gflops": round(peak / 1e9, 1), "load_average": os.getloadavg()},
              "block_size": args.block_size, "side_by_side": side_by_side, "job": job, "scale": scale}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    if not args.work:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    ok = all(r["identical_kept_ids"] for r in side_by_side) and job["identical_kept_ids"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
