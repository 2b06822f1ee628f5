"""Run outputs: the Pareto front, the history rows, plots and report, the CSV tracker."""
from types import SimpleNamespace

import pytest

from nascomp.report import history_rows, pareto_front, plot, table, write_history, write_report
from nascomp.tracking import CSVTracker


def test_pareto_front_by_hand():
    points = [(10, 0.5), (20, 0.7), (15, 0.4), (30, 0.7), (40, 0.9), (5, 0.1)]
    assert pareto_front(points) == [(5, 0.1), (10, 0.5), (20, 0.7), (40, 0.9)]


def _record(i, f, params, acc, error=None):
    return SimpleNamespace(arch=SimpleNamespace(key=f"k{i}"), f=f, accuracy=acc, num_params=params,
                           step=i // 2, proposer=None if i < 2 else i % 2, seconds=1.5, error=error)


def test_rows_plots_and_report(tmp_path):
    history = [_record(0, 0.5, 500, 0.8), _record(1, 0.7, 300, 0.85), _record(2, 0.0, 200, 0.0, "OutOfMemoryError: x"),
               _record(3, 0.9, 100, 0.9)]
    rows = history_rows(history, teacher_params=1000)
    assert [r["ratio"] for r in rows] == pytest.approx([0.5, 0.7, 0.8, 0.9])
    assert rows[3]["times"] == pytest.approx(10.0) and rows[2]["error"].startswith("OutOfMemoryError")
    assert [r["proposer"] for r in rows] == ["", "", 0, 1]
    write_history(rows, tmp_path / "history.csv")
    assert (tmp_path / "history.csv").read_text().splitlines()[0].startswith("index,step,proposer,key,num_params")
    files = plot(rows, {"num_params": 1000, "accuracy": 0.95}, tmp_path)
    assert all((tmp_path / f).stat().st_size > 5000 for f in files.values())
    summary = {"name": "t", "teacher": {"accuracy": 0.95, "num_params": 1000, "ratio": 0.0, "times": 1.0, "f": 0.0},
               "best": {"accuracy": 0.9, "num_params": 100, "ratio": 0.9, "times": 10.0, "f": 0.9}, "finalists": [],
               "evaluations": 4, "steps": 2, "search": {"method": "ours", "K": 2}, "seconds": {"search": 3, "final": 1}}
    text = write_report(summary, files, tmp_path).read_text()
    assert "| best student | 90.00% | 0.0001M | 0.9000 | 10.00x | 0.9000 |" in text
    assert "![Accuracy against parameters](accuracy_vs_params.png)" in text


def test_csv_tracker(tmp_path):
    t = CSVTracker(tmp_path)
    t.log_step(0, [SimpleNamespace(f=0.2, failed=False), SimpleNamespace(f=0.4, failed=False)], 0.4)
    t.log_step(1, [SimpleNamespace(f=0.6, failed=False), SimpleNamespace(f=0.0, failed=False)], 0.6)
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines == ["step,evaluations,best_f,mean_f", "0,2,0.4,0.30000000000000004", "1,4,0.6,0.3"]


def test_failed_students_have_no_f_in_the_plots_and_metrics(tmp_path):
    """A failed row's f (0) is a placeholder: where every reward is negative (a latency objective
    whose students are slower than the teacher) the best so far is the best student's, not 0."""
    from nascomp.report import rewards

    history = [_record(0, -0.4, 500, 0.8), _record(1, 0.0, 300, 0.0, "OutOfMemoryError: x"), _record(2, -0.1, 200, 0.85),
               _record(3, -0.3, 100, 0.9)]
    rows = history_rows(history, teacher_params=1000)
    assert rewards(rows) == ([0, 2, 3], [-0.4, -0.1, -0.3], [-0.4, -0.1, -0.1])
    t = CSVTracker(tmp_path)
    failed = SimpleNamespace(f=0.0, failed=True)
    t.log_step(0, [SimpleNamespace(f=-0.4, failed=False), failed], -0.4)
    t.log_step(1, [failed, failed], -0.4)
    assert (tmp_path / "metrics.csv").read_text().splitlines()[1:] == ["0,2,-0.4,-0.4", "1,4,-0.4,nan"]


def test_csv_tracker_of_a_resumed_run_rewrites_the_file(tmp_path):
    """A resumed run replays every step from step 0: its tracker starts metrics.csv anew instead of
    appending a second header and the replayed steps to the killed run's rows."""
    killed = CSVTracker(tmp_path)
    killed.log_step(0, [SimpleNamespace(f=0.2, failed=False), SimpleNamespace(f=0.4, failed=False)], 0.4)
    resumed = CSVTracker(tmp_path)
    resumed.log_step(0, [SimpleNamespace(f=0.2, failed=False), SimpleNamespace(f=0.4, failed=False)], 0.4)
    resumed.log_step(1, [SimpleNamespace(f=0.6, failed=False), SimpleNamespace(f=0.0, failed=False)], 0.6)
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines == ["step,evaluations,best_f,mean_f", "0,2,0.4,0.30000000000000004", "1,4,0.6,0.3"]


def test_table_columns():
    out = table([{"name": "teacher", "accuracy": 0.7371, "num_params": 20.09e6, "ratio": 0.0, "times": 1.0, "f": 0.0}])
    assert out.splitlines()[2] == "| teacher | 73.71% | 20.09M | 0.0000 | 1.00x | 0.0000 |"


@pytest.mark.slow
def test_wandb_offline_run(tmp_path, monkeypatch):
    """Real W&B in offline mode: a run directory with its data file, metrics keyed by search/step."""
    from omegaconf import OmegaConf

    from nascomp.tracking import make_tracker

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = OmegaConf.create({"_target_": "nascomp.tracking.WandbTracker", "project": "nascomp-test", "entity": None, "mode": "auto"})
    t = make_tracker(cfg, tmp_path, {"name": "t", "experiment_group": "g"})
    assert t.inner.run.settings.mode == "offline"
    t.log_step(0, [SimpleNamespace(f=0.2, failed=False), SimpleNamespace(f=0.5, failed=False)], 0.5)
    t.log_history([{"step": 0, "key": "a", "f": 0.2}])
    (tmp_path / "student").mkdir()
    (tmp_path / "student" / "architecture.json").write_text("{}")
    t.log_students({"best": tmp_path / "student"})
    t.log_summary({"best": {"accuracy": 0.9, "num_params": 10, "ratio": 0.5, "times": 2.0, "f": 0.7}})
    t.finish()
    assert not t.failed  # the guard swallowed nothing
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


@pytest.mark.parametrize("name", ["summary.json", "history.csv", "report.md", "f_vs_index.png"])
def test_an_output_is_written_whole_or_a_failed_write_names_it(tmp_path, name):
    """Every output goes through a temporary file beside it (a kill leaves the old file or the new one, never
    part of one); a disk that is full (the temporary file is /dev/full here: a real ENOSPC) is an OutputError
    naming the output, the old file left as it was and nothing temporary left."""
    import os

    from nascomp.files import OutputError
    from nascomp.report import write_summary

    rows = history_rows([_record(i, 0.5 + i / 10, 1000 * (i + 1), 0.9) for i in range(4)], 10000)
    write = {"summary.json": lambda: write_summary({"best": {"f": 1.0}}, tmp_path),
             "history.csv": lambda: write_history(rows, tmp_path / "history.csv"),
             "report.md": lambda: write_report(
                 {"name": "t", "teacher": {"accuracy": 0.95, "num_params": 1000, "ratio": 0.0, "times": 1.0, "f": 0.0},
                  "best": {"accuracy": 0.9, "num_params": 100, "ratio": 0.9, "times": 10.0, "f": 0.9}, "finalists": [],
                  "evaluations": 4, "steps": 2, "search": {"method": "ours", "K": 2}, "seconds": {"search": 3, "final": 1}},
                 {"f_vs_index": "a.png", "f_histogram": "b.png", "accuracy_vs_params": "c.png"}, tmp_path),
             "f_vs_index.png": lambda: plot(rows, {"accuracy": 0.9, "num_params": 10000}, tmp_path)}[name]
    (tmp_path / name).write_text("old")
    full = tmp_path / f".{name}.{os.getpid()}.tmp"
    full.symlink_to("/dev/full")
    with pytest.raises(OutputError, match=rf"^cannot write '{tmp_path / name}': No space left on device \(errno 28\)$"):
        write()
    assert (tmp_path / name).read_text() == "old" and not full.exists() and not full.is_symlink()
    write()
    assert (tmp_path / name).stat().st_size > 3 and not list(tmp_path.glob(".*.tmp"))
