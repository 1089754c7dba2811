"""Scoring throughput: the reference Deita behaviour against deita_ray's batched prefill, side by side.

    python benchmarks/bench_score.py                      # tiny + small model shapes, hf and (if installed) vllm
    python benchmarks/bench_score.py --samples 300 --shapes small --engines hf
    python benchmarks/bench_score.py --smoke          # tiny shape, 20 samples, every engine installed (CI)

For each engine and model shape, the same quality prompts (every turn of the first N samples of
the project's pool) are scored twice in one run: one prompt at a time through `generate` with
2 new tokens (the reference Deita scorer's loop, which has generated 2 new tokens since January
2024), then batched prefill-only through deita_ray.
Prints a table and writes JSON to benchmarks/results/bench_score.json: samples/s, prompt tokens/s,
the ratio, and the largest score difference between the two.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPES = {  # random-init Llama shapes; head_dim >= 32 for vLLM's CPU kernels
    "tiny": dict(hidden=64, layers=2, heads=2),
    "small": dict(hidden=512, layers=8, heads=8),
}


def build_model(root: Path, shape: str) -> str:
    from deita_ray.tools.tiny_models import build_tiny_llama, build_tokenizer

    path = root / f"scorer-{shape}"
    if not (path / "config.json").exists():
        build_tiny_llama(path, build_tokenizer(), seed=0, max_positions=1024, **SHAPES[shape])
    return str(path)


def load_pairs(samples: int) -> list[tuple[str, str]]:
    from deita_ray.io.formats import turn_pairs
    from deita_ray.io.reader import plan_reads, read_all
    from deita_ray.tools.sample_pool import make_pool

    with tempfile.TemporaryDirectory() as tmp:
        make_pool(tmp, samples=samples, seed=3)
        pool, _ = read_all(plan_reads([tmp]))
    return [pair for conv in pool.column("conversations").to_pylist() for pair in turn_pairs(conv)]


def reference_hf(ref, prompts: list[str]) -> np.ndarray:
    return np.array([ref.score(p) for p in prompts])


def reference_vllm(engine, tokenizer, digit_ids, prompts: list[str]) -> np.ndarray:
    """One request per prompt, 2 new tokens, as a one-at-a-time scorer loop would drive vLLM."""
    from vllm import SamplingParams

    from deita_ray.prompts import expected_scores

    params = SamplingParams(max_tokens=2, temperature=0.0, logprob_token_ids=digit_ids)
    rows = []
    for p in prompts:
        out = engine.llm("generate").generate([p], params, use_tqdm=False)[0]
        first = out.outputs[0].logprobs[0]
        rows.append([first[t].logprob for t in digit_ids])
    return expected_scores(np.array(rows))[0]


def run_case(engine_name: str, model: str, pairs, batch_size: int) -> dict:
    from deita_ray.engines.config import LLMConfig
    from deita_ray.prompts import quality_prompt
    from deita_ray.stages.score import TurnScorer

    config = LLMConfig(model=model, engine=engine_name, batch_size=batch_size, enforce_eager=True, max_length=1024)
    scorer = TurnScorer("quality", config)
    prompts = [quality_prompt(q, a) for q, a in pairs]
    tokens = sum(len(scorer.tokenizer.encode(p)) for p in prompts)
    assert tokens / len(prompts) < 1000, "prompts must fit the context for a like-for-like comparison"

    scorer.score_pairs(pairs[:8])  # warm-up (allocations, kernels)
    t0 = time.perf_counter()
    ours, truncated, _, reasons = scorer.score_pairs(pairs)
    t_ours = time.perf_counter() - t0
    assert not any(truncated) and not any(reasons)

    if engine_name == "hf":
        from deita_ray.reference import ReferenceScorer

        reference = ReferenceScorer(model, max_new_tokens=2)  # loaded before the clock starts, like ours
        reference.score(prompts[0])
    t0 = time.perf_counter()
    if engine_name == "hf":
        ref = reference_hf(reference, prompts)
    else:
        ref = reference_vllm(scorer.engine, scorer.tokenizer, scorer.digit_ids, prompts)
    t_ref = time.perf_counter() - t0
    if hasattr(scorer.engine, "close"):
        scorer.engine.close()
    n = len(prompts)
    return {
        "engine": engine_name, "prompts": n, "prompt_tokens": tokens,
        "reference": {"seconds": round(t_ref, 3), "prompts_per_s": round(n / t_ref, 1), "tokens_per_s": round(tokens / t_ref)},
        "deita_ray": {"seconds": round(t_ours, 3), "prompts_per_s": round(n / t_ours, 1), "tokens_per_s": round(tokens / t_ours)},
        "speedup": round(t_ref / t_ours, 1),
        "max_abs_score_diff": float(np.max(np.abs(ours - ref))),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="the tiny shape on 20 samples: every code path, seconds")
    parser.add_argument("--samples", type=int, default=200, help="pool samples whose turns are scored (default 200)")
    parser.add_argument("--shapes", nargs="+", default=["tiny", "small"], choices=list(SHAPES))
    parser.add_argument("--engines", nargs="+", default=["hf", "vllm"], choices=["hf", "vllm"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--models-dir", default=None, help="where to build the random models (default: a temp dir)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_score.json"))
    args = parser.parse_args(argv)
    if args.smoke:
        args.shapes, args.samples = ["tiny"], 20

    import torch

    engines = list(args.engines)
    if "vllm" in engines:
        try:
            import vllm  # noqa: F401
        except ImportError:
            print("vllm not installed: skipping the vllm engine")
            engines.remove("vllm")
    root = Path(args.models_dir or tempfile.mkdtemp(prefix="bench-score-"))
    pairs = load_pairs(args.samples)
    results = []
    for shape in args.shapes:
        model = build_model(root, shape)
        for engine in engines:
            result = run_case(engine, model, pairs, args.batch_size)
            result["shape"] = {"name": shape, **SHAPES[shape]}
            results.append(result)
            print(f"{shape:6s} {engine:5s} {result['prompts']:5d} prompts  reference {result['reference']['prompts_per_s']:8.1f}/s  "
                  f"deita_ray {result['deita_ray']['prompts_per_s']:8.1f}/s ({result['deita_ray']['tokens_per_s']:,} tok/s)  "
                  f"x{result['speedup']:<6}  max |diff| {result['max_abs_score_diff']:.2e}", flush=True)
    report = {
        "benchmark": "bench_score", "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()},
        "samples": args.samples, "batch_size": args.batch_size, "smoke": args.smoke, "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
