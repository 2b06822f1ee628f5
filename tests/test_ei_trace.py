"""experiments/ei_trace.py: the trace of a NAS-Bench-201 search changes nothing in it, and its ranks and
regrets agree with the table."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("ei_trace", ROOT / "experiments" / "ei_trace.py")
ei_trace = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ei_trace)

METHOD = "ours[search.K=2,search.acquisition.samples=30]"


def test_trace_is_the_benchmarks_search_and_agrees_with_the_table():
    from benchmarks.search_efficiency import compose, nb201_space, parse_methods
    from nascomp.nb201 import TableEvaluator
    from nascomp.search import run_search

    rows, regret = ei_trace.trace("cifar10", "compression", seed=3, method=METHOD, budget=6)
    space = nb201_space("cifar10")
    evaluator = TableEvaluator(space.accuracy, space.params, space.reference, "compression")
    cfg = compose(dict(parse_methods(METHOD, "nb201"))[METHOD])
    cfg.search.T = 2
    plain = run_search(space, evaluator, cfg, 3, budget=6)  # the same search without the trace
    assert regret == pytest.approx(evaluator.optimum - plain.best_after(6), abs=1e-12)
    assert [(r["step"], r["kernel"]) for r in rows] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    values = {c.key: evaluator.f(c.code) for c in space.all()}
    for r in rows:
        proposed = [x for x in plain.history if x.step == r["step"]][r["kernel"]]
        assert r["prop_regret"] == pytest.approx(evaluator.optimum - values[proposed.arch.key], abs=1e-12)
        before = [x for x in plain.history if x.step < r["step"]]
        incumbent = max(values[x.arch.key] for x in before)
        assert r["incumbent_regret"] == pytest.approx(evaluator.optimum - incumbent, abs=1e-12)
        assert r["better"] == sum(v > incumbent for k, v in values.items() if k not in {x.arch.key for x in before})
        assert 0 <= r["prop_rank"] < len(values) and 0 <= r["better_rank"] < len(values)
    assert "kernel-steps 4: proposal is the kernel's global EI maximiser in" in ei_trace.summary(rows)


def test_ranks_count_strictly_higher_scores():
    import torch

    s = torch.tensor([0.5, 2.0, 0.5, 1.0])
    assert [ei_trace.ranks(s, i) for i in range(4)] == [2, 0, 2, 1]
