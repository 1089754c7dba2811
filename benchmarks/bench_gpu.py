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
  filter  the Repr Filter at N = 1M, d = 4096, budget 10K on the torch CUDA kept index against the CPU path
          (FAISS when installed, else torch on the CPU): identical kept ids, time, fraction of the float32 peak.
          The pool is clustered with fewer clusters than the budget, so every candidate is visited (the most
          work the filter can be asked at this N and budget).
  train   SFT steps of a ~1B (TinyLlama) shape in bf16 through the project's trainer builder
          (`deita_ray.train.worker.build_trainer`, the function Ray Train workers run), and under DeepSpeed
          ZeRO-2 when deepspeed imports: steady-state tokens/s and MFU.
Each part writes benchmarks/results/gpu/<part>.json (with the command line and versions) and prints a line.
FLOPs counted: forward 2*params*tokens over the transformer body plus causal attention (2*layers*hidden*L^2
per sequence), the LM head once per prompt when only the last position is read; training 3x forward.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PARTS = ["peak", "score", "embed", "filter", "train"]
LLAMA_SHAPES = {  # name: hidden, layers, heads, kv heads, intermediate, vocab
    "llama2-7b": dict(hidden=4096, layers=32, heads=32, kv_heads=32, intermediate=11008, vocab=32000),
    "llama2-13b": dict(hidden=5120, layers=40, heads=40, kv_heads=40, intermediate=13824, vocab=32000),
    "tinyllama-1.1b": dict(hidden=2048, layers=22, heads=32, kv_heads=4, intermediate=5632, vocab=32000),
    "smoke": dict(hidden=64, layers=2, heads=2, kv_heads=2, intermediate=128, vocab=2048),
}
FULL = dict(score_shapes=["llama2-7b", "llama2-13b"], embed_shape="llama2-7b", train_shape="tinyllama-1.1b",
            samples=1000, reference_prompts=200, batch_size=64, peak_n=8192,
            filter_n=1_000_000, filter_dim=4096, filter_budget=10_000, filter_clusters=9_000,
            train_steps=30, train_batch=8, train_merge=12, max_length=2048)
SMOKE = dict(score_shapes=["smoke"], embed_shape="smoke", train_shape="smoke",
             samples=40, reference_prompts=20, batch_size=16, peak_n=1024,
             filter_n=20_000, filter_dim=64, filter_budget=500, filter_clusters=300,
             train_steps=6, train_batch=4, train_merge=2, max_length=512)
TAU = 0.9


# ------------------------------------------------------------------ shared pieces

def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def body_params(shape: dict) -> int:
    """Parameters of the transformer body (no embedding, no LM head)."""
    h, kv = shape["hidden"], shape["hidden"] * shape["kv_heads"] // shape["heads"]
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * shape["intermediate"] + 2 * h
    return shape["layers"] * per_layer + h


def forward_flops(shape: dict, lengths: list[int], lm_head_positions: int) -> float:
    """Forward FLOPs over sequences of these lengths, the LM head applied at `lm_head_positions` positions."""
    tokens = float(sum(lengths))
    attention = 2.0 * shape["layers"] * shape["hidden"] * float(sum(n * n for n in lengths))
    return 2.0 * body_params(shape) * tokens + attention + 2.0 * shape["hidden"] * shape["vocab"] * lm_head_positions


