"""The run store: cache, resume after kill -9 equals an uninterrupted run, failures recorded, bad input."""
import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from nascomp import ArchGraph, CompressionSpace, teachers
from nascomp.evaluator import Evaluation, Evaluator
from nascomp.evaluator import StoredEvaluator
from nascomp.store import RunStore, StoreError

from test_run import TINY, cli


class CountingEvaluator(Evaluator):
    def __init__(self):
        self.calls = 0

    def evaluate(self, archs, step=0):
        self.calls += len(archs)
        return [Evaluation(1.0 / (1 + a.num_params), 0.5, a.num_params, 0.1) for a in archs]


@pytest.fixture
def space():
    return CompressionSpace(ArchGraph.from_module(teachers.create("small_resnet", width=0.25), (1, 8, 8)))


def test_cache_hit_within_and_across_runs(tmp_path, space):
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(3)]
    store = RunStore(tmp_path / "s.sqlite")
    inner = CountingEvaluator()
    first = StoredEvaluator(inner, store, "run-a", "ctx")
    a = first.evaluate(archs)
    again = first.evaluate(archs[:2] + [space.sample(rng)])
    assert inner.calls == 4 and first.hits == 2
    assert [e.f for e in again[:2]] == [e.f for e in a[:2]]
    other_run = StoredEvaluator(inner, RunStore(tmp_path / "s.sqlite"), "run-b", "ctx")
    other_run.evaluate(archs)
    assert inner.calls == 4  # another run sharing the store: no training
    StoredEvaluator(inner, store, "run-c", "other-context").evaluate(archs)
    assert inner.calls == 7  # another teacher / dataset / recipe: evaluated again
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_open_run_refuses_a_different_config(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    assert store.open_run("r", {"search": {"K": 8}}) is False
    assert store.open_run("r", {"search": {"K": 8}}) is True
    with pytest.raises(StoreError, match=r"search.K: 8 -> 4"):
        store.open_run("r", {"search": {"K": 4}})
    with pytest.raises(StoreError, match="nothing recorded is overwritten"):
        store.open_run("r", {"search": {"K": 8}}, resume=False)


def test_corrupt_store_is_explained(tmp_path):
    (tmp_path / "s.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite run store"):
        RunStore(tmp_path / "s.sqlite")


def test_weights_keep_the_top_k(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    for i, f in enumerate([0.1, 0.9, 0.5, 0.7]):
        store.save_weights("ctx", f"k{i}", f, {"w": torch.full((2,), float(i))}, keep=2)
    assert store.weights("ctx", "k0") is None and store.weights("ctx", "k2") is None
    assert torch.equal(store.weights("ctx", "k3")["w"], torch.full((2,), 3.0))


def _history(run_dir):
    return [(r["key"], round(float(r["f"]), 6)) for r in csv.DictReader(open(run_dir / "history.csv"))]


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted(tmp_path):
    args = TINY + ["search.T=3", "final.enabled=false", "logger=none"]
    # teacher first, so that the kill lands in the search
    cli(args + ["search.T=0", "hydra.run.dir=warmup"], tmp_path)
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "nascomp.run", *args, "hydra.run.dir=killed"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = tmp_path / "killed" / "store.sqlite"
    deadline = time.time() + 300
    done = 0
    while time.time() < deadline and proc.poll() is None:
        if db.is_file():
            try:
                done = sqlite3.connect(db).execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
            except sqlite3.Error:
                pass
        if done >= 3:  # step 0 done and part of step 1: kill in the middle
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the search finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "history.csv").exists()
    cli(args + ["hydra.run.dir=killed"], tmp_path)  # the same command again: resumes
    cli(args + ["hydra.run.dir=straight"], tmp_path)
    resumed, straight = _history(tmp_path / "killed"), _history(tmp_path / "straight")
    assert len(resumed) == 8 and resumed == straight
    n = sqlite3.connect(db).execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
    assert n == 8  # nothing evaluated twice, nothing lost
