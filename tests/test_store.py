"""The run store: cache, resume after kill -9 equals an uninterrupted run, failures recorded, bad input."""
import csv
import json
import logging
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from nascomp import ArchGraph, CompressionSpace, teachers
from nascomp.schema import OPERATORS  # the paper's operators: students that remove layers and add skips
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
    return CompressionSpace(ArchGraph.from_module(teachers.create("small_resnet", width=0.25), (1, 8, 8)), ops=OPERATORS)


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


class CostingEvaluator(CountingEvaluator):
    """Evaluations with every cost; ``costs`` answers for rows stored without them."""

    def costs(self, arch):
        return {"flops": arch.flops, "latency_ms": 1.5, "memory_mb": 0.25}

    def evaluate(self, archs, step=0):
        self.calls += len(archs)
        return [Evaluation(0.5, 0.5, a.num_params, 0.1, None, **self.costs(a)) for a in archs]


def test_a_store_written_before_costs_gains_them_and_keeps_its_rows(tmp_path, space):
    """An evaluations table without the cost columns (as older versions wrote it) is brought up to date
    when opened; its rows read back, and the evaluator fills their costs."""
    path = tmp_path / "old.sqlite"
    arch = space.sample(seed=0)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE evaluations (context TEXT, key TEXT, f REAL, accuracy REAL, num_params INTEGER, "
               "seconds REAL, error TEXT, arch TEXT, created REAL, PRIMARY KEY (context, key))")
    db.execute("INSERT INTO evaluations VALUES ('ctx', ?, 0.7, 0.8, ?, 2.0, NULL, '{}', 0)", (arch.key, arch.num_params))
    db.commit()
    db.close()
    store = RunStore(path)
    columns = [r[1] for r in store.db.execute("PRAGMA table_info(evaluations)")]
    assert columns[-3:] == ["flops", "latency_ms", "memory_mb"]
    assert store.cached("ctx", [arch.key])[arch.key] == {"f": 0.7, "accuracy": 0.8, "num_params": arch.num_params,
                                                          "seconds": 2.0, "error": None, "flops": None,
                                                          "latency_ms": None, "memory_mb": None}
    inner = CostingEvaluator()
    new = space.sample(seed=1)
    old_e, new_e = StoredEvaluator(inner, store, "run", "ctx").evaluate([arch, new])
    assert inner.calls == 1  # the stored one is not evaluated again
    assert (old_e.f, old_e.flops, old_e.latency_ms, old_e.memory_mb) == (0.7, arch.flops, 1.5, 0.25)
    assert store.cached("ctx", [new.key])[new.key]["flops"] == new.flops  # new rows store their costs
    store.close()
    RunStore(path).close()  # opening it again adds nothing twice


class KeyRecordingEvaluator(Evaluator):
    """Records the keys each call evaluates."""

    def __init__(self):
        self.calls = []

    def evaluate(self, archs, step=0):
        self.calls.append([a.key for a in archs])
        return [Evaluation(1.0 / (1 + a.num_params), 0.5, a.num_params, 0.1) for a in archs]


def test_duplicate_keys_in_one_batch(tmp_path, space):
    rng = np.random.default_rng(1)
    a, b, c = (space.sample(rng) for _ in range(3))
    assert len({a.key, b.key, c.key}) == 3
    store = RunStore(tmp_path / "s.sqlite")
    inner = KeyRecordingEvaluator()
    stored = StoredEvaluator(inner, store, "run", "ctx")
    stored.evaluate([c])
    batch = [a, c, a, b, space.from_dict(a.to_dict())]  # a three times (once as an equal copy), c already stored
    evals = stored.evaluate(batch)
    assert inner.calls == [[c.key], [a.key, b.key]]  # once per distinct new key, in first-seen order
    assert [(e.f, e.num_params) for e in evals] == [(1.0 / (1 + x.num_params), x.num_params) for x in batch]
    assert store.count("ctx") == 3 and set(store.cached("ctx", [a.key, b.key, c.key])) == {a.key, b.key, c.key}
    assert store.db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] == 3  # one row per key
    assert store.inflight("run") == []



