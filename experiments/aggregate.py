"""Aggregate finished runs into the paper's table layout: mean ± sd over seeds, beside the paper.

    python experiments/aggregate.py multirun/table4             # every run under a folder
    python experiments/aggregate.py multirun/table1 --csv t1.csv
    python experiments/aggregate.py claims benchmarks/results/*.csv --seed-set held-out \
        --ours-overrides kernel.sigma2_grid=null                                         # the paper's claims measured
    python experiments/aggregate.py cells benchmarks/results/nb201_search_efficiency.csv \
        benchmarks/results/nb201_heldout_sigma2_grid.csv --methods ours,random,rea,tpe,local,smac --budget 160   # per cell
    python experiments/aggregate.py relabel results/*.csv \
        --adopt "kernel.sigma2_grid=[0.25,0.5,1.0]" --was null    # once, after a default changed (done for benchmarks/results)

Runs are grouped by what differs between their configs other than the seed (e.g. search.K for
Table 4); each group prints accuracy, #params, ratio, times and f(x) of the final student.
"""
from __future__ import annotations

import argparse
import csv
import functools
import json
import statistics
import sys
from pathlib import Path

from nascomp.config import join_label, split_label, split_top

# The paper's numbers (ICLR 2019), f(x) of the final student, keyed by what a group varies.
PAPER = {
    "table1": {("vgg19", "cifar10", "ours"): 0.9809, ("vgg19", "cifar100", "ours"): 0.9518,
               ("resnet18", "cifar10", "ours"): 0.9701, ("resnet18", "cifar100", "ours"): 0.9123,
               ("resnet34", "cifar10", "ours"): 0.9660, ("resnet34", "cifar100", "ours"): 0.9246,
               ("shufflenet_g2", "cifar10", "ours"): 0.9729, ("shufflenet_g2", "cifar100", "ours"): 0.9171,
               ("vgg19", "cifar10", "random"): 0.9628, ("vgg19", "cifar100", "random"): 0.9046,
               ("resnet18", "cifar10", "random"): 0.9641, ("resnet18", "cifar100", "random"): 0.8752,
               ("resnet34", "cifar10", "random"): 0.9655, ("resnet34", "cifar100", "random"): 0.8924,
               ("shufflenet_g2", "cifar10", "random"): 0.9471, ("shufflenet_g2", "cifar100", "random"): 0.8803},
    "table4": {("1",): 0.9181, ("2",): 0.9119, ("4",): 0.9238, ("8",): 0.9240, ("16",): 0.9256},
}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v) if isinstance(v, list) else v
    return out


def load_runs(folders: list[Path]) -> list[dict]:
    runs = []
    for folder in folders:
        for path in sorted(folder.rglob("summary.json")):
            s = json.loads(path.read_text())
            runs.append({"path": path.parent, "summary": s, "config": _flatten(s["config"])})
    return runs


IGNORED = ("seed", "name", "proxy.seed", "full.seed", "teacher_training.seed", "store.path", "logger.")


def varying_keys(runs: list[dict]) -> list[str]:
    keys = sorted({k for r in runs for k in r["config"]})
    return [k for k in keys if not k.startswith(IGNORED) and k not in IGNORED
            and len({json.dumps(r["config"].get(k), default=str) for r in runs}) > 1]


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def aggregate(runs: list[dict]) -> tuple[list[str], list[dict]]:
    keys = varying_keys(runs)
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault(tuple(str(r["config"].get(k)) for k in keys), []).append(r)
    table_name = runs[0]["config"].get("experiment_group", "") if runs else ""
    paper = PAPER.get(str(table_name).removesuffix("_cpu"), {})
    rows = []
    for value, members in sorted(groups.items()):
        best = [m["summary"]["best"] for m in members]
        rows.append({
            **dict(zip(keys, value)), "runs": len(members),
            "accuracy": _mean_sd([b["accuracy"] for b in best]),
            "params (M)": _mean_sd([b["num_params"] / 1e6 for b in best]),
            "ratio": _mean_sd([b["ratio"] for b in best]),
            "times": _mean_sd([b["times"] for b in best]),
            "f(x)": _mean_sd([b["f"] for b in best]),
            "paper f(x)": next((f"{v:.4f}" for k, v in paper.items() if all(part in value for part in k)), "–"),
        })
    return keys, rows


