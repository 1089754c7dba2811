"""The selection report: `<output>/report/index.html` with PNG plots, openable in any browser.

    deita-ray report OUT_DIR                          # (re)build the report of a run, or of step-by-step commands
    python -m deita_ray.report.selection OUT_DIR      # the same

Reads only small columns (ids, scores, source, turns; never the texts): score distributions of pool vs selected,
evol score by visiting rank with the acceptance curve, the similarity of every visited candidate to its nearest
kept sample with τ drawn, counts by source and by number of turns, the time and rows per second of each step and
the training curves (from run_stats.json after `deita-ray run`, else from the steps' own summaries), and links
to the evolution and judging reports.
"""

from __future__ import annotations

import html
import io
import posixpath
import sys

import numpy as np
import pyarrow.parquet as pq

from deita_ray.io import fs
from deita_ray.report.eval import ablation_rows, ablation_table
from deita_ray.report.figures import page_style, save_figure
from deita_ray.runner.layout import SELECT_SUMMARY, report_dir as report_dir_of, run_stats_path, selection_dir

# Where the step-by-step commands leave their summaries under one output (when no run_stats.json says more).
STEP_SUMMARIES = {"score": "score_summary.json", "embed": "embed_summary.json", "select": "selection/" + SELECT_SUMMARY,
                  "evolve": "evolve_summary.json", "judge": "judge_summary.json", "labels": "labels_summary.json"}


def _read_table(url: str, columns=None):
    """A Parquet file through the filesystem layer (local or object store); None when absent."""
    data = fs.read_bytes(url)
    return None if data is None else pq.read_table(io.BytesIO(data), columns=columns)


def _mean_lists(lists) -> np.ndarray:
    return np.asarray([np.mean(x) if x and None not in x else np.nan for x in lists], dtype=float)


def steps_of(output: str) -> dict[str, dict]:
    """Every step's record: a run's run_stats.json, else the summaries the step-by-step commands wrote."""
    stages = (fs.read_json(run_stats_path(output)) or {}).get("stages")
    if stages:
        return stages
    found = {}
    for name, path in STEP_SUMMARIES.items():
        summary = fs.read_json(posixpath.join(output, path))
        if summary and "rows_in" in summary:
            found[name] = summary
    return found