# --------------------------------------------------------------------------- transient failures
class FailingOnce(Evaluator):
    """Fails the keys in ``fail`` with the exception ``error``, scored as ``ProxyEvaluator.score`` scores
    one (the error's text kept, transient as ``transient_failure`` says); every other key succeeds."""

    def __init__(self, fail=(), error=None):
        self.fail, self.error, self.calls = set(fail), error, []

    def evaluate(self, archs, step=0):
        from nascomp.proxy_evaluator import transient_failure

        self.calls.append([a.key for a in archs])
        return [Evaluation.failure(a.num_params, 0.1, f"{type(self.error).__name__}: {self.error}",
                                   transient=transient_failure(self.error)) if a.key in self.fail
                else Evaluation(1.0 / (1 + a.num_params), 0.5, a.num_params, 0.1) for a in archs]


def _failures(store):
    return [tuple(r) for r in store.db.execute("SELECT run, context, key FROM failures ORDER BY run, key")]


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 16.00 TiB"),
                                   TimeoutError("no result within evaluator.timeout_s=600")], ids=["oom", "timeout"])
def test_a_transient_failure_is_kept_for_its_run_and_evaluated_again_by_others(tmp_path, space, error):
    rng = np.random.default_rng(2)
    x, y = space.sample(rng), space.sample(rng)
    path = tmp_path / "shared.sqlite"
    store_a = RunStore(path)
    first = StoredEvaluator(FailingOnce({x.key}, error), store_a, "run-a", "ctx").evaluate([x, y], step=0)
    assert first[0].failed and first[0].transient and first[0].error.startswith(type(error).__name__)
    assert not first[1].failed and not first[1].transient
    assert store_a.count("ctx") == 1 and _failures(store_a) == [("run-a", "ctx", x.key)]  # only y is shared
    assert store_a.count("ctx", run="run-a") == 2 and store_a.count("ctx", run="run-b") == 1  # A's resume reads x too
    assert store_a.inflight("run-a") == []  # the failure is finished, not in flight

    # (a) run B sharing the store evaluates x again, gets the success, and the shared cache keeps it
    store_b = RunStore(path)
    inner_b = FailingOnce()
    seen_b = StoredEvaluator(inner_b, store_b, "run-b", "ctx").evaluate([x, y], step=0)
    assert inner_b.calls == [[x.key]]  # y from the cache, x trained again
    assert seen_b == [Evaluation(1.0 / (1 + x.num_params), 0.5, x.num_params, 0.1), first[1]]
    assert store_b.cached("ctx", [x.key]) == {x.key: {"f": 1.0 / (1 + x.num_params), "accuracy": 0.5,
                                                      "num_params": x.num_params, "seconds": 0.1, "error": None,
                                                      "flops": None, "latency_ms": None, "memory_mb": None}}
    assert store_b.count("ctx") == 2 and store_b.inflight("run-b") == []
    assert store_b.count("ctx", run="run-a") == 2  # x once, though both tables hold it

    # (b) run A resumed replays its own failure, not B's success, and trains nothing
    store_a.close()
    replay_inner = FailingOnce()
    replay = StoredEvaluator(replay_inner, RunStore(path), "run-a", "ctx")
    assert replay.evaluate([x, y], step=0) == first
    assert replay_inner.calls == [] and replay.hits == 2
    assert _failures(store_b) == [("run-a", "ctx", x.key)]  # kept for run A's later resumes


@pytest.mark.parametrize("error", [ValueError("student forward: shapes (4, 8) and (4, 6) differ"), None],
                         ids=["raises", "diverged"])
def test_a_deterministic_failure_is_shared_with_every_run(tmp_path, space, error):
    x = space.sample(seed=3)
    path = tmp_path / "shared.sqlite"
    if error is None:  # a diverged loss is no exception: ProxyEvaluator.score's failure
        class Diverging(FailingOnce):
            def evaluate(self, archs, step=0):
                self.calls.append([a.key for a in archs])
                return [Evaluation.failure(a.num_params, 0.1, "training loss diverged (non-finite)") for a in archs]
        inner_a = Diverging({x.key})
    else:
        inner_a = FailingOnce({x.key}, error)
    (failed,) = StoredEvaluator(inner_a, RunStore(path), "run-a", "ctx").evaluate([x])
    assert failed.failed and not failed.transient
    store_b = RunStore(path)
    inner_b = FailingOnce()
    assert StoredEvaluator(inner_b, store_b, "run-b", "ctx").evaluate([x]) == [failed]
    assert inner_b.calls == [] and _failures(store_b) == [] and store_b.count("ctx") == 1


