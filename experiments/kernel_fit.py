"""How well do the kernels of a NAS-Bench-201 search predict the cells they have not seen? A fit diagnosis.

For each cell (dataset, objective) and seed, the benchmark's ``--method`` (default ``ours``, with
``kernel=nb201``; e.g. ``"ours[kernel.sigma2_grid=null]"``, σ² fixed, as the committed rows) searches to
``--budget`` evaluations. Each variant of the kernel (a list of overrides; ``base`` is the method unchanged)
(with the σ² grid default, a ``kernel.sigma2=...`` variant sets only the σ² of training: the GP then takes
a value of the grid) is then fitted on exactly that data, with the same random subsets (``KernelProposer.fit`` with a
generator seeded by the seed), and predicts every cell not evaluated. Per variant:

- ``spearman``: the Spearman correlation of each kernel's posterior mean with the table's f over the
  unevaluated cells, averaged over the K kernels;
- ``recall``: the share of the ``--top`` best unevaluated cells (by the table) that are among the
  ``--within`` best by the kernels' mean prediction (the posterior means averaged over the kernels).

The search is run once per seed; only the fits differ, so the variants are compared on the same data.
Fitting changes nothing in the search. Rows go to ``--out`` (JSON lines, resumed: a row counts as done
for the same method, cell, seed, variant, budget, ``--top`` and ``--within``); the table printed is the mean over
the seeds that have every variant.

    python experiments/kernel_fit.py --method "ours[kernel.sigma2_grid=null]" --dataset cifar10,cifar100,imagenet \\
        --objective accuracy,compression --seeds 0-5 --budget 80 --variants "base,kernel.sigma2=0.5,kernel.sigma2=1.0,kernel.sigma2=2.0,kernel.embedding=flat"
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmark's method table and config composer


def search_state(dataset: str, objective: str, seed: int, budget: int, method: str = "ours"):
    """(space, evaluator, result): the benchmark's ``method`` (a kernel method's label) searched to ``budget`` evaluations."""
    from benchmarks.search_efficiency import compose, nb201_space, parse_methods
    from nascomp.nb201 import TableEvaluator
    from nascomp.search import run_search

    space = nb201_space(dataset)
    evaluator = TableEvaluator(space.accuracy, space.params, space.reference, objective)
    cfg = compose(dict(parse_methods(method, "nb201"))[method])
    cfg.search.T = -(-budget // cfg.search.K) - 1
    return space, evaluator, run_search(space, evaluator, cfg, seed, budget=budget)


def overrides(variant: str) -> list[str]:
    """``base`` -> []; ``"kernel.sigma2=1.0+kernel.noise=0.01"`` -> its overrides."""
    return [] if variant == "base" else variant.split("+")


def fit(space, evaluator, result, variant: str, seed: int, method: str = "ours"):
    """``variant``'s K kernels fitted on ``result``'s successful evaluations (and the reference, where f knows
    it) as the search's last step would fit them, with the subsets drawn from a generator seeded by ``seed``:
    (proposer, kernels, the architectures, their subsets (K, N), the rewards y)."""
    import torch

    from benchmarks.search_efficiency import compose, parse_methods
    from nascomp.search import make_proposer

    cfg = compose(dict(parse_methods(method, "nb201"))[method] + overrides(variant))
    proposer = make_proposer(space, evaluator, cfg, seed)
    ok = [r for r in result.history if not r.failed]
    archs, f = [r.arch for r in ok], [r.f for r in ok]
    if evaluator.reference_f is not None:
        archs, f = [space.reference] + archs, [evaluator.reference_f] + f
    y = torch.tensor(f, dtype=torch.float64) * evaluator.reward_scale
    module, mask, y = proposer.fit(archs, y, cfg.search.K, np.random.default_rng(seed), result.history)
    return proposer, module, archs, mask, y


def fit_scores(space, evaluator, result, variant: str, seed: int, top: int = 50, within: int = 500,
               chunk: int = 4000, method: str = "ours") -> dict:
    """Fit ``variant``'s kernels (``fit``) and score the unevaluated cells (module docstring)."""
    import torch
    from scipy.stats import spearmanr

    proposer, module, archs, _, _ = fit(space, evaluator, result, variant, seed, method)
    seen = {a.key for a in archs}
    cells = [c for c in space.all() if c.key not in seen]
    truth = np.array([evaluator.f(c.code) for c in cells])
    k = module.num_kernels
    with torch.no_grad():
        mean = torch.cat([module.posterior(torch.stack([proposer.featurize(cells[i: i + chunk])] * k))[0]
                          for i in range(0, len(cells), chunk)], 1).numpy()  # (K, cells)
    rho = statistics.fmean(float(spearmanr(mean[j], truth).statistic) for j in range(k))
    best = set(np.argsort(-truth, kind="stable")[:top].tolist())
    predicted = set(np.argsort(-mean.mean(0), kind="stable")[:within].tolist())
    return {"spearman": rho, "recall": len(best & predicted) / top, "unevaluated": len(cells)}


def loo_losses(space, evaluator, result, seed: int, grid: list[float], method: str = "ours") -> dict:
    """The kernels' own training objective (Eq. 5, the leave-one-out posterior loss on each kernel's subset)
    of ours' kernels (``fit`` of ``base``), re-evaluated with σ² (relative) set to each value
    of ``grid`` and nothing else changed: ``loss`` the mean over the K kernels per value, ``chosen`` how many
    of the K kernels have their lowest loss at each value (what a per-kernel choice of σ² by Eq. 5 would take)."""
    import torch

    from nascomp.kernel import pack

    proposer, module, archs, mask, y = fit(space, evaluator, result, "base", seed, method)
    x, y, mask = pack(proposer.featurize(archs), y, mask)
    with torch.no_grad():
        z = module.embed(x).double()
        losses = module.sigma2_losses(z, module.targets(y.double(), mask)[0], mask, grid).numpy()  # (grid, K)
    best = np.argmin(losses, 0)
    return {"grid": list(grid), "loss": losses.mean(1).tolist(), "chosen": [int((best == i).sum()) for i in range(len(grid))]}


