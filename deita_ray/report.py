"""The selection report: `<output>/report/index.html` with PNG plots, openable in any browser.

    python -m deita_ray.report OUT_DIR      # (re)build the report of a finished run

Reads only small columns (ids, scores, source, turns; never the texts): score distributions of
pool vs selected, evol score by visiting rank with the acceptance curve, nearest-kept similarity,
counts by source and by number of turns, per-stage throughput and training curves from
run_stats.json, and links to the evolution/judging reports of a recipe run.
"""

from __future__ import annotations

import html
import io
import posixpath
import sys

import numpy as np
import pyarrow.parquet as pq

from deita_ray.io import fs
from deita_ray.runner.layout import report_dir as report_dir_of, run_stats_path, selection_dir


def _read_table(url: str, columns=None):
    """A Parquet file through the filesystem layer (local or object store); None when absent."""
    data = fs.read_bytes(url)
    return None if data is None else pq.read_table(io.BytesIO(data), columns=columns)


def _mean_lists(lists) -> np.ndarray:
    return np.asarray([np.mean(x) if x and None not in x else np.nan for x in lists], dtype=float)


def save_figure(fig, directory: str, name: str) -> None:
    """A matplotlib figure as a PNG under `directory`, through the filesystem layer (local or object store)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    fs.write_bytes(posixpath.join(directory, name), buffer.getvalue())


def write_report(output: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deita_ray.io.writer import read_columns

    report_dir = report_dir_of(output)
    pool = read_columns(posixpath.join(output, "scored"),
                        ["id", "evol_score", "complexity_scores", "quality_scores", "source", "num_turns"]).to_pydict()
    chosen = set(_read_table(posixpath.join(selection_dir(output), "selected.parquet"), ["id"]).column("id").to_pylist())
    mask = np.asarray([i in chosen for i in pool["id"]])
    evol = np.asarray([np.nan if v is None else v for v in pool["evol_score"]], dtype=float)
    complexity, quality = _mean_lists(pool["complexity_scores"]), _mean_lists(pool["quality_scores"])
    images = []

    def save(fig, name, caption):
        save_figure(fig, report_dir, name)
        images.append((name, caption))

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, values, title in zip(axes, (evol, complexity, quality), ("evol score", "complexity (mean over turns)",
                                                                      "quality (mean over turns)")):
        finite = values[np.isfinite(values)]
        bins = np.linspace(finite.min(), finite.max(), 40) if len(finite) else 10
        ax.hist(values[np.isfinite(values)], bins=bins, alpha=0.5, density=True, label=f"pool ({len(finite):,})")
        ax.hist(values[mask & np.isfinite(values)], bins=bins, alpha=0.6, density=True, label=f"selected ({mask.sum():,})")
        ax.set_title(title)
        ax.legend()
    save(fig, "scores.png", "Score distributions, pool vs selected (densities).")

    visits = _read_table(posixpath.join(selection_dir(output), "visits.parquet"))
    if visits is not None:
        visits = visits.to_pydict()
        accepted = np.asarray(visits["accepted"], dtype=bool)
        rank = np.arange(len(accepted))
        fig, ax = plt.subplots(figsize=(10, 3.8))
        ax.scatter(rank[accepted], np.asarray(visits["evol_score"])[accepted], s=3, label="kept")
        ax.scatter(rank[~accepted], np.asarray(visits["evol_score"])[~accepted], s=6, c="red", label="rejected (too similar)")
        ax.set_xlabel("visiting rank (evol score, descending)")
        ax.set_ylabel("evol score")
        twin = ax.twinx()
        twin.plot(rank, np.cumsum(accepted) / (rank + 1), c="black", lw=1, label="acceptance rate so far")
        twin.set_ylim(0, 1.05)
        twin.set_ylabel("cumulative acceptance")
        ax.legend(loc="lower left")
        save(fig, "acceptance.png", "Evol score by visiting rank; red points were rejected by the Repr Filter. "
                                    "The line is the fraction kept so far.")
        sims = np.asarray(visits["nearest_kept_similarity"], dtype=float)
        fig, ax = plt.subplots(figsize=(8, 3.6))
        ok = np.isfinite(sims)
        bins = np.linspace(min(sims[ok].min(), 0.0), 1.0, 50) if ok.any() else 10
        ax.hist(sims[ok & accepted], bins=bins, alpha=0.6, label="kept")
        ax.hist(sims[ok & ~accepted], bins=bins, alpha=0.6, color="red", label="rejected")
        ax.set_xlabel("cosine similarity to the nearest sample kept in an earlier block")
        ax.legend()
        save(fig, "similarity.png", "Nearest-kept similarity of every visited candidate (rejections inside a block "
                                    "are judged against that block's earlier picks, which this plot does not show).")

    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    for ax, values, title in ((axes[0], [posixpath.basename(s) for s in pool["source"]], "samples by source file"),
                              (axes[1], [str(n) for n in pool["num_turns"]], "samples by number of turns")):
        keys = sorted(set(values), key=lambda k: (len(k), k))
        values = np.asarray(values)
        x = np.arange(len(keys))
        ax.bar(x - 0.2, [np.sum(values == k) for k in keys], 0.4, label="pool")
        ax.bar(x + 0.2, [np.sum(values[mask] == k) for k in keys], 0.4, label="selected")
        ax.set_xticks(x, keys, rotation=20)
        ax.set_title(title)
        ax.legend()
    save(fig, "composition.png", "Where the selected samples come from, against the pool.")

    stages = (fs.read_json(run_stats_path(output)) or {}).get("stages", {})
    if stages:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.bar(list(stages), [s.get("samples_per_s") or 0 for s in stages.values()])
        ax.set_ylabel("samples / s")
        ax.set_title("throughput per stage")
        save(fig, "throughput.png", "Per-stage throughput (selection: candidates visited per second).")

    curves = {name: s["losses"] for name, s in stages.items() if s.get("losses")}
    if curves:
        fig, ax = plt.subplots(figsize=(8, 3.6))
        for name, losses in curves.items():
            steps, values = zip(*losses)
            ax.plot(steps, values, label=name)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss")
        ax.legend()
        save(fig, "training.png", "Training loss per step of every training step of the run (scorers, SFT, DPO).")
    generation = [(mode, posixpath.join("..", "generation", mode, "report", "generation.html"))
                  for mode in ("complexity", "quality") if f"labels_{mode}" in stages]

    rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{s['rows_in']:,}</td><td>{s['rows_out']:,}</td>"
                   f"<td>{s['rows_quarantined']:,}</td><td>{s['seconds']:.1f}</td><td>{s.get('samples_per_s') or 0:,.1f}</td></tr>"
                   for n, s in stages.items())
    figures = "".join(f'<figure><img src="{n}" alt="{html.escape(c)}"><figcaption>{html.escape(c)}</figcaption></figure>'
                      for n, c in images)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>deita_ray selection report</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}img{{max-width:100%}}figure{{margin:1.5em 0}}</style></head>
<body><h1>deita_ray selection report</h1>
<p>{len(pool['id']):,} scored samples, {int(mask.sum()):,} selected. Output: <code>{html.escape(output)}</code></p>
<table><tr><th>stage</th><th>rows in</th><th>rows out</th><th>quarantined</th><th>seconds</th><th>samples/s</th></tr>{rows}</table>
{"".join(f'<p><a href="{html.escape(link)}">Evol {mode}: evolution and judging report</a></p>' for mode, link in generation)}
{figures}</body></html>"""
    index = posixpath.join(report_dir, "index.html")
    fs.write_text(index, page)
    return index


if __name__ == "__main__":
    print(write_report(sys.argv[1] if len(sys.argv) > 1 else "."))