def _bins(values: np.ndarray, count: int = 40) -> np.ndarray:
    """Bins over the 0.5-99.5 percentile range, so that one outlier does not flatten the rest (values beyond go to
    the edge bins: the plots clip them there)."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return np.linspace(0, 1, count)
    low, high = np.percentile(finite, [0.5, 99.5])
    return np.linspace(low, high if high > low else low + 1, count)


def write_report(output: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deita_ray.io.writer import read_columns

    report_dir = report_dir_of(output)
    scored = read_columns(posixpath.join(output, "scored"),
                          ["id", "evol_score", "complexity_scores", "quality_scores", "source", "num_turns"])
    selected = _read_table(posixpath.join(selection_dir(output), "selected.parquet"), ["id"])
    if scored is None or selected is None:
        raise FileNotFoundError(f"{output} holds no scored/ and selection/selected.parquet: a report needs a scored "
                                "and selected run (deita-ray run, or score + embed + select into one output)")
    pool, chosen = scored.to_pydict(), set(selected.column("id").to_pylist())
    selection = fs.read_json(posixpath.join(selection_dir(output), SELECT_SUMMARY)) or {}
    mask = np.asarray([i in chosen for i in pool["id"]])
    evol = np.asarray([np.nan if v is None else v for v in pool["evol_score"]], dtype=float)
    complexity, quality = _mean_lists(pool["complexity_scores"]), _mean_lists(pool["quality_scores"])
    images = []

    def save(fig, name, caption):
        save_figure(fig, report_dir, name)
        images.append((name, caption))

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, values, title in zip(axes, (evol, complexity, quality), ("evol score (sum over turns of c x q)",
                                                                      "complexity (mean over turns, 1-6)",
                                                                      "quality (mean over turns, 1-6)")):
        bins = _bins(values)
        clipped = np.clip(values, bins[0], bins[-1])
        ok = np.isfinite(values)
        ax.hist(clipped[ok], bins=bins, alpha=0.5, density=True, label=f"pool ({ok.sum():,})")
        ax.hist(clipped[mask & ok], bins=bins, alpha=0.6, density=True, label=f"selected ({(mask & ok).sum():,})")
        ax.set_xlabel(title)
        ax.set_ylabel("density")
        ax.legend()
    save(fig, "scores.png", "Score distributions, pool vs selected (densities; the 1% most extreme values are drawn "
                            "in the edge bins).")

    visits = _read_table(posixpath.join(selection_dir(output), "visits.parquet"))
    if visits is not None and visits.num_rows:
        _walk_figures(plt, visits.to_pydict(), selection.get("threshold"), save)

    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    for ax, values, title in ((axes[0], [posixpath.basename(s or "?") for s in pool["source"]], "source file"),
                              (axes[1], [str(n) for n in pool["num_turns"]], "number of turns")):
        keys = sorted(set(values), key=lambda k: (len(k), k))
        values = np.asarray(values)
        x = np.arange(len(keys))
        ax.bar(x - 0.2, [np.sum(values == k) for k in keys], 0.4, label="pool")
        ax.bar(x + 0.2, [np.sum(values[mask] == k) for k in keys], 0.4, label="selected")
        ax.set_xticks(x, keys, rotation=20)
        ax.set_xlabel(title)
        ax.set_ylabel("samples")
        ax.legend()
    save(fig, "composition.png", "Where the selected samples come from, against the pool.")

    stages = steps_of(output)
    if stages:
        _time_figure(plt, stages, save)
    _training_figure(plt, {name: s["losses"] for name, s in stages.items() if s.get("losses")}, save)
    return _page(output, report_dir, pool, mask, stages, images, selection)


def _walk_figures(plt, visits: dict, tau: float | None, save) -> None:
    accepted = np.asarray(visits["accepted"], dtype=bool)
    rank = np.arange(len(accepted))
    scores = np.asarray(visits["evol_score"], dtype=float)
    fig, ax = plt.subplots(figsize=(10, 3.8))
    ax.scatter(rank[accepted], scores[accepted], s=3, label="kept")
    ax.scatter(rank[~accepted], scores[~accepted], s=6, c="red", label="rejected (too similar)")
    ax.set_xlabel("visiting rank (evol score, descending)")
    ax.set_ylabel("evol score")
    twin = ax.twinx()
    twin.plot(rank, np.cumsum(accepted) / (rank + 1), c="black", lw=1, label="acceptance rate so far")
    twin.set_ylim(0, 1.05)
    twin.set_ylabel("share kept so far")
    ax.legend(loc="lower left")
    save(fig, "acceptance.png", "Evol score by visiting rank; red points were rejected by the Repr Filter. The line "
                                "is the share of visited candidates kept so far.")
    sims = np.asarray(visits["nearest_kept_similarity"], dtype=float)
    ok = np.isfinite(sims) & (sims >= -1.0)  # the first candidate has nothing kept before it
    fig, ax = plt.subplots(figsize=(8, 3.6))
    bins = np.linspace(min(sims[ok].min(), 0.0) if ok.any() else 0.0, 1.0, 50)
    ax.hist(sims[ok & accepted], bins=bins, alpha=0.6, label=f"kept ({(ok & accepted).sum():,})")
    ax.hist(sims[ok & ~accepted], bins=bins, alpha=0.6, color="red", label=f"rejected ({(ok & ~accepted).sum():,})")
    if tau is not None:
        ax.axvline(tau, color="black", ls="--", lw=1, label=f"τ = {tau:g}")
    ax.set_xlabel("cosine similarity to the nearest sample kept before it")
    ax.set_ylabel("visited candidates")
    ax.legend()
    save(fig, "similarity.png", f"Every visited candidate ({ok.sum():,} with a kept sample before them): its "
                                "similarity to the nearest sample kept when it was visited, in an earlier block or "
                                "the same one. Everything right of τ was rejected.")


def _time_figure(plt, stages: dict, save) -> None:
    names = list(stages)
    seconds = [float(stages[n].get("seconds") or 0) for n in names]
    fig, ax = plt.subplots(figsize=(9, 0.9 + 0.35 * len(names)))
    bars = ax.barh(names[::-1], seconds[::-1])
    for bar, name in zip(bars, names[::-1]):
        s = stages[name]
        rate = s["rows_in"] / s["seconds"] if s.get("seconds") else 0
        ax.annotate(f" {s['rows_in']:,} rows in, {rate:,.1f} rows/s", (bar.get_width(), bar.get_y() + 0.1), fontsize=8)
    ax.set_xlabel("seconds")
    ax.set_xlim(0, max(seconds + [1]) * 1.6)
    save(fig, "steps.png", "Time per step, with the rows it took in and the rows per second (rows: samples; chains "
                           "for evolve, judge and labels; training rows for the trainings).")


def _training_figure(plt, curves: dict, save) -> None:
    if not curves:
        return
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.2), squeeze=False)
    for ax, (name, losses) in zip(axes[0], curves.items()):
        steps, values = zip(*losses)
        ax.plot(steps, values)
        ax.set_title(name)
        ax.set_xlabel("optimizer step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        ax.set_ylabel("DPO loss" if name.startswith("dpo") else "training loss (cross-entropy)")
    save(fig, "training.png", "Training loss per optimizer step of every training of the run, one panel each (DPO's "
                              "loss starts at ln 2 and is not on the language-modelling scale).")


def _page(output, report_dir, pool, mask, stages, images, selection) -> str:
    generation = [(label, posixpath.relpath(path, report_dir)) for label, path in (
        [(f"Evol {mode}", posixpath.join(output, "generation", mode, "report", "generation.html"))
         for mode in ("complexity", "quality")] + [("Evolution and judging", posixpath.join(report_dir,
                                                                                           "generation.html"))])
        if fs.exists(path)]
    rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{s['rows_in']:,}</td><td>{s['rows_out']:,}</td>"
                   f"<td>{s['rows_quarantined']:,}</td><td>{s['seconds']:.1f}</td>"
                   f"<td>{s['rows_in'] / s['seconds'] if s.get('seconds') else 0:,.1f}</td></tr>"
                   for n, s in stages.items())
    figures = "".join(f'<figure><img src="{n}" alt="{html.escape(c)}"><figcaption>{html.escape(c)}</figcaption></figure>'
                      for n, c in images)
    what = (f"strategy {html.escape(str(selection.get('strategy')))}, budget {selection.get('budget', 0):,}, "
            f"τ {selection.get('threshold')}" if selection else "")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>deita_ray selection report</title>
{page_style("right")}</head>
<body><h1>deita_ray selection report</h1>
<p>{len(pool['id']):,} scored samples, {int(mask.sum()):,} selected ({what}). Output: <code>{html.escape(output)}</code></p>
<table><tr><th>step</th><th>rows in</th><th>rows out</th><th>quarantined</th><th>seconds</th><th>rows in / s</th></tr>{rows}</table>
{ablation_table(ablation_rows(output))}
{"".join(f'<p><a href="{html.escape(link)}">{html.escape(label)}: the evolution and judging report</a></p>'
         for label, link in generation)}
{figures}</body></html>"""
    index = posixpath.join(report_dir, "index.html")
    fs.write_text(index, page)
    return index


if __name__ == "__main__":
    print(write_report(sys.argv[1] if len(sys.argv) > 1 else "."))