def build_random_llama(path: Path, shape: dict, device) -> Path:
    """A random-init Llama of `shape` in bf16 (fp32 on a CPU smoke run), made on `device`, saved with the
    project's tokenizer (its ids are a subset of the model's vocabulary)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from deita_ray.tools.tiny_models import build_tokenizer

    if (path / "config.json").exists():
        return path
    tokenizer = build_tokenizer()
    config = LlamaConfig(vocab_size=max(shape["vocab"], len(tokenizer)), hidden_size=shape["hidden"],
                         intermediate_size=shape["intermediate"], num_hidden_layers=shape["layers"],
                         num_attention_heads=shape["heads"], num_key_value_heads=shape["kv_heads"],
                         max_position_embeddings=4096, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=False, initializer_range=0.1 if shape is LLAMA_SHAPES["smoke"] else 0.02)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return path


def load_conversations(samples: int) -> list[list[dict]]:
    from deita_ray.io.reader import plan_reads, read_all
    from deita_ray.tools.sample_pool import make_pool

    with tempfile.TemporaryDirectory() as tmp:
        make_pool(tmp, samples=samples, seed=3)
        pool, _ = read_all(plan_reads([tmp]))
    return pool.column("conversations").to_pylist()


def engine_dtype(device) -> str:
    return "bfloat16" if device.type == "cuda" else "float32"


# ------------------------------------------------------------------ parts

def part_peak(device, opts: dict) -> dict:
    """Measured matmul peaks (mean of 10 products after 3 warm-ups), in TFLOP/s."""
    import torch

    n = opts["peak_n"]

    def rate(dtype, tf32: bool) -> float:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        with float32_matmul("tf32" if tf32 else "ieee"):
            for _ in range(3):
                a @ b
            sync(device)
            t0 = time.perf_counter()
            for _ in range(10):
                a @ b
            sync(device)
        return 2.0 * n ** 3 * 10 / (time.perf_counter() - t0) / 1e12

    result = {"n": n, "bf16_tflops": rate(torch.bfloat16, False), "fp32_tflops": rate(torch.float32, False)}
    if device.type == "cuda":
        result["tf32_tflops"] = rate(torch.float32, True)
    print(f"peak    bf16 {result['bf16_tflops']:.3g}  fp32 {result['fp32_tflops']:.3g}"
          + (f"  tf32 {result['tf32_tflops']:.3g}" if "tf32_tflops" in result else "") + " TFLOP/s", flush=True)
    return result


@contextlib.contextmanager
def float32_matmul(mode: str):
    """float32 products as IEEE float32 ("ieee") or TF32 ("tf32") on CUDA, restored after."""
    import torch

    matmul = torch.backends.cuda.matmul
    name, value = (("fp32_precision", mode) if hasattr(matmul, "fp32_precision")
                   else ("allow_tf32", mode == "tf32"))
    before = getattr(matmul, name)
    setattr(matmul, name, value)
    try:
        yield
    finally:
        setattr(matmul, name, before)


def free(device) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def part_score(device, opts: dict, peak: dict, root: Path) -> dict:
    from deita_ray.engines.base import EngineConfig
    from deita_ray.io.formats import turn_pairs
    from deita_ray.prompts import quality_prompt
    from deita_ray.reference import ReferenceScorer
    from deita_ray.stages.score import TurnScorer

    pairs = [p for conv in load_conversations(opts["samples"]) for p in turn_pairs(conv)]
    cases = []
    for name in opts["score_shapes"]:
        shape = LLAMA_SHAPES[name]
        path = build_random_llama(root / name, shape, device)
        config = EngineConfig(model=str(path), engine="hf", dtype=engine_dtype(device), device=device.type,
                              batch_size=opts["batch_size"], max_length=opts["max_length"])
        scorer = TurnScorer("quality", config)
        prompts = [quality_prompt(q, a) for q, a in pairs]
        lengths = [len(scorer.tokenizer.encode(p)) for p in prompts]
        scorer.score_pairs(pairs[:opts["batch_size"]])  # warm-up: allocator, kernels
        sync(device)
        t0 = time.perf_counter()
        ours, truncated, _, reasons = scorer.score_pairs(pairs)
        sync(device)
        t_ours = time.perf_counter() - t0
        del scorer
        free(device)

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

        ours_rate, ref_rate = len(prompts) / t_ours, n_ref / t_ref
        flops_ours = forward_flops(shape, lengths, len(lengths))
        # The reference also runs one decode step (2 new tokens) and its LM head over every position.
        flops_ref = forward_flops(shape, [n + 1 for n in lengths[:n_ref]], sum(lengths[:n_ref]) + n_ref)
        case = {
            "shape": name, **shape, "prompts": len(prompts), "prompt_tokens": sum(lengths),
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
        cases.append(case)
        print(f"score   {name:14s} deita_ray {ours_rate:8.1f} prompts/s ({case['deita_ray']['tokens_per_s']:,} tok/s, "
              f"MFU {case['deita_ray']['mfu']:.1%})  reference {ref_rate:6.2f}/s  x{case['ratio']}  "
              f"max |diff| {case['max_abs_score_diff']:.3g}", flush=True)
        if name != opts["embed_shape"]:
            shutil.rmtree(path, ignore_errors=True)  # 13B is 26 GB on disk
    return {"cases": cases, "batch_size": opts["batch_size"]}


def part_embed(device, opts: dict, peak: dict, root: Path) -> dict:
    from deita_ray.engines.config import EmbedderConfig
    from deita_ray.stages.embed import EmbedStage

    name = opts["embed_shape"]
    shape = LLAMA_SHAPES[name]
    path = build_random_llama(root / name, shape, device)
    config = EmbedderConfig(model=str(path), engine="hf", dtype=engine_dtype(device), device=device.type,
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


def run_filter_counted(vectors: np.ndarray, scores: np.ndarray, budget: int, index) -> tuple[list[int], float, int, float]:
    from deita_ray.select.repr_filter import repr_filter

    flops = 0.0

    class Counting:  # the GEMM work the filter asks of the index, for the fraction of peak
        def query(self, block, tau):
            nonlocal flops
            flops += 2.0 * len(block) * len(index) * block.shape[1]
            return index.query(block, tau)

        def add(self, vectors):
            index.add(vectors)

        def __len__(self):
            return len(index)

    t0 = time.perf_counter()
    result = repr_filter(vectors, scores, budget=budget, threshold=TAU, index=Counting(), normalize=False)
    return result.kept, time.perf_counter() - t0, result.visited, flops


def part_filter(device, opts: dict, peak: dict, root: Path) -> dict:
    from deita_ray.select.kept_index import KeptIndex, faiss_installed

    n, dim, budget = opts["filter_n"], opts["filter_dim"], opts["filter_budget"]
    t0 = time.perf_counter()
    vectors = clustered_pool(n, dim, opts["filter_clusters"], device)
    scores = np.random.default_rng(0).random(n)
    made = time.perf_counter() - t0
    on_device = KeptIndex(dim, device="gpu" if device.type == "cuda" else "cpu", capacity=budget, backend="torch")
    kept_dev, t_dev, visited, flops = run_filter_counted(vectors, scores, budget, on_device)
    cpu_backend = "faiss" if faiss_installed() else "torch"
    on_cpu = KeptIndex(dim, device="cpu", capacity=budget, backend=cpu_backend)
    kept_cpu, t_cpu, visited_cpu, _ = run_filter_counted(vectors, scores, budget, on_cpu)
    fp32 = peak["fp32_tflops"]
    result = {"n": n, "dim": dim, "budget": budget, "clusters": opts["filter_clusters"], "tau": TAU,
              "pool_made_s": round(made, 1), "kept": len(kept_dev), "visited": visited,
              "identical_kept_ids": kept_dev == kept_cpu and visited == visited_cpu,
              "device": {"backend": on_device.describe()["backend"], "seconds": round(t_dev, 3),
                         "candidates_per_s": round(visited / t_dev), "gemm_tflops": flops / t_dev / 1e12,
                         "fraction_of_fp32_peak": flops / t_dev / 1e12 / fp32},
              "cpu": {"backend": on_cpu.describe()["backend"], "seconds": round(t_cpu, 3),
                      "candidates_per_s": round(visited_cpu / t_cpu)},
              "speedup": round(t_cpu / t_dev, 2), "gemm_flops": flops}
    if "tf32_tflops" in peak:
        result["device"]["fraction_of_tf32_peak"] = flops / t_dev / 1e12 / peak["tf32_tflops"]
    print(f"filter  N={n:,} d={dim} budget {budget:,}: kept {len(kept_dev):,}, visited {visited:,}; "
          f"{result['device']['backend']} {t_dev:.2f} s ({result['device']['fraction_of_fp32_peak']:.1%} of fp32 peak) "
          f"vs {result['cpu']['backend']} {t_cpu:.2f} s  x{result['speedup']}  identical kept ids: "
          f"{result['identical_kept_ids']}", flush=True)
    return result


def write_long_conversations(path: Path, rows: int, merge: int) -> None:
    """ShareGPT JSONL whose dialogues each join `merge` of the pool's conversations (their turns in order),
    so sequences are as long as alignment data's multi-turn dialogues rather than single short turns."""
    conversations = load_conversations(rows * merge)
    with open(path, "w") as f:
        for i in range(rows):
            turns = [m for c in conversations[i * merge:(i + 1) * merge] for m in c if m["from"] != "system"]
            f.write(json.dumps({"id": f"long-{i}", "conversations": turns}) + "\n")


