"""Repr Filter speed and exactness: the naive reference loop against deita_ray's block-resolved filter.

    python benchmarks/bench_filter.py                 # full run (~10 min on 2 cores)
    python benchmarks/bench_filter.py --quick         # smaller pools, for a smoke check

Pools are synthetic and generated lazily in score order (only visited candidates are ever made):
random unit vectors, ~30% of them near-duplicates of an earlier one with cosine drawn uniformly in
[0.85, 0.99], so duplicates land on both sides of tau = 0.9. The baseline is the reference loop:
one candidate at a time, the whole kept set stacked again every step, a float32 matrix-vector
product. Side by side in one run: identical kept ids, time, ratio. Then a scale table (N up to 1M,
budgets 6K / 10K / 100K): time, candidates visited, and the fraction of this machine's measured
float32 GEMM peak reached. JSON to benchmarks/results/bench_filter.json.
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
    """Measured float32 GEMM FLOP/s of this machine (numpy's BLAS), the yardstick for efficiency."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small pools (N=20K, budget 1K) for a smoke check")
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_filter.json"))
    args = parser.parse_args()

    import faiss

    peak = gemm_peak()
    print(f"float32 GEMM peak measured: {peak / 1e9:.1f} GFLOP/s", flush=True)
    n, budget = (20_000, 1_000) if args.quick else (200_000, 10_000)
    side_by_side = []
    for dim in (384, 4096):
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

    scale = []
    cases = [(1_000_000, 384, 6_000), (1_000_000, 384, 10_000), (1_000_000, 384, 100_000),
             (1_000_000, 4096, 6_000), (1_000_000, 4096, 10_000)]
    if args.quick:
        cases = [(50_000, 384, 2_000), (50_000, 4096, 2_000)]
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

    report = {"benchmark": "bench_filter", "when": time.strftime("%Y-%m-%d %H:%M:%S"),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "faiss": faiss.__version__,
                          "gemm_peak_gflops": round(peak / 1e9, 1)},
              "block_size": args.block_size, "side_by_side": side_by_side, "scale": scale}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
