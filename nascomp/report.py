"""What every run leaves in its directory: ``history.csv`` (every evaluated architecture, with every
cost: num_params, flops, latency_ms, memory_mb), ``summary.json`` (teacher, best student, the Table 1
columns and the costs, the objective, the config), three plots and ``report.md`` embedding them.

Plots (paper Figures 1-2): f(x) against evaluation index with the best so far; the histogram of
f(x); accuracy against parameters with the Pareto front and the teacher marked. A Pareto run
(``search.mode=pareto``) adds the front of (accuracy, its cost) with the teacher and the finalists
marked (``pareto_front.png``; every finalist circled, on the front or not), the hypervolume against
evaluations (``hypervolume.png``), and the front as a table and the finalists as a line in the report
(``summary.json``'s ``pareto``: ``front`` and ``finalists``).
"""
from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path
from typing import Sequence

import matplotlib

from nascomp.files import atomic_write, write_text
from nascomp.reward import RewardRow

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HISTORY_COLUMNS = ("index", "step", "proposer", "key", "num_params", "ratio", "times", "accuracy", "f", "seconds", "error",
                   "flops", "latency_ms", "memory_mb")


def history_rows(history: Sequence, teacher_params: int) -> list[dict]:
    """One dict per evaluated architecture (``nascomp.search.Record``), in evaluation order."""
    rows = []
    for i, r in enumerate(history):
        table1 = RewardRow.scored(r.accuracy, r.num_params, r.f, teacher_params)
        rows.append({
            "index": i, "step": r.step, "proposer": "" if r.proposer is None else r.proposer, "key": r.arch.key,
            "num_params": table1.num_params, "ratio": table1.ratio, "times": table1.times,
            "accuracy": table1.accuracy, "f": table1.f, "seconds": r.seconds, "error": r.error or "",
            **{c: "" if getattr(r, c, None) is None else getattr(r, c) for c in ("flops", "latency_ms", "memory_mb")},
        })
    return rows


def write_history(rows: list[dict], path: Path) -> None:
    """``history.csv``, through a temporary file (``nascomp.files``): a kill leaves the old file or the new one."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=HISTORY_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (params, accuracy) points no other point beats on both (fewer params, higher accuracy)."""
    front, best = [], -math.inf
    for p, a in sorted(points, key=lambda t: (t[0], -t[1])):
        if a > best:
            front.append((p, a))
            best = a
    return front


def rewards(rows: list[dict]) -> tuple[list[int], list[float], list[float]]:
    """(history index, f, best f so far) of the students that did not fail, in history order."""
    index = [i for i, r in enumerate(rows) if not r["error"]]
    f = [rows[i]["f"] for i in index]
    return index, f, list(itertools.accumulate(f, max))


