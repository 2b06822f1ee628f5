"""Evaluating compression candidates: build each student from the teacher, distil it for a few
epochs (the proxy training of REFERENCE §5), and score its best validation accuracy with the
reward (``nascomp.reward.Objective``: Eq. 6 by default). Every student's costs are measured too.

The K candidates of a step train as one cohort sharing the teacher's forward pass (``cohort=True``)
or one by one. A student whose training fails (non-finite loss, out of memory) is a failed
``Evaluation`` (``Evaluation.failure``: the error kept, f = 0 read by no proposer; an out of memory
or another failure of the environment is a transient one, ``transient_failure``), and the others of
its step are kept.
"""
from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch import nn

from nascomp.data import Dataset
from nascomp.evaluator import Evaluation, Evaluator
from nascomp.reward import Objective
from nascomp.compression_space import Candidate
from nascomp.training import Result, proxy_train

if TYPE_CHECKING:
    from nascomp.cost import Costs


class ProxyEvaluator(Evaluator):
    """f(x) = objective.reward(A(x), costs(x)), A(x) from proxy training (Eq. 6: C(x)(2 - C(x)) A(x) / A(teacher))."""

    def __init__(self, teacher: nn.Module, teacher_accuracy: float, dataset: Dataset, proxy_cfg,
                 inherit: str = "first", cohort: bool = True,
                 on_weights: Callable[[str, float, dict], None] | None = None, objective: Objective | None = None):
        """``objective``: the reward (default: ``conf/objective/params.yaml``, Eq. 6, its costs measured
        without a store)."""
        self.teacher = teacher.eval()
        self.teacher_accuracy = teacher_accuracy
        self.dataset, self.cfg = dataset, proxy_cfg
        self.inherit, self.cohort = inherit, cohort
        self.on_weights = on_weights  # called with (key, f, proxy state_dict) of every trained student
        if objective is None:
            from nascomp.config import group
            from nascomp.cost import Meter
            from nascomp.graph import ArchGraph

            graph = ArchGraph.from_module(teacher, tuple(dataset.train.images.shape[1:]))
            objective = Objective(group("objective", "params"), Meter(group("objective", "params")), graph, teacher_accuracy)
        self.objective = objective

    @property
    def reference_f(self) -> float:
        return self.objective.reference_f  # the teacher: 0 under Eq. 6 (C = 0)

    def factor(self, arch: Candidate) -> float | None:
        return self.objective.factor(arch.graph)

    def within_caps(self, arch: Candidate) -> bool | None:
        return self.objective.within_caps(arch.graph)

    @property
    def reference_accuracy(self) -> float:
        return self.objective.teacher_accuracy

    def costs(self, arch: Candidate) -> dict:
        c = self.objective.costs(arch.graph).as_dict()
        c.pop("num_params")
        return c

    def evaluate(self, archs: Sequence[Candidate], step: int = 0) -> list[Evaluation]:
        start = time.perf_counter()
        results = self.train(archs)
        seconds = (time.perf_counter() - start) / max(len(archs), 1)
        out = []
        for arch, result in zip(archs, results):
            evaluation = self.score(result, self.objective.costs(arch.graph), seconds)
            out.append(evaluation)
            if not evaluation.failed and self.on_weights is not None:
                self.on_weights(arch.key, evaluation.f, result.state_dict)
        return out

    def evaluate_modules(self, students: Sequence[nn.Module]) -> list[tuple[Evaluation, Result | Exception]]:
        """Proxy-train built students that are no candidates of the space (the pruning baseline,
        ``nascomp.pruning``) as ``evaluate`` trains candidates, in this process, and score each by Eq. 6
        with its own parameter count. Their weights go to no store (they have no key): each comes back
        with its training result (the student itself holds its best-epoch weights). Its costs are those
        of its own traced graph."""
        from nascomp.graph import ArchGraph

        shape = tuple(self.dataset.train.images.shape[1:])
        costs = [self.objective.costs(ArchGraph.from_module(s, shape)) for s in students]
        start = time.perf_counter()
        results = self.train_modules(list(students))
        seconds = (time.perf_counter() - start) / max(len(students), 1)
        return [(self.score(r, c, seconds), r) for c, r in zip(costs, results)]

    def score(self, result: Result | Exception, costs: "Costs", seconds: float) -> Evaluation:
        """One training result as an Evaluation: f = objective.reward, or a failure (an exception, a
        diverged loss), transient when the environment caused it (``transient_failure``); every cost
        rides along."""
        extra = {k: v for k, v in costs.as_dict().items() if k != "num_params"}
        if isinstance(result, Exception) or result.diverged or not math.isfinite(result.val_accuracy):
            error = (f"{type(result).__name__}: {result}" if isinstance(result, Exception)
                     else "training loss diverged (non-finite)")
            transient = isinstance(result, Exception) and transient_failure(result)
            return Evaluation.failure(costs.num_params, seconds, error, transient=transient, **extra)
        f = self.objective.reward(result.val_accuracy, costs)
        return Evaluation(f, result.val_accuracy, costs.num_params, seconds, None, **extra)

    def train(self, archs: Sequence[Candidate]) -> list[Result | Exception]:
        """Proxy-train the students of ``archs`` here: as one cohort, or one by one."""
        return self.train_modules([a.build(self.teacher, inherit=self.inherit) for a in archs])

    def train_modules(self, students: list[nn.Module]) -> list[Result | Exception]:
        """Proxy-train built students here: as one cohort, or one by one (``cohort``)."""
        if self.cohort:
            return self._train(students)
        return [r for s in students for r in self._train([s])]

    def _train(self, students: list[nn.Module]) -> list[Result | Exception]:
        try:
            return proxy_train(students, self.teacher, self.dataset, self.cfg)
        except RuntimeError as exc:  # torch.OutOfMemoryError is one too
            if not out_of_memory(exc):
                raise
            if len(students) == 1:
                return [exc]
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return [r for s in students for r in self._train([s])]  # retry one by one