@pytest.mark.parametrize("error, transient", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 16.00 TiB"), True),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to "
                  "allocate 17592186044416 bytes"), True),  # the host allocator's, as tests/test_faults.py meets it
    (TimeoutError("no result within evaluator.timeout_s=600"), True),
    (ValueError("student forward: shapes (4, 8) and (4, 6) differ"), False),
    (FloatingPointError("loss is nan"), False),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 6x10)"), False),
], ids=["cuda-oom", "host-oom", "timeout", "value", "nan", "shapes"])
def test_transient_failure_tells_the_environment_from_the_architecture(error, transient):
    from nascomp.proxy_evaluator import transient_failure

    assert transient_failure(error) is transient


def test_transient_failure_on_rays_exceptions():
    exceptions = pytest.importorskip("ray.exceptions")
    from nascomp.proxy_evaluator import transient_failure

    lost = "a" * 56
    transient = [exceptions.WorkerCrashedError(), exceptions.NodeDiedError("node 10.0.0.2 died"),
                 exceptions.LocalRayletDiedError(), exceptions.ObjectLostError(lost, None, ""),
                 exceptions.OwnerDiedError(lost, None, ""),  # a subclass of ObjectLostError
                 exceptions.OutOfMemoryError("Task was killed due to the node running low on memory"),
                 exceptions.TaskCancelledError(), exceptions.RaySystemError("raylet connection lost"),
                 exceptions.ActorDiedError(), exceptions.GetTimeoutError("ray.get timed out"),
                 exceptions.RayTaskError("proxy_task", "Traceback ...", torch.OutOfMemoryError("CUDA out of memory"))
                 .as_instanceof_cause()]
    deterministic = [exceptions.RayTaskError("proxy_task", "Traceback ...", ValueError("bad student")).as_instanceof_cause(),
                     exceptions.RayTaskError("proxy_task", "Traceback ...", FloatingPointError("loss is nan")),
                     exceptions.RuntimeEnvSetupError("pip install failed")]
    assert [transient_failure(e) for e in transient] == [True] * len(transient)
    assert [transient_failure(e) for e in deterministic] == [False] * len(deterministic)


def test_a_store_without_the_failures_table_gains_it_and_keeps_its_failures_shared(tmp_path, space):
    """A store written before transient failures were kept apart opens with a ``failures`` table; the
    failures it holds, an out of memory among them, stay shared (another run does not train them)."""
    from nascomp.store import SCHEMA

    path = tmp_path / "old.sqlite"
    old, new = space.sample(seed=4), space.sample(seed=5)
    db = sqlite3.connect(path)
    db.executescript(";".join(t for t in SCHEMA.split(";") if "failures" not in t))
    db.execute("INSERT INTO evaluations (context, key, f, accuracy, num_params, seconds, error, arch, created) "
               "VALUES ('ctx', ?, 0, 0, ?, 2.0, 'OutOfMemoryError: CUDA out of memory', '{}', 0)", (old.key, old.num_params))
    db.commit()
    db.close()
    store = RunStore(path)
    assert [r[1] for r in store.db.execute("PRAGMA table_info(failures)")][:3] == ["run", "context", "key"]
    inner = FailingOnce({new.key}, torch.OutOfMemoryError("CUDA out of memory"))
    stored_old, stored_new = StoredEvaluator(inner, store, "run-b", "ctx").evaluate([old, new])
    assert inner.calls == [[new.key]]  # the old failure is read from the shared cache
    assert stored_old.failed and not stored_old.transient and stored_old.error == "OutOfMemoryError: CUDA out of memory"
    assert stored_new.transient and _failures(store) == [("run-b", "ctx", new.key)]
    store.close()
    RunStore(path).close()  # opening it again adds nothing twice