def markdown(rows: list[dict]) -> str:
    if not rows:
        return "no finished runs (no summary.json found)"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


# The paper's claims, measured from the search-efficiency CSVs (benchmarks/results/*.csv). Each claim
# names its arms: (arm, the paper's f(x) on ResNet-34 / CIFAR-100, the CSV method label of the paper's
# method, the label of ours). The first arm is the one every other arm is compared with. The paper's
# method with another kernel objective is `kernel=paper` under ours with the random maximiser
# (what search.method=paper fixes, nascomp.search.kernel_settings).
PAPER_RANDOM = "search.acquisition.maximizer=random,search.acquisition.samples=1000"
CLAIMS = [
    ("Table 4: K at budget 160", [
        ("K=1", 0.9181, "paper[search.K=1]", "ours[search.K=1]"),
        ("K=2", 0.9119, "paper[search.K=2]", "ours[search.K=2]"),
        ("K=4", 0.9238, "paper[search.K=4]", "ours[search.K=4]"),
        ("K=8", 0.9240, "paper", "ours"),
        ("K=16", 0.9256, "paper[search.K=16]", "ours[search.K=16]")]),
    ("Table 6: acquisition maximiser (K=8)", [
        ("random sampling", 0.9240, "paper", "ours[search.acquisition.maximizer=random]"),
        ("evolution", 0.9104, "paper[search.paper.acquisition.maximizer=evolution]", "ours")]),
    ("Table 8: kernel objective", [
        ("posterior", 0.9246, "paper", "ours"),
        ("marginal", 0.9059, f"ours[kernel=paper,kernel.objective=marginal,{PAPER_RANDOM}]", "ours[kernel.objective=marginal]"),
        ("euclidean", 0.9127, f"ours[kernel=paper,kernel.objective=euclidean,{PAPER_RANDOM}]", "ours[kernel.objective=euclidean]")]),
]


def claim_score(row: dict) -> float:
    """Higher is better: minus the regret on the [0, 1] scale (NB201 accuracy in percent: x 0.01), or
    the best f where the optimum is unknown (compression)."""
    if row["regret"] in ("", None):
        return float(row["best"])
    return -float(row["regret"]) * (0.01 if row["objective"] == "accuracy" else 1.0)


def with_overrides(label: str, overrides: str) -> str:
    """``ours`` -> ``ours[<overrides>]``, ``ours[X] suffix`` -> ``ours[<overrides>,X] suffix`` (X applied after them)."""
    if not overrides:
        return label
    name, rest, suffix = split_label(label)
    return join_label(name, split_top(overrides) + rest, suffix)


