"""Search efficiency on NAS-Bench-201: best reward found after a budget of table look-ups.

Measured (benchmarks/results/nb201_search_efficiency.csv): 20 seeds of ours, flat, random, TPE and
REA on 3 datasets x 2 objectives, budgets 50/100/160, on a shared 2-core CPU, one thread per run
(ours: about 1 s of kernel training and 0.7 s of acquisition per step of K = 8). Mean regret at
100 and 160 evaluations: ours beats random search in 12/12 cells, REA in 7/12, TPE in 4/12 and is
within one TPE standard error in 8/12; the flat kernel beats TPE in 10/12.

Every method runs Algorithm 1's loop (nascomp.search) with the same evaluator, the same seeds and
the same first K random architectures per seed. Methods: ``ours`` (conf defaults), ``flat``
(kernel=flat), ``paper`` (kernel=paper), ``random``, ``tpe``, ``rea``; any of them may carry Hydra
overrides in brackets, e.g. ``ours[search.K=1]`` or ``ours[kernel.objective=marginal,kernel.layers=2]``.

    python benchmarks/search_efficiency.py --space nb201 --dataset cifar10,cifar100,imagenet \
        --objective accuracy,compression --methods ours,flat,random,tpe,rea --seeds 20 \
        --budgets 50,100,160 --csv results.csv

The CSV gets one row per method x seed x budget (columns method, space, dataset, objective, seed,
budget, best, regret, train_s, acq_s; the last two are seconds per step of kernel training and
acquisition), appended as runs finish; rows already in it are not rerun. The markdown table
(mean ± sd of the best found, mean regret ± standard error, seconds per step) is printed from the
whole CSV. Measured results and hardware: README, "Search efficiency".
"""
from __future__ import annotations

import argparse
import csv
import functools
import logging
import math
import os
import re
import time
from collections import defaultdict
from multiprocessing import Pool
from pathlib import Path

import numpy as np

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
BASE_METHODS = {
    "ours": [],
    "flat": ["kernel=flat"],
    "paper": ["kernel=paper"],
    "random": ["search.method=random"],
    "tpe": ["search.method=tpe"],
    "rea": ["search.method=rea"],
}
# NAS-Bench-201 cells have 9 layers and edge offsets <= 5: n = 8 drops only always-zero columns.
SPACE_OVERRIDES = {"nb201": ["kernel.max_offset=8"]}
COLUMNS = ["method", "space", "dataset", "objective", "seed", "budget", "best", "regret", "train_s", "acq_s"]


def parse_methods(spec: str) -> list[tuple[str, list[str]]]:
    """``"ours,ours[search.K=1,kernel.layers=2],tpe"`` -> [(label, overrides), ...]."""
    out = []
    for label in re.findall(r"[^,\[]+(?:\[[^\]]*\])?", spec):
        m = re.fullmatch(r"([^\[]+)(?:\[(.*)\])?", label.strip())
        name, extra = m.group(1), m.group(2)
        if name not in BASE_METHODS:
            raise SystemExit(f"unknown method {name!r}; choose from {', '.join(BASE_METHODS)}, optionally with [overrides]")
        out.append((label.strip(), BASE_METHODS[name] + (extra.split(",") if extra else [])))
    return out


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return hydra_compose(config_name="config", overrides=overrides)


@functools.lru_cache(maxsize=None)
def nb201_space(dataset: str):
    from nascomp.nb201 import NB201Space

    return NB201Space(dataset)


