"""Baselines that run in Algorithm 1's loop with the same evaluator and budget (paper 6.4).

- ``RandomProposer``: random search.
- ``TPEProposer``: Optuna's TPE over the space's flat view (per-layer keep, per-group shrink
  ratio, per-pair skip; choices for NAS-Bench-201), asked K trials per step.
- ``REAProposer``: regularized evolution (Real et al. 2019): the last ``population`` evaluated
  architectures are alive; each child mutates the best of ``tournament`` random live members.

None proposes an architecture already evaluated: a TPE trial that lands on one is told its known
f at no cost to the budget and asked again; an REA child that does is mutated again. A failed
evaluation (``Record.failed``) is no reward: TPE is told the trial failed, REA never picks it as a
parent.
"""
from __future__ import annotations

import numpy as np
import optuna
from omegaconf import DictConfig

from nascomp.acquisition import random_candidates
from nascomp.search_space import Architecture, Space

optuna.logging.set_verbosity(optuna.logging.WARNING)
MAX_TRIES = 100  # asks / mutations per proposal before falling back to a random architecture


class RandomProposer:
    def __init__(self, space: Space):
        self.space = space

    def propose(self, history, k: int, exclude: set[str], rng: np.random.Generator) -> list[tuple[Architecture, None]]:
        return [(a, None) for a in random_candidates(self.space, k, exclude, rng)]


class TPEProposer:
    def __init__(self, space: Space, cfg: DictConfig, seed: int):
        self.space = space
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.n_startup_trials, multivariate=cfg.multivariate)
        self.study = optuna.create_study(direction="maximize", sampler=sampler)
        self.dists = {d.name: _distribution(d) for d in space.flat_dims()}
        self.told: set[str] = set()  # keys of history records already told to the study
        self.known: dict[str, float] = {}
        self.pending: dict[str, optuna.trial.Trial] = {}  # asked, not yet told

    def propose(self, history, k: int, exclude: set[str], rng: np.random.Generator) -> list[tuple[Architecture, None]]:
        for r in history:
            if r.arch.key not in self.told:
                self._tell(r.arch, None if r.failed else r.f)
        out: list[tuple[Architecture, None]] = []
        for _ in range(k):
            for _ in range(MAX_TRIES):
                trial = self.study.ask(self.dists)
                arch = self.space.from_flat(trial.params)
                if arch.key in self.known:  # evaluated before: tell the known f (or failure), free
                    self._tell_trial(trial, self.known[arch.key])
                elif arch.key in exclude:  # proposed in this batch: no value yet
                    self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                else:
                    break
            else:
                arch = random_candidates(self.space, 1, exclude, rng)[0]
                trial = None
            if trial is not None:
                self.pending[arch.key] = trial
            exclude.add(arch.key)
            out.append((arch, None))
        return out

    def _tell_trial(self, trial: optuna.trial.Trial, f: float | None) -> None:
        """f, or the trial failed (``f`` None: a failed evaluation)."""
        if f is None:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, f)

    def _tell(self, arch: Architecture, f: float | None) -> None:
        """Tell the study an evaluated architecture's f (None: it failed)."""
        trial = self.pending.pop(arch.key, None)
        if trial is not None:
            self._tell_trial(trial, f)
        else:  # evaluated outside TPE (the first random architectures): add as a finished (or failed) trial
            params = self.space.to_flat(arch)
            values = {d.name: (d.choices[int(v)] if d.kind == "choice" else (bool(v) if d.kind == "bool" else float(v)))
                      for d, v in zip(self.space.flat_dims(), params)}
            outcome = {"value": f} if f is not None else {"state": optuna.trial.TrialState.FAIL}
            self.study.add_trial(optuna.trial.create_trial(params=values, distributions=self.dists, **outcome))
        self.told.add(arch.key)
        self.known[arch.key] = f


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
                child = random_candidates(self.space, 1, exclude, rng)[0]
            exclude.add(child.key)
            out.append((child, None))
        return out