@functools.cache  # relabel asks it once per row: each group file is read once
def _sets_itself(group_option: str, key: str) -> bool:
    """Whether ``conf/<group>/<option>.yaml`` itself (not through its defaults list) sets ``key``'s rest:
    ``kernel=paper`` sets ``kernel.sigma2_grid``, ``kernel=nb201`` inherits it."""
    from omegaconf import OmegaConf

    from nascomp.config import config_dir

    group, _, option = group_option.partition("=")
    path = config_dir() / group / f"{option}.yaml"
    node = OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else {}
    for part in key.split(".")[1:]:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def adopt(label: str, setting: str, was: str, method: str = "ours") -> str:
    """A result label after ``setting`` (``key=value``) became ``method``'s default where ``key`` was ``was``:
    a row that ran ``setting`` loses it (``ours[k=v]`` -> ``ours``), a row that left ``key`` at its
    default gains ``key=was`` first (``ours`` -> ``ours[k=was]``, ``ours[X] suffix`` -> ``ours[k=was,X] suffix``),
    so that every label still names the overrides that reproduce it. Labels of other methods, that set
    ``key`` to another value, or that choose a file of ``key``'s config group which sets ``key`` itself
    (``kernel=paper`` sets its own ``kernel.sigma2_grid``; ``kernel=nb201`` inherits it) are unchanged."""
    key = setting.partition("=")[0]
    name, overrides, suffix = split_label(label)
    if name != method:
        return label
    group = key.split(".")[0]
    if any(o.partition("=")[0] == group and _sets_itself(o, key) for o in overrides):
        return label
    mine = [o for o in overrides if o.partition("=")[0] == key]
    if mine:
        if mine != [setting]:
            return label
        overrides = [o for o in overrides if o != setting]
    else:
        overrides = [f"{key}={was}"] + overrides
    return join_label(method, overrides, suffix)


LABEL_COLUMNS = ("method", "against")  # the result CSVs' columns that hold method labels


def relabel(paths: list[Path], setting: str, was: str, method: str = "ours") -> dict[str, str]:
    """Rewrite the label columns (``LABEL_COLUMNS``) of result CSVs by :func:`adopt`; returns the labels changed,
    old -> new. Rows, their order, every other cell and the line endings stay as they were. All files are
    read and checked first (readable CSV, a header with ``method``, no ragged row, no unbalanced brackets, no
    label that already names ``key=was``: a second pass would turn the adopted rows, now plain ``ours``, into
    the old setting's); only then are the files whose labels changed replaced, each through a temporary file.
    ValueError names the first problem, and then no file is touched. Run it once per adoption, on files
    written before it: the second-pass check cannot tell a file holding only rows run after the adoption
    (plain ``ours``, the new default) from one holding only rows run before, so such a file would be
    mislabelled, and a file with rows run explicitly as ``key=was`` is refused."""
    import io
    import os

    key = setting.partition("=")[0]
    changed: dict[str, str] = {}
    out: dict[Path, str] = {}
    for path in paths:
        try:
            raw = path.read_bytes().decode()
            table = list(csv.reader(io.StringIO(raw, newline="")))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise ValueError(f"{path}: not a readable CSV ({exc})") from None
        if not table or "method" not in table[0]:
            raise ValueError(f"{path}: no header with a method column")
        header, rows = table[0], table[1:]
        columns = [header.index(c) for c in LABEL_COLUMNS if c in header]
        touched = False
        for n, row in enumerate(rows, start=2):
            if len(row) != len(header):
                raise ValueError(f"{path}: row {n} has {len(row)} cells, the header {len(header)}")
            for c in columns:
                try:
                    name, overrides, _ = split_label(row[c])
                    new = adopt(row[c], setting, was, method)
                except ValueError as exc:
                    raise ValueError(f"{path}: row {n}: {exc}") from None
                if name == method and f"{key}={was}" in overrides:
                    raise ValueError(f"{path}: row {n}'s label {row[c]!r} already names {key}={was}: "
                                     f"relabelled before? (a second pass would mislabel the adopted rows)")
                if new != row[c]:
                    changed[row[c]], row[c], touched = new, new, True
        if touched:
            text = io.StringIO(newline="")
            crlf = raw.partition("\n")[0].endswith("\r")  # the csv module's default, as the benchmarks write
            csv.writer(text, lineterminator="\r\n" if crlf else "\n").writerows([header] + rows)
            out[path] = text.getvalue()
    for path, text in out.items():
        tmp = path.with_name(path.name + ".relabel")
        tmp.write_bytes(text.encode())
        os.replace(tmp, path)
    return changed


