"""Teacher training (command and checkpoint), the checkpoint-mismatch error, full training."""
import json
import logging

import pytest
import torch

from nascomp import config, data, teachers, train_teacher, training


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    return data.load(config.group("dataset", "digits"))


QUICK = ["training.epochs=3", "training.optimizer.lr=0.05", "training.scheduler.milestones=[2]",
         "training.batch_size=64", "training.trainer.enable_progress_bar=false", "training.trainer.accelerator=cpu"]
EVAL = config.group("training", "teacher", ["trainer.accelerator=cpu"])  # float32 on the CPU, as trained


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "small_resnet_digits.pt"
    torch.manual_seed(0)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    result = train_teacher.main(["--teacher", "small_resnet", "--dataset", "digits", "--out", str(path),
                                 "--width", "0.5", *QUICK])
    torch.set_num_threads(n)
    return path, result


def test_recipes_hold_the_reference_numbers():
    proxy, full, teacher = (config.group("training", n) for n in ("proxy", "full", "teacher"))
    assert (proxy.epochs, proxy.batch_size, proxy.loss, proxy.optimizer.lr, proxy.optimizer.weight_decay) == \
        (10, 128, "mse_logits", 1e-3, 5e-4)
    assert proxy.optimizer._target_ == "torch.optim.Adam" and not proxy.trainer.logger
    assert (full.epochs, full.optimizer.lr, full.optimizer.momentum, list(full.scheduler.milestones)) == (300, 0.01, 0.9, [100, 200])
    assert (teacher.epochs, teacher.optimizer.lr, list(teacher.scheduler.milestones)) == (400, 0.1, [100, 200, 300])
    with pytest.raises(FileNotFoundError, match="known: .*proxy"):
        config.group("training", "nope")


def test_train_teacher_command_saves_checkpoint_and_accuracies(checkpoint):
    path, result = checkpoint
    stored = torch.load(path, weights_only=True)
    info = json.loads(path.with_suffix(".json").read_text())
    assert stored["val_accuracy"] == info["val_accuracy"] == result.val_accuracy > 0.5
    assert 0.5 < info["test_accuracy"] <= 1 and info["teacher"] == "small_resnet" and info["num_classes"] == 10


def test_load_or_train_teacher_loads_without_retraining(checkpoint, digits):
    path, result = checkpoint
    model, acc = training.load_or_train_teacher("small_resnet", digits, path, EVAL, width=0.5)
    assert acc == result.val_accuracy and not model.training
    assert training.accuracy(model, digits, "val", EVAL) == pytest.approx(result.val_accuracy)  # the stored weights


@pytest.mark.parametrize("kwargs, named", [({"num_classes": 100, "width": 0.5}, "linear.weight: checkpoint \\(10, 32\\) vs model \\(100, 32\\)"),
                                           ({"width": 0.25}, "stem.0.weight"),
                                           ({"name": "resnet18", "width": 0.5}, "missing keys")])
def test_checkpoint_mismatch_names_it(checkpoint, kwargs, named):
    with pytest.raises(ValueError, match=named):
        teachers.create(kwargs.pop("name", "small_resnet"), checkpoint=checkpoint[0], **kwargs)


def test_full_training_reports_val_and_test_on_the_val_chosen_weights(digits):
    torch.manual_seed(1)
    student = teachers.create("small_resnet", width=0.25)
    cfg = config.group("training", "full", ["epochs=3", "optimizer.lr=0.05", "scheduler.milestones=[2]",
                                               "batch_size=64", "trainer.enable_progress_bar=false",
                                               "trainer.accelerator=cpu"])
    result = training.full_train(student, digits, cfg)
    assert result.val_accuracy > 0.3 and result.test_accuracy is not None
    assert training.accuracy(student, digits, "val", EVAL) == pytest.approx(result.val_accuracy)
    assert training.accuracy(student, digits, "test", EVAL) == pytest.approx(result.test_accuracy)


@pytest.mark.slow
def test_full_training_on_two_processes_with_ddp(digits, one_thread, caplog):
    """``full_train`` on 2 devices from any process (here pytest's): the fit runs in the DDP worker
    (nascomp.ddp_worker) on 2 processes, and the student comes back holding rank 0's chosen weights."""
    torch.manual_seed(1)
    student = teachers.create("small_resnet", width=0.25)
    cfg = config.group("training", "full", ["epochs=2", "batch_size=64", "optimizer.lr=0.05", "trainer.accelerator=cpu",
                                               "trainer.devices=2", "trainer.strategy=ddp", "trainer.enable_progress_bar=false"])
    with caplog.at_level(logging.INFO, logger="nascomp"):
        result = training.full_train(student, digits, cfg)
    assert "DDP: trained on 2 processes" in caplog.text
    assert result.val_accuracy > 0.2 and 0 <= result.test_accuracy <= 1  # learned (chance 0.1)
    assert result.state_dict.keys() == student.state_dict().keys()
    # 300 val images split evenly over the 2 ranks, metrics synced: one device measures the same on these weights
    assert training.accuracy(student, digits, "val", EVAL) == pytest.approx(result.val_accuracy)


