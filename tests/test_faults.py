"""Faults during evaluation: a diverging student is recorded as failed (f = 0, with the error) and
does not disturb the other students of its cohort."""
import numpy as np
import pytest
import torch

from nascomp import ArchGraph, CompressionSpace, data, teachers
from nascomp.config import group
from nascomp.proxy_evaluator import ProxyEvaluator
from nascomp.schema import OPERATORS  # the paper's operators: students that remove layers and add skips


class Diverging:
    """A real candidate whose first conv starts with NaN weights: its loss is NaN from the first step."""

    def __init__(self, arch):
        self.arch, self.key, self.num_params = arch, "nan-" + arch.key, arch.num_params
        self.graph = arch.graph  # what the evaluator measures the costs of

    def build(self, teacher, inherit):
        net = self.arch.build(teacher, inherit=inherit)
        with torch.no_grad():
            net.layers[0].weight.fill_(float("nan"))
        return net


class Oversized(Diverging):
    """A real candidate whose forward pass asks the allocator for 16 TiB: a genuine out-of-memory
    error from torch's host allocator, raised in the middle of training."""

    def build(self, teacher, inherit):
        net = self.arch.build(teacher, inherit=inherit)
        net.register_forward_pre_hook(lambda module, args: torch.empty(2**44, dtype=torch.uint8) and None)
        return net


@pytest.fixture(scope="module")
def setup():
    dataset = data.load(group("dataset", "digits"))
    teacher = teachers.create("small_resnet", width=0.25).eval()
    space = CompressionSpace(ArchGraph.from_module(teacher, (1, 8, 8)), ops=OPERATORS)
    proxy = group("training", "proxy", ["epochs=1", "batch_size=128", "trainer.accelerator=cpu"])
    return dataset, teacher, space, proxy


def test_nan_candidate_fails_alone(setup):
    dataset, teacher, space, proxy = setup
    rng = np.random.default_rng(0)
    good, other = space.sample(rng), space.sample(rng)
    evaluator = ProxyEvaluator(teacher, 0.95, dataset, proxy, "first", cohort=True)
    bad, fine = evaluator.evaluate([Diverging(other), good])
    assert bad.f == 0.0 and bad.error == "training loss diverged (non-finite)" and not bad.transient  # shared
    assert fine.error is None and fine.f > 0
    (alone,) = ProxyEvaluator(teacher, 0.95, dataset, proxy, "first", cohort=True).evaluate([good])
    assert fine.f == alone.f  # the NaN student did not leak into its cohort-mate


def test_out_of_memory_candidate_fails_alone(setup):
    dataset, teacher, space, proxy = setup
    rng = np.random.default_rng(1)
    good, other = space.sample(rng), space.sample(rng)
    evaluator = ProxyEvaluator(teacher, 0.95, dataset, proxy, "first", cohort=True)
    bad, fine = evaluator.evaluate([Oversized(other), good])  # the cohort fails, then each is retried alone
    assert bad.f == 0.0 and bad.error.startswith("RuntimeError") and "can't allocate memory" in bad.error
    assert bad.transient and not fine.transient  # kept for this run only by the run store
    assert fine.error is None and fine.f > 0
    (alone,) = ProxyEvaluator(teacher, 0.95, dataset, proxy, "first", cohort=True).evaluate([good])
    assert fine.f == alone.f
