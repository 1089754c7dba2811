"""One summary schema for every map stage, counted part by part (the driver's memory does not grow with the pool),
its one-line verdict when the work as a whole failed, and its text for the terminal.
"""

from __future__ import annotations

from deita_ray.io import fs
from deita_ray.io.writer import count_rows, count_values, list_parts, sum_columns
from deita_ray.runner.layout import StageLayout
from deita_ray.runner.spec import StageSpec


# Every step's summary carries these (map stages through `summarize`, the other steps through `common`): the
# per-step table and a run's record read them and nothing else.
COMMON_KEYS = ("rows_in", "rows_out", "rows_quarantined", "reconciled", "seconds")
RATE_KEYS = ("tokens", "tokens_per_s", "samples_per_s", "model_flops", "model_flops_per_s", "peak_fraction")


def common(stage: str, rows_in: int, rows_out: int, rows_quarantined: int, seconds: float,
           reconciled: bool | None = None, **rates) -> dict:
    """The common keys of a summary, for the steps whose rows are not a map stage's (select, labels, training)."""
    unknown = set(rates) - set(RATE_KEYS)
    if unknown:
        raise TypeError(f"not a common summary key: {', '.join(sorted(unknown))}")
    if reconciled is None:
        reconciled = rows_in == rows_out + rows_quarantined
    return {"stage": stage, "rows_in": rows_in, "rows_out": rows_out, "rows_quarantined": rows_quarantined,
            "reconciled": reconciled, "seconds": seconds, **rates}


def stage_peak(held: list | None) -> dict | None:
    """The FLOP/s limit of what the stage's actors held (runner/peak.py), measured where they ran: per GPU or CPU
    core, times the GPUs (else CPUs) reserved; None when it cannot be measured. In this process (`held` None):
    per core, times the cores this process may use."""
    import os

    from deita_ray.runner.peak import device_peak

    try:
        if held is None:
            unit = device_peak(0)
            return {**unit, "units": len(os.sched_getaffinity(0)), "total": unit["flops"] * len(os.sched_getaffinity(0))}
        import ray

        first = held[0]
        measure = ray.remote(device_peak).options(num_cpus=min(first.cpus, 1), num_gpus=min(first.gpus, 1))
        unit = ray.get(measure.remote(first.gpus), timeout=120)
        units = sum(a.replicas * (a.gpus if unit["per"] == "gpu" else a.cpus) for a in held)
        return {**unit, "units": units, "total": unit["flops"] * units}
    except Exception as exc:  # the efficiency figure is a report, never a reason to fail a finished stage
        return {"error": f"{type(exc).__name__}: {exc}"[:200]}


def summarize(spec: StageSpec, layout: StageLayout, seconds: float, files_not_read: list[str] | None = None,
              partial_inputs: list[str] | None = None, peak: dict | None = None) -> dict:
    """One schema for every stage; counted part by part (the driver's memory does not grow with the pool)."""
    rows_out, totals = sum_columns(layout.parts, spec.sums)
    rows_in = sum_columns(layout.read_stats, {"rows_read": "rows_read"})[1]["rows_read"]
    quarantined = count_rows(layout.quarantine)
    tokens = sum(totals[name] for name in spec.tokens)
    flops = float(sum(totals[name] for name in spec.flops)) if spec.flops else 0.0
    counts = {column: count_values(layout.parts, column) for column in spec.value_counts} if rows_out else {}
    if isinstance(spec.flagged, tuple):
        flagged = counts.get(spec.flagged[0], {}).get(spec.flagged[1], 0)
    else:
        flagged = totals.get(spec.flagged, 0) if spec.flagged else 0
    summary = {
        "stage": layout.stage, "rows_in": rows_in, "rows_out": rows_out, "rows_quarantined": quarantined,
        "rows_flagged": flagged,
        "reconciled": rows_in == rows_out + quarantined, "tokens": tokens,
        "seconds": round(seconds, 3), "samples_per_s": round(rows_out / seconds, 2) if seconds else None,
        "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        # Model FLOPs of the work (engines/flops.py), per second, and the share of what the actors held.
        "model_flops": flops or None, "model_flops_per_s": round(flops / seconds) if flops and seconds else None,
        "peak": peak, "peak_fraction": round(flops / seconds / peak["total"], 4)
        if flops and seconds and peak and peak.get("total") else None,
        "quarantine_reasons": count_values(layout.quarantine, "reason") if quarantined else {},
        "quarantine_classes": count_values(layout.quarantine, "failure") if quarantined else {},
        "totals": {k: v for k, v in totals.items() if k not in spec.tokens and k not in spec.flops},
        "counts": counts,
        "files_not_read": files_not_read or [],
        "partial_inputs": partial_inputs or [],   # upstream outputs read although incomplete (--allow-partial)
        "parts": len(list_parts(layout.parts)),   # what the completion record vouches for
        "output": layout.output, "results": layout.out, "noun": spec.noun, "config": spec.config,
    }
    summary["rows_succeeded"] = spec.succeeded(summary) if spec.succeeded is not None else rows_out
    if totals.get("computed_tokens"):  # what the engine computed beyond the tokens themselves: padding
        summary["padding_share"] = round(1 - tokens / totals["computed_tokens"], 4)
    fs.write_json(layout.summary, summary)
    return summary


