"""The index of kept vectors: FAISS inner product (GPU where there is one), exact near tau.

`KeptIndex` is plain Python; `RemoteKeptIndex` runs the same class as a Ray actor (with a GPU
when the cluster has one) and exposes the same methods, so the filter code cannot tell them apart.
`query` answers, for a block of candidates, "is any kept vector more similar than tau?" exactly
(see `exact.py`): FAISS finds the nearest kept vector in float32, and only candidates whose
answer falls inside the float32 error band are re-decided against all kept vectors in float64.
"""

from __future__ import annotations

import numpy as np

from deita_ray.select.exact import decide_rows, exact_above, float32_error_bound


def gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class KeptIndex:
    def __init__(self, dim: int, device: str = "auto", capacity: int = 1024):
        import faiss

        if device not in ("auto", "cpu", "gpu"):
            raise ValueError(f"device must be auto, cpu or gpu, got {device!r}")
        self.dim = dim
        self.on_gpu = device != "cpu" and gpu_available()
        if device == "gpu" and not self.on_gpu:
            raise RuntimeError("device='gpu' but this process sees no GPU or faiss is the CPU build")
        self.index = faiss.IndexFlatIP(dim)
        if self.on_gpu:
            self._resources = faiss.StandardGpuResources()
            self.index = faiss.index_cpu_to_gpu(self._resources, 0, self.index)
        self._vectors = np.empty((max(capacity, 1), dim), dtype=np.float32)  # for exact rechecks
        self.count = 0
        self.max_norm = 0.0

    def __len__(self) -> int:
        return self.count

    def describe(self) -> dict:
        return {"kept": self.count, "dim": self.dim, "backend": "faiss-gpu" if self.on_gpu else "faiss-cpu"}

    def query(self, block: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each row: (exceeds tau against some kept vector, nearest kept index, its similarity)."""
        rows = block.shape[0]
        if self.count == 0:
            return np.zeros(rows, bool), np.full(rows, -1, np.int64), np.full(rows, -np.inf, np.float32)
        sims, nearest = self.index.search(np.ascontiguousarray(block, dtype=np.float32), 1)
        sims, nearest = sims[:, 0].copy(), nearest[:, 0].copy()
        norm = max(self.max_norm, float(np.max(np.linalg.norm(block, axis=1))))
        err = float32_error_bound(self.dim, norm)
        exceeds, band = decide_rows(sims, tau, err)
        undecided = np.flatnonzero(band)
        if len(undecided):
            kept = self._vectors[: self.count]
            approx = block[undecided] @ kept.T  # float32 similarities to every kept vector, each within err
            for row, i in enumerate(undecided):
                above, j, sim = exact_above(block[i], kept, approx[row], tau, err)
                exceeds[i] = above
                if above:
                    nearest[i], sims[i] = j, sim
        return exceeds, nearest, sims

    def add(self, vectors: np.ndarray) -> None:
        if len(vectors) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        needed = self.count + len(vectors)
        if needed > len(self._vectors):
            grown = np.empty((max(needed, 2 * len(self._vectors)), self.dim), dtype=np.float32)
            grown[: self.count] = self._vectors[: self.count]
            self._vectors = grown
        self._vectors[self.count:needed] = vectors
        self.count = needed
        self.max_norm = max(self.max_norm, float(np.max(np.linalg.norm(vectors, axis=1))))
        self.index.add(vectors)


class RemoteKeptIndex:
    """The same index inside a Ray actor (one GPU when the cluster has GPUs): `query`/`add` block on the actor."""

    def __init__(self, dim: int, device: str = "auto", num_gpus: float | None = None):
        import ray

        if num_gpus is None:
            num_gpus = 1 if device != "cpu" and ray.cluster_resources().get("GPU", 0) >= 1 else 0
        self._ray = ray
        self.actor = ray.remote(KeptIndex).options(num_cpus=1, num_gpus=num_gpus).remote(dim, device)
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def describe(self) -> dict:
        return self._ray.get(self.actor.describe.remote())

    def query(self, block: np.ndarray, tau: float):
        return self._ray.get(self.actor.query.remote(block, tau))

    def add(self, vectors: np.ndarray) -> None:
        self._ray.get(self.actor.add.remote(vectors))
        self.count += len(vectors)

    def close(self) -> None:
        self._ray.kill(self.actor)
