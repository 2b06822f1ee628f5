"""Kernel transfer (paper Table 3), per-step kernels and random-number states, and search.budget."""
import torch

from nascomp.config import compose
from nascomp.nb201 import NB201Space, TableEvaluator
from nascomp.search import run_search


def _setup(*overrides):
    cfg = compose(["space.max_offset=8", "search.K=2", "search.T=2", "search.acquisition.samples=30", *overrides])
    space = NB201Space("cifar10")
    return cfg, space, TableEvaluator(space.accuracy, space.params, space.reference, "compression")


def test_transferred_kernels_are_conditioned_not_trained():
    cfg, space, ev = _setup()
    learned, fit_steps, states = [], [], []
    run_search(space, ev, cfg, seed=0, on_fit=lambda step, s: (fit_steps.append(step), learned.append(s)),
               before_step=lambda step, s: states.append((step, s)))
    assert len(learned) == 2 and [s for s, _ in states] == [1, 2] == fit_steps  # one kernel set and one RNG state per step
    assert not torch.equal(learned[0]["embed.lstm.w_ih.0"], learned[1]["embed.lstm.w_ih.0"])  # trained anew each step
    used = []
    result = run_search(space, ev, cfg, seed=1, transfer=learned[-1], on_fit=lambda step, s: used.append(s))
    assert len(result.history) == 6
    for state in used:  # conditioned on this search's data, weights untouched
        assert all(torch.equal(state[k], learned[-1][k]) for k in state)


def test_budget_overrides_T():
    cfg, space, ev = _setup("search.K=4", "search.T=100", "search.budget=10")
    result = run_search(space, ev, cfg, seed=0)
    assert len(result.history) == 10 and [r.step for r in result.history][-2:] == [2, 2]
