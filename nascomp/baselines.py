"""Baselines that run in Algorithm 1's loop with the same evaluator, budget and first K random
architectures (paper 6.4), each set as its authors recommend for K evaluations per step.

- ``RandomProposer``: random search.
- ``TPEProposer``: Optuna's TPE over the space's flat view (per-layer keep, per-group shrink ratio,
  per-pair skip; choices for NAS-Bench-201), asked K trials per step (``search.tpe``):
  ``multivariate: true`` (one joint Parzen estimator over all dimensions; Optuna's documentation
  reports it beats the independent one on single-objective problems), ``constant_liar: true`` (the K
  trials of a step are asked before any is told, so each is RUNNING while the next is drawn and
  the liar counts it as a bad result: the K trials spread out instead of being K draws of one model;
  Optuna's recommendation for parallel trials), ``n_startup_trials: null`` = those of the shared
  first K random architectures that succeeded, at least 1 (they are TPE's random start, added to the
  study as finished trials: step 1 is already TPE's; Optuna counts only finished trials against its
  startup, so with K a failed one among them would make all of step 1 random). The TPE of earlier
  tables: ``search.tpe.multivariate=false search.tpe.constant_liar=false search.tpe.n_startup_trials=10``.
- ``REAProposer``: regularized evolution (Real et al. 2019): the last ``population`` evaluated
  architectures are alive; each child mutates the best of ``tournament`` random live members.
- ``LocalSearchProposer``: local search (White, Zela, Ru, Liu, Hutter 2021, "Local search is state
  of the art for NAS benchmarks"): the incumbent's unevaluated neighbours (``Space.neighbours``),
  K per step in random order; see the class.
- ``SMACProposer``: SMAC3's random-forest Bayesian optimisation (``pip install 'nascomp[peer]'``);
  see the class.
- ``search.mode=pareto`` (the front of (accuracy up, cost down), ``nascomp.pareto``): random search,
  and Optuna's two multi-objective samplers told (accuracy, cost): ``MOTPEProposer``, TPE with the
  settings of ``search.tpe`` above (multivariate, constant liar, startup = the first K that
  succeeded; Optuna's TPE takes several directions as they are), and ``NSGA2Proposer``,
  ``NSGAIISampler`` with one generation per step: generation 0 is the shared first K random
  architectures, every ask of step s is in generation s, the children of the parents NSGA-II selects
  (``search.nsga2.population_size``, null = K) from generation s - 1 and its parents, which is how a
  generational sampler batches; Optuna's other defaults: uniform crossover, probability 0.9. Optuna
  itself would start a new generation once the newest holds ``population_size`` finished trials: a
  repeat told mid-step would start it mid-step and a failure (not finished) would keep a step in the
  last one, so the generation is the step (``StepNSGAIISampler``), a repeat is told after the step's
  K asks and a failure as the worst values.

None proposes an architecture already evaluated: a TPE or SMAC trial that lands on one is told its
known f at no cost to the budget (NSGA-II: after the step's K asks) and asked again; one that lands
on an architecture proposed earlier in the same step is told failed (TPE; the first stays RUNNING
for the liar) or stays pending and is told that architecture's f with it (SMAC); an REA child that
does is mutated again. A failed evaluation (``Record.failed``) is no reward: TPE is told the trial
failed, NSGA-II that it scored the worst values (accuracy -inf, cost +inf: a member of its
generation that every success dominates), SMAC that it crashed (``StatusType.CRASHED``, at the worst
cost seen so far: SMAC's own runner gives a crash its ``crash_cost``, by default infinity, which its
log-scaled cost encoding cannot take), REA never picks it as a parent, local search never as an
incumbent.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
from omegaconf import DictConfig

from nascomp.acquisition import random_candidates
from nascomp.search_space import Architecture, Space


def random_one(space: Space, exclude: set[str], rng: np.random.Generator) -> Architecture | None:
    """A proposer's fallback: one random architecture not in ``exclude``, or None when none is left (the
    proposer then returns fewer than k, and ``nascomp.search`` stops once it returns none)."""
    return next(iter(random_candidates(space, 1, exclude, rng)), None)

optuna.logging.set_verbosity(optuna.logging.WARNING)
MAX_TRIES = 100  # asks / mutations per proposal before falling back to a random architecture


class RandomProposer:
    def __init__(self, space: Space):
        self.space = space

    def propose(self, history, k: int, exclude: set[str], rng: np.random.Generator) -> list[tuple[Architecture, None]]:
        return [(a, None) for a in random_candidates(self.space, k, exclude, rng)]


def flat_values(space: Space, arch: Architecture) -> dict:
    """``arch`` in the flat view by dimension name: a choice, a bool or a float."""
    return {d.name: (d.choices[int(v)] if d.kind == "choice" else (bool(v) if d.kind == "bool" else float(v)))
            for d, v in zip(space.flat_dims(), space.to_flat(arch))}


class TPEProposer:
    """Optuna's TPE, asked K trials per step; ``cfg`` is ``search.tpe`` (see the module docstring)."""

    directions = ("maximize",)  # of the values ``value`` gives
    startup_from_first = False  # n_startup_trials: those of the first K random architectures that succeeded

    def __init__(self, space: Space, cfg: DictConfig, K: int, seed: int):
        self.settings = dict(seed=seed, multivariate=cfg.multivariate, constant_liar=cfg.constant_liar)
        self.startup_from_first = cfg.n_startup_trials is None
        self.n_startup = K if self.startup_from_first else cfg.n_startup_trials  # K: until the first K are known
        self.sampler = optuna.samplers.TPESampler(n_startup_trials=self.n_startup, **self.settings)
        self.open(space)

    def open(self, space: Space) -> None:
        """The study of ``self.sampler`` over ``space``'s flat view."""
        self.space = space
        self.study = optuna.create_study(directions=list(self.directions), sampler=self.sampler)
        self.dists = {d.name: _distribution(d) for d in space.flat_dims()}
        self.told: set[str] = set()  # keys of history records already told to the study
        self.known: dict[str, float | None] = {}
        self.pending: dict[str, optuna.trial.Trial] = {}  # asked (RUNNING), not yet told, by architecture
        self.seconds = {"acquisition": 0.0}

    def propose(self, history, k: int, exclude: set[str], rng: np.random.Generator) -> list[tuple[Architecture, None]]:
        start = time.perf_counter()
        if self.startup_from_first and not self.told:  # before the first ask: Optuna counts only finished trials
            succeeded = sum(not r.failed for r in history if r.step == 0)
            if succeeded < self.n_startup:  # one failed: the same settings, startup = those that succeeded
                self.n_startup = max(1, succeeded)
                self.sampler = optuna.samplers.TPESampler(n_startup_trials=self.n_startup, **self.settings)
                self.study.sampler = self.sampler
        for r in history:
            if r.arch.key not in self.told:
                self._tell(r)
        out: list[tuple[Architecture, None]] = []
        for _ in range(k):  # all k asked before any is told: the constant liar sees them RUNNING
            for _ in range(MAX_TRIES):
                trial = self.study.ask(self.dists)
                arch = self.space.from_flat(trial.params)
                if arch.key in self.known:  # evaluated before: tell the known f (or failure), free
                    self._tell_repeat(trial, self.known[arch.key])
                elif arch.key in exclude:  # proposed in this step (still RUNNING for the liar), or known a priori
                    self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                else:
                    self.pending[arch.key] = trial
                    break
            else:
                if (arch := random_one(self.space, exclude, rng)) is None:
                    break
            exclude.add(arch.key)
            out.append((arch, None))
        self.seconds["acquisition"] += time.perf_counter() - start
        return out

    def value(self, record):
        """What the study is told of a successful record: f."""
        return record.f

    def _tell_trial(self, trial: optuna.trial.Trial, f: float | None) -> None:
        """f, or the trial failed (``f`` None: a failed evaluation)."""
        if f is None:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, f)

    def _tell_repeat(self, trial: optuna.trial.Trial, f: float | None) -> None:
        """A trial that landed on an architecture evaluated before: told its known f (or failure) at once."""
        self._tell_trial(trial, f)

    def _added_trial(self, record, f: float | None) -> optuna.trial.FrozenTrial:
        """The finished (or failed) trial of a record evaluated outside the study (the first random architectures)."""
        outcome = ({"state": optuna.trial.TrialState.FAIL} if f is None else
                   {"values": list(f)} if isinstance(f, tuple) else {"value": f})
        return optuna.trial.create_trial(params=flat_values(self.space, record.arch), distributions=self.dists, **outcome)

    def _tell(self, record) -> None:
        """Tell the study an evaluated record: ``value(record)``, or that it failed."""
        f = None if record.failed else self.value(record)
        trial = self.pending.pop(record.arch.key, None)
        if trial is not None:
            self._tell_trial(trial, f)
        else:
            self.study.add_trial(self._added_trial(record, f))
        self.told.add(record.arch.key)
        self.known[record.arch.key] = f


