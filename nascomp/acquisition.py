"""Expected improvement (paper 3.3) and its maximisation over candidates drawn from the space.

    EI(x) = s(x) [u Φ(u) + φ(u)],   u = (μ(x) - f*) / s(x)

computed by BoTorch's analytic ``LogExpectedImprovement`` (default) or ``ExpectedImprovement``
on a posterior the kernel module has already computed. f* is the best reward in the kernel's own
training subset (``best_f: subset``, the reference) or the best evaluated so far (``global``).

Maximisers (``acquisition.maximizer``): ``random`` scores ``samples`` random architectures per
kernel (the reference); ``evolution`` mutates the best evaluated architectures with the space's
own operator for ``generations`` rounds, keeping the ``parents`` best by EI (paper Table 6);
``random_share`` of each round's candidates are random samples instead of mutants, so a search
whose best architectures sit in a poor region can still leave it.
With ``local_kernels`` n > 0 (either maximiser), the first n kernels choose instead among the
unevaluated neighbours (``Space.neighbours``, local search's neighbourhood) of the best evaluated
architecture that still has some (walking down the ranking until there are at least n of them), by
their own EI: a share of every step climbs from the incumbent as local search does.
Neither ever proposes an architecture in ``exclude`` (already evaluated, or already proposed by
another kernel in the same step).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from botorch.acquisition.analytic import ExpectedImprovement, LogExpectedImprovement
from botorch.models.model import Model
from botorch.posteriors.gpytorch import GPyTorchPosterior
from gpytorch.distributions import MultivariateNormal
from linear_operator.operators import DiagLinearOperator
from omegaconf import DictConfig
from torch import Tensor

from nascomp.schema import MAXIMIZERS
from nascomp.search_space import Architecture, Space


class _FixedPosterior(Model):
    """A BoTorch model whose posterior at X (..., 1, 1) is the precomputed entry X indexes."""

    num_outputs = 1

    def __init__(self, mean: Tensor, var: Tensor):
        super().__init__()
        self.mean, self.var = mean, var  # (K, C) each

    def posterior(self, X: Tensor, output_indices=None, observation_noise=False, posterior_transform=None):
        idx = X[..., 0, 0].long()  # (K, C): candidate index within its kernel
        mean = self.mean.gather(-1, idx).unsqueeze(-1)  # (K, C, 1)
        var = self.var.gather(-1, idx).unsqueeze(-1)
        return GPyTorchPosterior(MultivariateNormal(mean, DiagLinearOperator(var)))


def expected_improvement(mean: Tensor, var: Tensor, best_f: Tensor, log: bool = True) -> Tensor:
    """(log) EI of K kernels' candidates: mean, var (K, C), best_f (K,) -> (K, C)."""
    acq_class = LogExpectedImprovement if log else ExpectedImprovement
    acq = acq_class(_FixedPosterior(mean, var), best_f=best_f.view(-1, 1, 1))
    idx = torch.arange(mean.shape[-1], dtype=mean.dtype).expand_as(mean)  # (K, C)
    return acq(idx.reshape(*mean.shape, 1, 1))


