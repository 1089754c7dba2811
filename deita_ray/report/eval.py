"""MT-Bench results as numbers and as a page: means with bootstrap intervals, per category and turn; win/tie/loss.

    stats = rating_stats(rows)          # rows: {"category", "ratings", "judge_status"} per question
    stats["overall"]                    # {"mean", "low", "high", "n"}: the 95% percentile bootstrap interval
    write_eval_page("out/arms/deita/eval", stats, title="deita")   # -> report/eval.html
    pairwise_stats(rows)                # rows: {"verdicts"}: win / tie / loss of model a, invalid turns

The interval resamples questions (not turns): a question's turns share its difficulty. Seeded, so a rerun on the
same judgements gives the same interval.
"""

from __future__ import annotations

import html
import posixpath

import numpy as np

from deita_ray.io import fs
from deita_ray.report.figures import page_style, save_figure
from deita_ray.runner.layout import report_dir

RESAMPLES = 1000


def bootstrap(per_question: list[list[float]], resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """Mean rating over every valid turn, and its 95% interval from resampling questions with replacement."""
    values = [v for turns in per_question for v in turns]
    if not values:
        return {"mean": None, "low": None, "high": None, "n": 0, "questions": len(per_question)}
    sums = np.asarray([sum(t) for t in per_question], dtype=float)
    counts = np.asarray([len(t) for t in per_question], dtype=float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(per_question), size=(resamples, len(per_question)))
    means = sums[picks].sum(axis=1) / np.maximum(counts[picks].sum(axis=1), 1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": round(float(np.mean(values)), 4), "low": round(float(low), 4), "high": round(float(high), 4),
            "n": len(values), "questions": len(per_question)}


def rating_stats(rows: list[dict]) -> dict:
    """Overall, per category and per turn; invalid judgements counted, never averaged in."""
    def valid(row, turn=None):
        return [r for k, (r, s) in enumerate(zip(row["ratings"], row["judge_status"]))
                if s == "valid" and (turn is None or k == turn)]

    categories = sorted({r["category"] for r in rows})
    turns = max((len(r["ratings"]) for r in rows), default=0)
    return {
        "overall": bootstrap([valid(r) for r in rows]),
        "by_category": {c: bootstrap([valid(r) for r in rows if r["category"] == c]) for c in categories},
        "by_turn": {str(t + 1): bootstrap([valid(r, t) for r in rows]) for t in range(turns)},
        "judgements": sum(len(r["judge_status"]) for r in rows),
        "invalid_judgements": sum(s != "valid" for r in rows for s in r["judge_status"]),
    }


def pairwise_stats(rows: list[dict]) -> dict:
    """Turns model a won, tied and lost against model b (both orders agreeing for a win), and the invalid ones."""
    verdicts = [v for r in rows for v in r["verdicts"]]
    counted = {"win": verdicts.count("a"), "tie": verdicts.count("tie"), "loss": verdicts.count("b")}
    decided = sum(counted.values())
    return {**counted, "invalid": verdicts.count(None), "turns": len(verdicts),
            "win_rate": round((counted["win"] + 0.5 * counted["tie"]) / decided, 4) if decided else None}


def _interval(s: dict) -> str:
    return "n/a" if s["mean"] is None else f"{s['mean']:.2f} [{s['low']:.2f}, {s['high']:.2f}]"


def write_eval_page(output: str, stats: dict, title: str) -> str:
    """report/eval.html under `output`: per-category bars with their intervals, turn 1 against turn 2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = report_dir(output)
    categories = [c for c, s in stats["by_category"].items() if s["mean"] is not None]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [3, 1]})
    means = [stats["by_category"][c]["mean"] for c in categories]
    errors = [[m - stats["by_category"][c]["low"] for c, m in zip(categories, means)],
              [stats["by_category"][c]["high"] - m for c, m in zip(categories, means)]]
    axes[0].bar(categories, means, yerr=errors, capsize=3)
    axes[0].set_ylabel("MT-Bench rating (1-10)")
    axes[0].set_xlabel("question category")
    axes[0].set_ylim(0, 10)
    axes[0].tick_params(axis="x", rotation=20)
    turns = [t for t, s in stats["by_turn"].items() if s["mean"] is not None]
    by_turn = [stats["by_turn"][t] for t in turns]
    axes[1].bar([f"turn {t}" for t in turns], [s["mean"] for s in by_turn], capsize=3,
                yerr=[[s["mean"] - s["low"] for s in by_turn], [s["high"] - s["mean"] for s in by_turn]])
    axes[1].set_ylim(0, 10)
    axes[1].set_ylabel("MT-Bench rating (1-10)")
    save_figure(fig, out, "eval.png")
    rows = "".join(f"<tr><td>{html.escape(c)}</td><td>{_interval(s)}</td><td>{s['n']:,}</td></tr>"
                   for c, s in stats["by_category"].items())
    turn_rows = "".join(f"<tr><th>turn {t}</th><td>{_interval(s)}</td><td>{s['n']:,}</td></tr>"
                        for t, s in stats["by_turn"].items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>MT-Bench: {html.escape(title)}</title>
{page_style()}</head><body>
<h1>MT-Bench: {html.escape(title)}</h1>
<p>Overall {_interval(stats['overall'])} (mean rating, 95% bootstrap interval over questions) from
{stats['overall']['n']:,} valid judgements; {stats['invalid_judgements']:,} invalid (not counted).
Judge prompts: {html.escape(str(stats.get('judge_prompts', '')))}.</p>
<table><tr><th>category</th><th>rating [95% interval]</th><th>turns judged</th></tr>{rows}{turn_rows}</table>
<figure><img src="eval.png" alt="ratings per category and per turn"><figcaption>Mean rating per category (bars:
95% bootstrap interval) and per turn (the same).</figcaption></figure></body></html>"""
    path = posixpath.join(out, "eval.html")
    fs.write_text(path, page)
    return path


def ablation_rows(output: str) -> list[dict]:
    """One row per arm of an ablation under `output` (OUT/arms/ARM): samples, MT-Bench with its interval, and
    win / tie / loss against the baseline where the arm was compared."""
    from deita_ray.runner.layout import ARMS_DIR, SELECT_SUMMARY

    filesystem, arms_dir = fs.url_to_fs(posixpath.join(output, ARMS_DIR))
    if not filesystem.isdir(arms_dir):
        return []
    rows = []
    for arm_path in sorted(p for p in filesystem.ls(arms_dir, detail=False) if filesystem.isdir(p)):
        arm = posixpath.basename(arm_path.rstrip("/"))
        home = posixpath.join(output, ARMS_DIR, arm)
        selection = fs.read_json(posixpath.join(home, "selection", SELECT_SUMMARY)) or {}
        evaluation = fs.read_json(posixpath.join(home, "eval", "eval_summary.json")) or {}
        versus = [p for p in filesystem.ls(arm_path, detail=False) if posixpath.basename(p).startswith("vs-")]
        compared = fs.read_json(posixpath.join(home, posixpath.basename(versus[0]), "compare_summary.json")) \
            if versus else None
        rows.append({"arm": arm, "strategy": selection.get("strategy"), "samples": selection.get("selected"),
                     "mt_bench": (evaluation.get("mt_bench") or {}).get("overall"),
                     "invalid": (evaluation.get("mt_bench") or {}).get("invalid_judgements"),
                     "against": posixpath.basename(versus[0])[3:] if versus else None,
                     "pairwise": (compared or {}).get("pairwise")})
    return rows


def ablation_text(rows: list[dict], arms: list[str] | None = None) -> str:
    """The same table for the terminal, for `arms` (all under the output when None)."""
    rows = [r for r in rows if arms is None or r["arm"] in arms]
    if not rows:
        return ""
    width = max(len("arm"), *(len(r["arm"]) for r in rows))
    lines = [f"{'arm':{width}s}  {'selection':12s} {'samples':>8s}  {'MT-Bench [95% interval]':26s} "
             f"win / tie / loss (turns)"]
    for r in rows:
        versus = (f"{r['pairwise']['win']} / {r['pairwise']['tie']} / {r['pairwise']['loss']} vs {r['against']}"
                  if r["pairwise"] else "(baseline)" if r["against"] is None else "-")
        score = _interval(r["mt_bench"]) if r["mt_bench"] else "not evaluated"
        samples = f"{r['samples']:,}" if r["samples"] is not None else "-"
        lines.append(f"{r['arm']:{width}s}  {str(r['strategy']):12s} {samples:>8s}  {score:26s} {versus}")
    return "\n".join(lines)


def ablation_table(rows: list[dict]) -> str:
    """The paper's kind of table (its Tables 3-6): arm (linking its eval page), samples, MT-Bench with interval,
    win/tie/loss; for the report page at OUT/report."""
    from deita_ray.runner.layout import ARMS_DIR

    if not rows:
        return ""
    body = "".join(
        f"<tr><td><a href=\"../{ARMS_DIR}/{html.escape(r['arm'])}/eval/report/eval.html\">{html.escape(r['arm'])}</a>"
        f"</td><td>{html.escape(str(r['strategy']))}</td>"
        f"<td>{r['samples'] if r['samples'] is not None else '-'}</td>"
        f"<td>{_interval(r['mt_bench']) if r['mt_bench'] else 'not evaluated'}</td>"
        f"<td>{r['invalid'] if r['invalid'] is not None else '-'}</td>"
        f"<td>{html.escape(r['against'] or '(baseline)')}</td>"
        f"<td>{'%d / %d / %d' % (r['pairwise']['win'], r['pairwise']['tie'], r['pairwise']['loss']) if r['pairwise'] else '-'}"
        f"</td></tr>" for r in rows)
    return ("<h2>Ablation</h2><table><tr><th>arm</th><th>selection</th><th>samples</th><th>MT-Bench [95% interval]"
            "</th><th>invalid judgements</th><th>against</th><th>win / tie / loss (turns)</th></tr>" + body +
            "</table><p>Each arm's model is evaluated on the same questions by the same judge; win / tie / loss counts "
            "the turns where both orders of the pairwise judgement agree (a win) or not (a tie).</p>")
