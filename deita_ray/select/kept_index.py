"""The index of kept vectors: nearest-neighbour search by inner product, exact near tau.

    KeptIndex(dim, device="auto", backend="auto")   # FAISS (GPU build where it sees one) or torch

Two search backends sit behind one interface, and the filter cannot tell them apart:
- `faiss`: `IndexFlatIP`, on the GPU when FAISS is the GPU build and sees one;
- `torch`: the kept vectors as one float32 tensor (on CUDA where torch sees a GPU), searched with
  one IEEE float32 matrix product per block (TF32 off: the error bound below assumes float32).
  For GPU machines without FAISS's GPU build, whose wheel is not on PyPI for every CUDA.
`auto` takes FAISS's GPU index where its build has kernels for the GPU (select/faiss_gpu.py: FAISS
aborts the process on a CUDA error, so this is decided before), else torch on the GPU, else the CPU.
`query` answers, for a block of candidates, "is any kept vector more similar than tau?" exactly
(see `exact.py`): the backend finds the nearest kept vector in float32, and only candidates whose
answer falls inside the float32 error band are re-decided against all kept vectors in float64.
`RemoteKeptIndex` runs the same class as a Ray actor (with a GPU when the cluster has one).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import sys
from typing import NamedTuple

import numpy as np

from deita_ray.select.exact import decide_rows, exact_above, float32_error_bound

BACKENDS = ("auto", "faiss", "torch", "numpy")
DEVICES = ("auto", "cpu", "gpu")


def faiss_installed() -> bool:
    return importlib.util.find_spec("faiss") is not None


def faiss_gpu_available() -> bool:
    if not faiss_installed():
        return False
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def torch_cuda_available(probe_only_with_nvidia_devices: bool = False) -> bool:
    """Does torch see a CUDA device? With the flag (device "auto"), a machine with no NVIDIA device node
    answers no without importing torch (seconds on a CPU machine, for nothing)."""
    if importlib.util.find_spec("torch") is None:
        return False
    if probe_only_with_nvidia_devices and "torch" not in sys.modules and not os.path.exists("/dev/nvidiactl"):
        return False
    import torch

    return torch.cuda.is_available()


class Choice(NamedTuple):
    backend: str    # faiss | torch
    on_gpu: bool
    why: str        # one line, for the summary, the log and `deita-ray doctor`
    fallback: bool = False  # FAISS's GPU build was there but cannot run on this GPU


def gpu_capability() -> tuple[int, int] | None:
    """Compute capability of this process's first CUDA device, where torch sees one."""
    if not torch_cuda_available():
        return None
    import torch

    return tuple(torch.cuda.get_device_capability(0))


def fastest_cpu_search(dim: int) -> tuple[str, dict]:
    """The faster exact search on this CPU, FAISS's IndexFlatIP or one numpy GEMM (the kept vectors the index
    keeps on the host anyway), by timing both on a block of the real dimension once per process: which one
    wins depends on the BLAS each was built with (FAISS carries its own)."""
    return _fastest_cpu_search(int(dim), faiss_installed())


@functools.lru_cache(maxsize=8)
def _fastest_cpu_search(dim: int, with_faiss: bool) -> tuple[str, dict]:

    rng = np.random.default_rng(0)
    kept = rng.standard_normal((1024, dim)).astype(np.float32)
    block = rng.standard_normal((256, dim)).astype(np.float32)
    searches = {"numpy": lambda: (block @ kept.T).argmax(axis=1)}
    if with_faiss:
        import faiss

        index = faiss.IndexFlatIP(dim)
        index.add(kept)
        searches["faiss"] = lambda: index.search(block, 1)
    rates = {}
    for name, search in searches.items():
        search()
        best = min(_seconds(search) for _ in range(3))
        rates[name] = 2.0 * len(block) * len(kept) * dim / max(best, 1e-9)
    return max(rates, key=rates.get), rates


