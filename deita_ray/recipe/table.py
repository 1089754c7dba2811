"""The per-step table a run prints: rows, tokens, seconds, share of the run, tokens/s, GFLOP/s and share of peak."""

from __future__ import annotations


def format_run(run: dict) -> str:
    width = max([7] + [len(n) for n in run["stages"]])
    total = sum(s["seconds"] for s in run["stages"].values()) or 1.0
    lines = [f"{'stage':{width}s}   rows in   rows out  quarantined      tokens   seconds  share   tokens/s  "
             f"GFLOP/s  of peak"]
    for name, s in run["stages"].items():
        rate = f"{s['tokens_per_s']:>10,.0f}" if s.get("tokens_per_s") else f"{'-':>10}"
        gflops = f"{s['model_flops_per_s'] / 1e9:>8,.2f}" if s.get("model_flops_per_s") else f"{'-':>8}"
        share = f"{s['peak_fraction']:>8.1%}" if s.get("peak_fraction") is not None else f"{'-':>8}"
        lines.append(f"{name:{width}s} {s['rows_in']:>9,} {s['rows_out']:>10,} {s['rows_quarantined']:>12,} "
                     f"{s.get('tokens') or 0:>11,} {s['seconds']:>9.1f} {s['seconds'] / total:>6.0%} {rate} {gflops} "
                     f"{share}")
    lines.append(f"selected set: {run['selected']}")
    if run.get("report"):
        lines.append(f"report:       {run['report']}")
    return "\n".join(lines)
