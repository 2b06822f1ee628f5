"""The one evaluation path that search, baselines and benchmarks share.

An evaluator turns architectures into rewards f (higher is better). ``reference_f`` is the reward
of the space's reference architecture when it is known without evaluating it (the teacher of the
compression problem scores f = 0 by Eq. 6); Algorithm 1 then keeps it in every kernel's data.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Mapping

from nascomp.reward import reward
from nascomp.space import Architecture

OBJECTIVES = ("accuracy", "compression")


@dataclass(frozen=True)
class Evaluation:
    """The outcome of evaluating one architecture. ``error`` is set (and f is -inf) when it failed."""

    f: float
    accuracy: float
    num_params: int
    seconds: float
    error: str | None = None


class Evaluator(ABC):
    @abstractmethod
    def evaluate(self, archs: list[Architecture]) -> list[Evaluation]:
        """One Evaluation per architecture, in order."""

    @property
    def reference_f(self) -> float | None:
        """f of the space's reference architecture if known a priori, else None."""
        return None


class TableEvaluator(Evaluator):
    """Looks accuracy (percent) and parameter count up by a table code (NAS-Bench-201).

    objective ``accuracy``:    f(x) = A(x)
    objective ``compression``: f(x) = C(x)(2 - C(x)) A(x) / A(ref),  C(x) = 1 - params(x) / params(ref)
    """

    def __init__(self, accuracy: Mapping[str, float], params: Mapping[str, int], reference: Architecture, objective: str):
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
        self.accuracy, self.params, self.objective = accuracy, params, objective
        self.ref_code = reference.code
        self.calls = 0

    def f(self, code: str) -> float:
        acc = self.accuracy[code]
        if self.objective == "accuracy":
            return acc
        return reward(acc, self.params[code], self.accuracy[self.ref_code], self.params[self.ref_code])

    @property
    def reference_f(self) -> float | None:
        return 0.0 if self.objective == "compression" else None

    @property
    def optimum(self) -> float:
        """The best f in the whole table (for regret)."""
        return max(self.f(code) for code in self.accuracy)

    def evaluate(self, archs: list[Architecture]) -> list[Evaluation]:
        out = []
        for arch in archs:
            start = time.perf_counter()
            code = arch.code
            out.append(Evaluation(self.f(code), self.accuracy[code], self.params[code], time.perf_counter() - start))
        self.calls += len(archs)
        return out