def _distribution(dim) -> optuna.distributions.BaseDistribution:
    if dim.kind == "choice":
        return optuna.distributions.CategoricalDistribution(list(dim.choices))
    if dim.kind == "bool":
        return optuna.distributions.CategoricalDistribution([False, True])
    return optuna.distributions.FloatDistribution(dim.low, dim.high)


class REAProposer:
    def __init__(self, space: Space, cfg: DictConfig):
        self.space, self.population, self.tournament = space, cfg.population, cfg.tournament

    def propose(self, history, k: int, exclude: set[str], rng: np.random.Generator) -> list[tuple[Architecture, None]]:
        alive = [r for r in history[-self.population:] if not r.failed]
        if len(history) < self.population or not alive:  # fill the population at random first
            return [(a, None) for a in random_candidates(self.space, k, exclude, rng)]
        out = []
        for _ in range(k):
            members = [alive[i] for i in rng.choice(len(alive), size=min(self.tournament, len(alive)), replace=False)]
            parent = max(members, key=lambda r: r.f).arch
            for _ in range(MAX_TRIES):
                child = self.space.mutate(parent, rng)
                if child.key not in exclude:
                    break
            else:
                if (child := random_one(self.space, exclude, rng)) is None:
                    break
            exclude.add(child.key)
            out.append((child, None))
        return out


