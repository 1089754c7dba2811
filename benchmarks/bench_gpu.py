"""GPU measurements: scoring, embedding, the Repr Filter and SFT steps, each against its reference on one device.

    python benchmarks/bench_gpu.py                       # a CUDA machine: all parts, JSON to benchmarks/results/gpu/
    python benchmarks/bench_gpu.py --parts peak filter   # some parts only (peak is always measured: MFU needs it)
    python benchmarks/bench_gpu.py --smoke               # tiny shapes on whatever is here, CPU too: checks the script

Without a CUDA device and without --smoke it says so and exits 0 (nothing is measured on a CPU).
Every model is a random-init Llama of the named shape in bf16, built on the GPU and saved, then loaded
by the project's real loading code; nothing is downloaded. Parts, each side by side in one run:
  peak    the device's measured matmul peak: bf16 (8192^3), float32 IEEE and TF32; the MFU denominators.
  score   deita_ray's hf scorer (batched prefill, shared template prefix, last-position logits only) against
          the reference Deita behaviour (one prompt at a time, 2-token generate), LLaMA-2 7B and 13B shapes:
          prompts/s, tokens/s, the ratio, the largest score difference, MFU.
  embed   7B shape, last-token pooling, 2,048-token cap: samples/s, tokens/s, MFU.
  vllm    where vLLM is installed: the 7B shape scored by vLLM against the hf scorer (bf16: the same scores
          to ~1e-2), and greedy generation throughput on the same engine (the GPU model runner CI cannot run).
  filter  the Repr Filter at N = 1M, d = 4096, budget 10K on the torch CUDA kept index; then the first 200K
          candidates of the selection order on it and on the CPU path (FAISS when installed, else torch on the
          CPU), side by side: identical kept ids (also with the full run's, inside that prefix), times, the
          fraction of the float32 peak, and the time spent inside the index (the rest is host work); and what
          `select --backend auto` takes on this GPU (FAISS's GPU index only where its build has kernels). The pool
          is clustered with fewer clusters than the budget, so every candidate is visited (the most work the
          filter can be asked at this N and budget).
  train   SFT steps of a ~1B (TinyLlama) shape in bf16 through the project's trainer builder
          (`deita_ray.train.worker.build_trainer`, the function Ray Train workers run), and under DeepSpeed
          ZeRO-2 when deepspeed imports: steady-state tokens/s and MFU.
Each part writes benchmarks/results/gpu/<part>.json (with the command line and versions) and prints a line.
FLOPs counted: forward 2*params*tokens over the transformer body plus causal attention (2*layers*hidden*L^2
per sequence), the LM head where logits are read; the scorer's shared template prefix once per batch (as
run); the reference's LM head once per generated token; training 3x forward. Scoring uses distinct pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from gpu_common import (
    LLAMA_SHAPES,
    body_params,
    build_random_llama,
    engine_dtype,
    forward_flops,
    free,
    load_conversations,
    sync,
)
from gpu_filter import part_filter
from gpu_train import part_train

# embed first (it builds the 7B that vllm and score then reuse, score deletes); filter, the longest, last.
PARTS = ["peak", "embed", "vllm", "score", "train", "filter"]
FULL = dict(score_shapes=["llama2-7b", "llama2-13b"], embed_shape="llama2-7b", train_shape="tinyllama-1.1b",
            samples=1000, reference_prompts=200, batch_size=64, peak_n=8192,
            filter_n=1_000_000, filter_dim=4096, filter_budget=10_000, filter_clusters=9_000, filter_cpu_n=200_000,
            train_steps=30, train_batch=8, train_merge=12, max_length=2048)
SMOKE = dict(score_shapes=["smoke"], embed_shape="smoke", train_shape="smoke",
             samples=40, reference_prompts=20, batch_size=16, peak_n=1024,
             filter_n=20_000, filter_dim=64, filter_budget=500, filter_clusters=300, filter_cpu_n=12_000,
             train_steps=6, train_batch=4, train_merge=2, max_length=512)


# ------------------------------------------------------------------ shared pieces


# ------------------------------------------------------------------ parts

def part_peak(device, opts: dict) -> dict:
    """Measured matmul peaks (products back to back for at least 0.5 s after 3 warm-ups), in TFLOP/s."""
    import torch

    from deita_ray.select.kept_index import float32_matmul

    n = opts["peak_n"]

    def rate(dtype, tf32: bool) -> float:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        with float32_matmul("tf32" if tf32 else "ieee"):
            for _ in range(3):
                a @ b
            sync(device)
            t0, count = time.perf_counter(), 0
            while count < 10 or time.perf_counter() - t0 < 0.5:  # long enough for the clocks to settle
                for _ in range(10):
                    a @ b
                count += 10
                sync(device)
        return 2.0 * n ** 3 * count / (time.perf_counter() - t0) / 1e12

    result = {"n": n, "bf16_tflops": rate(torch.bfloat16, False), "fp32_tflops": rate(torch.float32, False)}
    if device.type == "cuda":
        result["tf32_tflops"] = rate(torch.float32, True)
    print(f"peak    bf16 {result['bf16_tflops']:.3g}  fp32 {result['fp32_tflops']:.3g}"
          + (f"  tf32 {result['tf32_tflops']:.3g}" if "tf32_tflops" in result else "") + " TFLOP/s", flush=True)
    return result


def part_score(device, opts: dict, peak: dict, root: Path) -> dict:
    from deita_ray.io.formats import turn_pairs

    # Unique pairs: the scorer scores a repeated prompt once, so both sides get the same distinct prompts.
    pairs = list(dict.fromkeys(p for conv in load_conversations(opts["samples"]) for p in turn_pairs(conv)))
    cases = []
    for name in opts["score_shapes"]:
        try:
            cases.append(score_case(name, pairs, device, opts, peak, root))
        except Exception as exc:  # one shape failing (memory, disk) must not cost the other its result
            import traceback

            traceback.print_exc()
            cases.append({"shape": name, "error": f"{type(exc).__name__}: {exc}"})
        finally:
            shutil.rmtree(root / name, ignore_errors=True)  # 13B is 26 GB on disk
            free(device)
    return {"cases": cases, "batch_size": opts["batch_size"]}


def score_case(name: str, pairs: list, device, opts: dict, peak: dict, root: Path) -> dict:
    from deita_ray.engines.config import LLMConfig
    from deita_ray.prompts import quality_prompt
    from deita_ray.reference import ReferenceScorer
    from deita_ray.stages.score import TurnScorer

    shape = LLAMA_SHAPES[name]
    path = build_random_llama(root / name, shape, device)
    batch = opts["batch_size"]
    config = LLMConfig(model=str(path), engine="hf", dtype=engine_dtype(device), device=device.type,
                          batch_size=batch, max_length=opts["max_length"])
    scorer = TurnScorer("quality", config)
    ids, _ = scorer.build_prompts(pairs)
    prefix = shared_prefix(ids)
    scorer.score_pairs(pairs[:batch])  # warm-up: allocator, kernels
    sync(device)
    t0 = time.perf_counter()
    ours, truncated, lengths, reasons = scorer.score_pairs(pairs)
    sync(device)
    t_ours = time.perf_counter() - t0
    del scorer
    free(device)

    prompts = [quality_prompt(q, a) for q, a in pairs]
    n_ref = min(opts["reference_prompts"], len(prompts))
    reference = ReferenceScorer(str(path), max_new_tokens=2, dtype=engine_dtype(device), device=device.type)
    reference.score(prompts[0])
    sync(device)
    t0 = time.perf_counter()
    ref = np.array([reference.score(p) for p in prompts[:n_ref]])
    sync(device)
    t_ref = time.perf_counter() - t0
    del reference
    free(device)

    n = len(prompts)
    ours_rate, ref_rate = n / t_ours, n_ref / t_ref
    # As run: the shared template prefix once per batch (batches ~ n / batch_size), every suffix once, the
    # LM head at the last position only. The reference: whole prompt + one decode step, LM head once per step.
    batches = -(-n // batch)
    flops_ours = forward_flops(shape, lengths, n) - 2.0 * body_params(shape) * prefix * (n - batches)
    flops_ref = forward_flops(shape, [k + 1 for k in lengths[:n_ref]], 2 * n_ref)
    case = {
        "shape": name, **shape, "prompts": n, "prompt_tokens": int(sum(lengths)), "shared_prefix_tokens": prefix,
        "mean_prompt_tokens": round(float(np.mean(lengths)), 1), "truncated": int(sum(truncated)),
        "failed": int(sum(r is not None for r in reasons)),
        "deita_ray": {"seconds": round(t_ours, 3), "prompts_per_s": round(ours_rate, 2),
                      "tokens_per_s": round(sum(lengths) / t_ours), "mfu": flops_ours / t_ours / 1e12 / peak["bf16_tflops"]},
        "reference": {"prompts": n_ref, "seconds": round(t_ref, 3), "prompts_per_s": round(ref_rate, 2),
                      "tokens_per_s": round(sum(lengths[:n_ref]) / t_ref),
                      "mfu": flops_ref / t_ref / 1e12 / peak["bf16_tflops"]},
        "ratio": round(ours_rate / ref_rate, 2),
        "max_abs_score_diff": float(np.max(np.abs(ours[:n_ref] - ref))),
    }
    print(f"score   {name:14s} deita_ray {ours_rate:8.1f} prompts/s ({case['deita_ray']['tokens_per_s']:,} tok/s, "
          f"MFU {case['deita_ray']['mfu']:.1%})  reference {ref_rate:6.2f}/s  x{case['ratio']}  "
          f"max |diff| {case['max_abs_score_diff']:.3g}", flush=True)
    return case


def shared_prefix(sequences: list[list[int]]) -> int:
    """Length of the token prefix every sequence starts with (the scorer template's head)."""
    first = sequences[0]
    length = len(first)
    for seq in sequences[1:]:
        length = next((i for i in range(min(length, len(seq))) if seq[i] != first[i]), min(length, len(seq)))
    return length


def part_embed(device, opts: dict, peak: dict, root: Path) -> dict:
    from deita_ray.engines.config import LLMConfig
    from deita_ray.stages.embed import EmbedStage

    name = opts["embed_shape"]
    shape = LLAMA_SHAPES[name]
    path = build_random_llama(root / name, shape, device)
    config = LLMConfig(model=str(path), engine="hf", dtype=engine_dtype(device), device=device.type,
                            batch_size=opts["batch_size"], max_length=2048, pooling="last")
    stage = EmbedStage(config, out_dtype="float32")
    stage.setup()
    conversations = load_conversations(opts["samples"])
    texts = [stage.render(c) for c in conversations]
    inputs, truncated, lengths = stage.inputs(texts)
    stage.vectors(inputs[:opts["batch_size"]])  # warm-up
    sync(device)
    t0 = time.perf_counter()
    vectors, reasons = stage.vectors(inputs)
    sync(device)
    seconds = time.perf_counter() - t0
    stage.teardown()
    flops = forward_flops(shape, lengths, 0)
    result = {"shape": name, **shape, "samples": len(inputs), "tokens": int(sum(lengths)),
              "mean_tokens": round(float(np.mean(lengths)), 1), "max_tokens": int(max(lengths)),
              "truncated_at_2048": int(sum(truncated)), "failed": int(sum(r is not None for r in reasons)),
              "dim": int(vectors.shape[1]), "seconds": round(seconds, 3), "samples_per_s": round(len(inputs) / seconds, 2),
              "tokens_per_s": round(sum(lengths) / seconds), "mfu": flops / seconds / 1e12 / peak["bf16_tflops"],
              "batch_size": opts["batch_size"]}
    print(f"embed   {name:14s} {result['samples_per_s']:8.1f} samples/s ({result['tokens_per_s']:,} tok/s, "
          f"mean {result['mean_tokens']} tokens)  MFU {result['mfu']:.1%}", flush=True)
    return result


def part_vllm(device, opts: dict, peak: dict, root: Path) -> dict:
    """The paths CPU CI cannot see (vLLM's GPU model runner, bf16, FlashAttention): scoring against the hf scorer
    (the same scores to bf16 precision), embedding against hf (cosine), greedy generation throughput. Skipped
    where vLLM is not installed."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        print("vllm    not installed here: skipped", flush=True)
        return {"skipped": "vllm is not installed"}
    from deita_ray.engines.base import close_engine
    from deita_ray.engines.config import LLMConfig, Sampling
    from deita_ray.io.formats import turn_pairs
    from deita_ray.stages.score import TurnScorer

    name = opts["embed_shape"]
    path = build_random_llama(root / name, LLAMA_SHAPES[name], device)
    pairs = list(dict.fromkeys(p for conv in load_conversations(opts["samples"]) for p in turn_pairs(conv)))
    result = {"shape": name, "prompts": len(pairs)}
    scores = {}
    for engine in ("vllm", "hf"):
        config = LLMConfig(model=str(path), engine=engine, device=device.type, batch_size=opts["batch_size"],
                           max_length=opts["max_length"])
        scorer = TurnScorer("quality", config)
        scorer.score_pairs(pairs[:8])
        sync(device)
        t0 = time.perf_counter()
        scores[engine], _, lengths, _ = scorer.score_pairs(pairs)
        sync(device)
        seconds = time.perf_counter() - t0
        result[f"score_{engine}"] = {"seconds": round(seconds, 3), "tokens_per_s": round(sum(lengths) / seconds)}
        if engine == "vllm":  # the same engine generates (one vLLM start)
            prompts = [q for q, _ in pairs[:256]]
            scorer.engine.generate(prompts[:4], Sampling(max_new_tokens=8))
            t0 = time.perf_counter()
            out = scorer.engine.generate(prompts, Sampling(max_new_tokens=64))
            seconds = time.perf_counter() - t0
            made = sum(g.tokens for g in out)
            result["generate"] = {"prompts": len(prompts), "new_tokens": made, "seconds": round(seconds, 3),
                                  "new_tokens_per_s": round(made / seconds)}
        close_engine(scorer.engine)
        del scorer
        free(device)
    result["score_max_abs_diff"] = float(np.max(np.abs(scores["vllm"] - scores["hf"])))
    print(f"vllm    {name:14s} score {result['score_vllm']['tokens_per_s']:,} tok/s vs hf "
          f"{result['score_hf']['tokens_per_s']:,} (max |diff| {result['score_max_abs_diff']:.3g}); generate "
          f"{result['generate']['new_tokens_per_s']:,} new tok/s", flush=True)
    return result


# ------------------------------------------------------------------ main

def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("torch", "transformers", "trl", "datasets", "faiss-cpu", "deepspeed", "ray", "pyarrow", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--parts", nargs="+", default=PARTS, choices=PARTS, help="which measurements (default: all)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on any device: runs every code path quickly")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu"), help="folder for the JSON files")
    parser.add_argument("--work", default=None, help="where models and pools are built (default: a temp dir, removed)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override a size, e.g. filter_n=200000 reference_prompts=100 (keys: "
                             + ", ".join(FULL) + ")")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available() and not args.smoke:
        print("bench_gpu: no CUDA device here, nothing measured (--smoke runs the script's code paths on the CPU)")
        return 0
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    opts = dict(SMOKE if args.smoke else FULL)
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in opts:
            parser.error(f"--set {item}: unknown key (known: {', '.join(opts)})")
        opts[key] = json.loads(value) if value[:1] in "[0123456789" else value
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    common = {"command": " ".join([sys.executable, *sys.argv]), "when": time.strftime("%Y-%m-%d %H:%M:%S"),
              "device": torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
              "smoke": args.smoke, "versions": versions(), "sizes": opts}
    parts = {"score": part_score, "embed": part_embed, "vllm": part_vllm, "filter": part_filter, "train": part_train}
    peak = part_peak(device, opts)
    (out / "peak.json").write_text(json.dumps({"benchmark": "bench_gpu/peak", **common, "result": peak}, indent=2))
    failed = []
    for name in [p for p in PARTS if p in args.parts and p != "peak"]:
        t0 = time.perf_counter()
        try:
            result = parts[name](device, opts, peak, work)
        except Exception as exc:  # one part failing must not cost the others their device time
            import traceback

            traceback.print_exc()
            result = {"error": f"{type(exc).__name__}: {exc}"}
            failed.append(name)
        record = {"benchmark": f"bench_gpu/{name}", **common, "peak": peak,
                  "seconds": round(time.perf_counter() - t0, 1), "result": result}
        (out / f"{name}.json").write_text(json.dumps(record, indent=2, default=float))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out}/" + (f"  FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