def test_open_run_refuses_a_different_config(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    assert store.open_run("r", {"search": {"K": 8}}) is False
    assert store.open_run("r", {"search": {"K": 8}}) is True
    with pytest.raises(StoreError, match=r"search.K: 8 -> 4"):
        store.open_run("r", {"search": {"K": 4}})
    with pytest.raises(StoreError, match="nothing recorded is overwritten"):
        store.open_run("r", {"search": {"K": 8}}, resume=False)


def test_a_run_resumes_through_another_store_path(tmp_path):
    """Keys in ``ignore`` (the pipeline's RESULT_FREE: logger, store) do not refuse a resume: the same
    store opened through another path, or another logger, resumes the run; the first config is kept."""
    from nascomp.pipeline import RESULT_FREE

    store = RunStore(tmp_path / "s.sqlite")
    first = {"search": {"K": 8}, "store": {"path": "s.sqlite"}, "logger": {"name": "wandb"}}
    assert store.open_run("r", first, ignore=RESULT_FREE) is False
    moved = {"search": {"K": 8}, "store": {"path": str(tmp_path / "s.sqlite")}, "logger": {"name": "csv"}}
    assert store.open_run("r", moved, ignore=RESULT_FREE) is True
    with pytest.raises(StoreError, match=r"search.K: 8 -> 4"):
        store.open_run("r", {**moved, "search": {"K": 4}}, ignore=RESULT_FREE)
    with pytest.raises(StoreError, match=r"store.path: 's.sqlite' -> "):
        store.open_run("r", moved)  # without ignore, every key counts
    assert json.loads(store.db.execute("SELECT config FROM runs").fetchone()[0]) == first


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
    args = TINY + ["search.T=3", "final.enabled=false", "logger=csv"]
    # the uninterrupted run first: it also caches the teacher, so that the kill lands in the search
    cli(args + ["hydra.run.dir=straight"], tmp_path)
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
    resumed, straight = _history(tmp_path / "killed"), _history(tmp_path / "straight")
    assert len(resumed) == 8 and resumed == straight
    # metrics.csv of the resumed run: one header and each step once, as the uninterrupted run's
    metrics = (tmp_path / "killed" / "metrics.csv").read_text()
    assert metrics == (tmp_path / "straight" / "metrics.csv").read_text() and metrics.count("step,") == 1
    n = sqlite3.connect(db).execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
    assert n == 8  # nothing evaluated twice, nothing lost


# --------------------------------------------------------------------------- damaged and unwritable stores
def _filled_store(path, n=300):
    """A real store with ``n`` evaluations, checkpointed into the main file (no -wal left)."""
    store = RunStore(path)
    store.open_run("r", {"a": 1})
    store.record("r", "ctx", [(f"k{i}", {"f": i / n, "accuracy": 0.5, "num_params": i, "seconds": 1.0, "error": None},
                               {"removed": list(range(i % 7))}) for i in range(n)])
    store.close()
    return path


def test_garbage_pages_are_found_when_the_store_opens(tmp_path):
    path = _filled_store(tmp_path / "s.sqlite")
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    assert len(data) >= 4 * page
    data[page:] = np.random.default_rng(0).integers(0, 256, len(data) - page, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))  # page 1 (header and schema) intact, every other page garbage
    db = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError):  # what a later query met before: connecting works
        db.execute("SELECT COUNT(*), SUM(f) FROM evaluations").fetchone()
    db.close()
    with pytest.raises(StoreError, match=r"is damaged \(SQLite's quick_check: .*\)\. Nothing was changed\. Salvage") as info:
        RunStore(path)
    assert str(path) in str(info.value) and f"sqlite3 {path} .recover" in str(info.value) and "\n" not in str(info.value)
    assert path.read_bytes() == bytes(data)


def test_quick_check_passes_a_sound_store(tmp_path):
    path = _filled_store(tmp_path / "s.sqlite")
    store = RunStore(path)
    assert store.count("ctx") == 300 and store.status("r") == "running"


def _garble(path, table, where, value):
    db = sqlite3.connect(path)
    with db:
        db.execute(f"UPDATE {table} SET state = ? WHERE {where}", (value,))
    db.close()