def test_ddp_needs_the_strategy_that_runs_the_worker(digits):
    cfg = config.group("training", "full", ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp_spawn"])
    with pytest.raises(ValueError, match=r"^trainer.strategy=ddp_spawn on 2 devices starts its ranks with "
                                         r"_MultiProcessingLauncher, but .* use trainer.strategy=ddp \(or trainer=ddp\)$"):
        training.full_train(teachers.create("small_resnet", width=0.25), digits, cfg)


def test_a_teacher_at_chance_is_never_cached(tmp_path):
    """Val images all equal: any model predicts one class for all of them, so accuracy is 1/2 = chance."""
    g = torch.Generator().manual_seed(0)
    train = data.Split(torch.randn(32, 1, 8, 8, generator=g), torch.arange(32) % 2)
    val = data.Split(torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]))
    tiny = data.Dataset("tiny", train, val, val, num_classes=2)
    cfg = config.group("training", "teacher", [q.removeprefix("training.") for q in QUICK] + ["epochs=1"])
    path = tmp_path / "teacher.pt"
    with pytest.raises(training.TeacherTrainingError,
                       match=r"^teacher small_resnet reached validation accuracy 0\.5000 after 1 epochs, no better than "
                             r"chance \(1/2 = 0\.5000\), so it was not saved to .*teacher\.pt'; train longer"):
        training.load_or_train_teacher("small_resnet", tiny, path, cfg, width=0.25)
    assert not path.exists() and not path.with_suffix(".json").exists()
    assert issubclass(training.TeacherTrainingError, ValueError)  # prepare maps it to exit 2


class _Signal(BaseException):
    """Stands for nascomp.signals.Interrupted: a BaseException raised by a signal handler."""


def test_a_signal_inside_a_trainer_call_comes_out_as_itself_even_when_teardown_fails():
    import lightning as L

    # Lightning's teardown failing after the signal: the RuntimeError carries the signal as its context
    with pytest.raises(_Signal):
        with training.signals_kept():
            try:
                raise _Signal()
            except BaseException:
                raise RuntimeError("Please call `iter(combined_loader)` first.")
    with pytest.raises(ValueError, match="a real failure"):  # an ordinary error stays what it is
        with training.signals_kept():
            raise ValueError("a real failure")

    class Raise(L.Callback):
        def on_train_batch_start(self, *args):
            raise _Signal()

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, _):
            return self.layer(batch).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    module = Module()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Raise()])
    loader = torch.utils.data.DataLoader([torch.zeros(2)] * 4, batch_size=2)
    with pytest.raises(_Signal):  # through a real fit
        with training.signals_kept():
            trainer.fit(module, loader)


def test_a_teacher_depends_on_its_recipe_seed_only(tmp_path, digits):
    """One cache key, one teacher: whatever the caller's random state (a search seed, a benchmark
    that seeds nothing), training gives the same weights and accuracy, and leaves that state alone."""
    cfg = config.group("training", "teacher", [q.removeprefix("training.") for q in QUICK] + ["epochs=1"])
    trained = []
    for caller_seed in (1, 2):
        torch.manual_seed(caller_seed)
        before, before_cuda = torch.get_rng_state(), torch.cuda.get_rng_state_all()  # the CUDA list is empty on a CPU
        model, result = training.train_teacher("small_resnet", digits, tmp_path / f"t{caller_seed}.pt", cfg, width=0.25)
        assert torch.equal(torch.get_rng_state(), before)  # the caller's next draws are as they would have been
        assert all(torch.equal(a, b) for a, b in zip(torch.cuda.get_rng_state_all(), before_cuda, strict=True))
        trained.append((model.state_dict(), result.val_accuracy))
    (first, acc1), (second, acc2) = trained
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert acc1 == acc2 > 0.1
    other = training.train_teacher("small_resnet", digits, tmp_path / "s1.pt",
                                   config.group("training", "teacher", [q.removeprefix("training.") for q in QUICK] + ["epochs=1", "seed=1"]),
                                   width=0.25)[0].state_dict()
    assert not torch.equal(other["stem.0.weight"], first["stem.0.weight"])  # the recipe's seed does choose them


