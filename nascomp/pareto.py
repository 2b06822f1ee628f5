"""Pareto mode (``search.mode=pareto``): the front of (accuracy up, cost down), its hypervolume, and
expected hypervolume improvement as the acquisition of the learned-kernel GPs.

Normalisation and reference point (the only copy; ``Scale``). Accuracy a and cost c map to

    u = (a - acc_low) / (acc_high - acc_low)          (higher is better)
    v = (c - cost_low) / (cost_high - cost_low)       (lower is better)

with the ranges of the problem: on NAS-Bench-201 the lowest and highest accuracy and cost of the whole
table; on real students [0, the teacher's accuracy] and [0, the teacher's cost]. The reference point
is ``REFERENCE`` = (u, v) = (-0.1, 1.1), 10 % of each range beyond its worst end, so the extreme points
of a front still add volume. The hypervolume of a set is the area of the (v, u) region that its
points dominate and that dominates the reference point: at most 1.1 x 1.1 = 1.21 (a point of cost
``cost_low`` and accuracy ``acc_high``); a student more accurate than the teacher (u > 1) adds more.

The acquisition. The cost of a candidate is known before it is trained (parameters and FLOPs from
the architecture, NAS-Bench-201's latency and size from its table), so the GPs model accuracy only
(with ``search.acquisition.pareto_mean=cost``, the default with a cost other than params (``auto``:
``schema.resolved_pareto_mean``), accuracy less ``cost_prior``'s fit of it on the cost; with ``front``,
less the evaluated front's line;
each step's levels then move per candidate by the prior at its cost, and the EI is of the residual).
For a candidate of known normalised cost v and Gaussian target u ~ N(mu, s^2), the hypervolume it
adds is the area between u and the front's attained level L(x) = max(u_ref, max{u_i : v_i <= x})
over the costs x in [v, v_ref]. L is a step function, so with w_k the width of its k-th step within
[v, v_ref] and L_k its level there

    HVI(u) = sum_k w_k max(0, u - L_k),      EHVI = E[HVI] = sum_k w_k EI(mu, s; L_k)

exactly, in closed form: the target of BoTorch's qLogNEHVI / qNParEGO for this case without Monte
Carlo (``tests/test_pareto.py`` checks it against a Monte Carlo estimate). EI is BoTorch's analytic
(Log)ExpectedImprovement (``nascomp.acquisition.expected_improvement``); the log form is
log EHVI = logsumexp_k(log w_k + log EI_k), finite where EI underflows. The kernels' targets are u
standardised (and, with ``kernel.warp=power``, Yeo-Johnson-warped) per kernel, and the front's
levels are mapped the same way, so EHVI is computed in each kernel's target units: the hypervolume
of the same front with the accuracy axis rescaled by an increasing map (the front itself unchanged;
with ``kernel.warp=none`` it is the accuracy EHVI divided by the kernel's standard deviation, the
same argmax). With ``search.acquisition.pareto_units=accuracy`` each step's EI is measured in u itself,
E[max(0, g⁻¹(t) - L_k)] for the kernel's Gaussian target t and its inverse warp g⁻¹ (``nascomp.acquisition.reward_ei``, by
quadrature): the expected gain of the hypervolume that is scored, where the warp (λ of 2-4 on
NAS-Bench-201) otherwise weighs a gain at the accurate end many times one at the cheap end.

A batch of K (``ParetoProposer``): one kernel per batch slot, as in the single-objective search. The
candidates come from the existing maximisers (``nascomp.acquisition.candidate_pools``, scored by
each kernel's EHVI against the evaluated front; the evolution maximiser's parents are the front's
most accurate points, or with ``search.acquisition.pareto_parents=spread`` points spread along it,
greedily by hypervolume: ``spread``); then, greedily, kernel k takes its best candidate by
EHVI against the front plus the earlier slots' picks at kernel k's posterior mean (the kriging
believer), so a batch spreads along the front instead of stacking on one gap. With
``search.acquisition.pareto_batch=independent`` each kernel scores against the evaluated front alone,
as the single-objective kernels do: the batch's spread then comes only from the kernels' own subsets.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from nascomp.acquisition import candidate_pools, reward_ei
from nascomp.reward import COST_OF
from nascomp.schema import resolved_pareto_mean
from nascomp.search_space import Architecture, Space

REFERENCE = (-0.1, 1.1)  # (u, v): normalised accuracy and cost of the hypervolume's reference point


@dataclass(frozen=True)
class Scale:
    """The ranges that normalise accuracy and cost (module docstring)."""

    acc_low: float
    acc_high: float
    cost_low: float
    cost_high: float

    def __post_init__(self):
        if not (self.acc_high > self.acc_low and self.cost_high > self.cost_low):
            raise ValueError(f"a Pareto scale needs acc_high > acc_low and cost_high > cost_low, got {self}")

    def u(self, accuracy) -> np.ndarray:
        return (np.asarray(accuracy, dtype=float) - self.acc_low) / (self.acc_high - self.acc_low)

    def v(self, cost) -> np.ndarray:
        return (np.asarray(cost, dtype=float) - self.cost_low) / (self.cost_high - self.cost_low)


def front_mask(cost: Sequence[float], accuracy: Sequence[float]) -> np.ndarray:
    """(n,) bool: the points no other point dominates (cost no higher and accuracy no lower, one of
    them strictly). Of equal points, the first is on the front. A point of non-finite cost or accuracy
    (NaN, inf) is never on it."""
    c, a = np.asarray(cost, dtype=float), np.asarray(accuracy, dtype=float)
    on = np.zeros(len(c), dtype=bool)
    best = -math.inf
    finite = np.flatnonzero(np.isfinite(c) & np.isfinite(a))
    for i in sorted(finite, key=lambda i: (c[i], -a[i], i)):
        if a[i] > best:
            on[i], best = True, a[i]
    return on


def front_ranks(cost: Sequence[float], accuracy: Sequence[float]) -> np.ndarray:
    """(n,) int: non-dominated sorting; 0 for the front, 1 for the front of the rest, ...; the points
    of non-finite cost or accuracy, never on a front, share the last rank."""
    c, a = np.asarray(cost, dtype=float), np.asarray(accuracy, dtype=float)
    rank, left, r = np.full(len(c), -1), np.arange(len(c)), 0
    while len(left):
        on = front_mask(c[left], a[left])
        if not on.any():  # only non-finite points left: each round must take one, or this never ends
            break
        rank[left[on]] = r
        left, r = left[~on], r + 1
    rank[left] = r
    return rank


def steps(v: Sequence[float], u: Sequence[float], u_ref: float = REFERENCE[0]) -> tuple[np.ndarray, np.ndarray]:
    """The attained-level step function of points (v, u) (normalised): breakpoints x (m + 1,) and
    levels L (m,), L[k] the best u of a point with v <= x on [x[k], x[k+1]); x[0] = -inf, x[m] = v_ref,
    L[0] = u_ref. Points at or beyond the reference add no step. ``u_ref``: the reference level in
    the units of u (a kernel's target units: ``ParetoProposer``)."""
    v_ref = REFERENCE[1]
    v, u = np.asarray(v, dtype=float), np.asarray(u, dtype=float)
    inside = (v < v_ref) & (u > u_ref)
    v, u = v[inside], u[inside]
    on = front_mask(v, u)
    order = np.argsort(v[on], kind="stable")
    fv, fu = v[on][order], u[on][order]  # the front, cost ascending (so accuracy ascending)
    return np.concatenate([[-np.inf], fv, [v_ref]]), np.concatenate([[u_ref], fu])


def hypervolume(v: Sequence[float], u: Sequence[float]) -> float:
    """Hypervolume of points (v normalised cost, u normalised accuracy) against ``REFERENCE``:
    sum over the front, cost ascending, of (v_{i+1} - v_i)(u_i - u_ref), v_{n+1} = v_ref."""
    x, level = steps(v, u)
    return float(np.sum((x[2:] - x[1:-1]) * (level[1:] - REFERENCE[0])))


def hypervolume_curve(v: Sequence[float], u: Sequence[float]) -> np.ndarray:
    """(n,): the hypervolume of the first i + 1 points, i = 0..n-1 (non-decreasing)."""
    return np.array([hypervolume(v[: i + 1], u[: i + 1]) for i in range(len(v))])


def contributions(v: Sequence[float], u: Sequence[float]) -> np.ndarray:
    """(n,): the hypervolume each point adds to the others' (0 off the front)."""
    total = hypervolume(v, u)
    idx = np.arange(len(v))
    return np.array([total - hypervolume(np.asarray(v)[idx != i], np.asarray(u)[idx != i]) for i in idx])


def spread(v: Sequence[float], u: Sequence[float], k: int) -> list[int]:
    """Indices of k points spread along the front: greedily the point whose removal loses the most
    hypervolume from the points kept so far (each front point's exclusive area), front points before
    the rest (ranked by ``front_ranks``, then accuracy)."""
    v, u = np.asarray(v, dtype=float), np.asarray(u, dtype=float)
    chosen: list[int] = []
    for _ in range(min(k, len(v))):
        left = [i for i in range(len(v)) if i not in chosen]
        base = hypervolume(v[chosen], u[chosen]) if chosen else 0.0
        gain = [hypervolume(v[chosen + [i]], u[chosen + [i]]) - base for i in left]
        if max(gain) > 0:
            chosen.append(left[int(np.argmax(gain))])
        else:  # nothing adds volume: the best by rank, then accuracy
            rank = front_ranks(v[left], u[left])
            chosen.append(left[min(range(len(left)), key=lambda j: (rank[j], -u[left[j]]))])
    return chosen


def ehvi(mean: Tensor, var: Tensor, cost: Tensor, x: Tensor, levels: Tensor, log: bool = True,
         inverse: Callable[[Tensor], Tensor] | None = None, cap: float = math.inf) -> Tensor:
    """(Log) expected hypervolume improvement (module docstring) of C candidates of one kernel:
    mean, var (C,) of the target, cost (C,) normalised, the front's step function ``x`` (m + 1,),
    ``levels`` (m,) in the target's units -> (C,). A candidate at or beyond v_ref scores 0 (-inf).
    With ``inverse`` (the kernel's map from targets back to normalised accuracy) the improvement is
    measured in accuracy, the units of the hypervolume, by ``reward_ei``; without it, in target units."""
    lo = torch.maximum(x[:-1].unsqueeze(-1), cost.unsqueeze(0))  # (m, C)
    w = (x[1:].unsqueeze(-1) - lo).clamp_min(0.0)  # (m, C): width of step k right of the candidate
    ei = reward_ei(mean, var, levels, inverse, cap, log=log)  # (m, C)
    if log:
        return torch.logsumexp(torch.log(w) + ei, dim=0)
    return (w * ei).sum(0)


def cost_prior(v: Sequence[float], u: Sequence[float], fit: str = "cost") -> Callable[[np.ndarray], np.ndarray]:
    """The GPs' prior mean as a function of normalised cost (``search.acquisition.pareto_mean``), fitted to the
    accuracies ``u`` of the costs ``v`` (finite points only); flat beyond the costs seen.

    ``cost``: the increasing least-squares fit (scikit-learn's isotonic regression). A student is no more
    accurate for being cheaper, so a candidate the kernels know nothing of (far from every evaluated
    student in the embedding) is expected to be as accurate as the evaluated students of its cost, not as
    the mean student: with a zero mean, a student too thin to learn anything looks as promising as any
    other, and at the cheap end, where the front's level is chance, its EHVI is the largest of all.

    ``front``: the evaluated front itself, its points joined by straight lines (increasing, as the front
    is). Where accuracies at a cost are bimodal (a student learns or stays at chance) the mean fit lies
    below the front; the front's line lies above its own step levels between two of its points, so a
    candidate in a gap of the front (where the front rises most, the knee) is expected to fill part of
    it. The kernels' targets are standardised, so their prior sits the mean shortfall below the line."""
    if fit not in ("cost", "front"):
        raise ValueError(f"cost_prior: fit must be cost or front, got {fit!r}")
    v, u = np.asarray(v, dtype=float), np.asarray(u, dtype=float)
    finite = np.isfinite(v) & np.isfinite(u)  # a point of non-finite cost or accuracy is never on the front, nor in the fit
    v, u = v[finite], u[finite]
    if fit == "front":
        on = front_mask(v, u)
        order = np.argsort(v[on], kind="stable")
        fv, fu = v[on][order], u[on][order]
        return lambda c: np.interp(np.asarray(c, dtype=float), fv, fu)
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(v, u)
    return lambda c: iso.predict(np.asarray(c, dtype=float))


@dataclass(frozen=True)
class ParetoProblem:
    """What Pareto mode needs of a search problem: the Record field of the cost (``num_params``,
    ``flops``, ``latency_ms``, ``memory_mb``), the cost of an unevaluated architecture (``cost_of``:
    known before training), the ``Scale``, and the reference architecture's (accuracy, cost) when it
    is known without evaluating it (the teacher), which every kernel then holds as data."""

    cost: str
    cost_of: Callable[[Architecture], float]
    scale: Scale
    reference: tuple[float, float] | None = None

    def points(self, records) -> tuple[np.ndarray, np.ndarray]:
        """Normalised (v, u) of records (failed ones included: filter first)."""
        return self.scale.v([getattr(r, self.cost) for r in records]), self.scale.u([r.accuracy for r in records])

    def hypervolume(self, records) -> float:
        """The hypervolume of the successful records."""
        ok = [r for r in records if not r.failed]
        return hypervolume(*self.points(ok)) if ok else 0.0

    def curve(self, records) -> np.ndarray:
        """(n,): hypervolume after each record (failed ones add nothing)."""
        out, ok = [], []
        for r in records:
            if not r.failed:
                ok.append(r)
            out.append(hypervolume(*self.points(ok)) if ok else 0.0)
        return np.array(out)

    def front(self, records) -> list:
        """The successful records on the front, cost ascending."""
        ok = [r for r in records if not r.failed]
        if not ok:
            return []
        v, u = self.points(ok)
        on = front_mask(v, u)
        return sorted((r for r, o in zip(ok, on) if o), key=lambda r: getattr(r, self.cost))

    def spread(self, records, k: int) -> list:
        """k successful records spread along the front (``spread``), in the order chosen: the finalists
        of a Pareto run."""
        ok = [r for r in records if not r.failed]
        return [ok[i] for i in spread(*self.points(ok), k)] if ok else []


class ParetoProposer:
    """Algorithm 1 in Pareto mode: K kernels fitted to normalised accuracy (``KernelProposer.fit``; less the
    cost prior with ``pareto_mean`` cost or front, and then ``cap`` bounds the residual),
    each proposing by EHVI, greedy with the kriging believer (module docstring)."""

    def __init__(self, kernels, problem: ParetoProblem):
        """``kernels``: a ``nascomp.search.KernelProposer`` (its space, settings, featuriser and fit)."""
        self.kernels, self.problem = kernels, problem
        self.space: Space = kernels.space
        self.seconds = kernels.seconds

    def propose(self, history, k: int, exclude: set[str], rng: np.random.Generator) -> list[tuple[Architecture, int | None]]:
        ok, cold = self.kernels.cold_start(history, k, exclude, rng)
        if cold is not None:
            return cold
        p = self.problem
        v, u = p.points(ok)
        archs, y, vy = [r.arch for r in ok], list(u), list(v)
        if p.reference is not None:
            archs, y, vy = [self.space.reference] + archs, [float(p.scale.u(p.reference[0]))] + y, [float(p.scale.v(p.reference[1]))] + vy
        objective = {"name": {field: name for name, field in COST_OF.items()}[p.cost]}
        mean = resolved_pareto_mean(self.kernels.scfg.acquisition.pareto_mean, objective)
        prior = cost_prior(vy, y, mean) if mean != "zero" else None
        if prior is not None:  # the kernels model what the cost does not explain
            y = list(np.asarray(y) - prior(np.asarray(vy)))
        module, mask, _ = self.kernels.fit(archs, torch.tensor(y, dtype=torch.float64), k, rng, history, target="accuracy")

        start = time.perf_counter()
        scfg, featurize = self.kernels.scfg, self.kernels.featurize
        x, level = steps(v, u)
        x = torch.from_numpy(x)  # (m + 1,)
        levels = module.standardise(torch.from_numpy(level).expand(k, -1)) if prior is None else None  # (K, m): each kernel's target units
        log_ei = scfg.acquisition.log_ei
        cost_cache: dict[str, float] = {}

        def cost(pool: list[Architecture]) -> Tensor:
            for a in pool:
                if a.key not in cost_cache:
                    cost_cache[a.key] = float(p.scale.v(p.cost_of(a)))
            return torch.tensor([cost_cache[a.key] for a in pool], dtype=torch.float64)

        acq = scfg.acquisition
        warped = acq.pareto_units == "accuracy" and module.transform.lam is not None  # else target units: an affine map of accuracy, the same argmax
        cap = float(np.max(u if prior is None else y)) + 1.0  # accuracy (with a cost prior, its residual) past the warp's bound (module docstring)
        inverse = [(lambda t, j=j: module.transform.inverse(t, j)) if warped else None for j in range(k)]

        def thresholds(level_u: np.ndarray, costs: list[Tensor]) -> Tensor:
            """With a cost prior, each kernel's EHVI levels in its target units, per candidate: the front's
            levels ``level_u`` (m,) in normalised accuracy less the prior at the cost of each of kernel j's
            candidates ``costs[j]`` (C,): (K, m, C)."""
            rows = [torch.from_numpy(level_u[:, None] - prior(c.numpy())[None, :]) for c in costs]
            return module.standardise(torch.stack(rows))

        def score(pools: list[list[Architecture]]) -> Tensor:
            mean, var = module.posterior(torch.stack([featurize(pl) for pl in pools]))  # (K, C)
            costs = [cost(pl) for pl in pools]
            lv = levels if prior is None else thresholds(level, costs)
            return torch.stack([ehvi(mean[j], var[j], costs[j], x, lv[j], log=log_ei, inverse=inverse[j], cap=cap)
                                for j in range(k)])

        rank = front_ranks(v, u)
        order = sorted(range(len(ok)), key=lambda i: (rank[i], -u[i]))  # front first, most accurate first
        if acq.maximizer == "evolution" and acq.pareto_parents == "spread":  # parents spread along the front, then the rest
            first = spread(v, u, acq.parents)
            chosen = set(first)
            order = first + [i for i in order if i not in chosen]
        parents = [ok[i].arch for i in order]
        pools = candidate_pools(score, self.space, scfg.acquisition, k, parents, exclude, rng)
        width = max(len(pl) for pl in pools)
        if width == 0:
            return []
        padded = [pl + [pl[0]] * (width - len(pl)) if pl else [] for pl in pools]
        filler = next(pl for pl in padded if pl)
        mean, var = module.posterior(torch.stack([featurize(pl or filler) for pl in padded]))  # (K, C)
        if prior is None:
            tu = module.standardise(torch.from_numpy(u).expand(k, -1)).numpy()  # (K, n): the points in target units
        costs = [cost(pl or filler) for pl in padded]
        base = levels if prior is None else thresholds(level, costs)  # each kernel's levels against the evaluated front
        picks: list[Architecture] = []
        out = []
        for j in range(k):
            cj = costs[j]
            xj, lj = x, base[j]
            if picks and acq.pareto_batch == "believer":  # kriging believer: the earlier picks join the front at kernel j's posterior mean
                pm, _ = module.posterior(torch.stack([featurize(picks)] * k))  # (K, P)
                if prior is None:
                    bx, bl = steps(np.concatenate([v, cost(picks).numpy()]), np.concatenate([tu[j], pm[j].numpy()]), float(levels[j, 0]))
                    xj, lj = torch.from_numpy(bx), torch.from_numpy(bl)
                else:  # the picks at the prior plus kernel j's mean, in accuracy; then the front's levels per candidate
                    vp = cost(picks).numpy()
                    up = prior(vp) + module.transform.inverse(pm[j], j).numpy()
                    bx, bl = steps(np.concatenate([v, vp]), np.concatenate([u, up]))
                    xj, lj = torch.from_numpy(bx), thresholds(bl, [cj] * k)[j]
            score_j = ehvi(mean[j], var[j], cj, xj, lj, log=log_ei, inverse=inverse[j], cap=cap)
            for i in torch.argsort(score_j[: len(pools[j])], descending=True).tolist():
                if pools[j][i].key not in exclude:
                    picks.append(pools[j][i])
                    exclude.add(pools[j][i].key)
                    out.append((pools[j][i], j))
                    break
        self.seconds["acquisition"] += time.perf_counter() - start
        return out