def plot(rows: list[dict], teacher: dict, out_dir: Path) -> dict[str, str]:
    """Write the three PNGs; returns {name: file name}. A failed evaluation has no f (its row's
    placeholder is not a reward): it is left out of the f plots, so where every f is negative (e.g. a
    latency objective) the best so far is the best student's, not 0."""
    ok = [r for r in rows if not r["error"]]
    index, f, best = rewards(rows)
    files = {}

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(index, f, s=10, alpha=0.6, label="f(x)")
    ax.plot(index, best, color="C3", label="best so far", drawstyle="steps-post")
    ax.set(xlabel="index of evaluated architecture", ylabel="f(x)", title="Reward along the search")
    ax.legend(loc="lower right")
    files["f_vs_index"] = _save(fig, out_dir / "f_vs_index.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(f, bins=min(30, max(5, len(f) // 3)), color="C0", alpha=0.8)  # nothing drawn when every student failed
    ax.set(xlabel="f(x)", ylabel="count", title="Histogram of f(x)")
    files["f_histogram"] = _save(fig, out_dir / "f_histogram.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    points = [(r["num_params"], r["accuracy"]) for r in ok]
    if points:
        ax.scatter(*zip(*points), s=10, alpha=0.5, label="students")
        front = pareto_front(points)
        ax.step(*zip(*front), where="post", color="C2", label="Pareto front")
    ax.scatter([teacher["num_params"]], [teacher["accuracy"]], marker="*", s=150, color="C3", label="teacher")
    ax.set_xscale("log")
    ax.set(xlabel="parameters", ylabel="validation accuracy", title="Accuracy against size")
    ax.legend(loc="lower right")
    files["accuracy_vs_params"] = _save(fig, out_dir / "accuracy_vs_params.png")
    return files


COST_LABELS = {"num_params": "parameters", "flops": "FLOPs (multiply-accumulates)", "latency_ms": "latency (ms)",
               "memory_mb": "memory (MiB)"}


def plot_pareto(pareto: dict, rows: list[dict], out_dir: Path) -> dict[str, str]:
    """A Pareto run's two PNGs from ``summary.json``'s ``pareto`` and the history rows: accuracy
    against the cost (every student, the front, the finalists, the teacher) and the hypervolume after
    each evaluation; returns {name: file name}."""
    cost, label = pareto["cost"], COST_LABELS[pareto["cost"]]
    files = {}
    fig, ax = plt.subplots(figsize=(6, 4))
    ok = [r for r in rows if not r["error"]]
    if ok:
        ax.scatter([float(r[cost]) for r in ok], [r["accuracy"] for r in ok], s=10, alpha=0.4, label="students")
    front = pareto["front"]
    if front:
        ax.step([p["cost"] for p in front], [p["accuracy"] for p in front], where="post", color="C2", marker="o", ms=4,
                label="front")
    chosen = pareto["finalists"]  # on the front or not
    if chosen:
        ax.scatter([p["cost"] for p in chosen], [p["accuracy"] for p in chosen], s=80, facecolors="none", edgecolors="C1",
                   label="finalists")
    ax.scatter([pareto["teacher"]["cost"]], [pareto["teacher"]["accuracy"]], marker="*", s=150, color="C3", label="teacher")
    ax.set_xscale("log")
    ax.set(xlabel=label, ylabel="validation accuracy (proxy)", title=f"Front of accuracy and {label}")
    ax.legend(loc="lower right")
    files["pareto_front"] = _save(fig, out_dir / "pareto_front.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    curve = pareto["curve"]
    ax.plot(range(1, len(curve) + 1), curve, color="C0")
    ax.set(xlabel="evaluations", ylabel="hypervolume", title=f"Hypervolume of (accuracy, {label}), normalised by the teacher")
    files["hypervolume"] = _save(fig, out_dir / "hypervolume.png")
    return files


def front_table(pareto: dict) -> str:
    """Markdown: the front of a Pareto run, cost ascending."""
    cost = pareto["cost"]
    lines = [f"| # | key | accuracy | {COST_LABELS[cost]} | u | v | f(x) | finalist |", "|---|---|---|---|---|---|---|---|"]
    for p in pareto["front"]:
        lines.append(f"| {p['index']} | `{p['key'][:12]}` | {100 * p['accuracy']:.2f}% | {p['cost']:.4g} | {p['u']:.4f} | "
                     f"{p['v']:.4f} | {p['f']:.4f} | {'yes' if p['finalist'] else ''} |")
    return "\n".join(lines)


def finalists_line(pareto: dict) -> str:
    """Markdown: a Pareto run's finalists in the order chosen, those off the front said so."""
    cells = [f"`{p['key'][:12]}` (#{p['index']}, {100 * p['accuracy']:.2f}%, {p['cost']:.4g}"
             f"{'' if p['on_front'] else ', off the front'})" for p in pareto["finalists"]]
    return f"{len(cells)} finalists (final.top_k), circled in the plot: " + ("; ".join(cells) or "none") + "."


def _save(fig, path: Path) -> str:
    try:
        fig.tight_layout()
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".")))
    finally:
        plt.close(fig)
    return path.name


def table(rows: list[dict]) -> str:
    """Markdown table with the paper's Table 1 columns, and the other costs when a row has them."""
    costs = any(r.get("flops") is not None for r in rows)
    lines = ["| | accuracy | #params | ratio | times | f(x) |" + (" MFLOPs | latency ms | memory MiB |" if costs else ""),
             "|---|---|---|---|---|---|" + ("---|---|---|" if costs else "")]
    for r in rows:
        lines.append(f"| {r['name']} | {100 * r['accuracy']:.2f}% | {r['num_params'] / 1e6:.4g}M | "
                     f"{r['ratio']:.4f} | {r['times']:.2f}x | {r['f']:.4f} |" + (f" {_costs(r)} |" if costs else ""))
    return "\n".join(lines)