def claims(rows: list[dict], seed_set: str, space: str = "nb201", budget: int = 160, ours_overrides: str = "",
           shared: bool = True) -> str:
    """``claims_in_space`` for each space label of the rows (those starting with ``space``, nb201 | compression)
    in which some arm of a claim ran, one table each: a compression space label names its teacher, and a
    seed's score is never averaged over two teachers. No arm in any space: one table of "not run"."""
    rows = [r for r in rows if r["seed_set"] == seed_set and int(r["budget"]) == budget and r["space"].startswith(space)]
    arms = {label for _, claim_arms in CLAIMS for _, _, paper, ours in claim_arms for label in (paper, with_overrides(ours, ours_overrides))}
    by_space: dict[str, list[dict]] = {}
    for r in rows:
        by_space.setdefault(r["space"], []).append(r)
    ran = [label for label, members in sorted(by_space.items()) if any(r["method"] in arms for r in members)]
    return "\n\n".join(claims_in_space(by_space[label], seed_set, label, budget, ours_overrides, shared) for label in ran) or \
        claims_in_space([], seed_set, space, budget, ours_overrides, shared)


def claims_in_space(rows: list[dict], seed_set: str, space: str, budget: int, ours_overrides: str = "", shared: bool = True) -> str:
    """Markdown: per claim and arm, the paper's f(x) and the measured mean ± s.e. over seeds of
    ``claim_score`` for the paper's method and ours, from ``rows``: those of one space label, seed set and
    budget (``space``, ``seed_set`` and ``budget`` head the table). Per seed, averaged over the
    dataset/objective cells and seeds in which every arm of the claim on that side ran, and on the
    cells both sides ran when both did (arms are compared on the same cells and seeds, never one cell
    against an average over six); and whether the paper's direction (the arm against the
    claim's first arm) holds. No rows: "not run".
    ``ours_overrides``: ours' arms are the rows of ours with these overrides first (rows of earlier
    defaults carry the overrides that reproduce them, e.g. ``kernel.pool=both,kernel.numeric=log``).
    ``shared=False``: each side on the cells all of its own arms ran, whatever the other side ran (ours'
    arms on six cells where the paper method's arms ran on one); the two columns may then be on different
    cells, as the "Compared on" lines say."""
    import numpy as np

    unit = lambda r: (r["space"], r["dataset"], r["objective"], r["seed"])
    ran: dict[str, set] = {}
    for r in rows:
        ran.setdefault(r["method"], set()).add(unit(r))

    def common(labels: list[str]) -> set:
        """The (cell, seed) pairs every arm of a claim that ran has a row in: the arms are compared on those alone."""
        sets = [ran[label] for label in labels if label in ran]
        return set.intersection(*sets) if sets else set()

    def measure(label: str, units: set):
        per_seed: dict[str, list[float]] = {}
        for r in rows:
            if r["method"] == label and unit(r) in units:
                per_seed.setdefault(r["seed"], []).append(claim_score(r))
        if not per_seed:
            return None
        v = np.array([np.mean(x) for x in per_seed.values()])
        return v.mean(), (v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0), len(v)

    fmt = lambda m: "not run" if m is None else f"{m[0]:.4f} ± {m[1]:.4f} (n={m[2]})"
    lines = [f"space {space}; seeds: {seed_set}; budget {budget}; score: -regret on [0, 1] (NAS-Bench-201) or best f (compression), higher is better",
             "", "| claim | arm | paper f(x) | paper method | ours | paper's direction holds (paper / ours) |", "|---|---|---|---|---|---|"]
    compared = []
    cell = lambda u: " ".join(u[1:3] if u[0] == "nb201" else u[:2])  # a compression cell: its space label (teacher), dataset
    for claim, arms in [(c, [(a, f, p, with_overrides(o, ours_overrides)) for a, f, p, o in arms]) for c, arms in CLAIMS]:
        on = [common([a[2] for a in arms]), common([a[3] for a in arms])]  # the paper method's arms, ours
        if shared and on[0] and on[1]:  # both sides on the cells both ran (each side keeps its own seeds)
            cells = {u[:3] for u in on[0]} & {u[:3] for u in on[1]}
            on = [{u for u in side if u[:3] in cells} for side in on]
        compared.append(f"- {claim.split(':')[0]}: " + "; ".join(
            f"{side} on " + (", ".join(sorted({cell(u) for u in units})) + f" ({len({u[3] for u in units})} seeds)"
                             if units else "nothing")
            for side, units in zip(("paper", "ours"), on)))
        _, ref_f, ref_paper, ref_ours = arms[0]
        refs = (measure(ref_paper, on[0]), measure(ref_ours, on[1]))
        for i, (arm, f, paper_label, ours_label) in enumerate(arms):
            got = (measure(paper_label, on[0]), measure(ours_label, on[1]))
            holds = "–" if i == 0 else " / ".join(
                "not run" if m is None or r is None else "tie" if m[0] == r[0] else ("yes" if (m[0] > r[0]) == (f > ref_f) else "no")
                for m, r in zip(got, refs))
            lines.append(f"| {claim if i == 0 else ''} | {arm} | {f:.4f} | {fmt(got[0])} | {fmt(got[1])} | {holds} |")
    return "\n".join(lines + ["", "Compared on (the cells and seeds where all of a claim's arms ran; a seed's score is its mean over those cells):"] + compared)


