"""SIGTERM / SIGINT during a real run (issue 11, point 8): the run ends with 143 / 130 and one line on
stderr giving the command that resumes it; re-running that command resumes from the store, keeping
what was recorded. A real ``python -m nascomp.run`` subprocess; the store is polled to time the signal."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

ARGS = ["experiment=quickstart", "search.K=2", "search.T=1", "search.acquisition.samples=20", "proxy.epochs=2",
        "final.enabled=false", "teacher_training.epochs=2", "teacher.width=0.25", "logger=none"]
ENV = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A working directory whose teachers/ cache the tests share."""
    return tmp_path_factory.mktemp("signals")


def _counts(store) -> tuple[int, int]:
    """(recorded evaluations, evaluations in flight) of a run store, (0, 0) before it exists."""
    try:
        db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
        try:
            return tuple(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("evaluations", "inflight"))
        finally:
            db.close()
    except sqlite3.Error:
        return 0, 0


def _interrupt(workdir, run, sig, when, extra=()) -> tuple[subprocess.CompletedProcess, list[str]]:
    args = [*ARGS, *extra, f"hydra.run.dir={run}"]
    proc = subprocess.Popen([sys.executable, "-m", "nascomp.run", *args], cwd=workdir, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while proc.poll() is None and not when(*_counts(run / "store.sqlite")) and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the signal"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), args


def _check_one_line(proc, sig, run, args):
    expected = (f"error: interrupted by {sig.name}; the run resumes from its store in {run}: "
                f"python -m nascomp.run {' '.join(args)}")
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [expected], proc.stderr[-3000:]
    assert proc.stderr.rstrip().endswith(expected) and "Traceback" not in proc.stderr


def _resume(workdir, args) -> dict:
    proc = subprocess.run([sys.executable, "-m", "nascomp.run", *args], cwd=workdir, env=ENV, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_sigterm_in_student_training_exits_143_and_the_same_command_resumes(workdir):
    run = workdir / "term"
    # the first step's students are in flight: proxy training (Lightning's own SIGTERM handler is active)
    # 30 proxy epochs: the students are still training 0.5 s after they are marked in flight (2 epochs could end sooner)
    proc, args = _interrupt(workdir, run, signal.SIGTERM, lambda done, inflight: inflight == 2 and not time.sleep(0.5),
                            extra=["proxy.epochs=30"])
    assert proc.returncode == 143
    _check_one_line(proc, signal.SIGTERM, run, args)
    assert _counts(run / "store.sqlite") == (0, 2)  # nothing finished was lost; the step is marked in flight
    resumed = _resume(workdir, args)
    assert "0 evaluations stored, 2 were in flight" in resumed.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["evaluations"] == 4 and _counts(run / "store.sqlite") == (4, 0)


def test_sigint_after_a_recorded_step_exits_130_and_resume_keeps_the_step(workdir):
    run = workdir / "int"
    # step 0 recorded, step 1 not started: the kernels are being fitted
    proc, args = _interrupt(workdir, run, signal.SIGINT, lambda done, inflight: done == 2)
    assert proc.returncode == 130
    _check_one_line(proc, signal.SIGINT, run, args)
    done, _ = _counts(run / "store.sqlite")
    assert done >= 2  # step 0 is kept
    resumed = _resume(workdir, args)
    assert "resuming run" in resumed.stdout and f"{done} evaluations stored" in resumed.stdout
    assert f"search done: 4 evaluations, {done} from the store's cache" in resumed.stdout


def test_an_error_after_a_signal_is_the_signal():
    """``training.signals_kept`` (round ``run`` in the main job, and every Trainer call): a signal that lands inside a library's set-up can come out as
    that library's error (seen in CI: a SIGINT inside Lightning's Trainer construction became
    ``AttributeError: 'PassThroughProfiler' object has no attribute '_stage'``); after a signal was taken, any error
    raises ``Interrupted`` for it instead; with none taken, the error stays."""
    import nascomp.signals
    from nascomp.signals import Interrupted, on_signals
    from nascomp.training import signals_kept

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        on_signals("run")
        with pytest.raises(AttributeError, match="_stage"):
            with signals_kept():
                raise AttributeError("'PassThroughProfiler' object has no attribute '_stage'")
        with pytest.raises(Interrupted) as exc:
            with signals_kept():
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(1)  # the handler raises Interrupted here
                except Interrupted:  # the library's teardown replaces it
                    raise AttributeError("'PassThroughProfiler' object has no attribute '_stage'")
        assert exc.value.signum == signal.SIGINT
    finally:
        for s, h in before.items():
            signal.signal(s, h)
        nascomp.signals._received = None


def test_a_signal_swallowed_by_a_finaliser_is_raised_again_at_the_next_safe_point():
    """A SIGTERM that lands while a finaliser (``__del__``) runs loses its exception there ("Exception
    ignored"); ``check_interrupted``, called after each search step, before the run is marked finished and
    after ``run`` returns, raises it again, so the run still ends with 143."""
    import gc

    import nascomp.pipeline
    import nascomp.signals
    from nascomp.signals import Interrupted, check_interrupted, on_signals

    # python -m nascomp.run runs that module as __main__, a second copy: the state lives in nascomp.signals,
    # which the pipeline's checks read
    assert nascomp.pipeline.check_interrupted is check_interrupted

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    class Finalised:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)  # the handler runs here, inside __del__

    try:
        on_signals("run")
        check_interrupted()  # nothing taken yet: no-op
        Finalised()
        gc.collect()  # the Interrupted raised in __del__ was printed and ignored
        with pytest.raises(Interrupted) as exc:
            check_interrupted()
        assert exc.value.signum == signal.SIGTERM
    finally:
        for s, h in before.items():
            signal.signal(s, h)
        nascomp.signals._received = None
