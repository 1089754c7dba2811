"""The FLOP/s limit of what a stage holds, measured where its actors run: the denominator of its efficiency.

    device_peak(gpus=0)    # {"per": "cpu", "flops": ..., "how": ...}: per CPU core, or per GPU

Per GPU: the datasheet's bf16 dense tensor-core peak for a GPU whose name is known, else a bf16 GEMM
timed there. Per CPU core: a single-threaded float32 GEMM timed there (a fraction of a second). A stage's
limit is that times the GPUs (or CPUs) its actors reserved.
"""

from __future__ import annotations

import time

# bf16 dense tensor-core peaks (the vendors' datasheets), by a part of the device name torch reports.
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "GH200": 989.0, "B200": 2250.0, "B100": 1750.0, "A100": 312.0,
                   "A10": 125.0, "L40S": 362.0, "L40": 181.0, "L4": 121.0, "A6000": 155.0, "V100": 125.0, "T4": 65.0}


def device_peak(gpus: float = 0.0, seconds: float = 0.2) -> dict:
    """The FLOP/s limit of what a stage's actor holds: per GPU (the datasheet's bf16 dense peak for a known GPU,
    else a bf16 GEMM timed here) or per CPU core (a single-threaded float32 GEMM timed here)."""
    if gpus:
        import torch

        name = torch.cuda.get_device_name(0)
        for part, tflops in GPU_PEAK_TFLOPS.items():
            if part in name:
                return {"per": "gpu", "flops": tflops * 1e12, "how": f"{name}: datasheet bf16 dense"}
        return {"per": "gpu", "flops": _timed_gemm("cuda", seconds), "how": f"{name}: bf16 GEMM timed"}
    return {"per": "cpu", "flops": _timed_gemm("cpu", seconds), "how": "float32 GEMM timed on one thread"}


def _timed_gemm(device: str, seconds: float) -> float:
    import numpy as np

    if device == "cpu":
        from threadpoolctl import threadpool_limits

        a = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32)
        with threadpool_limits(limits=1):
            a @ a
            runs, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                a @ a
                runs += 1
            return 2.0 * 512 ** 3 * runs / (time.perf_counter() - started)
    import torch

    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    a @ a
    torch.cuda.synchronize()
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ a
        runs += 1
    torch.cuda.synchronize()
    return 2.0 * 4096 ** 3 * runs / (time.perf_counter() - started)
