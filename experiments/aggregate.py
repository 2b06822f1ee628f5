"""Aggregate finished runs into the paper's table layout: mean ± sd over seeds, beside the paper.

    python experiments/aggregate.py multirun/table4             # every run under a folder
    python experiments/aggregate.py multirun/table1 --csv t1.csv

Runs are grouped by what differs between their configs other than the seed (e.g. search.K for
Table 4); each group prints accuracy, #params, ratio, times and f(x) of the final student.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

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


def main(argv: list[str] | None = None) -> int:
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
