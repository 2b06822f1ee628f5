"""Ray evaluation on CPU with 2 local workers: the same results as local evaluation, a dead worker's
student re-run, a failing task recorded as failed (transient for an out of memory or a timeout)."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

ray = pytest.importorskip("ray")

from nascomp import ArchGraph, CompressionSpace, data, teachers  # noqa: E402
from nascomp.config import group  # noqa: E402
from nascomp.proxy_evaluator import ProxyEvaluator  # noqa: E402
from nascomp.ray_evaluator import RayEvaluator, proxy_task  # noqa: E402
from nascomp.schema import OPERATORS  # the paper's operators: students that remove layers and add skips


@pytest.fixture(scope="module")
def setup():
    os.environ["OMP_NUM_THREADS"] = "1"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    dataset_cfg = group("dataset", "digits")
    dataset = data.load(dataset_cfg)
    teacher = teachers.create("small_resnet", width=0.25).eval()
    graph = ArchGraph.from_module(teacher, (1, 8, 8))
    space = CompressionSpace(graph, ops=OPERATORS)
    proxy = group("training", "proxy", ["epochs=1", "batch_size=64", "trainer.accelerator=cpu"])
    yield dataset_cfg, dataset, teacher, graph, space, proxy
    ray.shutdown()


def make(setup, task=proxy_task, **ray_overrides):
    dataset_cfg, dataset, teacher, graph, space, proxy = setup
    ray_cfg = OmegaConf.merge(group("evaluator", "ray"), ray_overrides)
    spec = {"name": "small_resnet", "num_classes": 10, "width": 0.25, "kwargs": {}}
    return RayEvaluator(teacher, 0.9, dataset, proxy, "first", False, None, ray_cfg=ray_cfg, teacher_spec=spec,
                        dataset_cfg=OmegaConf.to_container(dataset_cfg), graph_json=graph.to_json(),
                        space_options={}, task=task)


@pytest.mark.slow
def test_ray_gives_the_same_results_as_local(setup):
    dataset_cfg, dataset, teacher, graph, space, proxy = setup
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(2)]
    local = ProxyEvaluator(teacher, 0.9, dataset, proxy, "first", True).evaluate(archs)
    remote = make(setup).evaluate(archs)
    assert [e.error for e in remote] == [None, None]
    assert [e.f for e in remote] == pytest.approx([e.f for e in local], abs=1e-6)
    assert [e.accuracy for e in remote] == pytest.approx([e.accuracy for e in local], abs=1e-6)


ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module


def dies_once(payload, arch):
    marker = Path(payload["marker"])
    if not marker.exists():
        marker.write_text("died")
        os._exit(1)  # the worker process dies mid-task
    return proxy_task(payload, arch)


def always_fails(payload, arch):
    raise FloatingPointError("loss is nan")


@pytest.mark.slow
def test_dead_worker_is_requeued_and_failures_are_recorded(setup, tmp_path):
    _, _, _, _, space, _ = setup
    arch = space.sample(seed=1)
    ev = make(setup, task=dies_once)
    ev.payload = ray.put({**ray.get(ev.payload), "marker": str(tmp_path / "marker")})
    (result,) = ev.evaluate([arch])
    assert (tmp_path / "marker").exists() and result.error is None and result.f > 0
    (failed,) = make(setup, task=always_fails).evaluate([arch])
    assert failed.f == 0.0 and "loss is nan" in failed.error
    assert not failed.transient and not result.transient  # the task's own error (a RayTaskError) is shared


def runs_out_of_memory(payload, arch):
    import torch

    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 16.00 TiB")


def sleeps(payload, arch):
    import time

    time.sleep(60)


@pytest.mark.slow
def test_out_of_memory_and_timeouts_in_ray_are_transient_failures(setup):
    _, _, _, _, space, _ = setup
    arch = space.sample(seed=2)
    (oom,) = make(setup, task=runs_out_of_memory).evaluate([arch])  # a RayTaskError wrapping the OOM
    assert oom.f == 0.0 and "CUDA out of memory" in oom.error and oom.transient
    (late,) = make(setup, task=sleeps, timeout_s=1).evaluate([arch])
    assert late.error == "TimeoutError: no result within evaluator.timeout_s=1" and late.transient


def test_more_gpus_than_the_cluster_has_is_an_error(setup):
    with pytest.raises(ValueError, match="per student, but the Ray cluster has 0 GPUs"):
        make(setup, num_gpus=1)
