"""experiments/front_gaps.py: a Pareto search's hypervolume shortfall per cost bin, checked against the
exact area of hand-made fronts and against the search's own hypervolume."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "front_gaps.py"
spec = importlib.util.spec_from_file_location("front_gaps", SCRIPT)
front_gaps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(front_gaps)


def test_shortfall_is_the_area_between_two_step_functions():
    """True front (v, u) = (0.1, 0.5), (0.5, 0.9); the search found only (0.1, 0.4). Between the two step
    functions lie [0.1, 0.5) x 0.1 and [0.5, 1.1) x 0.5, which the bins split by width."""
    true_v, true_u = np.array([0.1, 0.5]), np.array([0.5, 0.9])
    s = front_gaps.shortfall(np.array([0.1]), np.array([0.4]), true_v, true_u)
    expected = np.array([0.0, 0.0, 0.1 * 0.1, 0.2 * 0.1, 0.1 * 0.1 + 0.2 * 0.5, 0.4 * 0.5])
    assert s == pytest.approx(expected, abs=1e-12)
    assert s.sum() == pytest.approx(0.4 * 0.1 + 0.6 * 0.5, abs=1e-12)
    assert front_gaps.shortfall(true_v, true_u, true_v, true_u) == pytest.approx(np.zeros(6))


def test_integral_is_the_hypervolume_over_the_whole_range():
    """Over [0, v_ref) the integral is ``nascomp.pareto.hypervolume``; before the cheapest point it is 0."""
    from nascomp.pareto import hypervolume

    v, u = np.array([0.3, 0.2, 0.6]), np.array([0.6, 0.7, 0.9])
    assert front_gaps.integral(v, u, 0.0, 1.1) == pytest.approx(hypervolume(v, u), abs=1e-12)
    assert front_gaps.integral(v, u, 0.0, 0.2) == 0.0
    assert front_gaps.integral(v, u, 0.1, 0.4) == pytest.approx(0.2 * 0.8, abs=1e-12)  # the point (0.2, 0.7) from 0.2 on


@pytest.mark.slow
def test_front_gaps_cli_totals_are_the_hypervolume_regret():
    """Random search, one seed: the printed total at each budget is the true hypervolume minus the
    search's (``nascomp.pareto``'s exact figure), to the printed digits."""
    from nascomp.nb201 import NB201Space, TableEvaluator
    from nascomp.search import run_search
    sys.path.insert(0, str(ROOT))
    from benchmarks.search_efficiency import compose

    out = subprocess.run([sys.executable, str(SCRIPT), "--methods", "random", "--seeds", "1", "--seed-offset", "3",
                          "--budgets", "16,32"], capture_output=True, text=True, check=True).stdout
    rows = [x for x in out.splitlines() if x.startswith("| random |")]
    space = NB201Space("cifar10")
    problem = space.pareto("num_params")
    cfg = compose(["search.method=random", "search.mode=pareto"])
    cfg.search.T = 3
    history = run_search(space, TableEvaluator(space.accuracy, space.params, space.reference, "accuracy", space.latency),
                         cfg, 3, budget=32, problem=problem).history
    assert len(rows) == 2
    for row, b in zip(rows, (16, 32)):
        total = float(row.strip("| ").split(" | ")[-1])
        assert total == pytest.approx(space.true_hypervolume("num_params") - problem.hypervolume(history[:b]), abs=6e-5)


@pytest.mark.slow
def test_readme_front_gaps_tables_are_the_searches():
    """The README's front_gaps tables (CIFAR-10 and CIFAR-100 params, tuning seeds 0-9): each ``ours`` total is
    the mean ``hv_regret`` of the committed Pareto rows of those runs; each ``random`` total, which has no
    tuning rows, is recomputed here from its searches; every row's bins sum to its total."""
    import csv

    OURS = "ours[kernel.sigma2_grid=null]"  # σ² fixed: ours when these rows ran
    from nascomp.nb201 import NB201Space, TableEvaluator
    from nascomp.search import run_search
    sys.path.insert(0, str(ROOT))
    from benchmarks.search_efficiency import compose

    rows = list(csv.DictReader((ROOT / "benchmarks" / "results" / "nb201_pareto.csv").open()))
    readme = (ROOT / "README.md").read_text()
    cfg = compose(["search.method=random", "search.mode=pareto"])
    cfg.search.T = 19
    for dataset, title in (("cifar10", "CIFAR-10 params:"), ("cifar100", "CIFAR-100 params:")):
        block = readme.split("\n" + title + "\n", 1)[1].strip().split("\n\n", 1)[0]
        table = [x.strip("| ").split(" | ") for x in block.splitlines()[2:]]
        assert [(r[0], r[1]) for r in table] == [(OURS, "80"), (OURS, "160"), ("random", "80"), ("random", "160")]
        space = NB201Space(dataset)
        problem = space.pareto("num_params")
        evaluator = TableEvaluator(space.accuracy, space.params, space.reference, "accuracy", space.latency)
        best = space.true_hypervolume("num_params")
        random = [run_search(space, evaluator, cfg, seed, budget=160, problem=problem).history for seed in range(10)]
        for method, budget, *bins in table:
            if method == OURS:
                regret = [float(r["hv_regret"]) for r in rows if r["method"] == OURS and r["dataset"] == dataset
                          and r["cost"] == "params" and r["budget"] == budget and r["seed_set"] == "tuning"]
            else:
                regret = [best - problem.hypervolume(h[: int(budget)]) for h in random]
            assert len(regret) == 10
            assert float(bins[-1]) == pytest.approx(np.mean(regret), abs=6e-5)
            assert float(bins[-1]) == pytest.approx(sum(map(float, bins[:-1])), abs=3e-4)
