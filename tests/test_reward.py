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