class LocalSearchProposer:
    """Local search (White et al. 2021), K proposals per step; ``cfg`` is ``search.local``.

    The incumbent starts as the best of the shared first K random architectures. Each step proposes
    K of its unevaluated neighbours (``space.neighbours``: NAS-Bench-201's 24 one-edge changes, or
    ``cfg.neighbours`` draws of ``mutate`` where a space cannot list them, drawn once per incumbent)
    in random order; then the incumbent moves to the best new architecture if it is better, and on to
    an already-evaluated neighbour while one is better (its value is known). When the
    incumbent's neighbours are all evaluated and none improved on it, local search is stuck and
    restarts from a random architecture (as the paper does): the free places of the step that used
    up the neighbourhood are filled with random architectures, and the best of them becomes the
    incumbent (K random ones when no place was free). A failed evaluation is never an incumbent.
    """

    def __init__(self, space: Space, cfg: DictConfig):
        self.space, self.draws = space, cfg.neighbours
        self.incumbent = None  # the Record local search stands on
        self.neighbourhood: list[Architecture] = []  # the incumbent's neighbours, in random order
        self.restarts: set[str] = set()  # keys of the random architectures of the last step that had any
        self.seen = 0  # history records already read

    def propose(self, history, k: int, exclude: set[str], rng: np.random.Generator) -> list[tuple[Architecture, None]]:
        new = [r for r in history[self.seen:] if not r.failed]
        self.seen = len(history)
        best = max(new, key=lambda r: r.f, default=None)
        if best is not None and (self.incumbent is None or best.f > self.incumbent.f):
            self.move(best, rng)  # an improvement (or the first incumbent)
        self.climb_known(history, rng)
        todo = [a for a in self.neighbourhood if a.key not in exclude]
        if not todo and self.incumbent is not None:  # stuck: restart from the best random architecture
            pool = [r for r in history if r.arch.key in self.restarts and not r.failed]
            self.restarts = set()
            if pool:
                self.move(max(pool, key=lambda r: r.f), rng)
                self.climb_known(history, rng)
                todo = [a for a in self.neighbourhood if a.key not in exclude]
        out = todo[:k]
        randoms = random_candidates(self.space, k - len(out), exclude | {a.key for a in out}, rng)
        if randoms:
            self.restarts = {a.key for a in randoms}
        exclude |= {a.key for a in out + randoms}
        return [(a, None) for a in out + randoms]

    def climb_known(self, history, rng: np.random.Generator) -> None:
        """Move to the best already-evaluated neighbour of the incumbent while one is better: its value is
        known, as local search's neighbourhood scan would find it (after a restart, or a move, the new
        incumbent can have neighbours evaluated earlier)."""
        done = {r.arch.key: r for r in history if not r.failed}
        while self.incumbent is not None:
            known = [done[a.key] for a in self.neighbourhood if a.key in done]
            better = max(known, key=lambda r: r.f, default=None)
            if better is None or better.f <= self.incumbent.f:
                return
            self.move(better, rng)

    def move(self, record, rng: np.random.Generator) -> None:
        self.incumbent = record
        neighbours = self.space.neighbours(record.arch, rng, self.draws)
        self.neighbourhood = [neighbours[i] for i in rng.permutation(len(neighbours))]
        self.restarts = set()


