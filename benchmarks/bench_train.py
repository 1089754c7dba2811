"""SFT training tokens/s on Ray Train: no DeepSpeed vs ZeRO-2 vs ZeRO-3, side by side in one run.

    python benchmarks/bench_train.py                         # tiny + small shapes, 2 workers, ~6 min on 2 cores
    python benchmarks/bench_train.py --shapes small --samples 256 --workers 2 --gpu   # on a GPU machine

Each case trains the same random-init Llama on the same rows (the project's sample pool, Vicuna
template, loss on assistant turns) for one epoch through `deita_ray.train` -- TRL SFTTrainer in
Ray Train workers (gloo on CPU, NCCL on GPU). Reported per case: tokens/s inside the trainer
(non-padding input tokens over TRL's train_runtime), the wall time including Ray Train's start-up,
the final loss, and the ratio of each DeepSpeed case to plain DDP on the same shape. All backends
must reach the same loss (fp32, same data order): a mismatch is printed as a failure.
JSON to benchmarks/results/bench_train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_score import SHAPES, build_model  # noqa: E402  (the same random-init shapes as bench_score)

BACKENDS = ["none", "zero2", "zero3"]


def make_data(root: Path, samples: int) -> str:
    from deita_ray.tools.sample_pool import make_pool

    pool = root / f"pool-{samples}"
    if not (pool / "_manifest.json").exists():
        make_pool(str(pool), samples=samples, seed=3)
    return str(pool)


def run_case(model: str, data: str, out: Path, backend: str, args) -> dict:
    from deita_ray.train.config import load_train_config
    from deita_ray.train.launch import train

    config = load_train_config("sft", data={
        "model": model, "data": [data], "output": str(out), "deepspeed": backend, "num_workers": args.workers,
        "use_gpu": args.gpu, "per_device_batch_size": args.micro_batch, "epochs": 1, "seed": 0,
        "global_batch_size": args.micro_batch * args.workers * args.accumulation, "learning_rate": 1e-4,
        "warmup_ratio": 0.0, "lr_scheduler": "constant", "max_length": args.max_length, "save_every_epoch": False,
        "resume": False})
    started = time.perf_counter()
    summary = train(config, log=lambda *_: None)
    wall = time.perf_counter() - started
    return {"backend": backend, "tokens": summary["num_input_tokens_seen"], "steps": summary["global_step"],
            "train_runtime_s": round(summary["train_runtime_s"], 2), "tokens_per_s": summary["tokens_per_s"],
            "wall_s_with_startup": round(wall, 1), "final_loss": summary["losses"][-1][1] if summary["losses"] else None,
            "rows_used": summary["rows"]["rows_used"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="the tiny shape, 16 rows, one worker, DDP and ZeRO-2: every "
                                                           "path (CI; test_train compares the backends on 2 workers)")
    parser.add_argument("--shapes", nargs="+", default=["tiny", "small"], choices=list(SHAPES))
    parser.add_argument("--backends", nargs="+", default=BACKENDS, choices=BACKENDS)
    parser.add_argument("--samples", type=int, default=256, help="training rows (default 256)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--accumulation", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker")
    parser.add_argument("--work", default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_train.json"))
    args = parser.parse_args(argv)
    if args.smoke:
        args.shapes, args.samples, args.backends, args.max_length, args.workers = ["tiny"], 16, ["none", "zero2"], 256, 1

    import ray
    import torch

    root = Path(args.work or tempfile.mkdtemp(prefix="bench-train-"))
    data = make_data(root, args.samples)
    ray.init(num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
    results = []
    for shape in args.shapes:
        model = build_model(root, shape)
        cases = [run_case(model, data, root / f"run-{shape}-{b}", b, args) for b in args.backends]
        base = next((c for c in cases if c["backend"] == "none"), cases[0])
        for case in cases:
            case["shape"] = {"name": shape, **SHAPES[shape]}
            case["tokens_per_s_vs_ddp"] = round(case["tokens_per_s"] / max(base["tokens_per_s"], 1e-9), 3)
            same = base["final_loss"] is None or abs(case["final_loss"] - base["final_loss"]) <= 1e-3 * abs(base["final_loss"])
            case["same_loss_as_ddp"] = same
            results.append(case)
            print(f"{shape:6s} {case['backend']:6s} {case['tokens_per_s']:>9,.0f} tokens/s (x{case['tokens_per_s_vs_ddp']:.2f} "
                  f"vs DDP)  {case['steps']} steps, {case['tokens']:,} tokens in {case['train_runtime_s']} s; "
                  f"wall with start-up {case['wall_s_with_startup']} s; final loss {case['final_loss']:.4f}"
                  + ("" if same else "  << LOSS DIFFERS FROM DDP"), flush=True)
    report = {"benchmark": "bench_train", "when": time.strftime("%Y-%m-%d %H:%M:%S"),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                          "cuda": torch.cuda.is_available(), "gpu": args.gpu},
              "settings": {k: v for k, v in vars(args).items() if k not in ("work", "out")}, "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
