"""Which FAISS GPU builds run on which GPUs: decided before FAISS touches the device, since it cannot be caught.

    verdict = faiss_gpu_verdict((9, 0))       # (runs, why) for the installed FAISS and a compute capability

FAISS checks every CUDA call with FAISS_ASSERT, which prints and calls abort(): a GPU index whose
build carries no kernel for the device (CUDA error 209, "no kernel image is available") kills the
whole process at its first `add`, past any `except`. So the device's compute capability is compared
with the device code each known wheel carries (read with cuobjdump from the wheels themselves):
- faiss-gpu-cu12 1.14.1.post1 (third-party build): SASS for sm_70 and sm_80 only, no PTX: Volta,
  Turing, Ampere and Ada run it; Hopper (H100, H200) and Blackwell do not.
- faiss-gpu 1.14.3 to 1.15.1 (Meta's build, CUDA 12 runtime): SASS for sm_70/75/80/86/89/90 and PTX
  for compute_90, which the driver compiles for newer GPUs (Blackwell) at first use.
A build not in the table is tried once in a throwaway subprocess (a tiny index, add and search): if the
subprocess dies, this process has lost nothing.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

FAISS_GPU_BUILDS = {
    "faiss-gpu-cu12": {"sass": ((7, 0), (8, 0)), "ptx": None},
    "faiss-gpu": {"sass": ((7, 0), (7, 5), (8, 0), (8, 6), (8, 9), (9, 0)), "ptx": (9, 0)},
}
PROBE = """
import numpy as np, faiss
res = faiss.StandardGpuResources()
index = faiss.index_cpu_to_gpu(res, 0, faiss.IndexFlatIP(8))
index.add(np.eye(8, dtype="float32"))
sims, ids = index.search(np.eye(8, dtype="float32"), 1)
assert (ids[:, 0] == np.arange(8)).all()
print("ok")
"""


def serves(build: dict, capability: tuple[int, int]) -> bool:
    """Device code runs on a GPU of the same major version and an equal or higher minor one (SASS), or of any
    higher compute capability by the driver's just-in-time compilation (PTX)."""
    major, minor = capability
    if any(m == major and n <= minor for m, n in build["sass"]):
        return True
    return build["ptx"] is not None and tuple(capability) >= build["ptx"]


def faiss_distribution() -> str | None:
    """The installed distribution that provides the `faiss` module (faiss-cpu, faiss-gpu, faiss-gpu-cu12, ...)."""
    names = importlib.metadata.packages_distributions().get("faiss") or []
    return names[0].lower() if names else None


def probe_in_subprocess(timeout: float = 300.0) -> tuple[bool, str]:
    """A tiny GPU index in another process (FAISS aborts on a CUDA error: this one must survive it)."""
    try:
        done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"a tiny FAISS GPU index did not finish within {timeout:g} s"
    if done.returncode == 0 and done.stdout.strip().endswith("ok"):
        return True, "a tiny FAISS GPU index ran in a subprocess"
    last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    return False, f"a tiny FAISS GPU index failed in a subprocess ({last[:200]})"


def faiss_gpu_verdict(capability: tuple[int, int], distribution: str | None = None, probe=probe_in_subprocess
                      ) -> tuple[bool, str]:
    """(runs, why): whether the installed FAISS GPU build runs on a GPU of `capability`."""
    distribution = distribution if distribution is not None else faiss_distribution()
    cc = f"{capability[0]}.{capability[1]}"
    build = FAISS_GPU_BUILDS.get(distribution or "")
    if build is not None:
        if serves(build, capability):
            return True, f"{distribution} carries device code for compute capability {cc}"
        archs = ", ".join(f"sm_{m}{n}" for m, n in build["sass"])
        return False, (f"{distribution} carries kernels for {archs} only, not for this GPU (compute capability {cc}): "
                       "FAISS would abort the process (CUDA error 209); install faiss-gpu>=1.14.3 (the `gpu` extra)")
    ok, why = probe()
    return ok, f"{distribution or 'this FAISS'} is not a build whose kernels are known here: {why}"