def cells(rows: list[dict], methods: list[str], seed_set: str, budget: int, common: bool = False, tail: str = "") -> str:
    """Markdown: one row per space/dataset/objective cell, one column per method: the mean ± s.e. over
    seeds of the regret (NAS-Bench-201) or of the best f (compression, where the optimum is unknown)
    at ``budget``; bold marks the best method(s) of the cell. Then, per other method, in how many of the
    cells where both it and the first method have rows the first method's mean is strictly better.
    ``common``: in each cell only the seeds that every method listed ran (a method run on fewer seeds is
    compared on those alone). ``tail``: one of ``methods``;
    then also in how many cells (of those where both have rows) the first method's worst seed is no worse
    than that method's median seed (issue 13's tail target, against REA), with each failing cell's two figures."""
    import numpy as np

    rows = [r for r in rows if r["seed_set"] == seed_set and int(r["budget"]) == budget and r["method"] in methods]
    if common:
        seeds: dict[tuple, dict[str, set]] = {}
        for r in rows:
            seeds.setdefault((r["space"], r["dataset"], r["objective"]), {}).setdefault(r["method"], set()).add(r["seed"])
        shared = {c: set.intersection(*by.values()) if len(by) == len(methods) else set() for c, by in seeds.items()}
        rows = [r for r in rows if r["seed"] in shared[(r["space"], r["dataset"], r["objective"])]]
    groups: dict[tuple, dict[str, list[float]]] = {}
    for r in rows:
        lower = r["regret"] not in ("", None)  # regret: lower is better; best f: higher is better
        groups.setdefault((r["space"], r["dataset"], r["objective"], lower), {}).setdefault(r["method"], []).append(
            float(r["regret"] if lower else r["best"]))
    head = ["cell", "seeds"] + methods
    lines = [f"seeds: {seed_set}; budget {budget}; regret (NAS-Bench-201: accuracy in points, compression in f) "
             "or best f (real students), mean ± s.e.", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    wins = {m: 0 for m in methods[1:]}
    both = {m: 0 for m in methods[1:]}  # the cells where the first method and m have rows: the counts' denominators
    tail_held, tail_failed, tail_cells = 0, [], 0
    for (space, dataset, objective, lower), by in sorted(groups.items()):
        stats = {m: (np.mean(v), np.std(v, ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0) for m, v in by.items()}
        best = (min if lower else max)(v[0] for v in stats.values())  # every method at it is bold (ties)
        digits = 3 if objective == "accuracy" and lower else 4
        fmt = lambda m: "–" if m not in stats else (
            ("**{:.%df} ± {:.%df}**" if stats[m][0] == best else "{:.%df} ± {:.%df}") % (digits, digits)).format(*stats[m])
        seeds = "/".join(str(n) for n in sorted({len(v) for v in by.values()}))
        cell = f"{dataset} {objective}" if space == "nb201" else f"{space} {dataset}"
        lines.append("| " + " | ".join([cell, seeds] + [fmt(m) for m in methods]) + " |")
        for m in wins:
            if methods[0] in stats and m in stats:
                both[m] += 1
                wins[m] += (stats[methods[0]][0] < stats[m][0]) if lower else (stats[methods[0]][0] > stats[m][0])
        if tail and methods[0] in by and tail in by:
            tail_cells += 1
            worst, median = (max if lower else min)(by[methods[0]]), float(np.median(by[tail]))
            if (worst <= median) if lower else (worst >= median):
                tail_held += 1
            else:
                tail_failed.append(f"{cell}: {worst:.4g} against {median:.4g}")
    lines += ["", f"{methods[0]} strictly better than: " + ", ".join(f"{m} in {n}/{both[m]} cells" for m, n in wins.items())]
    if tail:
        lines.append(f"worst seed of {methods[0]} no worse than the median seed of {tail} in {tail_held}/{tail_cells} cells"
                     + (f" (not in {'; '.join(tail_failed)})" if tail_failed else ""))
    return "\n".join(lines)


def fronts(rows: list[dict], methods: list[str], seed_set: str, budget: int, early: int | None = None, reach: str = "") -> str:
    """Markdown for Pareto-mode CSVs (``--mode pareto``): one row per cell (dataset and cost), one column
    per method: the mean ± s.e. over seeds of the hypervolume at ``budget`` (bold: the highest of the
    cell). Then, per other method, in how many of the cells where both it and the first method have rows
    the first method's mean is strictly higher, and on how many seeds of each cell the first method is
    strictly higher (paired by seed). ``reach``: one of ``methods``; then also in how many cells (of those
    where the first method has rows at ``early`` and that method at ``budget``) the first method's mean
    hypervolume at ``early`` is at least that method's at ``budget`` (issue 14's target against random search)."""
    import numpy as np

    rows = [r for r in rows if r["seed_set"] == seed_set and r["method"] in methods]
    hv: dict[tuple, dict[str, dict[tuple, float]]] = {}  # cell -> method -> (seed, budget) -> hypervolume
    for r in rows:
        cell = (r["dataset"], r["cost"]) if r["space"] == "nb201" else (r["space"], r["cost"])
        hv.setdefault(cell, {}).setdefault(r["method"], {})[(r["seed"], int(r["budget"]))] = float(r["hypervolume"])
    at = lambda by, m, b: [v for (_, bb), v in sorted(by.get(m, {}).items()) if bb == b]
    head = ["cell", "seeds"] + methods
    lines = [f"seeds: {seed_set}; budget {budget}; hypervolume of normalised (accuracy, cost), mean ± s.e.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    wins, above, reached, missed = {m: 0 for m in methods[1:]}, [], 0, []
    both, reach_cells = {m: 0 for m in methods[1:]}, 0  # the counts' denominators: cells where both have rows
    for cell, by in sorted(hv.items()):
        stats = {m: (np.mean(v), np.std(v, ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0)
                 for m in methods if (v := at(by, m, budget))}
        if not stats:  # no listed method has this budget in this cell
            continue
        best = max(v[0] for v in stats.values())
        fmt = lambda m: "–" if m not in stats else (
            "**{:.4f} ± {:.4f}**" if stats[m][0] == best else "{:.4f} ± {:.4f}").format(*stats[m])
        counts = "/".join(str(n) for n in sorted({len(at(by, m, budget)) for m in stats}))
        lines.append("| " + " | ".join([" ".join(cell), counts] + [fmt(m) for m in methods]) + " |")
        first = by.get(methods[0], {})
        per = []
        for m in wins:
            if methods[0] in stats and m in stats:
                both[m] += 1
                wins[m] += stats[methods[0]][0] > stats[m][0]
                seeds = sorted({s for s, b in first if b == budget} & {s for s, b in by[m] if b == budget})
                per.append(f"{m} {sum(first[(s, budget)] > by[m][(s, budget)] for s in seeds)}/{len(seeds)}")
        above.append(f"{' '.join(cell)}: {', '.join(per)}")
        if reach and early is not None and at(by, methods[0], early) and at(by, reach, budget):
            reach_cells += 1
            mine, theirs = float(np.mean(at(by, methods[0], early))), float(np.mean(at(by, reach, budget)))
            if mine >= theirs:
                reached += 1
            else:
                missed.append(f"{' '.join(cell)}: {mine:.4f} against {theirs:.4f}")
    lines += ["", f"{methods[0]} higher than: " + ", ".join(f"{m} in {n}/{both[m]} cells" for m, n in wins.items()),
              f"seeds {methods[0]} is higher on: " + "; ".join(above)]
    if reach and early is not None:
        lines.append(f"{methods[0]} at {early} reaches {reach} at {budget} in {reached}/{reach_cells} cells"
                     + (f" (not in {'; '.join(missed)})" if missed else ""))
    return "\n".join(lines)


def _cell_parser(command: str, description: str, methods: str) -> argparse.ArgumentParser:
    """The arguments ``cells`` and ``fronts`` share: CSVs, methods, seed set, budget."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(command)
    p.add_argument("csvs", nargs="+", type=Path)
    p.add_argument("--methods", default=methods, help="comma list (a label's [overrides] may hold commas); the first is compared with the rest")
    p.add_argument("--seed-set", default="held-out", choices=["tuning", "held-out"])
    p.add_argument("--budget", type=int, default=160)
    return p


def _parse_cells(p: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.Namespace, list[dict], list[str]]:
    """``p``'s arguments, every row of the CSVs, and the method labels (a label's [overrides] may hold commas)."""
    a = p.parse_args(argv)
    rows = [r for path in a.csvs for r in csv.DictReader(path.open())]
    try:
        methods = split_top(a.methods)
    except ValueError as exc:
        p.error(f"--methods: {exc}")
    return a, rows, methods


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "claims":
        p = argparse.ArgumentParser(description="the paper's claims measured, from search-efficiency CSVs")
        p.add_argument("claims")
        p.add_argument("csvs", nargs="+", type=Path)
        p.add_argument("--seed-set", default="held-out", choices=["tuning", "held-out"])
        p.add_argument("--space", default="nb201", choices=["nb201", "compression"])
        p.add_argument("--budget", type=int, default=160)
        p.add_argument("--ours-overrides", default="", help="ours' arms are ours with these overrides first, e.g. "
                       "kernel.pool=both,kernel.numeric=log (the rows of the earlier kernel defaults)")
        p.add_argument("--dataset", default="", help="comma list: only these datasets' rows (e.g. cifar100); default all")
        p.add_argument("--objective", default="", help="comma list: only these objectives' rows (accuracy, compression); default all")
        p.add_argument("--cells", default="shared", choices=["shared", "own"], help="shared: both columns on the cells both "
                       "sides' arms ran; own: each column on the cells its own arms ran")
        a = p.parse_args(argv)
        rows = [r for path in a.csvs for r in csv.DictReader(path.open())]
        scoped = lambda rows: [r for r in rows if r["space"].startswith(a.space) and r["seed_set"] == a.seed_set]  # as claims() reads them
        for column, wanted in (("dataset", a.dataset), ("objective", a.objective)):
            if wanted:
                keep = set(wanted.split(","))
                missing = keep - {r[column] for r in scoped(rows)}
                if missing:
                    p.error(f"--{column} {wanted}: no {a.seed_set} {a.space} rows with {column} {', '.join(sorted(missing))} in "
                            f"{', '.join(map(str, a.csvs))}")
                rows = [r for r in rows if r[column] in keep]
        try:
            ours = with_overrides("ours", a.ours_overrides)
        except ValueError as exc:
            p.error(f"--ours-overrides {a.ours_overrides}: {exc}")
        if a.ours_overrides and not any(r["method"] == ours for r in scoped(rows)):
            p.error(f"--ours-overrides {a.ours_overrides}: no {a.seed_set} {a.space} rows of {ours} in "
                    f"{', '.join(map(str, a.csvs))} (a method label names its overrides exactly, in the order they were run)")
        print(claims(rows, a.seed_set, a.space, a.budget, a.ours_overrides, shared=a.cells == "shared"))
        return 0
    if argv and argv[0] == "relabel":
        p = argparse.ArgumentParser(description="after a default changed: rewrite result labels so that each still names the "
                                    "overrides that reproduce it (function adopt)")
        p.add_argument("relabel")
        p.add_argument("csvs", nargs="+", type=Path)
        p.add_argument("--adopt", required=True, help="the new default, key=value as an override (e.g. kernel.sigma2_grid=[0.25,0.5,1.0])")
        p.add_argument("--was", required=True, help="the key's value before (e.g. null)")
        p.add_argument("--method", default="ours")
        a = p.parse_args(argv)
        if "=" not in a.adopt or not a.adopt.partition("=")[0]:
            p.error(f"--adopt {a.adopt}: expected key=value")
        missing = [str(f) for f in a.csvs if not f.is_file()]
        if missing:
            p.error(f"not a file: {', '.join(missing)}")
        if a.adopt.partition("=")[2] == a.was:
            p.error(f"--adopt {a.adopt} --was {a.was}: the value did not change")
        try:
            changed = relabel(a.csvs, a.adopt, a.was, a.method)
        except ValueError as exc:
            p.error(str(exc))
        for old, new in sorted(changed.items()):
            print(f"{old} -> {new}")
        return 0
    if argv and argv[0] == "fronts":
        p = _cell_parser("fronts", "hypervolume per cell and method, from Pareto-mode CSVs (--mode pareto)", "ours,random,nsga2,motpe")
        p.add_argument("--reach", default="", help="one of --methods: count the cells where the first method's mean hypervolume "
                       "at --early is at least this method's at --budget (e.g. random)")
        p.add_argument("--early", type=int, default=80)
        a, rows, methods = _parse_cells(p, argv)
        if a.reach and a.reach not in methods[1:]:
            p.error(f"--reach {a.reach}: not one of the other --methods ({', '.join(methods[1:])})")
        print(fronts(rows, methods, a.seed_set, a.budget, a.early if a.reach else None, a.reach))
        return 0
    if argv and argv[0] == "cells":
        p = _cell_parser("cells", "regret (or best f) per cell and method, from search-efficiency CSVs", "ours,random,rea,tpe,local,smac")
        p.add_argument("--common", action="store_true", help="per cell, only the seeds every listed method ran")
        p.add_argument("--tail", default="", help="one of --methods: count the cells where the first method's worst seed "
                       "is no worse than this method's median seed (e.g. rea)")
        a, rows, methods = _parse_cells(p, argv)
        if a.tail and a.tail not in methods[1:]:
            p.error(f"--tail {a.tail}: not one of the other --methods ({', '.join(methods[1:])})")
        print(cells(rows, methods, a.seed_set, a.budget, a.common, a.tail))
        return 0
    return _main(argv)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="run or multirun folders (searched recursively)")
    parser.add_argument("--csv", type=Path, help="also write the table as CSV")
    args = parser.parse_args(argv)
    missing = [str(f) for f in args.folders if not f.is_dir()]
    if missing:
        print(f"error: not a folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    runs = load_runs(args.folders)
    _, rows = aggregate(runs)
    print(markdown(rows))
    if args.csv and rows:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