def test_unreadable_kernels_name_the_row_and_how_to_delete_it(tmp_path):
    path = tmp_path / "s.sqlite"
    store = RunStore(path)
    store.open_run("r", {"a": 1})
    store.record("r", "ctx", [("k", {"f": 0.5, "accuracy": 0.5, "num_params": 1, "seconds": 1.0, "error": None}, {})])
    for step in range(2):
        store.save_kernels("r", step, {"w": torch.full((3,), float(step))})
    blob = store.db.execute("SELECT state FROM kernels WHERE step = 1").fetchone()[0]
    _garble(path, "kernels", "step = 1", blob[: len(blob) // 2])  # a truncated torch zip
    with pytest.raises(StoreError, match=r"the kernels row \(run 'r', step 1\) of the run store .* cannot be read") as info:
        store.latest_kernels()
    message = str(info.value)
    assert str(path) in message and "the 1 evaluations, are not affected" in message
    command = re.search(r'sqlite3 (\S+) "(DELETE FROM kernels WHERE [^"]+)"', message)
    assert command.group(1) == str(path) and command.group(2) == "DELETE FROM kernels WHERE run = 'r' AND step = 1"
    store.db.execute(command.group(2))  # the advice works: the transfer then reads the step before
    run, step, state = store.latest_kernels()
    assert (run, step) == ("r", 0) and torch.equal(state["w"], torch.zeros(3))


def test_unreadable_weights_finals_and_rng_read_as_missing(tmp_path, caplog):
    path = tmp_path / "s.sqlite"
    store = RunStore(path)
    state = {"w": torch.arange(4.0)}
    store.save_weights("ctx", "a", 0.9, state, keep=2)
    store.save_final("fctx", "a", {"f": 0.8}, state)
    store.save_rng_state("r", 0, {"seed": 1})
    _garble(path, "weights", "key = 'a'", b"PK\x03\x04 not a zip")
    _garble(path, "finals", "key = 'a'", b"\x00" * 64)
    _garble(path, "rng", "step = 0", "{not json")
    with caplog.at_level(logging.WARNING, logger="nascomp"):
        assert store.weights("ctx", "a") is None
        assert store.final("fctx", "a") is None
        assert store.rng_state("r", 0) is None
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 3 and all(str(path) in w for w in warnings)
    assert "the weights row (context 'ctx', key 'a')" in warnings[0] and "proxy training is run again" in warnings[0]
    assert "the finals row (context 'fctx', key 'a')" in warnings[1] and "trained again" in warnings[1]
    assert f"sqlite3 {path} \"DELETE FROM finals WHERE context = 'fctx' AND key = 'a'\"" in warnings[1]
    store.save_final("fctx", "a", {"f": 0.7}, state)  # what final training does next: the row is whole again
    result, again = store.final("fctx", "a")
    assert result == {"f": 0.7} and torch.equal(again["w"], state["w"])


@pytest.fixture
def unwritable():
    """Make a path unwritable for this process: chmod for a normal user; as root (which chmod does not
    stop) the immutable attribute, which stops root too. Undone afterwards."""
    made = []

    def make(path):
        if os.geteuid() != 0:
            mode = path.stat().st_mode
            path.chmod(0o555 if path.is_dir() else 0o444)
            made.append(lambda: path.chmod(mode))
        else:
            if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
                pytest.skip("running as root and `chattr +i` is not available here: nothing can make a path unwritable")
            made.append(lambda: subprocess.run(["chattr", "-i", str(path)], check=True))
        assert not os.access(path, os.W_OK)

    yield make
    for undo in reversed(made):
        undo()


@pytest.mark.parametrize("what", ["directory", "file"])
def test_unwritable_store_is_reported_as_such(tmp_path, unwritable, what):
    path = _filled_store(tmp_path / "run" / "store.sqlite")
    before = path.read_bytes()
    unwritable(path.parent if what == "directory" else path)
    with pytest.raises(StoreError) as info:
        RunStore(path)
    message = str(info.value)
    target = path.parent if what == "directory" else path
    assert f"the {what} {target} is not writable by this process" in message
    assert "nothing in it is lost or changed" in message and "not a usable" not in message and "move it away" not in message
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["store.sqlite"]


def test_store_in_an_unwritable_directory_cannot_be_created(tmp_path, unwritable):
    (tmp_path / "ro").mkdir()
    unwritable(tmp_path / "ro")
    with pytest.raises(StoreError, match=rf"the directory {tmp_path / 'ro'} is not writable by this process"):
        RunStore(tmp_path / "ro" / "new" / "store.sqlite")


# --------------------------------------------------------------------------- one process per run
HOLDER = """
import sys
from nascomp.store import RunStore
store = RunStore(sys.argv[1])
store.open_run(sys.argv[2], {"a": 1})
print("held", flush=True)
sys.stdin.readline()
store.close()
print("released", flush=True)
sys.stdin.readline()
"""


def _holder(path, run):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), run], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline() == "held\n"
    return proc