def part_train(device, opts: dict, peak: dict, root: Path) -> dict:
    import datasets
    from transformers import TrainerCallback

    from deita_ray.train.config import load_train_config
    from deita_ray.train.launch import prepare_rows
    from deita_ray.train.worker import build_trainer, load_training_tokenizer

    name = opts["train_shape"]
    shape = LLAMA_SHAPES[name]
    path = build_random_llama(root / name, shape, device)
    pool = root / "train-pool.jsonl"
    write_long_conversations(pool, rows=opts["train_steps"] * opts["train_batch"] + 16, merge=opts["train_merge"])
    on_gpu = device.type == "cuda"

    class StepClock(TrainerCallback):  # steady state: the steps after the first few (allocations, kernels)
        def __init__(self):
            self.marks = []

        def on_step_end(self, args, state, control, **kwargs):
            sync(device)
            self.marks.append((time.perf_counter(), int(state.num_input_tokens_seen or 0)))

    cases = []
    backends = ["none"]
    try:
        import deepspeed  # noqa: F401

        backends.append("zero2")
    except ImportError:
        print("train   deepspeed is not installed: ZeRO-2 not measured", flush=True)
    for backend in backends:
        config = load_train_config("sft", data={
            "model": str(path), "data": [str(pool)], "output": str(root / f"train-{backend}"),
            "global_batch_size": opts["train_batch"], "per_device_batch_size": opts["train_batch"],
            "max_steps": opts["train_steps"], "max_length": opts["max_length"], "deepspeed": backend,
            "use_gpu": on_gpu, "precision": "bf16" if on_gpu else "fp32", "save_every_epoch": False,
            "logging_steps": 1, "learning_rate": 1e-5})
        table, stats = prepare_rows(config)
        dataset = datasets.Dataset.from_dict(table.to_pydict())
        cfg = {**dataclasses.asdict(config), "deepspeed_config": config.deepspeed_config()}
        if backend != "none":  # one process is the whole world: DeepSpeed still wants a process group
            import deepspeed

            os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                              MASTER_PORT=os.environ.get("MASTER_PORT", "29533"))
            deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
        clock = StepClock()
        tokenizer = load_training_tokenizer(str(path))
        with tempfile.TemporaryDirectory() as out:
            trainer, _ = build_trainer(cfg, dataset, tokenizer, out, world=1, on_gpu=on_gpu, callbacks=[clock])
            trainer.train()
            losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
            del trainer
        warm = min(3, len(clock.marks) - 2)
        (t_a, tok_a), (t_b, tok_b) = clock.marks[warm], clock.marks[-1]
        steps = len(clock.marks) - 1 - warm
        tokens_per_s = (tok_b - tok_a) / (t_b - t_a)
        seq = opts["max_length"]
        mean_len = (tok_b - tok_a) / (steps * opts["train_batch"])
        flops = 3.0 * forward_flops(shape, [int(mean_len)] * (steps * opts["train_batch"]), int(tok_b - tok_a))
        case = {"deepspeed": backend, "shape": name, **shape, "steps_timed": steps, "batch": opts["train_batch"],
                "mean_tokens_per_sequence": round(mean_len, 1), "max_length": seq, "rows_used": stats["rows_used"],
                "tokens_per_s": round(tokens_per_s), "seconds_per_step": round((t_b - t_a) / steps, 4),
                "mfu": flops / (t_b - t_a) / 1e12 / peak["bf16_tflops"], "losses": losses,
                "loss_finite": bool(losses) and all(np.isfinite(losses))}
        cases.append(case)
        print(f"train   {name:14s} deepspeed {backend:5s} {case['tokens_per_s']:,} tokens/s  "
              f"{case['seconds_per_step']} s/step  MFU {case['mfu']:.1%}  loss {losses[0]:.3f} -> {losses[-1]:.3f}",
              flush=True)
    return {"cases": cases}


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
    parts = {"score": part_score, "embed": part_embed, "filter": part_filter, "train": part_train}
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
