"""Expected improvement against hand-computed values; the maximisers' exclusion rules."""
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from nascomp.acquisition import expected_improvement, maximize
from nascomp.nb201 import NB201Space


def ei_by_hand(mean, var, best):
    s = math.sqrt(var)
    u = (mean - best) / s
    pdf = math.exp(-u * u / 2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + math.erf(u / math.sqrt(2)))
    return s * (u * cdf + pdf)


@pytest.mark.parametrize("log", [False, True])
def test_ei_equals_hand_computed(log):
    mean = torch.tensor([[1.0, 0.0, -2.0], [0.3, 0.3, 5.0]], dtype=torch.float64)  # (K=2, C=3)
    var = torch.tensor([[4.0, 1.0, 0.25], [0.01, 1.0, 2.0]], dtype=torch.float64)
    best = torch.tensor([0.0, 0.5], dtype=torch.float64)
    ei = expected_improvement(mean, var, best, log=log)
    assert ei.shape == (2, 3)
    expected = torch.tensor([[ei_by_hand(m, v, best[k].item()) for m, v in zip(mean[k].tolist(), var[k].tolist())] for k in range(2)],
                            dtype=torch.float64)
    got = ei.exp() if log else ei
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert ei_by_hand(1.0, 4.0, 0.0) == pytest.approx(1.3955931, abs=1e-6)  # 2 (0.5 Φ(0.5) + φ(0.5))


@pytest.fixture(scope="module")
def space():
    return NB201Space("cifar10")


@pytest.mark.parametrize("maximizer", ["random", "evolution"])
def test_maximize_never_proposes_excluded_or_duplicates(space, maximizer):
    rng = np.random.default_rng(0)
    cfg = OmegaConf.create({"maximizer": maximizer, "samples": 40, "parents": 3, "generations": 2, "random_share": 0.5,
                            "local_kernels": 0})
    evaluated = [space.sample(rng) for _ in range(30)]
    exclude = {a.key for a in evaluated}
    target = {a.key for a in evaluated}

    def score(pools):  # every kernel likes the same architecture most: the excluded ones
        return torch.tensor([[1.0 if a.key in target else -float(sum(a.ops)) for a in p] for p in pools])

    chosen = maximize(score, space, cfg, 4, evaluated, exclude, rng)
    assert [k for _, k in chosen] == [0, 1, 2, 3]
    keys = [a.key for a, _ in chosen]
    assert len(keys) == 4 and len(set(keys)) == 4
    assert not set(keys) & target
    assert set(keys) <= exclude  # exclude grows with the chosen


def test_a_kernel_whose_pool_was_all_taken_proposes_nothing_and_the_others_keep_their_index(space, monkeypatch):
    """Kernels 0 and 1 hold only cell A and kernel 2 only B: kernel 0 takes A, kernel 1 nothing, and B is
    kernel 2's (it was credited to kernel 1 before)."""
    import nascomp.acquisition as acquisition

    a, b = space.cell([3] * 6), space.cell([2] * 6)
    monkeypatch.setattr(acquisition, "candidate_pools", lambda *args: [[a], [a], [b]])
    cfg = OmegaConf.create({"maximizer": "random", "samples": 1, "local_kernels": 0})
    chosen = maximize(lambda pools: torch.zeros(len(pools), max(len(p) for p in pools)), space, cfg, 3, [], set(),
                      np.random.default_rng(0))
    assert [(x.key, k) for x, k in chosen] == [(a.key, 0), (b.key, 2)]


def test_random_maximizer_picks_the_best_scoring(space):
    rng = np.random.default_rng(1)
    cfg = OmegaConf.create({"maximizer": "random", "samples": 200, "parents": 3, "generations": 2, "local_kernels": 0})
    # score = number of 3x3 convs: with 200 samples per kernel the best has at least 4
    chosen = maximize(lambda pools: torch.tensor([[float(sum(o == 3 for o in a.ops)) for a in p] for p in pools]),
                      space, cfg, 2, [], set(), rng)
    assert all(sum(o == 3 for o in a.ops) >= 4 for a, _ in chosen)


@pytest.mark.parametrize("share", [0.0, 0.5])
def test_evolution_rounds_mix_in_random_samples(space, share):
    """random_share of each round's candidates are random samples; the rest are one-edit mutants."""
    rng = np.random.default_rng(2)
    cfg = OmegaConf.create({"maximizer": "evolution", "samples": 40, "parents": 3, "generations": 2, "random_share": share,
                            "local_kernels": 0})
    parent = space.cell([0] * 6)
    rounds = []

    def score(pools):
        rounds.append([list(p) for p in pools])
        return torch.tensor([[-float(sum(a.ops)) for a in p] for p in pools])  # prefer cells near the parent

    maximize(score, space, cfg, 2, [parent], {parent.key}, rng)
    assert len(rounds) == 3  # two rounds, then the final scoring of the whole pool
    for pool in rounds[0]:  # round 1: mutants of the parent are one edge away
        hops = [sum(o != 0 for o in a.ops) for a in pool]
        assert len(pool) == 20
        assert sum(h == 1 for h in hops) == 20 - int(share * 20)
        assert sum(h >= 3 for h in hops) >= (5 if share else 0)
    if not share:  # without random samples nothing is more than `generations` edits from the parent
        assert all(sum(o != 0 for o in a.ops) <= 2 for pool in rounds[-1] for a in pool)


def test_local_kernels_choose_the_incumbents_unevaluated_neighbours_by_ei(space):
    """The first local_kernels kernels choose among the best architecture's unevaluated neighbours
    (walking down the ranking when it has too few left), each by its own score; the others as before."""
    rng = np.random.default_rng(3)
    cfg = OmegaConf.create({"maximizer": "evolution", "samples": 40, "parents": 3, "generations": 2,
                            "random_share": 0.5, "local_kernels": 2})
    incumbent, second = space.cell([0] * 6), space.cell([4] * 6)
    around = space.neighbours(incumbent)
    evaluated = [incumbent, second] + around[:23]  # one neighbour of the incumbent left unevaluated
    exclude = {a.key for a in evaluated}

    def score(pools):  # far from both parents scores highest, so a local kernel's choice is not the EI argmax of the space
        return torch.tensor([[float(sum(o == 2 for o in a.ops)) for a in p] for p in pools])

    chosen = [a for a, _ in maximize(score, space, cfg, 4, evaluated, set(exclude), rng, neighbours=space.neighbours)]
    assert len({a.key for a in chosen}) == 4
    # two local kernels: the incumbent has one unevaluated neighbour left, so `second`'s 24 join the pool
    pool = {around[23].key} | {a.key for a in space.neighbours(second)}
    assert {a.key for a in chosen[:2]} <= pool
    assert [sum(o == 2 for o in a.ops) for a in chosen[:2]] == [1, 1]  # the pool's best scores (around[23] scores 0)
    assert all(sum(o == 2 for o in a.ops) >= 3 for a in chosen[2:])  # the others search the whole space
    one = maximize(score, space, OmegaConf.merge(cfg, {"local_kernels": 1}), 4, evaluated, set(exclude), rng,
                   neighbours=space.neighbours)
    assert one[0][0].key == around[23].key  # one local kernel: the incumbent's last unevaluated neighbour
    with pytest.raises(ValueError, match="neighbourhood"):
        maximize(score, space, cfg, 4, evaluated, set(exclude), rng)