def out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the host allocator's failure (a RuntimeError on the CPU)."""
    return isinstance(exc, torch.OutOfMemoryError) or "can't allocate memory" in str(exc)


# Ray's exceptions that the environment raises, not the task's code (each looked up by name, as Ray
# versions differ): a dead worker, node, raylet or actor, a lost object (ObjectLostError and its
# subclasses: OwnerDiedError, ObjectFetchTimedOutError, ...), a task Ray killed for memory or
# cancelled, a full object store or disk, an RPC or other system failure.
RAY_TRANSIENT = ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "RayActorError", "ObjectLostError",
                 "OutOfMemoryError", "OutOfDiskError", "ObjectStoreFullError", "TaskCancelledError", "RaySystemError",
                 "RpcError")


def transient_failure(exc: BaseException) -> bool:
    """Whether a failed evaluation's exception came from the environment, not from the architecture,
    so that evaluating it again elsewhere or later may succeed: out of memory (``out_of_memory``), a
    timeout (``TimeoutError``: ``RayEvaluator``'s ``evaluator.timeout_s``, Ray's ``GetTimeoutError``), or
    one of Ray's system errors (``RAY_TRANSIENT``). A ``RayTaskError`` (the task's own code raised) is
    judged by the exception it wraps: transient for an out of memory inside the task, deterministic
    for an ordinary error. A diverged loss is no exception and never transient. The run store keeps a
    transient failure for the run that met it only (``RunStore.record``).

    Ray is never imported here: an exception of Ray's can only exist once Ray's module is loaded."""
    ray_exceptions = sys.modules.get("ray.exceptions")
    if ray_exceptions is not None and isinstance(exc, ray_exceptions.RayTaskError):
        cause = getattr(exc, "cause", None)
        return isinstance(cause, BaseException) and cause is not exc and transient_failure(cause)
    if out_of_memory(exc) or isinstance(exc, TimeoutError):
        return True
    if ray_exceptions is None:
        return False
    kinds = tuple(k for k in (getattr(ray_exceptions, n, None) for n in RAY_TRANSIENT) if isinstance(k, type))
    return isinstance(exc, kinds)