def reward_ei(mean: Tensor, var: Tensor, levels: Tensor, inverse: Callable[[Tensor], Tensor] | None, cap: float = math.inf,
              log: bool = True, points: int = 64) -> Tensor:
    """(Log) EI of the reward r = inverse(t), t ~ N(mean, var) a kernel's target, over levels given in
    target units: E[max(0, r - inverse(L))]. mean, var (C,), levels (m,) -> (m, C); or levels (m, C),
    one per candidate (``search.target=accuracy``: each candidate's own threshold) -> (m, C).
    ``inverse`` None: EI in the target's own units, in closed form (``expected_improvement``); the
    rewards are an affine map of the targets (no warp), so each kernel's argmax is the same.

    No closed form once ``inverse`` is not affine (the power warp), so by quadrature of the tail formula:
    with e = (t - mean) / s and r(e) = inverse(mean + s e), increasing,
    E[max(0, r - r(e_L))] = ∫_{e_L}^∞ P(e' > e) dr(e) = ∫ Φ(-e) dr(e), summed over ``points`` intervals of
    e from e_L = (L - mean) / s to where Φ(-e) is negligible (e_L + 8 / max(1, e_L), or 8 for e_L < 0),
    Φ at each interval's midpoint (log Φ, so the log form is finite far in the tail). ``cap`` bounds r
    where the warp's inverse runs off to infinity (Yeo-Johnson with λ < 0)."""
    levels = levels if levels.dim() == 2 else levels.unsqueeze(-1)  # (m, C) or (m, 1)
    if inverse is None:  # E[max(0, t - L)] = E[max(0, (t - L) - 0)]: the threshold moves into the mean
        diff = mean - levels  # (m, C)
        return expected_improvement(diff, var.expand_as(diff), torch.zeros(len(diff), dtype=diff.dtype), log=log)
    s = var.sqrt()
    e_lo = (levels - mean) / s  # (m, C)
    span = (8.0 + (-e_lo).clamp_min(0.0)) / e_lo.clamp_min(1.0)
    grid = torch.linspace(0.0, 1.0, points + 1, dtype=mean.dtype)
    e = e_lo.unsqueeze(-1) + span.unsqueeze(-1) * grid  # (m, C, points + 1)
    r = inverse(mean.unsqueeze(-1) + s.unsqueeze(-1) * e).clamp_max(cap)
    r[..., 0] = inverse(levels).clamp_max(cap)  # exactly the level, where the sum starts
    dr = torch.diff(r, dim=-1).clamp_min(0.0)
    log_tail = torch.special.log_ndtr(-(e[..., 1:] + e[..., :-1]) / 2)
    out = torch.logsumexp(log_tail + torch.log(dr), dim=-1)
    return out if log else out.exp()


def distinct(draw: Callable[[], Architecture], n: int, exclude: set[str]) -> list[Architecture]:
    """Up to n distinct architectures from ``draw()`` not in ``exclude`` (at most 20 n draws)."""
    out, keys = [], set(exclude)
    for _ in range(20 * n):
        a = draw()
        if a.key not in keys:
            out.append(a)
            keys.add(a.key)
            if len(out) == n:
                break
    return out


def random_candidates(space: Space, n: int, exclude: set[str], rng: np.random.Generator) -> list[Architecture]:
    """Up to n distinct random architectures not in ``exclude``. In a space that lists its members
    (``all()``, as NAS-Bench-201's) the draws that missed are made up from the members left, so fewer
    than n come back only when fewer than n are left."""
    out = distinct(lambda: space.sample(rng), n, exclude)
    listed = getattr(space, "all", None)
    if len(out) < n and callable(listed):
        taken = set(exclude) | {a.key for a in out}
        left = [a for a in listed() if a.key not in taken]
        out += [left[i] for i in rng.choice(len(left), min(n - len(out), len(left)), replace=False)]
    return out


def mutants(space: Space, parents: Sequence[Architecture], n: int, exclude: set[str], rng: np.random.Generator) -> list[Architecture]:
    """Up to n distinct mutants of random parents, not in ``exclude``."""
    return distinct(lambda: space.mutate(parents[int(rng.integers(len(parents)))], rng), n, exclude)