def seeds_of(spec: str) -> list[int]:
    """``"0-5"`` -> 0..5; ``"1,4,7"`` -> those."""
    if "-" in spec:
        lo, hi = spec.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in spec.split(",")]


def table(rows: list[dict], variants: list[str]) -> str:
    """Markdown: per cell, the seeds with every variant and each variant's mean Spearman and recall."""
    cells = list(dict.fromkeys((r["dataset"], r["objective"]) for r in rows))
    out = [f"| cell | seeds | Spearman: {' / '.join(variants)} | recall: the same |", "|---|---|---|---|"]
    for cell in cells:
        got = {(r["seed"], r["variant"]): r for r in rows if (r["dataset"], r["objective"]) == cell}
        seeds = sorted({s for s, _ in got if all((s, v) in got for v in variants)})
        if not seeds:
            continue
        means = [[statistics.fmean(got[(s, v)][m] for s in seeds) for v in variants] for m in ("spearman", "recall")]
        out.append(f"| {cell[0]} {cell[1]} | {len(seeds)} ({seeds[0]}–{seeds[-1]}) | "
                   + " | ".join(" / ".join(f"{x:.2f}" for x in m) for m in means) + " |")
    return "\n".join(out)


def loo_table(rows: list[dict]) -> str:
    """Markdown: per cell, the mean Eq. 5 loss at each σ² of the grid and the kernels choosing each (summed)."""
    if not rows:
        return ""
    grid = rows[0]["grid"]
    out = [f"| cell | seeds | Eq. 5 loss at σ² {' / '.join(f'{g:g}' for g in grid)} | kernels choosing each |", "|---|---|---|---|"]
    for cell in sorted({(r["dataset"], r["objective"]) for r in rows}):
        got = [r for r in rows if (r["dataset"], r["objective"]) == cell]
        loss = [statistics.fmean(r["loss"][i] for r in got) for i in range(len(grid))]
        chosen = [sum(r["chosen"][i] for r in got) for i in range(len(grid))]
        out.append(f"| {cell[0]} {cell[1]} | {len(got)} | {' / '.join(f'{x:.3f}' for x in loss)} | {' / '.join(map(str, chosen))} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="cifar10", help="comma-separated: cifar10, cifar100, imagenet")
    p.add_argument("--objective", default="compression", help="comma-separated: accuracy, compression")
    p.add_argument("--seeds", default="0-5", help="a range 0-5 or a list 0,3,7 (tuning seeds: < 1000)")
    p.add_argument("--budget", type=int, default=80)
    p.add_argument("--method", default="ours", help="the benchmark's kernel method that searches and whose kernels the variants change, "
                   "e.g. \"ours[kernel.sigma2_grid=null]\" (the committed rows)")
    p.add_argument("--variants", default="base,kernel.sigma2=1.0",
                   help="comma-separated; 'base' is --method unchanged; join several overrides of one variant with '+'")
    p.add_argument("--top", type=int, default=50)
    p.add_argument("--within", type=int, default=500)
    p.add_argument("--out", default="kernel_fit.jsonl", help="JSON lines, one per (cell, seed, variant); resumed")
    p.add_argument("--loo-grid", default="", help="e.g. 0.25,0.5,1,2: also ours' Eq. 5 loss at each σ² (variant 'loo')")
    a = p.parse_args()
    import logging

    import torch

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    variants = a.variants.split(",")
    grid = [float(g) for g in a.loo_grid.split(",")] if a.loo_grid else []
    out = Path(a.out)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    setting = (a.method, a.budget, a.top, a.within)  # rows of another method, budget or recall measure are kept, not counted here
    rows = [r for r in rows if (r.get("method"), r["budget"], r.get("top", 50), r.get("within", 500)) == setting]
    done = {(r["dataset"], r["objective"], r["seed"], r["variant"]) for r in rows}
    for dataset in a.dataset.split(","):
        for objective in a.objective.split(","):
            for seed in seeds_of(a.seeds):
                todo = [v for v in variants if (dataset, objective, seed, v) not in done]
                loo = bool(grid) and (dataset, objective, seed, "loo") not in done
                if not todo and not loo:
                    continue
                space, evaluator, result = search_state(dataset, objective, seed, a.budget, a.method)
                def record(variant: str, scores: dict) -> None:  # one row, kept and appended to --out
                    row = {"method": a.method, "dataset": dataset, "objective": objective, "seed": seed, "budget": a.budget, "top": a.top,
                           "within": a.within, "variant": variant, **scores}
                    rows.append(row)
                    with out.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
                    print(json.dumps(row), flush=True)

                if loo:
                    record("loo", loo_losses(space, evaluator, result, seed, grid, a.method))
                for v in todo:
                    record(v, {**fit_scores(space, evaluator, result, v, seed, a.top, a.within, method=a.method),
                               "incumbent_regret": evaluator.optimum - result.best_after(a.budget)})
    print(table(rows, variants))
    if grid:
        print(loo_table([r for r in rows if r["variant"] == "loo" and r["grid"] == grid]))


if __name__ == "__main__":
    main()
