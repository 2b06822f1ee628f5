"""trainer.threads: the CPUs a process may use (affinity mask, cgroup v2 quota), shared among workers,
validated at startup, applied by the run; and benchmarks/contention.py in a tiny form."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nascomp import threads
from nascomp.config import compose
from nascomp.schema import ConfigError, validate

ROOT = Path(__file__).resolve().parents[1]


def cpu_max(tmp_path, text):
    path = tmp_path / "cpu.max"
    path.write_text(text)
    return path


def test_quota_is_parsed_from_cgroup_v2_cpu_max(tmp_path):
    assert threads.quota_cpus(cpu_max(tmp_path, "150000 100000\n")) == 1.5
    assert threads.quota_cpus(cpu_max(tmp_path, "400000 100000\n")) == 4.0
    assert threads.quota_cpus(cpu_max(tmp_path, "max 100000\n")) is None
    assert threads.quota_cpus(tmp_path / "absent") is None


def test_available_cpus_is_the_affinity_mask_capped_by_the_quota(tmp_path):
    mask = len(os.sched_getaffinity(0))
    assert threads.available_cpus(tmp_path / "absent") == mask
    assert threads.available_cpus(cpu_max(tmp_path, "max 100000")) == mask
    assert threads.available_cpus(cpu_max(tmp_path, "150000 100000")) == 1  # 1.5 CPUs: one whole one
    assert threads.available_cpus(cpu_max(tmp_path, "50000 100000")) == 1  # never below 1
    assert threads.available_cpus(cpu_max(tmp_path, f"{100000 * (mask + 8)} 100000")) == mask  # quota above the mask


def test_auto_keeps_half_of_each_workers_cpus_and_never_goes_below_one():
    assert [threads.count("auto", cpus=c) for c in (1, 2, 3, 4, 16, 64)] == [1, 1, 1, 2, 8, 32]
    assert threads.count("auto", workers=4, cpus=16) == 2
    assert threads.count("auto", workers=3, cpus=16) == 2  # 16 / 3 / 2 = 2.67
    assert threads.count("auto", workers=8, cpus=2) == 1
    assert threads.count("auto", cpus=0.5) == 1  # a fractional Ray reservation
    assert threads.count(3, workers=8, cpus=2) == 3  # a count is taken as given
    assert threads.count("auto") == max(1, len(os.sched_getaffinity(0)) // 2)


def test_apply_sets_torch_and_logs_one_line(caplog):
    before = torch.get_num_threads()
    try:
        with caplog.at_level("INFO", logger="nascomp"):
            assert threads.apply("auto", workers=2, cpus=8) == 2
        assert torch.get_num_threads() == 2
        assert caplog.messages == ["torch threads: 2 (8 CPUs available, 2 workers, trainer.threads=auto)"]
        assert threads.apply(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("value", ["0", "-2", "abc", "1.5"])
def test_bad_thread_counts_fail_validation_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"^trainer\.threads: .* must be auto or an integer >= 1"):
        validate(compose(["experiment=quickstart", f"trainer.threads={value}"]))


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("3", 3)])
def test_good_thread_counts_validate(value, expected):
    assert validate(compose(["experiment=quickstart", f"trainer.threads={value}"])).trainer.threads == expected


@pytest.mark.slow
def test_contention_benchmark_runs_the_quickstart_twice_and_ends_with_the_slowdown():
    tiny = ["search.K=2", "search.T=0", "search.acquisition.samples=20", "proxy.epochs=1", "final.enabled=false",
            "teacher_training.epochs=3", "teacher.width=0.25", "trainer.threads=1"]  # 1 epoch ends at chance (seed 0)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.contention", "--busy", "0", *tiny], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.strip().splitlines()
    assert re.fullmatch(r"slowdown = \d+\.\d\d", out[-1])
    idle, busy = (float(re.search(rf"^{c}: ([\d.]+) s$", proc.stdout, re.M).group(1)) for c in ("idle", "busy"))
    assert float(out[-1].split("= ")[1]) == pytest.approx(busy / idle, abs=0.02)
    rows = [line for line in out if line.startswith("| idle |") or line.startswith("| beside 0 busy processes |")]
    assert len(rows) == 2 and all("torch threads: 1 (" in r and "trainer.threads=1)" in r for r in rows)