def run_one(job: tuple) -> list[dict]:
    """One method on one seed: a row per budget."""
    import torch

    from nascomp.evaluator import TableEvaluator
    from nascomp.search import run_search

    torch.set_num_threads(1)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    label, overrides, dataset, objective, seed, budgets = job
    cfg = compose(SPACE_OVERRIDES["nb201"] + overrides)
    cfg.search.T = math.ceil(max(budgets) / cfg.search.K) - 1
    space = nb201_space(dataset)
    evaluator = TableEvaluator(space.accuracy, space.params, space.reference, objective)
    result = run_search(space, evaluator, cfg, seed, budget=max(budgets))
    steps = max(result.steps, 1)
    optimum = evaluator.optimum
    return [
        dict(method=label, space="nb201", dataset=dataset, objective=objective, seed=seed, budget=b,
             best=result.best_after(b), regret=optimum - result.best_after(b),
             train_s=result.seconds.get("train", 0.0) / steps, acq_s=result.seconds.get("acquisition", 0.0) / steps)
        for b in budgets
    ]


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as fh:
        return list(csv.DictReader(fh))


def table(rows: list[dict], budgets: list[int], methods: list[str]) -> str:
    """Markdown: per dataset/objective, one row per method."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["objective"])].append(r)
    lines = []
    for (dataset, objective), rs in sorted(groups.items()):
        head = ["method", "seeds"] + [f"best @{b}" for b in budgets] + [f"regret @{b}" for b in budgets] + ["train s/step", "acq s/step"]
        lines += [f"\n**{dataset}, {objective}**\n", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for method in methods:
            mr = [r for r in rs if r["method"] == method]
            if not mr:
                continue
            cells = [method, str(len({r["seed"] for r in mr}))]
            fmt = "{:.3f}" if objective == "accuracy" else "{:.4f}"
            for key in ("best", "regret"):
                for b in budgets:
                    v = np.array([float(r[key]) for r in mr if int(r["budget"]) == b])
                    if len(v) == 0:
                        cells.append("–")
                    elif key == "best":
                        cells.append(f"{fmt.format(v.mean())} ± {fmt.format(v.std(ddof=1) if len(v) > 1 else 0.0)}")
                    else:
                        cells.append(f"{fmt.format(v.mean())} ± {fmt.format(v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else 0.0)}")
            for key in ("train_s", "acq_s"):
                v = np.array([float(r[key]) for r in mr])
                cells.append(f"{v.mean():.2f}" if v.mean() > 0 else "–")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--space", default="nb201", choices=["nb201"])
    p.add_argument("--dataset", default="cifar10", help="comma list of cifar10, cifar100, imagenet")
    p.add_argument("--objective", default="accuracy", help="comma list of accuracy, compression")
    p.add_argument("--methods", default="ours,flat,random,tpe,rea")
    p.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1 (plus --seed-offset)")
    p.add_argument("--seed-offset", type=int, default=0)
    p.add_argument("--budgets", default="50,100,160")
    p.add_argument("--csv", default="search_efficiency.csv")
    p.add_argument("--workers", type=int, default=1, help="parallel processes, one thread each")
    args = p.parse_args()

    methods = parse_methods(args.methods)
    budgets = sorted(int(b) for b in args.budgets.split(","))
    path = Path(args.csv)
    done = {(r["method"], r["dataset"], r["objective"], int(r["seed"])) for r in read_rows(path)}
    jobs = [(label, ov, d, o, s, budgets)
            for s in range(args.seed_offset, args.seed_offset + args.seeds)
            for d in args.dataset.split(",") for o in args.objective.split(",")
            for label, ov in methods if (label, d, o, s) not in done]
    start = time.time()
    new_file = not path.exists()
    with path.open("a", newline="") as fh, Pool(args.workers) as pool:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        if new_file:
            writer.writeheader()
        for i, rows in enumerate(pool.imap_unordered(run_one, jobs)):
            writer.writerows(rows)
            fh.flush()
            print(f"[{i + 1}/{len(jobs)} {time.time() - start:.0f}s] {rows[0]['method']} {rows[0]['dataset']} "
                  f"{rows[0]['objective']} seed {rows[0]['seed']}: regret " + " ".join(f"{r['regret']:.4f}" for r in rows), flush=True)
    rows = [r for r in read_rows(path) if r["dataset"] in args.dataset.split(",") and r["objective"] in args.objective.split(",")]
    print(table(rows, budgets, [label for label, _ in methods]))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
