"""Algorithm 1 of the paper, over any search space and any evaluator.

    D <- K random architectures, evaluated
    for t = 1..T:
        train K kernels, kernel k on its own random subset of D (reference always in, f = f_ref)
        x_k <- argmax EI_k over candidates, never an evaluated or already proposed architecture
        D <- D ∪ {(x_k, f(x_k))}, k = 1..K

While fewer than 2 students have succeeded, the kernels have nothing to fit and the step proposes
at random; ``search.max_failed_steps`` consecutive steps in which every student failed end the search
with :class:`SearchFailed` (e.g. a proxy learning rate that diverges everything).

The same loop runs the baselines: only the proposer changes (``nascomp.baselines``), so every
method sees the same first K random architectures for a given seed, the same evaluator and budget.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from nascomp.acquisition import maximize, random_candidates, reward_ei
from nascomp.evaluator import Evaluator
from nascomp.kernel import EmbeddingKernelModule, Featurizer, pack
from nascomp.schema import KERNEL_METHODS, METHODS, MODES, PARETO_METHODS, PARETO_ONLY, TARGETS
from nascomp.search_space import Architecture, Space
from nascomp.transfer import SourceKernels, source_data, zero_shot_search

log = logging.getLogger("nascomp")
SUBSET_TRIES = 100  # draws of the kernels' subsets before short ones are filled up


@dataclass(frozen=True)
class Record:
    """One evaluated architecture of the history; ``proposer`` is the index of the kernel (of K) that
    proposed it (None: a random first architecture or a baseline's).
    A failed evaluation (``failed``) keeps its error; its f = 0 is no reward and no proposer reads it.
    ``flops``, ``latency_ms``, ``memory_mb``: the evaluation's other costs (None where not measured)."""

    arch: Architecture
    f: float
    accuracy: float
    num_params: int
    step: int
    proposer: int | None
    seconds: float
    error: str | None = None
    flops: int | None = None
    latency_ms: float | None = None
    memory_mb: float | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass
class SearchResult:
    history: list[Record]
    seconds: dict[str, float] = field(default_factory=dict)  # time spent per phase, summed over steps
    steps: int = 0

    def top(self, k: int) -> list[Record]:
        """The k best records by f, failed evaluations left out."""
        return sorted((r for r in self.history if not r.failed), key=lambda r: -r.f)[:k]

    def best_after(self, budget: int) -> float:
        """The best f among the first ``budget`` evaluations (failed ones left out; nan if all failed)."""
        return max((r.f for r in self.history[:budget] if not r.failed), default=float("nan"))


class Proposer(Protocol):
    def propose(self, history: list[Record], k: int, exclude: set[str], rng: np.random.Generator) -> list[tuple[Architecture, int | None]]:
        """k new architectures, each with its proposer (the index of the kernel that proposed it; None for
        random and baseline proposals), none in ``exclude``."""


class KernelProposer:
    """Train K kernels on random subsets of D and let each propose its EI maximiser."""

    def __init__(self, space: Space, kernel_cfg: DictConfig, search_cfg: DictConfig, reference_f: float | None,
                 transfer: SourceKernels | None = None, on_fit: Callable[[int, dict, dict], None] | None = None,
                 reward_scale: float = 1.0, split: tuple[Callable[[Architecture], float], float] | None = None,
                 within_caps: Callable[[Architecture], bool | None] | None = None):
        """``transfer``: K kernels learned in another search (paper Table 3, ``kernel.transfer_mode=search``):
        they are conditioned on this search's data but not trained. ``on_fit(step, state_dict, data)``
        receives the kernels of each step (the step whose architectures they propose) and the data
        they were conditioned on (``SourceKernels.data``), e.g. to store them; not for a last step shorter
        than K (a budget that is no multiple of K), whose fewer kernels another search of K could not load.
        ``reward_scale`` (``Evaluator.reward_scale``) puts the kernels' targets on the [0, 1] scale.
        ``split = (g, A_ref)`` (``search.target=accuracy``: ``Evaluator.factor`` and ``reference_accuracy``):
        the kernels model A / A_ref, and EI asks of each candidate x the chance that A(x) / A_ref beats
        f* / g(x), i.e. that f = g A / A_ref beats f* (candidates with g <= 0 cannot).
        ``within_caps`` (``search.acquisition.within_caps``: ``Evaluator.within_caps``): the constraint form's
        caps, checked before training (latency by its prediction); a candidate over a cap scores -inf, so
        each kernel proposes a student that meets every cap whenever its candidates hold one."""
        self.space, self.kcfg, self.scfg, self.reference_f = space, kernel_cfg, search_cfg, reference_f
        self.reward_scale, self.split, self.within_caps = reward_scale, split, within_caps
        self.transfer, self.on_fit = transfer, on_fit
        self.featurize = Featurizer(space, kernel_cfg)
        self.seconds = {"train": 0.0, "acquisition": 0.0}

    def subsets(self, n: int, k: int, rng: np.random.Generator) -> torch.Tensor:
        """(k, n) bool: point i in kernel j's subset with probability subset_prob; at least 2 each
        (n >= 2). Redrawn up to ``SUBSET_TRIES`` times; then each short subset gets 2 random points."""
        if n < 2:
            raise ValueError(f"kernel subsets need at least 2 data points, got {n}")
        for _ in range(SUBSET_TRIES):
            mask = rng.random((k, n)) < self.scfg.subset_prob
            if self.reference_f is not None:
                mask[:, 0] = True  # the reference is data point 0
            if (mask.sum(1) >= 2).all():
                return torch.from_numpy(mask)
        for j in np.flatnonzero(mask.sum(1) < 2):
            mask[j, rng.choice(n, 2, replace=False)] = True
        return torch.from_numpy(mask)

    def fit(self, archs: list[Architecture], y: torch.Tensor, k: int, rng: np.random.Generator,
            history: list[Record], target: str | None = None) -> tuple[EmbeddingKernelModule, torch.Tensor, torch.Tensor]:
        """Train (or, with ``transfer``, condition) k kernels on ``archs`` and their targets y (n,), each on
        its own random subset (the reference, when known, is point 0); ``target`` names what y is for
        ``on_fit``'s data (default: "accuracy" with ``split``, else "f"); returns the kernels, the subsets
        (k, n) and y. The time counts as ``seconds["train"]``."""
        start = time.perf_counter()
        x = self.featurize(archs)
        mask = self.subsets(len(archs), k, rng)
        torch.manual_seed(int(rng.integers(2**31)))
        module = EmbeddingKernelModule(self.kcfg, k, self.featurize.input_size)
        if self.transfer is not None:
            module.load_state_dict(self.transfer.state)
            module.condition(*pack(x, y, mask))
        else:
            module.fit(x, y, mask)
        if self.on_fit is not None and k == self.scfg.K:  # a short last step's k < K kernels are no set to transfer
            self.on_fit(history[-1].step + 1, module.state_dict(), source_data(x, y, mask, target or ("accuracy" if self.split else "f")))
        self.seconds["train"] += time.perf_counter() - start
        return module, mask, y

    def cold_start(self, history: list[Record], k: int, exclude: set[str], rng: np.random.Generator):
        """``(ok, proposals)``: the successful records (failed evaluations carry no reward) and, while fewer
        than 2 have succeeded (nothing to fit a kernel on), ``k`` random proposals instead of the kernels'
        (else ``None``). Used by this proposer and by ``nascomp.pareto``'s."""
        ok = [r for r in history if not r.failed]
        if len(ok) >= 2:
            return ok, None
        log.warning("%d of %d evaluated students succeeded, fewer than the 2 a kernel needs: %d random proposals this step instead of the kernels'",
                    len(ok), len(history), k)
        return ok, [(a, None) for a in random_candidates(self.space, k, exclude, rng)]

    def propose(self, history: list[Record], k: int, exclude: set[str], rng: np.random.Generator) -> list[tuple[Architecture, int | None]]:
        ok, cold = self.cold_start(history, k, exclude, rng)
        if cold is not None:
            return cold
        archs, f = [r.arch for r in ok], [r.f for r in ok]
        if self.reference_f is not None:
            archs, f = [self.space.reference] + archs, [self.reference_f] + f
        f = torch.tensor(f, dtype=torch.float64) * self.reward_scale
        if self.split is None:
            module, mask, y = self.fit(archs, f, k, rng, history)
        else:  # the kernels model the accuracy ratio (the reference's is 1)
            ratio = ([1.0] if self.reference_f is not None else []) + [r.accuracy / self.split[1] for r in ok]
            module, mask, _ = self.fit(archs, torch.tensor(ratio, dtype=torch.float64), k, rng, history)

        start = time.perf_counter()
        best = [r.arch for r in sorted(ok, key=lambda r: -r.f)]
        cap = max(ratio) + 1.0 if self.split is not None else None  # reward_ei's bound on the ratio (acquire: on f)
        proposals = self.acquire(module, f, mask, best, exclude, rng, cap=cap)
        self.seconds["acquisition"] += time.perf_counter() - start
        return proposals

    def acquire(self, module: EmbeddingKernelModule, y: torch.Tensor, mask: torch.Tensor, best: list[Architecture],
                exclude: set[str], rng: np.random.Generator, cap: float | None = None) -> list[tuple[Architecture, int]]:
        """Each of ``module``'s K conditioned kernels proposes its EI maximiser (``search.acquisition``),
        with its index. ``y`` (N,) and ``mask`` (K, N): the data they were conditioned on (f* of EI is
        the best in each kernel's subset, ``best_f: subset``, or in all of it); ``best``: the parents of
        the evolution maximiser, best first; ``exclude`` grows by the proposals."""
        k = mask.shape[0]
        best_f = torch.where(mask, y, -torch.inf).amax(-1) if self.scfg.best_f == "subset" else y.max().expand(k)
        # reward_ei counts a reward past a bounded warp's reach (where its inverse runs to infinity) as ``cap``:
        # by default one unit (rewards on the [0, 1] scale) above the best of ``y``
        cap = float(y.max()) + 1.0 if cap is None else cap

        # EI in f's own units through each kernel's warp inverse (target=accuracy always: f = g r is a product
        # of the ratio r the kernels model; target=f with ei_units=reward), else in the kernels' target units.
        # Without a warp the targets are an affine map of the rewards, one scale per kernel: the same argmax.
        in_rewards = (self.split is not None or self.scfg.acquisition.ei_units == "reward") and module.transform.lam is not None
        inverse = [(lambda t, j=j: module.transform.inverse(t, j)) if in_rewards else None for j in range(k)]
        log = self.scfg.acquisition.log_ei

        def ei(pools: list[list[Architecture]]) -> torch.Tensor:
            xc = torch.stack([self.featurize(p) for p in pools])  # (K, C, ...)
            mean, var = module.posterior(xc)
            if self.split is None:
                level = module.standardise(best_f)  # (K,)
                return torch.stack([reward_ei(mean[j], var[j], level[j:j + 1], inverse[j], cap, log=log)[0] for j in range(k)])
            # EI on f = g r (r the accuracy ratio the kernels model, g known): E[max(0, g r - f*)] =
            # g E[max(0, r - f*/g)], each candidate with its own threshold on r (a ratio past a bounded
            # warp's reach, cap, cannot be beaten).
            g = torch.tensor([[self.split[0](a) for a in p] for p in pools], dtype=torch.float64)  # (K, C)
            ok = g > 0
            need = module.standardise(best_f[:, None] / torch.where(ok, g, 1.0))  # (K, C): the ratio x must beat
            ei = torch.stack([reward_ei(mean[j], var[j], need[j:j + 1], inverse[j], cap, log=log)[0] for j in range(k)])
            scaled = ei + torch.log(torch.where(ok, g, 1.0)) if log else ei * g
            return torch.where(ok, scaled, -torch.inf if log else 0.0)

        within: dict[str, bool | None] = {}  # per candidate key: the evolution maximiser scores candidates twice

        def over_caps(a: Architecture) -> bool:
            if a.key not in within:
                within[a.key] = self.within_caps(a)
            return within[a.key] is False

        def score(pools: list[list[Architecture]]) -> torch.Tensor:
            if self.within_caps is None:
                return ei(pools)
            over = torch.tensor([[over_caps(a) for a in p] for p in pools])
            return ei(pools).masked_fill(over, -torch.inf)

        return maximize(score, self.space, self.scfg.acquisition, k, best, exclude, rng,
                        neighbours=lambda a: self.space.neighbours(a, rng, self.scfg.local.neighbours))


class SearchFailed(RuntimeError):
    """Every student of ``max_failed_steps`` consecutive steps failed (or of the whole search): the
    proxy training cannot work as configured. The failed evaluations stay recorded."""


class Search:
    """Algorithm 1: ``Search(space, evaluator, proposer, K, T, seed).run()``."""

    def __init__(self, space: Space, evaluator: Evaluator, proposer: Proposer, K: int, T: int, seed: int, budget: int | None = None,
                 before_step: Callable[[int, dict], None] | None = None,
                 after_step: Callable[[int, list[Record]], None] | None = None, max_failed_steps: int | None = None):
        """``before_step(step, rng_state)`` is called before each step's proposals (e.g. to record the
        random-number state), ``after_step(step, records)`` with each step's evaluated records (step 0:
        the K random architectures), e.g. to log and track them. ``max_failed_steps``: raise
        :class:`SearchFailed` after this many consecutive steps in which every student failed (None: never)."""
        self.space, self.evaluator, self.proposer = space, evaluator, proposer
        self.before_step, self.after_step = before_step, after_step
        self.K, self.T, self.seed = K, T, seed
        self.budget = budget if budget is not None else K * (T + 1)
        self.max_failed_steps = max_failed_steps

    def run(self) -> SearchResult:
        rng = np.random.default_rng([self.seed, 1])
        known = set() if self.evaluator.reference_f is None else {self.space.reference.key}
        first = random_candidates(self.space, min(self.K, self.budget), known, np.random.default_rng([self.seed, 0]))
        D = self.evaluate([(a, None) for a in first], step=0)  # the same K random ones for every method
        step, failed_steps = 0, self.check_failures(D, D, 0, 0)
        while len(D) < self.budget:
            known |= {r.arch.key for r in D}
            if self.before_step is not None:
                self.before_step(step + 1, rng.bit_generator.state)
            batch = self.proposer.propose(D, min(self.K, self.budget - len(D)), set(known), rng)  # train K kernels, propose K
            if not batch:  # the space is exhausted: no step without an evaluation is counted
                log.warning("the proposer found no unevaluated architecture to propose (the space is exhausted, or its random "
                            "draws found none left): the search stops after step %d with %d of its budget of %d evaluations",
                            step, len(D), self.budget)
                break
            step += 1
            new = self.evaluate(batch, step)  # evaluate K, update D
            D += new
            failed_steps = self.check_failures(D, new, failed_steps, step)
        if all(r.failed for r in D):
            raise SearchFailed(self.failure_message(D, f"every one of the {len(D)} students of the search failed"))
        return SearchResult(D, dict(getattr(self.proposer, "seconds", {})), step)

    def check_failures(self, D: list[Record], new: list[Record], failed_steps: int, step: int) -> int:
        """The count of consecutive all-failed steps after step ``step`` (its records ``new``);
        ``SearchFailed`` at the bound."""
        failed_steps = failed_steps + 1 if new and all(r.failed for r in new) else 0
        if self.max_failed_steps is not None and failed_steps >= self.max_failed_steps:
            raise SearchFailed(self.failure_message(D, f"every student of {failed_steps} consecutive steps (up to step {step}) "
                                                         f"failed (search.max_failed_steps={self.max_failed_steps})"))
        return failed_steps

    @staticmethod
    def failure_message(records: list[Record], what: str) -> str:
        first = next(r.error for r in records if r.failed)
        return (f"{what}; the first error: {first.splitlines()[0]}. Check the proxy recipe (proxy.optimizer.lr, proxy.batch_size), "
                f"the memory it needs and the teacher; the failed evaluations are kept in the store")

    def evaluate(self, batch: list[tuple[Architecture, int | None]], step: int) -> list[Record]:
        evals = self.evaluator.evaluate([a for a, _ in batch], step)
        records = [Record(a, e.f, e.accuracy, e.num_params, step, proposer, e.seconds, e.error, e.flops, e.latency_ms, e.memory_mb)
                   for (a, proposer), e in zip(batch, evals)]
        if self.after_step is not None:
            self.after_step(step, records)
        return records


def kernel_settings(cfg: DictConfig) -> tuple[DictConfig, DictConfig]:
    """The kernel and search settings of a kernel method (``schema.KERNEL_METHODS``): ``ours`` reads
    ``cfg.kernel`` and ``cfg.search``; ``paper``, the reference method, reads the kernel group option
    ``search.paper.kernel`` (``kernel=paper``) and the acquisition of ``search.paper.acquisition``
    (random sampling, 1000 candidates per kernel) over ``cfg.search``: ``kernel.*`` and
    ``search.acquisition.*`` of ``cfg`` are not read, the method is fixed."""
    from nascomp.config import group

    if cfg.search.method == "ours":
        return cfg.kernel, cfg.search
    paper = cfg.search.paper
    kernel = group("kernel", paper.kernel)
    kernel.transfer_from = cfg.kernel.transfer_from  # where kernels come from is not a setting of the method
    kernel.transfer_mode = cfg.kernel.transfer_mode
    search = OmegaConf.merge(cfg.search, {"acquisition": paper.acquisition, "target": paper.target})
    return kernel, search


def make_proposer(space: Space, evaluator: Evaluator, cfg: DictConfig, seed: int, problem=None, **kernel_options) -> Proposer:
    """The proposer of ``cfg.search.method`` (``nascomp.schema.METHODS``; ``kernel_options``:
    ``transfer`` / ``on_fit`` of ``KernelProposer``). ``search.mode=pareto`` needs ``problem``
    (a ``nascomp.pareto.ParetoProblem``) and takes ``schema.PARETO_METHODS``."""
    from nascomp import baselines

    method = cfg.search.method
    if cfg.search.mode == "pareto":
        return make_pareto_proposer(space, cfg, seed, problem, **kernel_options)
    if cfg.search.mode != "single":
        raise ValueError(f"search.mode must be one of {', '.join(MODES)}, got {cfg.search.mode!r}")
    if method in PARETO_ONLY:
        raise ValueError(f"search.method={method} is a multi-objective baseline: it needs search.mode=pareto")
    if method in KERNEL_METHODS:
        kernel, search = kernel_settings(cfg)
        split = None
        if search.target == "accuracy":
            if evaluator.reference_accuracy is None or evaluator.factor(space.reference) is None:
                raise ValueError("search.target=accuracy needs an objective whose cost is known before training "
                                 "(objective=params or flops, caps on num_params or flops only; NAS-Bench-201: compression); "
                                 "use search.target=f")
            split = (evaluator.factor, evaluator.reference_accuracy)
        elif search.target != "f":
            raise ValueError(f"search.target must be one of {', '.join(TARGETS)}, got {search.target!r}")
        within_caps = evaluator.within_caps if search.acquisition.get("within_caps", False) else None
        return KernelProposer(space, kernel, search, evaluator.reference_f, reward_scale=evaluator.reward_scale, split=split,
                              within_caps=within_caps, **kernel_options)
    if method == "random":
        return baselines.RandomProposer(space)
    if method == "tpe":
        return baselines.TPEProposer(space, cfg.search.tpe, cfg.search.K, seed)
    if method == "rea":
        return baselines.REAProposer(space, cfg.search.rea)
    if method == "local":
        return baselines.LocalSearchProposer(space, cfg.search.local)
    if method == "smac":
        budget = cfg.search.get("budget") or cfg.search.K * (cfg.search.T + 1)
        return baselines.SMACProposer(space, cfg.search.K, budget, seed)
    raise ValueError(f"search.method must be one of {', '.join(METHODS)}, got {method!r}")


def make_pareto_proposer(space: Space, cfg: DictConfig, seed: int, problem, **kernel_options) -> Proposer:
    """``search.mode=pareto``: the proposer of ``cfg.search.method`` for the front of ``problem``."""
    from nascomp import baselines
    from nascomp.pareto import ParetoProposer

    method = cfg.search.method
    if problem is None:
        raise ValueError("search.mode=pareto needs the problem's cost and scale (a nascomp.pareto.ParetoProblem)")
    if method not in PARETO_METHODS:
        raise ValueError(f"search.mode=pareto: search.method must be one of {', '.join(PARETO_METHODS)}, got {method!r}")
    if method in KERNEL_METHODS:
        kernel, search = kernel_settings(cfg)
        reference = None if problem.reference is None else float(problem.scale.u(problem.reference[0]))
        return ParetoProposer(KernelProposer(space, kernel, search, reference, **kernel_options), problem)
    if method == "random":
        return baselines.RandomProposer(space)
    if method == "motpe":
        return baselines.MOTPEProposer(space, cfg.search.tpe, cfg.search.K, seed, problem.cost)
    return baselines.NSGA2Proposer(space, cfg.search.nsga2, cfg.search.K, seed, problem.cost)


def run_search(space: Space, evaluator: Evaluator, cfg: DictConfig, seed: int, budget: int | None = None,
               before_step: Callable[[int, dict], None] | None = None,
               after_step: Callable[[int, list[Record]], None] | None = None, problem=None, **kernel_options) -> SearchResult:
    """Algorithm 1 (or a baseline) as configured by ``cfg.search`` / ``cfg.kernel``; the budget is
    ``budget``, else ``cfg.search.budget``, else K (T + 1). ``kernel.transfer_mode=zero_shot``: the K
    proposals of ``kernel_options["transfer"]`` (``SourceKernels``) instead (``nascomp.transfer``).
    ``search.mode=pareto`` needs ``problem`` (``nascomp.pareto.ParetoProblem``)."""
    if cfg.search.method in KERNEL_METHODS and cfg.kernel.get("transfer_mode", "search") == "zero_shot":
        if kernel_options.get("transfer") is None:
            raise ValueError("kernel.transfer_mode=zero_shot needs the source's kernels (kernel.transfer_from)")
        kernel, search = kernel_settings(cfg)
        return zero_shot_search(space, evaluator, kernel, search, seed, kernel_options["transfer"], after_step)
    proposer = make_proposer(space, evaluator, cfg, seed, problem, **kernel_options)
    budget = budget if budget is not None else cfg.search.get("budget")
    search = Search(space, evaluator, proposer, cfg.search.K, cfg.search.T, seed, budget, before_step, after_step,
                    cfg.search.max_failed_steps)
    if kernel_options.get("transfer") is not None and search.budget % cfg.search.K:
        raise ValueError(f"transferred kernels propose K = {cfg.search.K} per step: the budget ({search.budget}) must be a "
                         f"multiple of K")  # a short last step would need k < K of them (schema.validate says the same)
    return search.run()
