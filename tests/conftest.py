import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):  # pytest -n N: N workers share the CPUs, one torch thread each
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


@pytest.fixture
def one_thread():
    """Small convs on a shared CPU: more threads only contend."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# The files that take longest (minutes, mostly real `python -m nascomp.run` subprocesses), run first so
# that two xdist workers (`-n 2 --dist loadfile`, the README's command) do not end on one long file.
LONGEST_FIRST = ("test_benchmarks.py", "test_zoo.py", "test_store.py", "test_signals.py", "test_pruning.py",
                 "test_transfer.py", "test_run.py", "test_baselines.py", "test_ray.py", "test_threads.py",
                 "test_pareto_run.py", "test_compression_space.py", "test_bad_inputs.py", "test_gpu_check.py",
                 "test_training.py", "test_constraint.py", "test_timm.py")  # measured 2026-12-02 (--durations)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the order within a file is kept
