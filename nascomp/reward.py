"""The reward of paper Eq. 6 (from N2N), its deployment variants (config group ``objective``) and
the columns of the paper's Table 1.

    C(x) = 1 - params(x) / params(teacher)              (compression ratio, "Ratio")
    f(x) = C(x) (2 - C(x)) * A(x) / A(teacher)

"Times" is params(teacher) / params(x). The teacher itself scores f = 0 (C = 0).

``objective=params`` (the default, the paper) is Eq. 6; ``objective=flops|latency|memory`` is Eq. 6
with that cost (``nascomp.cost``: num_params, flops, latency_ms, memory_mb) in place of params, the
teacher's cost measured the same way. A cost above the teacher's gives C < 0, a negative f.

The constraint form: any cap ``objective.constraint.<cost>=b`` set replaces Eq. 6 by

    f(x) = A(x) / A(teacher) * prod_c min(1, b_c / cost_c(x))^p          (p = objective.penalty)

the accuracy ratio when every cap is met, scaled down smoothly when one is not: a student at twice
the cap keeps 2^-p of its accuracy ratio, so the kernels still rank infeasible students by accuracy
and by how far over the cap they are (never a wall of zeros). The teacher's f is then its own
penalty factor (1 when it meets the caps), which Algorithm 1 keeps as the reference.

The finalists of a capped run are students that meet every cap (``nascomp.pipeline.select_finalists``): the
best ``final.top_k`` by f among them (fewer when fewer meet them); only when none does, the least-violating
students (``Objective.violation``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nascomp.cost import Costs, Meter
    from nascomp.graph import ArchGraph

# objective.name -> the cost (a field of nascomp.cost.Costs) that Eq. 6 rewards; the only copy
COST_OF = {"params": "num_params", "flops": "flops", "latency": "latency_ms", "memory": "memory_mb"}
KNOWN_COSTS = ("num_params", "flops")  # the costs an ArchGraph gives exactly, without training or timing


def measured_costs(name: str, caps) -> list[str]:
    """The costs f reads (the caps' in the constraint form, else objective ``name``'s) that an
    ArchGraph does not give exactly: they must be measured (latency, memory)."""
    read = list(caps) if caps else [COST_OF[name]]
    return [c for c in read if c not in KNOWN_COSTS]


def compression_ratio(num_params: int, teacher_params: int) -> float:
    """C(x) = 1 - params(x) / params(teacher)."""
    if teacher_params <= 0:
        raise ValueError(f"teacher_params must be positive, got {teacher_params}")
    return 1.0 - num_params / teacher_params


def reward(accuracy: float, num_params: float, teacher_accuracy: float, teacher_params: float) -> float:
    """f(x) of Eq. 6. Accuracies in any common unit (fractions or percent); any cost (FLOPs, latency,
    memory) in place of the parameter counts gives that objective's f."""
    if teacher_accuracy <= 0:
        raise ValueError(f"teacher_accuracy must be positive, got {teacher_accuracy}")
    c = compression_ratio(num_params, teacher_params)
    return c * (2.0 - c) * accuracy / teacher_accuracy


@dataclass(frozen=True)
class RewardRow:
    """One row of the paper's Table 1: accuracy, #params, ratio, times, f(x)."""

    accuracy: float
    num_params: int
    ratio: float
    times: float
    f: float

    @classmethod
    def of(cls, accuracy: float, num_params: int, teacher_accuracy: float, teacher_params: int) -> "RewardRow":
        """The row of an architecture, f by Eq. 6."""
        return cls.scored(accuracy, num_params, reward(accuracy, num_params, teacher_accuracy, teacher_params), teacher_params)

    @classmethod
    def scored(cls, accuracy: float, num_params: int, f: float, teacher_params: int) -> "RewardRow":
        """The row of an architecture whose f its evaluator gave (a failed one: 0; NAS-Bench-201's
        accuracy objective: the accuracy)."""
        return cls(accuracy=accuracy, num_params=num_params, ratio=compression_ratio(num_params, teacher_params),
                   times=teacher_params / max(num_params, 1), f=f)

    def as_dict(self) -> dict:
        return asdict(self)


def constrained_reward(accuracy: float, costs: dict[str, float], teacher_accuracy: float, caps: dict[str, float],
                       penalty: float) -> float:
    """f(x) = A(x) / A(teacher) * prod_c min(1, caps[c] / costs[c])^penalty (the constraint form)."""
    if teacher_accuracy <= 0:
        raise ValueError(f"teacher_accuracy must be positive, got {teacher_accuracy}")
    factor = math.prod(min(1.0, cap / costs[c]) ** penalty if costs[c] > 0 else 1.0 for c, cap in caps.items())
    return accuracy / teacher_accuracy * factor


