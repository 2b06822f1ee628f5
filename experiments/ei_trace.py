"""Is a NAS-Bench-201 search held back by its acquisition maximiser or by its kernels? A step-by-step trace.

Each step, every kernel proposes the best candidate of its pool (``search.acquisition``: evolution or
random samples) by its own expected improvement. NAS-Bench-201 is small enough to score every cell
not yet evaluated with the same EI, so for each kernel and step this prints:

- ``prop_rank``: the rank of the kernel's proposal in its EI over all unevaluated cells (0: the pool
  held the kernel's global maximiser, so a better maximiser would propose the same);
- ``better_rank``: the rank, in the same EI, of the best-scored cell that beats the incumbent (the
  cells ``better`` of the table do): high when the kernel's model puts every better cell low;
- ``prop_regret``: the proposal's regret (table optimum minus its value; points or f).

Scoring all cells happens after the step's proposals are made, from the same posteriors, so it changes
nothing in the search: the run is the benchmark's own (``benchmarks/search_efficiency.py``'s methods,
``ours`` with ``kernel=nb201``) and ends at the CSV's regret. The kernels' EI is reached by wrapping
``nascomp.search.maximize`` for the run (``unittest.mock.patch``).

    python experiments/ei_trace.py --dataset cifar10 --objective accuracy --seed 1012 [--method ours] [--budget 160]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmark's method table and config composer


def ranks(scores, i: int) -> int:
    """How many entries of ``scores`` (1-D tensor) are strictly above entry ``i``."""
    return int((scores > scores[i]).sum())


def trace(dataset: str, objective: str, seed: int, method: str = "ours", budget: int = 160, chunk: int = 4000):
    """Run one search; returns (rows, final regret): a row per kernel and step, as the module docstring."""
    import torch

    import nascomp.search as search
    from benchmarks.search_efficiency import compose, nb201_space, parse_methods
    from nascomp.nb201 import TableEvaluator

    space = nb201_space(dataset)
    evaluator = TableEvaluator(space.accuracy, space.params, space.reference, objective)
    cells = space.all()
    value = {c.key: evaluator.f(c.code) for c in cells}
    optimum = evaluator.optimum
    maximize, rows, step = search.maximize, [], [0]

    def traced(score_all, space_, cfg, k, best, exclude, rng, neighbours=None):
        unevaluated = [c for c in cells if c.key not in exclude]  # before the proposals join ``exclude``
        chosen = maximize(score_all, space_, cfg, k, best, exclude, rng, neighbours=neighbours)
        step[0] += 1
        scores = torch.cat([score_all([unevaluated[i: i + chunk]] * k) for i in range(0, len(unevaluated), chunk)], 1)
        where = {c.key: i for i, c in enumerate(unevaluated)}
        incumbent = max(value[a.key] for a in best)
        better = np.flatnonzero([value[c.key] > incumbent for c in unevaluated])
        for a, j in chosen:
            s = scores[j]
            first = int(better[int(torch.argmax(s[better]))]) if len(better) else None
            rows.append({"step": step[0], "kernel": j, "incumbent_regret": optimum - incumbent, "better": len(better),
                         "prop_rank": ranks(s, where[a.key]), "better_rank": None if first is None else ranks(s, first),
                         "prop_regret": optimum - value[a.key]})
        return chosen

    overrides = dict(parse_methods(method, "nb201"))[method]
    cfg = compose(overrides)
    cfg.search.T = -(-budget // cfg.search.K) - 1
    torch.set_num_threads(1)
    with mock.patch.object(search, "maximize", traced):
        result = search.run_search(space, evaluator, cfg, seed, budget=budget)
    return rows, optimum - result.best_after(budget)


def summary(rows: list[dict]) -> str:
    """One line: how often the pool held each kernel's global EI maximiser (and one of its top 3), and
    the median rank of the best-scored better cell over the second half of the steps."""
    n = len(rows)
    late = [r["better_rank"] for r in rows if r["step"] > max(r["step"] for r in rows) / 2 and r["better_rank"] is not None]
    return (f"kernel-steps {n}: proposal is the kernel's global EI maximiser in {sum(r['prop_rank'] == 0 for r in rows)}, "
            f"in its top 3 in {sum(r['prop_rank'] < 3 for r in rows)}; best-scored better cell, median rank over the "
            f"second half of the steps: {statistics.median(late) if late else 'none'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="cifar10", help="cifar10 | cifar100 | imagenet")
    p.add_argument("--objective", default="accuracy", help="accuracy | compression")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--method", default="ours", help="a kernel method of the benchmark, e.g. ours or \"ours[search.K=4]\"")
    p.add_argument("--budget", type=int, default=160)
    a = p.parse_args()
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    rows, regret = trace(a.dataset, a.objective, a.seed, a.method, a.budget)
    print("| step | incumbent regret | better cells | prop_rank per kernel | better_rank per kernel | prop_regret per kernel |")
    print("|---|---|---|---|---|---|")
    for s in sorted({r["step"] for r in rows}):
        rs = [r for r in rows if r["step"] == s]
        cols = [" ".join(str(r[c]) for r in rs) for c in ("prop_rank", "better_rank")]
        cols.append(" ".join(format(r["prop_regret"], ".3g") for r in rs))
        print(f"| {s} | {rs[0]['incumbent_regret']:.4g} | {rs[0]['better']} | {cols[0]} | {cols[1]} | {cols[2]} |")
    print(summary(rows))
    print(f"final regret at {a.budget}: {regret:.4g}")


if __name__ == "__main__":
    main()
