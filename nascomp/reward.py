"""The reward of paper Eq. 6 (from N2N) and the columns of the paper's Table 1.

    C(x) = 1 - params(x) / params(teacher)              (compression ratio, "Ratio")
    f(x) = C(x) (2 - C(x)) * A(x) / A(teacher)

"Times" is params(teacher) / params(x). The teacher itself scores f = 0 (C = 0).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


def compression_ratio(num_params: int, teacher_params: int) -> float:
    """C(x) = 1 - params(x) / params(teacher)."""
    if teacher_params <= 0:
        raise ValueError(f"teacher_params must be positive, got {teacher_params}")
    return 1.0 - num_params / teacher_params


def reward(accuracy: float, num_params: int, teacher_accuracy: float, teacher_params: int) -> float:
    """f(x) of Eq. 6. Accuracies in any common unit (fractions or percent)."""
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
