"""How many threads torch computes with: ``trainer.threads`` (``auto`` or a count), set once per process.

A parallel region of torch's intra-op pool ends when its slowest thread does. A thread that shares
its core with another busy process waits for the scheduler at every region, so on a loaded machine
more threads can make small convolutions many times slower (``benchmarks/contention.py``).
``auto`` therefore takes the CPUs this process may use (its affinity mask, capped by a cgroup v2
quota), divides them among the workers that compute at once (a local cohort is one process; a Ray
task gets ``evaluator.num_cpus``), and keeps half of them free for whatever else runs:

    threads = max(1, floor(cpus / workers / 2))

On 2 cores that is 1 thread: the quickstart took 25 s idle / 50 s beside two busy processes with 1
thread and 21 s / 147 s with 2 (issue 11); with 2 threads on a loaded 2-core machine search steps
took 10-15x longer than with 1 (``benchmarks/contention.py``). Halving on larger machines is not
measured; on SMT machines it is about one thread per physical core.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch

log = logging.getLogger("nascomp")

CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "QUOTA PERIOD" in microseconds, or "max PERIOD"


def quota_cpus(path: Path = CPU_MAX) -> float | None:
    """CPUs granted by a cgroup v2 quota (``cpu.max`` "150000 100000" = 1.5); None without a quota or file."""
    try:
        quota, period = Path(path).read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def available_cpus(path: Path = CPU_MAX) -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup quota (floored, at least 1)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = quota_cpus(path)
    return cpus if quota is None else max(1, min(cpus, math.floor(quota)))


def count(setting: int | str, workers: float = 1, cpus: int | None = None) -> int:
    """The thread count for ``setting`` (an int >= 1, or ``auto``) with ``workers`` computing at once
    on ``cpus`` CPUs (default: :func:`available_cpus`)."""
    if setting != "auto":
        return int(setting)
    cpus = available_cpus() if cpus is None else cpus
    return max(1, math.floor(cpus / workers / 2))


def apply(setting: int | str, workers: float = 1, cpus: int | None = None) -> int:
    """Set torch's intra-op thread count (:func:`count`), log it once, return it."""
    cpus = available_cpus() if cpus is None else cpus
    n = count(setting, workers, cpus)
    torch.set_num_threads(n)
    log.info("torch threads: %d (%g CPUs available, %g worker%s, trainer.threads=%s)",
             n, cpus, workers, "" if workers == 1 else "s", setting)
    return n
