"""The benchmark tables of benchmarks/README.md, rendered from the JSON the benchmarks write: no figure typed by hand.

    python benchmarks/tables.py            # rewrite every generated table in benchmarks/README.md from results/
    python benchmarks/tables.py --check    # exit 1 when a table there differs from its JSON (a test runs this)

A generated table sits between `<!-- table: NAME -->` and `<!-- end table -->`; NAME is one of TABLES below.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"
README = HERE / "README.md"
BLOCK = re.compile(r"(<!-- table: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- end table -->)", re.S)


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _rows(header: list[str], align: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _machine(record: dict) -> str:
    machine = record.get("machine") or {}
    load = machine.get("load_average")
    parts = [f"{machine.get('cpus', '?')} CPU cores"]
    if load:
        parts.append(f"load average {load[0]:.1f} at the start")
    when = record.get("when")
    return f"_Measured {when + ' ' if when else ''}on {', '.join(parts)} ({machine.get('platform', '?')})._"


def score() -> str:
    record = _load("bench_score")
    rows = [[f"{r['shape']['name']} (hidden {r['shape']['hidden']}, {r['shape']['layers']} layers)", r["engine"],
             r["prompts"], f"{r['reference']['prompts_per_s']:,}", f"{r['deita_ray']['prompts_per_s']:,}",
             f"{r['speedup']}×", f"{r['max_abs_score_diff']:.1e}"] for r in record["results"]]
    return _machine(record) + "\n\n" + _rows(
        ["model shape", "engine", "prompts", "reference prompts/s", "deita_ray prompts/s", "ratio", "max score diff"],
        "llrrrrr", rows)


def generate() -> str:
    record = _load("bench_generate")
    rows = [[r["shape"], r["engine"], f"{r['a_one_at_a_time']['tokens_per_s']:,.0f}",
             f"{r['b_one_generate']['tokens_per_s']:,.0f}", f"{r['c_evolve_stage_ray']['tokens_per_s']:,.0f}",
             f"{r['ratio_c_over_b']:.2f}", f"{r['ratio_b_over_a']:.1f}×",
             f"{r['c_evolve_stage_ray']['tokens_per_s_end_to_end']:,.0f}", "yes" if r["c_tokens_equal_b"] else "NO"]
            for r in record["results"]]
    return _machine(record) + "\n\n" + _rows(
        ["shape", "engine", "(a) one at a time, tok/s", "(b) one generate", "(c) evolve stage on Ray", "(c) / (b)",
         "(b) / (a)", "(c) end to end", "same tokens"], "llrrrrrrl", rows)


def filter_reference() -> str:
    record = _load("bench_filter")
    rows = [[f"{r['n']:,}", r["dim"], f"{r['budget']:,}", f"{r['naive_seconds']:.2f} s", f"{r['blocked_seconds']:.2f} s",
             f"{r['speedup']}×", "yes" if r["identical_kept_ids"] else "NO"] for r in record["side_by_side"]]
    return _machine(record) + "\n\n" + _rows(
        ["N", "d", "budget", "naive loop", f"deita_ray (block {record['block_size']})", "ratio", "identical kept ids"],
        "rrrrrrl", rows)


def filter_job() -> str:
    record = _load("bench_filter")
    job = record["job"]
    rows = [[c["backend"], c["took"], c["threads"], f"{c['seconds']:.2f} s", f"{c['gemm_gflop']:,.0f}",
             f"{c['gemm_rate_gflops']:.0f}", f"{c['fraction_of_gemm_rate']:.0%}"] for c in job["cases"]]
    head = (f"`select` on {job['n']:,} × {job['dim']} (float16 on disk), budget {job['budget']:,}; identical kept "
            f"ids across every row: {'yes' if job['identical_kept_ids'] else 'NO'}.")
    return _machine(record) + " " + head + "\n\n" + _rows(
        ["--backend", "took", "threads", "time (whole command)", "GEMM work, GFLOP", "GEMM rate, GFLOP/s",
         "of the GEMM rate"], "llrrrrr", rows)


def filter_scale() -> str:
    record = _load("bench_filter")
    rows = [[f"{r['n']:,}", r["dim"], f"{r['budget']:,}", f"{r['seconds']:.2f} s", f"{r['visited']:,}",
             f"{r['gflops']:,.0f}", f"{r['gemm_fraction_of_peak']:.0%}"] for r in record["scale"]]
    return _machine(record) + "\n\n" + _rows(
        ["N", "d", "budget", "time", "candidates visited", "GEMM work, GFLOP",
         f"of the GEMM rate ({record['machine']['gemm_peak_gflops']:.0f} GFLOP/s)"], "rrrrrrr", rows)


def pipeline_throughput() -> str:
    record = _load("bench_pipeline")
    rows = [[f"{r['size']:,}", f"{r['end_to_end_samples_per_s']:,.0f} samples/s ({r['pipeline_seconds']:.0f} s)"]
            + [f"{r['stages'][s]['samples_per_s']:,.0f}/s" for s in ("score", "embed", "select")]
            + [r.get("pipeline_over_stages_alone", "-")] for r in record["results"] if r["engines"] != "fake"]
    return _machine(record) + "\n\n" + _rows(
        ["N", "end to end", "score", "embed", "select", "pipeline / stages alone"], "rrrrrr", rows)


def pipeline_memory() -> str:
    record = _load("bench_pipeline")
    rows = []
    for r in record["results"]:
        if r["engines"] != "fake":
            continue
        starts = r["driver_peak_rss_mb_by_stage_start"]
        rows.append([f"{r['size']:,}", f"{r['end_to_end_samples_per_s']:,.0f} samples/s",
                     f"{r['driver_peak_rss_mb']:,.0f} MB", f"{r['driver_rss_before_run_mb']:,.0f} MB",
                     " / ".join(f"{starts.get(f'before stage {k}', 0):,.0f}" for k in (1, 2, 3)) + " MB",
                     "Ray Data" if r.get("select_sorted_on") == "ray" else "Arrow in the driver"])
    return _machine(record) + "\n\n" + _rows(
        ["N", "end to end", "driver peak RSS", "before the run", "at the start of score / embed / select",
         "candidates sorted by"], "rrrrrl", rows)


def train() -> str:
    record = _load("bench_train")
    rows = [[f"{r['shape']['name']} (hidden {r['shape']['hidden']}, {r['shape']['layers']} layers)",
             {"none": "DDP", "zero2": "ZeRO-2", "zero3": "ZeRO-3"}[r["backend"]], f"{r['tokens_per_s']:,.0f}",
             f"{r['tokens_per_s_vs_ddp']:.2f}", f"{r['wall_s_with_startup']:.1f} s", f"{r['final_loss']:.4f}"]
            for r in record["results"]]
    return _machine(record) + "\n\n" + _rows(
        ["shape", "backend", "tokens/s in the trainer", "vs DDP", "wall incl. Ray Train start-up", "final loss"],
        "llrrrr", rows)


TABLES = {"score": score, "generate": generate, "filter.reference": filter_reference, "filter.job": filter_job,
          "filter.scale": filter_scale, "pipeline.throughput": pipeline_throughput,
          "pipeline.memory": pipeline_memory, "train": train}


def render(text: str) -> str:
    def table(match: re.Match) -> str:
        name = match.group("name")
        if name not in TABLES:
            raise SystemExit(f"{README}: unknown table {name!r} (known: {', '.join(TABLES)})")
        return f"{match.group(1)}{TABLES[name]()}\n{match.group(4)}"

    return BLOCK.sub(table, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a table differs from its JSON")
    args = parser.parse_args(argv)
    text = README.read_text()
    rendered = render(text)
    if args.check:
        if rendered != text:
            print(f"{README} is out of date with {RESULTS}: run python benchmarks/tables.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(rendered)
    print(f"rewrote the tables of {README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