class SMACProposer:
    """SMAC3's random-forest Bayesian optimisation (Lindauer et al. 2022) as a peer library, over the
    space's flat view, with its ``HyperparameterOptimizationFacade`` as SMAC recommends for it: a
    random forest of 10 trees on log-scaled costs, log expected improvement maximised by local and
    sorted random search, 20 % of the configurations interleaved at random. Changes, none to the
    algorithm: no initial design (the shared first K random architectures are told to SMAC as its
    start); the forest on one thread (``n_jobs=1``; SMAC's -1 starts a thread pool per prediction)
    and without a leaf cap (sklearn allocates the 2^20 leaves of SMAC's cap for every tree: 0.4 s a
    tree; the trees grow to the same stopping rules either way). K per step: SMAC's own batch,
    the K best new configurations of one acquisition maximisation (``retrain_after`` = K), as its
    parallel workers get them. Cost = -f; a failure is told as ``CRASHED`` at the worst cost seen (a
    failure before any success waits for one).
    SMAC's files: its scenario, written once to a temporary directory and removed; nothing else (every
    tell is ``save=False``).
    """

    def __init__(self, space: Space, K: int, budget: int, seed: int):
        try:
            from ConfigSpace import Categorical, ConfigurationSpace, Float
            from smac import HyperparameterOptimizationFacade as HPO, Scenario
        except ImportError:
            raise ImportError("search.method=smac needs SMAC3, an optional dependency: pip install 'nascomp[peer]'") from None
        import logging

        logging.getLogger("smac").setLevel(logging.ERROR)
        self.space = space
        self.cs = ConfigurationSpace(seed=seed)
        self.cs.add([Categorical(d.name, list(d.choices)) if d.kind == "choice" else
                     Categorical(d.name, [False, True]) if d.kind == "bool" else Float(d.name, (d.low, d.high))
                     for d in space.flat_dims()])
        with tempfile.TemporaryDirectory(prefix="nascomp-smac-") as tmp:  # SMAC writes its scenario once, here
            scenario = Scenario(self.cs, deterministic=True, n_trials=budget, seed=seed, output_directory=Path(tmp))
            model = HPO.get_model(scenario)
            model._rf_opts.update(n_jobs=1, max_leaf_nodes=None)  # the facade passes neither through
            self.smac = HPO(scenario, None, model=model, initial_design=HPO.get_initial_design(scenario, n_configs=0),
                            config_selector=HPO.get_config_selector(scenario, retrain_after=K), overwrite=True,
                            logging_level=False)
        # SMAC's local search takes its start points as list(set(configurations)): their order follows Python's
        # string hashes (PYTHONHASHSEED), and with it the proposals. Sorted by their vectors instead, the same
        # seed proposes the same in every process (a resumed run replays the search).
        local = self.smac._acquisition_maximizer._local_search
        initial = local._get_initial_points
        local._get_initial_points = lambda *a, **kw: sorted(initial(*a, **kw), key=lambda c: tuple(np.nan_to_num(c.get_array(), nan=-1.0)))
        self.told: set[str] = set()
        self.known: dict[str, float | None] = {}
        self.pending: dict[str, list] = {}  # asked TrialInfos, not yet told, by architecture
        self.worst = None  # the worst cost (-f) of a successful evaluation so far: a failure's cost
        self.seconds = {"acquisition": 0.0}

    def propose(self, history, k: int, exclude: set[str], rng: np.random.Generator) -> list[tuple[Architecture, None]]:
        from smac.main.exceptions import ConfigurationSpaceExhaustedException

        start = time.perf_counter()
        ok = [-r.f for r in history if not r.failed]
        self.worst = max(ok, default=None)
        for r in history:  # a failure waits until a student succeeded: its cost is the worst success's
            if r.arch.key not in self.told and (not r.failed or ok):
                self._tell(r.arch, None if r.failed else r.f)
        out: list[tuple[Architecture, None]] = []
        for _ in range(k):
            chosen = None
            for _ in range(MAX_TRIES):
                try:
                    info = self.smac.ask()
                except (StopIteration, ConfigurationSpaceExhaustedException):  # SMAC found nothing new
                    break
                arch = self.space.from_flat(dict(info.config))
                if arch.key in self.known:  # evaluated before under another configuration: tell its f, free
                    self._tell_trial(info, self.known[arch.key])
                elif arch.key in self.pending:  # proposed earlier in this step: told its f with it
                    self.pending[arch.key].append(info)
                elif arch.key in exclude:  # known a priori (the reference): left running in SMAC's history
                    continue
                else:
                    self.pending[arch.key] = [info]
                    chosen = arch
                    break
            if chosen is None and (chosen := random_one(self.space, exclude, rng)) is None:
                break
            exclude.add(chosen.key)
            out.append((chosen, None))
        self.seconds["acquisition"] += time.perf_counter() - start
        return out

    def _tell_trial(self, info, f: float | None) -> None:
        from smac.runhistory.dataclasses import TrialValue
        from smac.runhistory.enumerations import StatusType

        value = TrialValue(cost=-f) if f is not None else TrialValue(cost=self.worst, status=StatusType.CRASHED)
        self.smac.tell(info, value, save=False)

    def _tell(self, arch: Architecture, f: float | None) -> None:
        from ConfigSpace import Configuration
        from smac.runhistory.dataclasses import TrialInfo

        infos = self.pending.pop(arch.key, [])
        for info in infos:
            self._tell_trial(info, f)
        if not infos:  # evaluated outside SMAC (the first random architectures): told without an ask
            self._tell_trial(TrialInfo(Configuration(self.cs, values=flat_values(self.space, arch)), seed=0), f)
        self.told.add(arch.key)
        self.known[arch.key] = f


