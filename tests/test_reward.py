"""Reward of Eq. 6 and the Table 1 columns, against hand-computed values."""
import pytest

from nascomp.reward import RewardRow, compression_ratio, reward


def test_paper_vgg19_cifar100_row():
    # 3.07M student of the 20.09M VGG-19 at 71.64% vs the teacher's 73.71%:
    # C = 1 - 3.07/20.09 = 0.847188; C(2 - C) = 0.976649; f = 0.976649 * 71.64 / 73.71 = 0.9492
    row = RewardRow.of(71.64, 3_070_000, 73.71, 20_090_000)
    assert row.ratio == pytest.approx(0.847188, abs=1e-6)
    assert row.times == pytest.approx(6.544, abs=1e-3)
    assert row.f == pytest.approx(0.9492, abs=5e-5)
    assert row.as_dict()["num_params"] == 3_070_000


def test_teacher_scores_zero_and_fraction_units_agree():
    assert reward(0.7371, 20_090_000, 0.7371, 20_090_000) == 0.0
    assert reward(0.7164, 3_070_000, 0.7371, 20_090_000) == pytest.approx(reward(71.64, 3_070_000, 73.71, 20_090_000))
    # half the parameters at equal accuracy: C = 0.5, f = 0.5 * 1.5 = 0.75
    assert reward(0.9, 50, 0.9, 100) == pytest.approx(0.75)


def test_bad_teacher_values_are_rejected():
    with pytest.raises(ValueError, match="teacher_params"):
        compression_ratio(10, 0)
    with pytest.raises(ValueError, match="teacher_accuracy"):
        reward(0.5, 10, 0.0, 100)


# --------------------------------------------------------------------------- deployment objectives
from omegaconf import OmegaConf  # noqa: E402
from torch import nn  # noqa: E402

from nascomp.config import group  # noqa: E402
from nascomp.cost import Meter  # noqa: E402
from nascomp.graph import ArchGraph  # noqa: E402
from nascomp.reward import Objective, constrained_reward  # noqa: E402


def _net(width):
    """conv 1->width 3x3 on (1, 4, 4), flatten, linear 16 width -> 2."""
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.Flatten(), nn.Linear(16 * width, 2))


def _objective(name, **overrides):
    cfg = OmegaConf.merge(group("objective", name), {"repeats": 3, "warmup": 1}, overrides)
    return Objective(cfg, Meter(cfg), ArchGraph.from_module(_net(4), (1, 4, 4)), teacher_accuracy=0.9)


STUDENT = ArchGraph.from_module(_net(2), (1, 4, 4))


@pytest.mark.parametrize("name, student_cost, teacher_cost", [
    # params: conv 4*9+4 = 40, linear 64*2+2 = 130 -> 170; the student: 18+2 + 32*2+2 = 86
    ("params", 86, 170),
    # flops: conv 4*1*9*16 = 576 + linear 64*2 = 128 -> 704; the student: 288 + 64 = 352
    ("flops", 352, 704),
    # memory (batch 1, bytes): weights 4*170 = 680 + activations 4*(16 + 2*64) = 576 (the input, the conv's
    # output and its second buffer) -> 1256; the student: 4*86 = 344 + 4*(16 + 2*32) = 320 -> 664
    ("memory", 664 / 2**20, 1256 / 2**20),
])
def test_each_objective_is_eq6_on_its_cost_by_hand(name, student_cost, teacher_cost):
    objective = _objective(name)
    costs = objective.costs(STUDENT)
    assert getattr(costs, objective.cost) == pytest.approx(student_cost)
    assert getattr(objective.teacher_costs, objective.cost) == pytest.approx(teacher_cost)
    c = 1 - student_cost / teacher_cost
    assert objective.reward(0.8, costs) == pytest.approx(c * (2 - c) * 0.8 / 0.9)
    assert objective.reference_f == 0.0  # the teacher: C = 0


def test_flops_objective_halving_the_flops_at_equal_accuracy_scores_three_quarters():
    objective = _objective("flops")
    assert objective.reward(0.9, objective.costs(STUDENT)) == pytest.approx(0.75)  # C = 1 - 352/704 = 0.5


def test_latency_objective_is_eq6_on_the_measured_medians():
    objective = _objective("latency")
    costs = objective.costs(STUDENT)
    c = 1 - costs.latency_ms / objective.teacher_costs.latency_ms
    assert costs.latency_ms > 0 and objective.reward(0.8, costs) == pytest.approx(c * (2 - c) * 0.8 / 0.9)


def test_constraint_form_at_below_and_above_the_cap():
    caps = {"latency_ms": 5.0}
    ratio = 0.8 / 0.9
    assert constrained_reward(0.8, {"latency_ms": 5.0}, 0.9, caps, 2.0) == pytest.approx(ratio)  # at the cap
    assert constrained_reward(0.8, {"latency_ms": 4.0}, 0.9, caps, 2.0) == pytest.approx(ratio)  # below
    assert constrained_reward(0.8, {"latency_ms": 10.0}, 0.9, caps, 2.0) == pytest.approx(ratio * 0.25)  # twice: (1/2)^2
    assert constrained_reward(0.8, {"latency_ms": 6.0}, 0.9, caps, 1.0) == pytest.approx(ratio * 5 / 6)
    # two caps multiply; a more accurate infeasible student still ranks above a less accurate one
    both = {"latency_ms": 5.0, "flops": 100.0}
    assert constrained_reward(0.8, {"latency_ms": 10.0, "flops": 400.0}, 0.9, both, 1.0) == pytest.approx(ratio / 8)
    assert constrained_reward(0.85, {"latency_ms": 10.0}, 0.9, caps, 2.0) > constrained_reward(0.8, {"latency_ms": 10.0}, 0.9, caps, 2.0) > 0


def test_objective_with_a_cap_uses_the_constraint_form():
    # flops cap 400: the student (352) meets it, the teacher (704) is 1.76 times over it
    objective = _objective("params", constraint={"flops": 400})
    assert objective.caps == {"flops": 400.0}
    assert objective.reward(0.8, objective.costs(STUDENT)) == pytest.approx(0.8 / 0.9)
    assert objective.reference_f == pytest.approx((400 / 704) ** 2)


@pytest.mark.parametrize("name, constraint, expected_g", [
    ("params", {}, (1 - 86 / 170) * (1 + 86 / 170)),  # C(2 - C) with C = 1 - 86/170
    ("flops", {}, 0.75),  # C = 1 - 352/704 = 0.5
    ("params", {"flops": 176}, (176 / 352) ** 2),  # the student is twice over a FLOPs cap: (1/2)^p, p = 2
    ("latency", {}, None),  # measured, not known before training: no split
    ("memory", {}, None),
    ("params", {"latency_ms": 5.0}, None),
])
def test_factor_is_the_known_cost_part_of_f(name, constraint, expected_g):
    """``Objective.factor``: g with f = g A / A(teacher), for costs an ArchGraph gives exactly (params,
    FLOPs, caps on those only); None where f needs a measured cost (search.target=accuracy refuses it)."""
    objective = _objective(name, constraint=constraint)
    g = objective.factor(STUDENT)
    if expected_g is None:
        assert g is None
        return
    assert g == pytest.approx(expected_g)
    assert g * 0.8 / 0.9 == pytest.approx(objective.reward(0.8, objective.costs(STUDENT)))
    teacher = ArchGraph.from_module(_net(4), (1, 4, 4))
    assert objective.factor(teacher) == pytest.approx(objective.reference_f)  # the teacher: g A(t) / A(t) is its own f