class Objective:
    """The reward as ``conf/objective`` configures it: Eq. 6 on the cost ``cfg.name`` or, when any
    ``cfg.constraint`` cap is set, the constraint form (module docstring). ``meter`` measures the costs
    (``nascomp.cost.Meter``); the teacher's are measured once, here."""

    def __init__(self, cfg, meter: "Meter", teacher: "ArchGraph", teacher_accuracy: float):
        if cfg.name not in COST_OF:
            raise ValueError(f"objective.name must be one of {', '.join(COST_OF)}, got {cfg.name!r}")
        self.name, self.cost = cfg.name, COST_OF[cfg.name]
        self.caps = {c: float(v) for c, v in cfg.constraint.items() if v is not None}
        self.penalty = float(cfg.penalty)
        self.meter = meter
        self.teacher, self.teacher_accuracy = teacher, teacher_accuracy
        self.teacher_costs = meter.costs(teacher)
        self._calibration: float | None = None  # of ``predicted`` latency, made on first use

    def costs(self, graph: "ArchGraph") -> "Costs":
        return self.meter.costs(graph)

    def reward(self, accuracy: float, costs: "Costs") -> float:
        if self.caps:
            return constrained_reward(accuracy, costs.as_dict(), self.teacher_accuracy, self.caps, self.penalty)
        return reward(accuracy, getattr(costs, self.cost), self.teacher_accuracy, getattr(self.teacher_costs, self.cost))

    def factor(self, graph: "ArchGraph") -> float | None:
        """g in f = g A / A(teacher) when every cost f reads is one the graph gives without training or
        timing (``KNOWN_COSTS``: Eq. 6 on params or FLOPs, caps on those only); None otherwise."""
        if measured_costs(self.name, self.caps):
            return None
        if self.caps:
            return constrained_reward(1.0, {c: getattr(graph, c) for c in self.caps}, 1.0, self.caps, self.penalty)
        return reward(1.0, getattr(graph, self.cost), 1.0, getattr(self.teacher_costs, self.cost))

    def predicted(self, graph: "ArchGraph", cost: str) -> float:
        """The cost of a graph not yet built or timed, as the acquisition scores candidates with it:
            num_params, flops   exact, from the graph
            memory_mb           exact as ``nascomp.cost.memory_mb`` defines it, from the graph's shapes
            latency_ms          predicted by the meter's per-layer ``LatencyTable`` (``Meter.layers``, its
                                timings kept in the run store), scaled by the teacher's
                                measured / predicted latency so that the teacher's prediction is its measured
                                figure: timing each of thousands of candidates would cost more than the search;
                                the table times each distinct layer once.
        An evaluated student's cost is its measured one (``costs``)."""
        from nascomp.cost import memory_mb

        if cost in KNOWN_COSTS:
            return float(getattr(graph, cost))
        if cost == "memory_mb":
            return memory_mb(graph, self.meter.batch_size)
        if cost != "latency_ms":
            raise ValueError(f"cost must be one of {', '.join(COST_OF.values())}, got {cost!r}")
        if self._calibration is None:
            self._calibration = self.teacher_costs.latency_ms / self.meter.layers.predict(self.teacher)
        return self._calibration * self.meter.layers.predict(graph)

    def within_caps(self, graph: "ArchGraph") -> bool | None:
        """Whether the graph meets every cap, by its ``predicted`` costs (exact for parameters, FLOPs and
        memory; latency predicted); None without caps."""
        if not self.caps:
            return None
        return all(self.predicted(graph, c) <= cap for c, cap in self.caps.items())

    def violation(self, costs: dict[str, float]) -> float:
        """prod_c max(1, costs[c] / caps[c]) over the caps: 1 when every cap is met (and when none is set),
        above 1 by how far over its caps a student is; the constraint form's penalty factor is its -p-th power."""
        return math.prod(max(1.0, costs[c] / cap) for c, cap in self.caps.items())

    @property
    def reference_f(self) -> float:
        """f of the teacher: 0 under Eq. 6, its penalty factor in the constraint form."""
        return self.reward(self.teacher_accuracy, self.teacher_costs)

    def describe(self) -> dict:
        """What summary.json records: the objective, its caps and the teacher's costs."""
        return {"name": self.name, "cost": self.cost, "constraint": self.caps, "penalty": self.penalty,
                "device": self.meter.device_key, "batch_size": self.meter.batch_size,
                "teacher_costs": self.teacher_costs.as_dict()}