def test_a_run_held_by_another_process_is_refused(tmp_path):
    path = tmp_path / "s.sqlite"
    holder = _holder(path, "r")
    try:
        store = RunStore(path)
        with pytest.raises(StoreError, match=rf"run r of the store {path} is already running: held by pid {holder.pid} "
                                             rf"on host {socket.gethostname()} since 20\d\d-.* UTC"):
            store.open_run("r", {"a": 1})
        assert store.open_run("other", {"a": 2}) is False  # another run sharing the store is not blocked
        assert store.status("r") == "running"  # the refusal changed nothing
        holder.stdin.write("\n"), holder.stdin.flush()
        assert holder.stdout.readline() == "released\n"
        assert not store.lock_path("r").exists()
        assert store.open_run("r", {"a": 1}) is True  # released: this process resumes it
        assert "pid %d " % os.getpid() in store.lock_path("r").read_text()
        store.finish_run("r")
        assert not store.lock_path("r").exists()
    finally:
        holder.kill(), holder.wait()


def test_a_killed_holder_leaves_the_run_free(tmp_path):
    path = tmp_path / "s.sqlite"
    holder = _holder(path, "r")
    holder.kill(), holder.wait()
    assert RunStore(path).lock_path("r").exists()  # SIGKILL: no clean-up ran, yet the lock died with the process
    assert RunStore(path).open_run("r", {"a": 1}) is True


def test_a_run_held_before_its_store_exists_leaves_nothing_behind(tmp_path):
    script = "import sys\nfrom nascomp.store import hold_run\nhold_run(sys.argv[1], 'r')\nsys.exit(2)\n"
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run" / "store.sqlite")], capture_output=True)
    assert proc.returncode == 2, proc.stderr
    assert list((tmp_path / "run").iterdir()) == []  # no store created, the lock file removed at exit


@pytest.mark.slow
def test_two_identical_commands_and_an_unwritable_store_through_the_cli(tmp_path, unwritable):
    args = TINY + ["logger=none", "hydra.run.dir=run", "teacher_training.epochs=500"]  # the first stays busy (killed below)
    env = {**os.environ, "WANDB_MODE": "disabled"}
    first = subprocess.Popen([sys.executable, "-m", "nascomp.run", *args], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not list((tmp_path / "run").glob("store.sqlite.*.lock")) and time.time() < deadline and first.poll() is None:
            time.sleep(0.2)
        assert first.poll() is None, "the first command ended before it could be joined"
        second = cli(args, tmp_path, check=False, timeout=300)
        assert second.returncode == 2, second.stderr[-2000:]
        line = second.stderr.strip().splitlines()[-1]
        assert line.startswith("error: run ") and f"is already running: held by pid {first.pid} on host" in line
        assert first.poll() is None  # the first goes on
        (tmp_path / "ro").mkdir()
        unwritable(tmp_path / "ro")
        third = cli(TINY + ["logger=none", f"store.path={tmp_path / 'ro' / 'store.sqlite'}"], tmp_path, check=False, timeout=300)
        assert third.returncode == 2, third.stderr[-2000:]
        line = third.stderr.strip().splitlines()[-1]
        assert line.startswith("error: cannot write the run store") and f"the directory {tmp_path / 'ro'} is not writable" in line
    finally:
        first.kill(), first.wait()


@pytest.mark.parametrize("tables, named", [
    (["CREATE TABLE evaluations (id INTEGER PRIMARY KEY, name TEXT)"],
     r"table 'evaluations' has columns \(id, name\), not the store's \(context, key, f, "),
    (["CREATE TABLE notes (id INTEGER, body TEXT)", "CREATE TABLE tags (note INTEGER, tag TEXT)"],
     r"its tables \('notes', 'tags'\) are none of the store's"),
])
def test_an_sqlite_file_of_another_program_is_refused_unchanged(tmp_path, tables, named):
    """Once a foreign file gained WAL mode, the store's tables and columns, and failed only at the first
    evaluation with advice about the disk; now it is refused when opened, byte for byte as it was."""
    import hashlib

    path = tmp_path / "store.sqlite"
    db = sqlite3.connect(path)
    for sql in tables:
        db.execute(sql)
    db.execute(f"INSERT INTO {tables[0].split()[2]} VALUES (1, 'x')")
    db.commit()
    db.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(StoreError, match=rf"^{re.escape(str(path))} is an SQLite file but not a nascomp run store: {named}.*"
                                         r"Nothing was changed; point store.path"):
        RunStore(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.sqlite"]  # no -wal / -shm beside it
    RunStore(tmp_path / "new.sqlite").close()  # a new file, and a store, still open
    RunStore(tmp_path / "new.sqlite").close()