def outcome_error(summary: dict) -> str | None:
    """One line when a stage's work as a whole failed (the command then exits non-zero), else None: counts that
    do not reconcile, no input rows, or not one row whose work succeeded."""
    if not summary["reconciled"]:
        return (f"{summary['stage']}: rows in {summary['rows_in']:,} != {summary.get('noun', 'out')} "
                f"{summary['rows_out']:,} + quarantined {summary['rows_quarantined']:,}: rows were lost")
    if summary["rows_in"] == 0:
        return f"{summary['stage']}: the inputs hold no records"
    if summary.get("rows_succeeded", summary["rows_out"]) == 0:
        reasons = sorted((summary.get("quarantine_reasons") or {}).items(), key=lambda kv: -kv[1])
        top = f"; top reason ({reasons[0][1]:,} rows): {reasons[0][0][:300]}" if reasons else ""
        return f"{summary['stage']}: not one of {summary['rows_in']:,} rows succeeded{top}"
    return None


def format_summary(summary: dict) -> str:
    noun = summary.get("noun", "out")
    ok = f"(= {noun} + quarantined)" if summary["reconciled"] else f"!! DOES NOT EQUAL {noun} + quarantined: rows were lost"
    details = ", ".join(f"{k.replace('_', ' ')}: {v:,}" for k, v in summary.get("totals", {}).items())
    classes = summary.get("quarantine_classes") or {}
    lines = [
        f"rows in      {summary['rows_in']:>10,}   {ok}",
        f"{noun:<12} {summary['rows_out']:>10,}" + (f"   ({details})" if details else ""),
        f"quarantined  {summary['rows_quarantined']:>10,}" +
        (f"   ({', '.join(f'{k}: {v:,}' for k, v in sorted(classes.items()))})" if classes else ""),
        f"throughput   {summary['samples_per_s'] or 0:>10,.1f} samples/s, {summary['tokens_per_s'] or 0:,.0f} tokens/s "
        f"({summary['seconds']:.1f} s)",
    ]
    if summary.get("padding_share") is not None:
        lines.append(f"padding      {summary['padding_share']:>10.1%}   of the tokens computed")
    if summary.get("model_flops"):
        peak = summary.get("peak") or {}
        share = (f", {summary['peak_fraction']:.1%} of {peak['units']:g} {peak['per'].upper()}"
                 f"{'s' if peak['units'] != 1 else ''} ({peak['how']})") if summary.get("peak_fraction") else ""
        lines.append(f"model FLOPs  {summary['model_flops']:>10.3g}   {summary['model_flops_per_s'] / 1e9:,.2f} GFLOP/s{share}")
    for column, counted in (summary.get("counts") or {}).items():
        lines.append(f"  {column.replace('_', ' ')}: " + ", ".join(f"{k}: {v:,}" for k, v in
                                                                sorted(counted.items(), key=lambda kv: -kv[1])[:8]))
    for reason, n in sorted(summary["quarantine_reasons"].items(), key=lambda kv: -kv[1])[:20]:
        lines.append(f"  quarantined {n:>5} x {reason[:160]}")
    if summary.get("partial_inputs"):
        lines.append(f"!! PARTIAL    read on purpose although incomplete: {', '.join(summary['partial_inputs'])}")
    if summary.get("files_not_read"):
        lines.append(f"not read     {len(summary['files_not_read']):>10,} file(s): {', '.join(summary['files_not_read'][:5])}")
    lines.append(f"output       {summary['results']}/")
    return "\n".join(lines)