def _costs(row: dict) -> str:
    """The row's flops (in millions), latency_ms and memory_mb as table cells."""
    cells = []
    for key, scale in (("flops", 1e-6), ("latency_ms", 1.0), ("memory_mb", 1.0)):
        v = row.get(key)
        cells.append("" if v is None or v == "" else f"{float(v) * scale:.4g}")
    return " | ".join(cells)


def write_report(summary: dict, plots: dict[str, str], out_dir: Path) -> Path:
    rows = [{"name": "teacher", **summary["teacher"]}] + [{"name": "best student", **summary["best"]}]
    text = [f"# {summary['name']}", "", table(rows), "",
            f"{summary['evaluations']} architectures evaluated in {summary['steps']} steps "
            f"({summary['search']['method']}, K = {summary['search']['K']}); "
            f"search {summary['seconds']['search']:.0f} s, final training {summary['seconds']['final']:.0f} s.", ""]
    if summary.get("finalists"):
        text += ["## Fully trained finalists", "",
                 "| key | val accuracy | test accuracy | #params | f(x) | MFLOPs | latency ms | memory MiB |",
                 "|---|---|---|---|---|---|---|---|"]
        for r in summary["finalists"]:
            text.append(f"| `{r['key'][:12]}` | {100 * r['accuracy']:.2f}% | {100 * r['test_accuracy']:.2f}% | "
                        f"{r['num_params'] / 1e6:.4g}M | {r['f']:.4f} | {_costs(r)} |")
        text.append("")
    if summary.get("pruning"):
        best = summary["best"]
        text += ["## Pruning at equal parameters", "",
                 "The teacher channel-pruned (Torch-Pruning, global ranking by each importance) to at most the answer's "
                 "parameters, proxy-distilled and fully trained by the same recipes (`final.prune`).", "",
                 "| student | val accuracy | test accuracy | #params | f(x) | f(x) - answer's |", "|---|---|---|---|---|---|",
                 f"| answer `{best['key'][:12]}` | {100 * best['accuracy']:.2f}% | {100 * best['test_accuracy']:.2f}% | "
                 f"{best['num_params'] / 1e6:.4g}M | {best['f']:.4f} | |"]
        for r in summary["pruning"]:
            text.append(f"| pruned ({r['importance']}) | " + (f"not reached: {r['error']} | | | | |" if "error" in r else
                        f"{100 * r['accuracy']:.2f}% | {100 * r['test_accuracy']:.2f}% | {r['num_params'] / 1e6:.4g}M | "
                        f"{r['f']:.4f} | {r['f_minus_answer']:+.4f} |"))
        ahead = [r["importance"] for r in summary["pruning"] if r.get("f_minus_answer", 0) > 0]
        ran = [r for r in summary["pruning"] if "error" not in r]
        text += ["", (f"Pruning ({', '.join(ahead)}) is ahead of the searched answer in f; its weights are in "
                      f"{', '.join(f'`pruned_{i}/`' for i in ahead)}." if ahead else
                      "The searched answer is ahead of pruning at every importance that ran." if ran else
                      "No importance gave a pruned student (see each row's error)."), ""]
    if summary.get("pareto"):
        pareto = summary["pareto"]
        ref = pareto["reference_point"]
        text += ["## Pareto front", "",
                 f"{len(pareto['front'])} students on the front of (validation accuracy, {COST_LABELS[pareto['cost']]}); "
                 f"hypervolume {pareto['hypervolume']:.4f} of (u, v) = (accuracy / teacher accuracy, cost / teacher cost) "
                 f"against the reference point (u, v) = ({ref['u']}, {ref['v']}); finalists spread along the front.", "",
                 front_table(pareto), "", finalists_line(pareto), "",
                 f"![Front of accuracy and cost]({plots['pareto_front']})", "",
                 f"![Hypervolume against evaluations]({plots['hypervolume']})", ""]
    for title, name in (("Reward along the search", "f_vs_index"), ("Histogram of f(x)", "f_histogram"),
                        ("Accuracy against parameters", "accuracy_vs_params")):
        text += [f"## {title}", "", f"![{title}]({plots[name]})", ""]
    return write_text(out_dir / "report.md", "\n".join(text))


def write_summary(summary: dict, out_dir: Path) -> Path:
    """``summary.json``, through a temporary file (``nascomp.files``); a failed write is an ``OutputError``."""
    return write_text(out_dir / "summary.json", json.dumps(summary, indent=2, default=str))
