"""Where a NAS-Bench-201 Pareto search misses hypervolume: its shortfall against the table's true front,
split into bins of normalised cost.

The hypervolume of a front is the integral over cost v in [0, v_ref] of (attained accuracy u(v) - u_ref),
u(v) the best normalised accuracy at cost <= v (``nascomp.pareto``). The shortfall of a search is the
integral of u_true(v) - u_search(v); this prints it per cost bin, per method and budget, mean over seeds,
so that "ours at 80 trails random search at 160" can be read as "at the cheap end" or "at the accurate
end". Each run is the benchmark's own (``benchmarks/search_efficiency.py``'s methods, ``ours`` with
``kernel=nb201``), so its totals equal the CSV's ``hv_regret``.

    python experiments/front_gaps.py --dataset cifar10 --cost params --methods "ours[kernel.sigma2_grid=null],random" \
        --seeds 10 --budgets 80,160   # the README's tables: σ² fixed, as ours was when they ran
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmark's method table and config composer

BINS = (0.0, 0.03, 0.07, 0.2, 0.4, 0.7, 1.1)  # normalised cost; 1.1 is the reference point's v


def integral(v: np.ndarray, u: np.ndarray, lo: float, hi: float) -> float:
    """The integral over cost [lo, hi) of the attained level u(v) - u_ref of points (v, u): exact, from
    ``nascomp.pareto.steps`` (the same step function ``hypervolume`` sums)."""
    from nascomp.pareto import REFERENCE, steps

    x, level = steps(v, u)
    cuts = np.unique(np.clip(np.concatenate([[lo, hi], x[1:]]), lo, hi))  # the segments where u(v) is constant
    left = cuts[:-1]
    return float(np.sum(np.diff(cuts) * (level[np.searchsorted(x, left, side="right") - 1] - REFERENCE[0])))


def shortfall(v: np.ndarray, u: np.ndarray, true_v: np.ndarray, true_u: np.ndarray, bins=BINS) -> np.ndarray:
    """(len(bins) - 1,): the integral of u_true(v) - u(v) over each cost bin."""
    return np.array([integral(true_v, true_u, lo, hi) - integral(v, u, lo, hi) for lo, hi in zip(bins[:-1], bins[1:])])


def main() -> None:
    import torch

    from benchmarks.search_efficiency import compose, nb201_space, parse_methods
    from nascomp.nb201 import TableEvaluator
    from nascomp.pareto import front_mask
    from nascomp.reward import COST_OF
    from nascomp.search import run_search

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="cifar10", help="cifar10 | cifar100 | imagenet")
    p.add_argument("--cost", default="params", help="params | latency")
    p.add_argument("--methods", default="ours,random")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--seed-offset", type=int, default=0)
    p.add_argument("--budgets", default="80,160")
    a = p.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    budgets = sorted(int(b) for b in a.budgets.split(","))
    space = nb201_space(a.dataset)
    problem = space.pareto(COST_OF[a.cost])
    table = space.costs(COST_OF[a.cost])
    codes = list(space.accuracy)
    true_v, true_u = problem.scale.v([table[c] for c in codes]), problem.scale.u([space.accuracy[c] for c in codes])
    on = front_mask(true_v, true_u)  # the true front, once: every bin of every run integrates it
    true_v, true_u = true_v[on], true_u[on]
    evaluator = TableEvaluator(space.accuracy, space.params, space.reference, "accuracy", space.latency)
    rows: dict[tuple[str, int], list[np.ndarray]] = {}
    for label, overrides in parse_methods(a.methods, "nb201"):
        for seed in range(a.seed_offset, a.seed_offset + a.seeds):
            cfg = compose(overrides + ["search.mode=pareto"])
            cfg.search.T = -(-max(budgets) // cfg.search.K) - 1
            history = run_search(space, evaluator, cfg, seed, budget=max(budgets), problem=problem).history
            v, u = problem.points(history)
            for b in budgets:
                rows.setdefault((label, b), []).append(shortfall(v[:b], u[:b], true_v, true_u))
    bins = [f"[{lo:g}, {hi:g})" for lo, hi in zip(BINS[:-1], BINS[1:])]
    print(f"{a.dataset}, accuracy and {a.cost}; seeds {a.seed_offset}-{a.seed_offset + a.seeds - 1}; hypervolume "
          "short of the true front per cost bin, mean over seeds\n")
    print("| method | budget | " + " | ".join(bins) + " | total |")
    print("|---|---|" + "---|" * (len(bins) + 1))
    for (label, b), r in rows.items():
        m = np.mean(r, axis=0)
        print(f"| {label} | {b} | " + " | ".join(f"{x:.4f}" for x in m) + f" | {m.sum():.4f} |")


if __name__ == "__main__":
    main()