class MOTPEProposer(TPEProposer):
    """Multi-objective TPE (``search.mode=pareto``): ``TPEProposer`` with the settings of ``search.tpe``,
    told (accuracy, cost) to maximise and minimise; ``cost`` is the Record field of the cost."""

    directions = ("maximize", "minimize")

    def __init__(self, space: Space, cfg: DictConfig, K: int, seed: int, cost: str):
        self.cost = cost
        super().__init__(space, cfg, K, seed)

    def value(self, record) -> tuple[float, float]:
        return (record.accuracy, float(getattr(record, self.cost)))


class StepNSGAIISampler(optuna.samplers.NSGAIISampler):
    """Optuna's ``NSGAIISampler`` (its selection, crossover and mutation) whose new trials are in
    generation ``step`` (set by ``NSGA2Proposer`` before each step's asks) instead of Optuna's count:
    one past the newest generation once it holds ``population_size`` finished trials."""

    step = 0

    def get_trial_generation(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> int:
        generation = trial.system_attrs.get(self._get_generation_key())
        if generation is None:  # a new trial: stored as the base class stores its own count
            generation = self.step
            study._storage.set_trial_system_attr(trial._trial_id, self._get_generation_key(), generation)
        return generation


# the study's attributes as NSGAIISampler's own (a subclass would otherwise get keys of its name)
StepNSGAIISampler._GENERATION_KEY = optuna.samplers.NSGAIISampler._get_generation_key()
StepNSGAIISampler._PARENT_CACHE_KEY_PREFIX = optuna.samplers.NSGAIISampler._get_parent_cache_key_prefix()


class NSGA2Proposer(MOTPEProposer):
    """NSGA-II (Deb et al. 2002), Optuna's ``NSGAIISampler``, told (accuracy, cost) like ``MOTPEProposer``;
    ``cfg`` is ``search.nsga2``. Generation s = the K asks of step s (generation 0: the first K random
    architectures; ``StepNSGAIISampler``); a repeat of an evaluated architecture is told its known values
    after the step's K asks, a failure the worst values (``worst``), so both count as members of their
    generation and neither changes the generation of a later ask."""

    worst = (-float("inf"), float("inf"))  # (accuracy, cost): dominated by every successful evaluation

    def __init__(self, space: Space, cfg: DictConfig, K: int, seed: int, cost: str):
        self.cost = cost
        population_size = K if cfg.population_size is None else cfg.population_size
        self.sampler = StepNSGAIISampler(population_size=population_size, seed=seed)
        self.repeats: list[tuple[optuna.trial.Trial, tuple | None]] = []  # asks on evaluated ones, told after the step
        self.open(space)

    def propose(self, history, k: int, exclude: set[str], rng: np.random.Generator) -> list[tuple[Architecture, None]]:
        self.sampler.step = max(r.step for r in history) + 1
        out = super().propose(history, k, exclude, rng)
        for trial, f in self.repeats:  # after the step's K asks: members of this step's generation
            self._tell_trial(trial, f)
        self.repeats = []
        return out

    def _tell_repeat(self, trial: optuna.trial.Trial, f: tuple | None) -> None:
        self.repeats.append((trial, f))

    def _tell_trial(self, trial: optuna.trial.Trial, f: tuple | None) -> None:
        self.study.tell(trial, list(self.worst if f is None else f))

    def _added_trial(self, record, f: tuple | None) -> optuna.trial.FrozenTrial:
        """A record evaluated without an ask (the first K random architectures), in its step's generation."""
        return optuna.trial.create_trial(params=flat_values(self.space, record.arch), distributions=self.dists,
                                         values=list(self.worst if f is None else f),
                                         system_attrs={self.sampler._get_generation_key(): record.step})
