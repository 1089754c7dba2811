"""Generation throughput: one request at a time, one synchronous generate over all, and the evolve stage on Ray Data.

    python benchmarks/bench_generate.py                          # hf and (if installed) vllm, tiny + small shapes
    python benchmarks/bench_generate.py --engines vllm --shapes small --prompts 256

The same round-1 Evol Complexity prompts (the first N seeds of ../shared/data/alpaca_seed_tasks.jsonl,
else the project's own pool), the same model and the same per-request seeds, side by side in one run:
  (a) one request at a time: `engine.generate([prompt])` in a loop (a naive driver);
  (b) one synchronous `generate` over every prompt: for vllm `LLM.generate`, the engine's own upper bound;
  (c) `deita-ray evolve --rounds 1` through Ray Data with one actor running the same engine (vllm: the
      async engine with several batches in flight). Its window runs from the first batch the actor
      starts to the last it finishes (actor and engine start excluded, as (a) and (b) exclude them);
      its end-to-end time is printed too.
Tokens/s count generated tokens; since every request has its own seed, (a), (b) and (c) generate the
same tokens. Prints a table, writes JSON to benchmarks/results/bench_generate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

SHAPES = {"tiny": dict(hidden=64, layers=2, heads=2), "small": dict(hidden=512, layers=8, heads=8)}
SHARED_SEEDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpaca_seed_tasks.jsonl"


def build_model(root: Path, shape: str) -> str:
    from deita_ray.tools.tiny_models import build_tiny_generator, build_tokenizer

    path = root / f"generator-{shape}"
    if not (path / "config.json").exists():
        # eos_logit 3: texts of ~100 tokens on average, so most requests run to max_new_tokens
        build_tiny_generator(path, build_tokenizer(), seed=0, eos_logit=3.0, **SHAPES[shape])
    return str(path)


def seed_rows(n: int, root: Path) -> list[dict]:
    """{id, conversations} seed rows: the real Alpaca seed tasks when ../shared is there, cycled to n."""
    from deita_ray.io.reader import plan_reads, read_all
    from deita_ray.tools.sample_pool import make_pool

    if SHARED_SEEDS.exists():
        pool, _ = read_all(plan_reads([str(SHARED_SEEDS)]))
    else:
        make_pool(root / "pool", samples=max(n, 100), seed=3)
        pool, _ = read_all(plan_reads([str(root / "pool")]))
    # Seeds whose rewrite prompt and output fit the tiny models' 1,024 positions (one seed task is a long table).
    rows = [r for r in pool.select(["id", "conversations"]).to_pylist() if len(r["conversations"][0]["value"]) < 600]
    return [{**rows[i % len(rows)], "id": f"{rows[i % len(rows)]['id']}#{i}"} for i in range(n)]


def requests(rows: list[dict], seed: int):
    """The round-1 prompts and per-request seeds the evolve stage will send, computed the same way."""
    from deita_ray.io.formats import turn_pairs
    from deita_ray.prompts import evol

    prompts, seeds = [], []
    for row in rows:
        instruction = turn_pairs(row["conversations"])[0][0]
        op = evol.operation(row["id"], 1, "complexity")
        prompts.append(evol.rewrite_prompt("complexity", op, instruction))
        seeds.append(evol.request_seed(seed, "complexity", row["id"], 1))
    return prompts, seeds


def timed_stage_class(times: Path):
    """EvolveStage that appends (start, end) of every call to `times` (on the actor; same machine)."""
    from deita_ray.stages.evolve import EvolveStage

    class TimedEvolveStage(EvolveStage):
        def __call__(self, table):
            started = time.time()
            out = super().__call__(table)
            with open(times, "a") as f:
                f.write(f"{started} {time.time()}\n")
            return out

    TimedEvolveStage.__name__ = "EvolveStage"
    return TimedEvolveStage


def run_engine(engine_name: str, model: str, rows: list[dict], args, root: Path) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from deita_ray.engines.base import close_engine, make_engine
    from deita_ray.engines.config import LLMConfig, Sampling
    from deita_ray.runner.map_job import run_job
    from deita_ray.steps.evolve import EvolveConfig, evolve_spec

    prompts, seeds = requests(rows, args.seed)
    sampling = Sampling(temperature=1.0, max_new_tokens=args.max_new_tokens)
    extra = {"gpu_memory_utilization": 0.1} if engine_name == "vllm" else {}
    config = LLMConfig(model=model, engine=engine_name, max_length=1024, **extra)
    result = {"engine": engine_name, "prompts": len(prompts)}

    engine = make_engine(config, "generate")
    try:
        engine.generate(prompts[:2], sampling, seeds=seeds[:2])  # warm up
        started = time.time()
        one = [engine.generate([p], sampling, seeds=[s])[0] for p, s in zip(prompts[: args.one_at_a_time], seeds)]
        seconds = time.time() - started
        result["a_one_at_a_time"] = {"prompts": len(one), "seconds": round(seconds, 2),
                                     "tokens_per_s": round(sum(g.tokens for g in one) / seconds, 1)}
        started = time.time()
        every = engine.generate(prompts, sampling, seeds=seeds)
        seconds = time.time() - started
        tokens_b = sum(g.tokens for g in every)
        result["b_one_generate"] = {"seconds": round(seconds, 2), "tokens": tokens_b,
                                    "tokens_per_s": round(tokens_b / seconds, 1)}
        result["a_matches_b"] = [g.token_ids for g in one] == [g.token_ids for g in every[: len(one)]]
    finally:
        close_engine(engine)

    seeds_file = root / f"seeds-{engine_name}.parquet"
    pq.write_table(pa.Table.from_pylist(rows), seeds_file)
    times = root / f"times-{engine_name}.txt"
    times.unlink(missing_ok=True)
    # The same sampling as (a) and (b), and no retried rounds, so that the three generate the same tokens.
    job = EvolveConfig(model=model, engine=engine_name, rounds=1, max_new_tokens=args.max_new_tokens, temperature=1.0,
                       top_p=1.0, retries=0, seed=args.seed, batch_rows=args.batch_rows, max_length=1024,
                       cpus_per_replica=float(os.cpu_count()),  # Ray sets the actor's torch threads from it
                       inputs=[str(seeds_file)], output=str(root / f"evolve-{engine_name}"), overwrite=True, **extra)
    spec = evolve_spec(job)
    spec.actors[0].factory = timed_stage_class(times)
    started = time.time()
    summary = run_job(spec, job, "ray")
    end_to_end = time.time() - started
    spans = [tuple(map(float, line.split())) for line in times.read_text().split("\n") if line]
    window = max(e for _, e in spans) - min(s for s, _ in spans)
    result["c_evolve_stage_ray"] = {"seconds_window": round(window, 2), "seconds_end_to_end": round(end_to_end, 2),
                                    "batches": len(spans), "tokens": summary["tokens"],
                                    "tokens_per_s": round(summary["tokens"] / window, 1),
                                    "tokens_per_s_end_to_end": round(summary["tokens"] / end_to_end, 1),
                                    "batches_in_flight": spec.actors[0].concurrency, "reconciled": summary["reconciled"]}
    result["c_tokens_equal_b"] = summary["tokens"] == tokens_b
    result["ratio_c_over_b"] = round(result["c_evolve_stage_ray"]["tokens_per_s"] / result["b_one_generate"]["tokens_per_s"], 3)
    result["ratio_b_over_a"] = round(result["b_one_generate"]["tokens_per_s"] / result["a_one_at_a_time"]["tokens_per_s"], 2)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", nargs="+", default=["hf", "vllm"], choices=["hf", "vllm"])
    parser.add_argument("--shapes", nargs="+", default=["tiny", "small"], choices=list(SHAPES))
    parser.add_argument("--prompts", type=int, default=512, help="prompts in (b) and (c)")
    parser.add_argument("--one-at-a-time", type=int, default=24, help="prompts in (a) (the slow loop)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-rows", type=int, default=128, help="rows per Ray Data batch in (c)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="the tiny shape, 16 prompts, 8 new tokens: every path, "
                                                           "in seconds (CI)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_generate.json"))
    args = parser.parse_args(argv)
    if args.smoke:
        args.shapes, args.prompts, args.one_at_a_time, args.max_new_tokens, args.batch_rows = ["tiny"], 16, 4, 8, 8
    engines = [e for e in args.engines if e != "vllm" or _has_vllm()]

    import ray

    # Logical CPUs doubled: the actor of (c) reserves every core (Ray sets its torch threads from that), and
    # read and write tasks still need a slot.
    ray.init(num_cpus=2 * os.cpu_count(), include_dashboard=False, log_to_driver=False)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = seed_rows(args.prompts, root)
        for shape in args.shapes:
            model = build_model(root, shape)
            for engine in engines:
                result = {"shape": shape, **run_engine(engine, model, rows, args, root)}
                results.append(result)
                print(f"{shape:6s} {engine:5s}  (a) {result['a_one_at_a_time']['tokens_per_s']:>9,.1f} tok/s  "
                      f"(b) {result['b_one_generate']['tokens_per_s']:>9,.1f}  "
                      f"(c) {result['c_evolve_stage_ray']['tokens_per_s']:>9,.1f} "
                      f"[end to end {result['c_evolve_stage_ray']['tokens_per_s_end_to_end']:,.1f}]  "
                      f"c/b {result['ratio_c_over_b']:.2f}  b/a {result['ratio_b_over_a']:.1f}  "
                      f"same tokens: {result['c_tokens_equal_b']}", flush=True)
    ray.shutdown()
    record = {"benchmark": "bench_generate", "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
              "args": vars(args), "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out}")
    return 0


def _has_vllm() -> bool:
    try:
        import vllm  # noqa: F401

        return True
    except ImportError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
