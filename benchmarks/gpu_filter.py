"""bench_gpu.py's filter part: the Repr Filter on the device's kept index against the CPU path (run by bench_gpu.py)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

TAU = 0.9


def clustered_pool(n: int, dim: int, clusters: int, device, seed: int = 0) -> np.ndarray:
    """n unit vectors around `clusters` random centres; two of one cluster have similarity ~0.95 > tau."""
    import torch

    generator = torch.Generator(device=device).manual_seed(seed)
    centres = torch.randn(clusters, dim, device=device, generator=generator)
    centres /= centres.norm(dim=1, keepdim=True)
    out = np.empty((n, dim), dtype=np.float32)
    chunk = 65536
    for start in range(0, n, chunk):
        rows = min(chunk, n - start)
        which = torch.randint(0, clusters, (rows,), device=device, generator=generator)
        x = centres[which] + 0.23 * torch.randn(rows, dim, device=device, generator=generator) / dim ** 0.5
        out[start:start + rows] = (x / x.norm(dim=1, keepdim=True)).cpu().numpy()
    return out


def run_filter_counted(vectors: np.ndarray, scores: np.ndarray, budget: int, index) -> dict:
    from deita_ray.select.repr_filter import repr_filter

    flops, in_query = 0.0, 0.0

    class Counting:  # the GEMM work the filter asks of the index, and the time spent inside the index
        def query(self, block, tau):
            nonlocal flops, in_query
            flops += 2.0 * len(block) * len(index) * block.shape[1]
            t0 = time.perf_counter()
            answer = index.query(block, tau)
            in_query += time.perf_counter() - t0
            return answer

        def add(self, vectors):
            index.add(vectors)

        def __len__(self):
            return len(index)

    t0 = time.perf_counter()
    result = repr_filter(vectors, scores, budget=budget, threshold=TAU, index=Counting(), normalize=False)
    seconds = time.perf_counter() - t0
    return {"kept": result.kept, "visited": result.visited, "seconds": seconds, "query_seconds": in_query,
            "flops": flops, "backend": index.describe()["backend"]}


def part_filter(device, opts: dict, peak: dict, root: Path) -> dict:
    """The whole pool on the device's index; then the first `filter_cpu_n` candidates of the selection order
    on both the device's index and the CPU path. The filter is sequential and the budget is not reached,
    so the kept ids of that prefix must equal the full run's kept ids that fall inside it."""
    from deita_ray.select.kept_index import KeptIndex, faiss_installed
    from deita_ray.select.repr_filter import selection_order

    n, dim, budget, m = opts["filter_n"], opts["filter_dim"], opts["filter_budget"], min(opts["filter_cpu_n"], opts["filter_n"])
    t0 = time.perf_counter()
    vectors = clustered_pool(n, dim, opts["filter_clusters"], device)
    scores = np.random.default_rng(0).random(n)
    made = time.perf_counter() - t0
    where = "gpu" if device.type == "cuda" else "cpu"
    full = run_filter_counted(vectors, scores, budget, KeptIndex(dim, device=where, capacity=budget, backend="torch"))
    order = selection_order(scores)
    prefix = order[:m]
    sub_vectors, sub_scores = vectors[prefix], scores[prefix]
    del vectors
    dev = run_filter_counted(sub_vectors, sub_scores, budget, KeptIndex(dim, device=where, capacity=budget, backend="torch"))
    cpu_backend = "faiss" if faiss_installed() else "torch"
    cpu = run_filter_counted(sub_vectors, sub_scores, budget, KeptIndex(dim, device="cpu", capacity=budget,
                                                                        backend=cpu_backend))
    # What `select` takes by default here: FAISS's GPU index where its build has kernels for this GPU, else torch.
    auto_index = KeptIndex(dim, device="auto", capacity=budget, backend="auto")
    auto = run_filter_counted(sub_vectors, sub_scores, budget, auto_index)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    full_in_prefix = [k for k in full["kept"] if rank[k] < m]
    identical = (dev["kept"] == cpu["kept"] == auto["kept"] and [int(prefix[k]) for k in cpu["kept"]] == full_in_prefix)

    def figures(run: dict) -> dict:
        out = {"backend": run["backend"], "candidates": run["visited"], "kept": len(run["kept"]),
               "seconds": round(run["seconds"], 3), "seconds_in_index": round(run["query_seconds"], 3),
               "candidates_per_s": round(run["visited"] / run["seconds"]), "gemm_flops": run["flops"],
               "gemm_tflops_over_the_run": run["flops"] / run["seconds"] / 1e12,
               "fraction_of_fp32_peak": run["flops"] / run["seconds"] / 1e12 / peak["fp32_tflops"]}
        if "tf32_tflops" in peak:
            out["fraction_of_tf32_peak"] = run["flops"] / run["seconds"] / 1e12 / peak["tf32_tflops"]
        return out

    result = {"n": n, "dim": dim, "budget": budget, "clusters": opts["filter_clusters"], "tau": TAU,
              "pool_made_s": round(made, 1), "kept": len(full["kept"]), "visited": full["visited"],
              "full_pool_on_device": figures(full), "prefix": m, "prefix_on_device": figures(dev),
              "prefix_on_cpu": figures(cpu), "prefix_auto": {**figures(auto), "why": auto_index.why},
              "identical_kept_ids": identical,
              "speedup_on_prefix": round(cpu["seconds"] / dev["seconds"], 2)}
    print(f"filter  N={n:,} d={dim} budget {budget:,}: kept {len(full['kept']):,}, visited {full['visited']:,} in "
          f"{full['seconds']:.2f} s on {full['backend']} ({result['full_pool_on_device']['fraction_of_fp32_peak']:.1%} "
          f"of fp32 peak, {full['query_seconds']:.2f} s inside the index); first {m:,}: {dev['seconds']:.2f} s vs "
          f"{cpu['backend']} {cpu['seconds']:.2f} s  x{result['speedup_on_prefix']}  identical kept ids: {identical}",
          flush=True)
    return result