def _seconds(fn) -> float:
    import time

    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def choose_backend(backend: str, device: str, *, faiss_gpu: bool | None = None, torch_gpu: bool | None = None,
                   capability: tuple[int, int] | None = None, verdict=None, dim: int = 1024) -> Choice:
    """The backend and device for the asked ones, and why. `auto` takes FAISS's GPU index where the installed
    FAISS GPU build has kernels for this GPU (select/faiss_gpu.py), else torch on the GPU, else the CPU. A GPU
    asked for and not usable is an error in one line. The keyword arguments stand in for the machine (tests)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if backend == "faiss" and not faiss_installed():
        raise RuntimeError("backend='faiss' but faiss is not installed (pip install faiss-cpu, or faiss-gpu)")
    if device != "cpu":
        faiss_gpu = faiss_gpu_available() if faiss_gpu is None else faiss_gpu
        torch_gpu = torch_cuda_available(device == "auto") if torch_gpu is None else torch_gpu
    else:
        faiss_gpu = torch_gpu = False
    faiss_runs, faiss_why = False, "FAISS is the CPU build or sees no GPU"
    if faiss_gpu and backend in ("auto", "faiss"):
        from deita_ray.select.faiss_gpu import faiss_gpu_verdict

        capability = capability or gpu_capability() or (0, 0)
        faiss_runs, faiss_why = (verdict or faiss_gpu_verdict)(capability)
    if backend == "faiss":
        if faiss_runs:
            return Choice("faiss", True, f"FAISS GPU index: {faiss_why}")
        if device == "gpu":
            raise RuntimeError(f"backend='faiss' with device='gpu', but {faiss_why}")
        return Choice("faiss", False, f"FAISS on the CPU ({faiss_why})" if faiss_gpu else "FAISS on the CPU",
                      faiss_gpu)
    if backend == "torch":
        if device == "gpu" and not torch_gpu:
            raise RuntimeError("backend='torch' with device='gpu', but torch sees no CUDA device")
        return Choice("torch", torch_gpu, "torch on the GPU" if torch_gpu else "torch on the CPU")
    if backend == "numpy":
        if device == "gpu":
            raise RuntimeError("backend='numpy' runs on the CPU; use faiss or torch for device='gpu'")
        return Choice("numpy", False, "numpy's BLAS on the CPU")
    if faiss_runs:
        return Choice("faiss", True, f"FAISS GPU index: {faiss_why}")
    if torch_gpu:
        if faiss_gpu:
            return Choice("torch", True, f"torch on the GPU ({faiss_why})", True)
        return Choice("torch", True, "torch on the GPU (no FAISS GPU build)")
    if device == "gpu":
        raise RuntimeError("device='gpu' but neither FAISS's GPU build nor torch can use a GPU in this process")
    fastest, rates = fastest_cpu_search(dim)
    measured = ", ".join(f"{name} {rate / 1e9:.0f}" for name, rate in rates.items())
    why = f"{fastest} on the CPU, the faster search here (GFLOP/s measured: {measured})"
    return Choice(fastest, False, f"{why}; {faiss_why}" if faiss_gpu else why, faiss_gpu)


class NumpySearch:
    """One float32 GEMM per block against the kept vectors the index already holds on the host (no second copy)."""

    def __init__(self, owner: "KeptIndex"):
        self.owner = owner

    def search(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sims = block @ self.owner._vectors[: self.owner.count].T
        nearest = sims.argmax(axis=1)
        return sims[np.arange(len(block)), nearest], nearest.astype(np.int64)

    def add(self, vectors: np.ndarray) -> None:
        pass  # KeptIndex.add keeps them


class FaissSearch:
    """FAISS `IndexFlatIP`, moved to GPU 0 when asked."""

    def __init__(self, dim: int, on_gpu: bool):
        import faiss

        self.index = faiss.IndexFlatIP(dim)
        if on_gpu:
            self._resources = faiss.StandardGpuResources()
            self.index = faiss.index_cpu_to_gpu(self._resources, 0, self.index)

    def search(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sims, nearest = self.index.search(block, 1)
        return sims[:, 0].copy(), nearest[:, 0].copy()

    def add(self, vectors: np.ndarray) -> None:
        self.index.add(vectors)


@contextlib.contextmanager
def float32_matmul(mode: str = "ieee"):
    """CUDA float32 products as IEEE float32 ("ieee": the error bound here assumes it) or TF32 ("tf32"),
    restored after. torch >= 2.9 says it with fp32_precision; older ones with allow_tf32."""
    import torch

    matmul = torch.backends.cuda.matmul
    name, value = ("fp32_precision", mode) if hasattr(matmul, "fp32_precision") else ("allow_tf32", mode == "tf32")
    before = getattr(matmul, name)
    setattr(matmul, name, value)
    try:
        yield
    finally:
        setattr(matmul, name, before)


class TorchSearch:
    """The kept vectors as one float32 tensor on `device`, grown by doubling; one GEMM per block."""

    def __init__(self, dim: int, on_gpu: bool, capacity: int):
        import torch

        self.torch = torch
        self.device = torch.device("cuda" if on_gpu else "cpu")
        self.kept = torch.empty((max(capacity, 1), dim), dtype=torch.float32, device=self.device)
        self.count = 0

    def search(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        with torch.no_grad(), float32_matmul("ieee"):
            queries = torch.from_numpy(block).to(self.device)
            sims, nearest = (queries @ self.kept[: self.count].T).max(dim=1)
        return sims.cpu().numpy(), nearest.cpu().numpy().astype(np.int64)

    def add(self, vectors: np.ndarray) -> None:
        needed = self.count + len(vectors)
        if needed > len(self.kept):
            grown = self.torch.empty((max(needed, 2 * len(self.kept)), self.kept.shape[1]), dtype=self.kept.dtype,
                                     device=self.device)
            grown[: self.count] = self.kept[: self.count]
            self.kept = grown
        self.kept[self.count:needed] = self.torch.from_numpy(vectors).to(self.device)
        self.count = needed


class KeptIndex:
    def __init__(self, dim: int, device: str = "auto", capacity: int = 1024, backend: str = "auto"):
        self.dim = dim
        choice = choose_backend(backend, device, dim=dim)
        self.backend, self.on_gpu, self.why = choice.backend, choice.on_gpu, choice.why
        if choice.fallback:  # FAISS's GPU build cannot run here: say what is used instead, in one line
            print(f"kept index: {choice.why}", file=sys.stderr, flush=True)
        if self.backend == "faiss":
            self.search = FaissSearch(dim, self.on_gpu)
        elif self.backend == "numpy":
            self.search = NumpySearch(self)
        else:
            self.search = TorchSearch(dim, self.on_gpu, capacity)
        self._vectors = np.empty((max(capacity, 1), dim), dtype=np.float32)  # for exact rechecks, on the host
        self.count = 0
        self.max_norm = 0.0

    def __len__(self) -> int:
        return self.count

    def describe(self) -> dict:
        place = "gpu" if self.on_gpu else "cpu"
        return {"kept": self.count, "dim": self.dim, "backend": f"{self.backend}-{place}", "why": self.why}

    def query(self, block: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each row: (exceeds tau against some kept vector, nearest kept index, its similarity)."""
        rows = block.shape[0]
        if self.count == 0:
            return np.zeros(rows, bool), np.full(rows, -1, np.int64), np.full(rows, -np.inf, np.float32)
        block = np.ascontiguousarray(block, dtype=np.float32)
        sims, nearest = self.search.search(block)
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
        self.search.add(vectors)


class RemoteKeptIndex:
    """The same index inside a Ray actor (one GPU when the cluster has GPUs): `query`/`add` block on the actor."""

    def __init__(self, dim: int, device: str = "auto", num_gpus: float | None = None, backend: str = "auto"):
        import ray

        if num_gpus is None:
            num_gpus = 1 if device != "cpu" and ray.cluster_resources().get("GPU", 0) >= 1 else 0
        self._ray = ray
        self.actor = ray.remote(KeptIndex).options(num_cpus=1, num_gpus=num_gpus).remote(dim, device, backend=backend)
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
