"""Tracking with real W&B (offline): the history table of a real search, typed columns, and a tracker
that fails never ends the run (one warning; history.csv holds the same data)."""
import csv
import json
import logging
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from nascomp import tracking
from nascomp.config import compose
from nascomp.report import history_rows
from nascomp.schema import validate
from nascomp.tracking import Tracker, make_tracker

from test_run import TINY

WANDB = OmegaConf.create({"_target_": "nascomp.tracking.WandbTracker", "project": "nascomp-test", "entity": None, "mode": "auto"})


def warnings_of(caplog):
    return [r for r in caplog.records if r.name == "nascomp.tracking" and r.levelno == logging.WARNING]


def logged_table(run_dir):
    """The ``evaluated`` table as W&B wrote it into the offline run's files: (columns, rows)."""
    tables = list(run_dir.glob("wandb/offline-run-*/files/media/table/evaluated_*.table.json"))
    assert len(tables) == 1, tables
    table = json.loads(tables[0].read_text())
    return table["columns"], table["data"]


def as_csv(value):
    return "" if value is None else str(value)


def test_history_with_and_without_a_proposing_kernel(tmp_path, monkeypatch, caplog):
    """The rows that crashed W&B: proposer "" (random first students) then integers."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    history = [SimpleNamespace(arch=SimpleNamespace(key=f"k{i}"), step=i // 2, proposer=kernel, num_params=100 - 10 * i,
                               accuracy=0.5 + i / 10, f=0.1 * i, seconds=1.5, error=None if i != 1 else "out of memory")
               for i, kernel in enumerate([None, None, 0, 1])]
    rows = history_rows(history, teacher_params=200)
    t = make_tracker(WANDB, tmp_path, {"name": "t", "experiment_group": "g"})
    t.log_history(rows)
    t.finish()
    assert not t.failed and not warnings_of(caplog)
    columns, data = logged_table(tmp_path)
    assert columns == list(rows[0])
    column = dict(zip(columns, zip(*data)))
    assert column["proposer"] == (None, None, 0, 1)  # a missing proposing kernel is a typed null
    assert column["num_params"] == (100, 90, 80, 70)
    assert column["ratio"] == pytest.approx((0.5, 0.55, 0.6, 0.65))
    assert column["error"] == ("", "out of memory", "", "")


def test_a_tracker_that_cannot_start_warns_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_MODE", "bogus")  # W&B's own settings validation refuses it
    t = make_tracker(WANDB, tmp_path, {"name": "t"})
    t.log_step(0, [SimpleNamespace(f=0.5, failed=False)], 0.5)
    t.log_history([{"index": 0}])
    t.log_summary({})
    t.finish()
    assert t.failed
    [warning] = warnings_of(caplog)
    message = warning.getMessage()
    assert "logger WandbTracker failed in start" in message and "history.csv" in message and "ValidationError" in message


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A teachers/ cache shared by the runs of this module (trained once)."""
    return tmp_path_factory.mktemp("teachers")


def tiny_run(run_dir, teacher_dir, *overrides):
    from nascomp.pipeline import run

    return run(validate(compose(TINY + [f"teacher_dir={teacher_dir}", *overrides])), run_dir)


@pytest.mark.slow
def test_wandb_logs_the_history_of_a_real_search(tmp_path, teacher_dir, monkeypatch, caplog):
    """``logger=wandb`` end to end (the reproduction of the crash): the run finishes and W&B's table
    equals history.csv, row for row; its summary holds the answer's and the pruning baseline's figures."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    summary = tiny_run(tmp_path, teacher_dir, "logger=wandb", "final.prune=[l1]")
    assert json.loads((tmp_path / "summary.json").read_text())["evaluations"] == summary["evaluations"] == 4
    assert not warnings_of(caplog)
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    columns, data = logged_table(tmp_path)
    assert columns == list(rows[0])
    assert len(data) == len(rows) == 4
    for row, logged in zip(rows, data):
        assert [as_csv(v) for v in logged] == [row[c] for c in columns]
    kernels = [dict(zip(columns, logged))["proposer"] for logged in data]
    assert kernels[:2] == [None, None] and all(isinstance(k, int) for k in kernels[2:])  # random, then proposed
    # the run's summary (an offline run keeps it in its binary log: read back from a W&B run in this process)
    t = make_tracker(WANDB, tmp_path / "summary", {"name": "t"})
    t.log_summary(summary)
    logged, (pruned,) = t.inner.run.summary, summary["pruning"]
    assert logged["best/f"] == summary["best"]["f"]
    assert {k: logged[f"pruned_l1/{k}"] for k in ("f", "num_params", "f_minus_answer")} == \
        {k: pruned[k] for k in ("f", "num_params", "f_minus_answer")}
    t.finish()
    assert not t.failed


class BrokenTracker(Tracker):
    """Every call raises, as a tracker whose service went away would."""

    def __init__(self, *args, **options):
        self.calls = 0

    def log_step(self, *args, **kwargs):
        self.calls += 1
        raise ConnectionError("tracking service unreachable")

    log_history = log_students = log_summary = finish = log_step


@pytest.mark.slow
def test_a_failing_tracker_never_ends_the_run(tmp_path, teacher_dir, monkeypatch, caplog):
    monkeypatch.setattr(tracking, "WandbTracker", BrokenTracker)
    summary = tiny_run(tmp_path, teacher_dir, "logger=wandb", "final.enabled=false")
    assert json.loads((tmp_path / "summary.json").read_text())["evaluations"] == summary["evaluations"] == 4
    assert len(list(csv.DictReader(open(tmp_path / "history.csv")))) == 4
    [warning] = warnings_of(caplog)
    message = warning.getMessage()
    assert "logger BrokenTracker failed in log_step (ConnectionError: tracking service unreachable)" in message
    assert "history.csv" in message