def test_full_training_of_a_dropout_student_follows_the_recipe_seed_only(digits):
    """A run resumed during final training trains its finalist in a process whose random state differs
    from the uninterrupted run's: the dropout masks follow the recipe's seed, so the result is the same."""
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                                  torch.nn.Linear(32, 10))
    initial = {k: v.clone() for k, v in student.state_dict().items()}
    cfg = config.group("training", "full", ["epochs=2", "optimizer.lr=0.05", "scheduler.milestones=[1]", "batch_size=64",
                                               "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"])
    results = []
    for caller_seed in (1, 2):
        student.load_state_dict(initial)
        torch.manual_seed(caller_seed)
        before = torch.get_rng_state()
        results.append(training.full_train(student, digits, cfg))
        assert torch.equal(torch.get_rng_state(), before)  # the caller's random state is left alone
    first, second = results
    assert all(torch.equal(first.state_dict[k], second.state_dict[k]) for k in first.state_dict)
    assert (first.val_accuracy, first.test_accuracy) == (second.val_accuracy, second.test_accuracy)
    assert first.val_accuracy > 0.2


def test_an_unreadable_cached_teacher_is_named_as_a_cache_file_to_delete(tmp_path, digits, checkpoint):
    """A cached teacher that cannot be loaded (a kill while an older nascomp wrote it) is no input of the user's:
    the error names the file as a cache file and how to remove it; a given checkpoint keeps its own message."""
    broken = tmp_path / "small_resnet-digits-w0.5-0123456789ab.pt"
    broken.write_bytes(open(checkpoint[0], "rb").read()[:1000])  # a truncated checkpoint
    with pytest.raises(ValueError, match=rf"^the cached teacher '{broken}' cannot be loaded \(.*\); it is a cache file "
                                         rf"\(teacher_dir\), not an input: delete it \(rm '{broken}'\) and rerun"):
        training.load_or_train_teacher("small_resnet", digits, broken, EVAL, width=0.5, cached=True)
    with pytest.raises(ValueError, match=r"cannot be read as a weights-only state_dict") as given:
        training.load_or_train_teacher("small_resnet", digits, broken, EVAL, width=0.5)
    assert "cache file" not in str(given.value)


def test_a_teacher_checkpoint_is_written_whole_or_not_at_all(tmp_path, digits, monkeypatch):
    """The disk fills up half-way through writing the checkpoint: no truncated file is left in the cache
    (every later run would load it), nothing temporary is left, and the error names the file."""
    import errno
    import pathlib

    from nascomp.files import OutputError

    real = pathlib.Path.write_bytes

    def half_then_full(self, data):
        real(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_bytes", half_then_full)
    cfg = config.group("training", "teacher", [q.removeprefix("training.") for q in QUICK] + ["epochs=1"])
    path = tmp_path / "teacher.pt"
    with pytest.raises(OutputError, match=rf"^cannot write '{path}': No space left on device \(errno 28\)$"):
        training.train_teacher("small_resnet", digits, path, cfg, width=0.25)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    training.train_teacher("small_resnet", digits, path, cfg, width=0.25)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["teacher.json", "teacher.pt"]
    assert torch.load(path, weights_only=True)["state_dict"].keys()


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_a_ddp_worker_dies_with_the_main_job_killed_by_sigkill(tmp_path):
    """The worker runs in its own session (an interrupt of the main job is handled by killing its group), so a
    main job killed by SIGKILL left it training on, an orphan; now the kernel kills it with its parent."""
    import os
    import signal
    import subprocess
    import sys
    import time

    pidfile = tmp_path / "worker.pid"
    worker = ("import os, sys, time\nfrom nascomp.ddp_worker import die_with_parent\nassert die_with_parent()\n"
              f"open({str(pidfile)!r}, 'w').write(str(os.getpid()))\ntime.sleep(120)\n")
    main_job = ("import subprocess, sys, time\n"
                f"subprocess.Popen([sys.executable, '-c', {worker!r}], start_new_session=True)\ntime.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", main_job])
    try:
        deadline = time.time() + 60
        while not (pidfile.exists() and pidfile.read_text()) and time.time() < deadline:
            time.sleep(0.1)
        pid = int(pidfile.read_text())
        os.kill(pid, 0)  # alive while its parent is
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail(f"the worker {pid} outlived the main job killed by SIGKILL")