def maximize(score_all: Callable[[list[list[Architecture]]], Tensor], space: Space, cfg: DictConfig,
             num_kernels: int, best: Sequence[Architecture], exclude: set[str], rng: np.random.Generator,
             neighbours: Callable[[Architecture], list[Architecture]] | None = None) -> list[tuple[Architecture, int]]:
    """One proposal per kernel, each with its kernel's index. ``score_all(cands)`` scores K equal-length
    candidate lists, (K, C); ``cfg`` is ``search.acquisition``; ``best`` the evaluated architectures,
    best first (the first parents of ``evolution``); ``neighbours(a)``: a's neighbourhood, needed when
    ``cfg.local_kernels`` > 0.

    Kernel k takes its best-scoring candidate that no earlier kernel took (none when every candidate of
    its pool was taken: then fewer than K come back, each still named by its own kernel); ``exclude`` grows.
    """
    pools = candidate_pools(score_all, space, cfg, num_kernels, best, exclude, rng)
    local = min(cfg.local_kernels, num_kernels)
    if local:
        if neighbours is None:
            raise ValueError("search.acquisition.local_kernels > 0 needs the space's neighbourhood")
        pool = local_pool(neighbours, best, local, exclude)
        pools[:local] = [list(pool) if pool else pools[k] for k in range(local)]
    scores = _score_ragged(score_all, pools)
    chosen = []
    for k in range(num_kernels):
        for i in torch.argsort(scores[k][: len(pools[k])], descending=True).tolist():
            if pools[k][i].key not in exclude:
                chosen.append((pools[k][i], k))
                exclude.add(pools[k][i].key)
                break
    return chosen


def local_pool(neighbours: Callable[[Architecture], list[Architecture]], best: Sequence[Architecture], n: int,
               exclude: set[str]) -> list[Architecture]:
    """The distinct unevaluated (not in ``exclude``) neighbours of ``best[0]``, then of ``best[1]`` and
    so on, until there are at least n of them (fewer only when the ranking runs out)."""
    out: dict[str, Architecture] = {}
    for a in best:
        for b in neighbours(a):
            if b.key not in exclude:
                out.setdefault(b.key, b)
        if len(out) >= n:
            break
    return list(out.values())


def candidate_pools(score_all: Callable[[list[list[Architecture]]], Tensor], space: Space, cfg: DictConfig,
                    num_kernels: int, best: Sequence[Architecture], exclude: set[str], rng: np.random.Generator) -> list[list[Architecture]]:
    """Each kernel's candidates (``maximize``'s arguments; none in ``exclude``, which is not changed):
    random samples, or the mutants and samples of every round of evolution, scored by ``score_all``."""
    if cfg.maximizer == "random":
        pools = [random_candidates(space, cfg.samples, exclude, rng) for _ in range(num_kernels)]
    elif cfg.maximizer == "evolution":
        per_round = max(1, cfg.samples // cfg.generations)
        parents = [list(best[: cfg.parents]) for _ in range(num_kernels)]
        pools = [[] for _ in range(num_kernels)]
        fresh = int(round(cfg.random_share * per_round))  # random samples among each round's candidates
        for _ in range(cfg.generations):
            kids = [mutants(space, parents[k], per_round - fresh, exclude | {a.key for a in pools[k]}, rng) for k in range(num_kernels)]
            if fresh:
                kids = [kids[k] + random_candidates(space, fresh, exclude | {a.key for a in pools[k] + kids[k]}, rng) for k in range(num_kernels)]
            scores = _score_ragged(score_all, kids)
            for k in range(num_kernels):
                pools[k] += kids[k]
                order = torch.argsort(scores[k][: len(kids[k])], descending=True)
                parents[k] = [kids[k][i] for i in order[: cfg.parents].tolist()] or parents[k]
    else:
        raise ValueError(f"acquisition.maximizer must be one of {', '.join(MAXIMIZERS)}, got {cfg.maximizer!r}")
    return pools


def _score_ragged(score_all: Callable[[list[list[Architecture]]], Tensor], pools: list[list[Architecture]]) -> Tensor:
    """Score lists of unequal length by padding each with its own first element: (K, max C)."""
    width = max(len(p) for p in pools)
    if width == 0:
        return torch.empty(len(pools), 0)
    padded = [p + [p[0]] * (width - len(p)) if p else [] for p in pools]
    if any(not p for p in padded):  # a kernel without candidates: borrow any, then ignore
        filler = next(p for p in padded if p)
        padded = [p or filler for p in padded]
    return score_all(padded)
