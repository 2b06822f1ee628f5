"""The one evaluation path that search, baselines and benchmarks share.

An evaluator turns architectures into rewards f (higher is better). ``Search`` calls
``evaluate(archs, step)`` once per step of Algorithm 1 and passes the step; nothing else counts
steps. ``reference_f`` is the reward of the space's reference architecture when it is known without
evaluating it (the teacher of the compression problem scores f = 0 by Eq. 6); Algorithm 1 then
keeps it in every kernel's data.

Evaluators: ``ProxyEvaluator`` (nascomp.proxy_evaluator: students proxy-trained here),
``RayEvaluator`` (the same training as Ray tasks), ``nascomp.nb201.TableEvaluator`` (table
look-ups), and ``StoredEvaluator`` below, which puts the run store's cache in front of any of them.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Sequence

from nascomp.search_space import Architecture

if TYPE_CHECKING:
    from nascomp.store import RunStore


@dataclass(frozen=True)
class Evaluation:
    """The outcome of evaluating one architecture.

    A failed evaluation (training diverged, ran out of memory, a worker died or timed out) has
    ``error`` set and ``failed`` true; its f and accuracy are 0 (the floor of Eq. 6, so tables and
    plots stay finite), and no proposer reads them as a reward. ``flops``, ``latency_ms`` and
    ``memory_mb`` are the other costs (``nascomp.cost``), known for failed students too; None where
    the evaluator has none (NAS-Bench-201's table). ``transient`` marks a failure the environment
    caused (out of memory, a timeout, a Ray worker, node or object lost:
    ``nascomp.proxy_evaluator.transient_failure``), not the architecture: the run store keeps it for the
    run that met it only, and other runs sharing the store evaluate that architecture again."""

    f: float
    accuracy: float
    num_params: int
    seconds: float
    error: str | None = None
    flops: int | None = None
    latency_ms: float | None = None
    memory_mb: float | None = None
    transient: bool = False

    @property
    def failed(self) -> bool:
        return self.error is not None

    @classmethod
    def failure(cls, num_params: int, seconds: float, error: str, transient: bool = False, **costs) -> "Evaluation":
        return cls(0.0, 0.0, num_params, seconds, error, transient=transient, **costs)


class Evaluator(ABC):
    @abstractmethod
    def evaluate(self, archs: Sequence[Architecture], step: int = 0) -> list[Evaluation]:
        """One Evaluation per architecture, in order; ``step`` is the search step asking."""

    @property
    def reference_f(self) -> float | None:
        """f of the space's reference architecture if known a priori, else None."""
        return None

    @property
    def reward_scale(self) -> float:
        """What f is multiplied by before a kernel sees it, so that kernels model rewards on the
        paper's [0, 1] scale (NAS-Bench-201 accuracy is in percent: 0.01). Records keep f as evaluated."""
        return 1.0

    def costs(self, arch: Architecture) -> dict | None:
        """The costs of ``arch`` other than its parameters (flops, latency_ms, memory_mb), if this
        evaluator measures them, else None."""
        return None

    def factor(self, arch: Architecture) -> float | None:
        """g(arch) where f(arch) = g(arch) A(arch) / ``reference_accuracy``, when f splits so with g known
        before ``arch`` is trained (Eq. 6 on parameters or FLOPs, caps on those only); None otherwise
        (``search.target=accuracy`` needs it)."""
        return None

    def within_caps(self, arch: Architecture) -> bool | None:
        """Whether ``arch`` meets every cap of the constraint form, before it is built or trained
        (``Objective.within_caps``: exact for parameters, FLOPs and memory, latency predicted); None where
        there are no caps."""
        return None

    @property
    def reference_accuracy(self) -> float | None:
        """A of the reference (the teacher) that ``factor`` divides by; None where f does not split."""
        return None


class StoredEvaluator(Evaluator):
    """``inner`` behind the run store's cache: architectures already evaluated in this ``context``
    (by this run or any run sharing the store) come from the store; the rest, each distinct key once,
    are marked in flight, evaluated, then recorded in one transaction. A transient failure
    (``Evaluation.transient``) is recorded for this run only: this run's resume replays it, whatever
    another run recorded for that key since, and other runs evaluate the key again. A row stored
    before the store kept costs gets them from ``inner.costs``."""

    def __init__(self, inner: Evaluator, store: "RunStore", run: str, context: str):
        self.inner, self.store, self.run, self.context = inner, store, run, context
        self.hits = 0  # evaluations answered by the store

    @property
    def reference_f(self) -> float | None:
        return self.inner.reference_f

    @property
    def reward_scale(self) -> float:
        return self.inner.reward_scale

    def evaluate(self, archs: Sequence[Architecture], step: int = 0) -> list[Evaluation]:
        cached = self.store.cached(self.context, [a.key for a in archs], run=self.run)
        todo = list({a.key: a for a in archs if a.key not in cached}.values())
        self.hits += len(archs) - len(todo)
        if todo:
            self.store.start(self.run, [a.key for a in todo], step)
            evals = self.inner.evaluate(todo, step)
            results = [(a.key, asdict(e), a.to_dict() if hasattr(a, "to_dict") else {}) for a, e in zip(todo, evals)]
            self.store.record(self.run, self.context, results)
            cached.update({k: r for k, r, _ in results})
        out = []
        for a in archs:
            e = Evaluation(**cached[a.key])
            if e.flops is None and (costs := self.inner.costs(a)) is not None:  # a row stored before costs were
                e = replace(e, **costs)
            out.append(e)
        return out

    def costs(self, arch: Architecture) -> dict | None:
        return self.inner.costs(arch)

    def factor(self, arch: Architecture) -> float | None:
        return self.inner.factor(arch)

    def within_caps(self, arch: Architecture) -> bool | None:
        return self.inner.within_caps(arch)

    @property
    def reference_accuracy(self) -> float | None:
        return self.inner.reference_accuracy
