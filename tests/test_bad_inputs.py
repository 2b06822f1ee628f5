"""Bad inputs refused at startup with a message naming the key and what to do (issue 11, point 8):
mandatory keys left unset, and the teacher cache keyed by everything the teacher depends on."""
import subprocess
import sys

import pytest

from nascomp.config import compose
from nascomp.schema import ConfigError, validate


@pytest.mark.parametrize("overrides, message", [
    (["dataset=imagefolder"], "dataset.root: no value given (???); dataset=imagefolder needs dataset.root=/path/to/images"),
    (["teacher=custom", "teacher.name=torchvision.models:resnet18"],
     "teacher.checkpoint: no value given (???); teacher=custom needs its trained weights: teacher.checkpoint="),
    (["teacher=custom", "teacher.checkpoint=t.pt"], "teacher.name: no value given (???); teacher=custom needs teacher.name="),
])
def test_mandatory_keys_left_unset_are_named(overrides, message):
    with pytest.raises(ConfigError) as info:
        validate(compose(overrides))
    assert str(info.value).startswith(message)


def test_mandatory_keys_once_set_validate():
    cfg = validate(compose(["dataset=imagefolder", "dataset.root=/data/images", "teacher=custom",
                            "teacher.name=pkg.mod:Net", "teacher.checkpoint=t.pt"]))
    assert (cfg.dataset.root, cfg.teacher.checkpoint) == ("/data/images", "t.pt")


def _setup(overrides, tmp_path):
    from nascomp.pipeline import Setup

    cfg = validate(compose(["experiment=quickstart", "logger=none", f"teacher_dir={tmp_path / 'teachers'}", *overrides]))
    return Setup.build(cfg, tmp_path / "run")


def test_a_cifar_teacher_follows_the_digits_channels(tmp_path, one_thread):
    """teacher=resnet18 dataset=digits: a 1-channel ResNet-18 is trained, cached and searched (was a RuntimeError)."""
    setup = _setup(["teacher=resnet18", "teacher.width=0.125", "teacher_training.epochs=4",
                    "teacher_training.scheduler.milestones=[3]"], tmp_path)
    dataset, teacher, teacher_acc, graph = setup.dataset, setup.teacher, setup.teacher_accuracy, setup.graph
    assert teacher.conv1.in_channels == dataset.in_channels == 1 and teacher_acc > 0.1, teacher_acc
    assert graph.input_shape == (1, 8, 8)
    assert len(list((tmp_path / "teachers").glob("resnet18-digits-w0.125-*.pt"))) == 1


def test_a_teacher_that_cannot_take_the_data_fails_before_any_work(tmp_path):
    from nascomp.pipeline import StartupError

    with pytest.raises(StartupError, match=r"^teacher torchvision.models:resnet18 cannot take this dataset's input "
                                           r"\(1, 8, 8\): .*the teacher expects 3 input channels"):
        _setup(["teacher=custom", "teacher.name=torchvision.models:resnet18", f"teacher.checkpoint={tmp_path / 't.pt'}"], tmp_path)
    assert not (tmp_path / "teachers").exists() and not (tmp_path / "run").exists()


def _cache(overrides):
    from nascomp.pipeline import teacher_checkpoint

    return teacher_checkpoint(validate(compose(["experiment=quickstart", *overrides])))


def test_teacher_cache_is_keyed_by_the_data_and_the_recipe(tmp_path, monkeypatch):
    base = _cache([])
    assert base.parent.name == "teachers" and base.name.startswith("small_resnet-digits-w1-") and base.suffix == ".pt"
    assert _cache(["dataset.split.seed=1"]) != base  # other data, another teacher
    assert _cache(["teacher_training.epochs=16"]) != base  # another recipe
    assert _cache(["teacher.width=0.5"]).name.startswith("small_resnet-digits-w0.5-")
    assert _cache(["trainer=auto", "teacher_training.trainer.enable_progress_bar=false"]) == base  # where it runs: same teacher
    assert _cache(["seed=3"]) == base  # the search seed: the teacher trains with teacher_training.seed
    folder = ["dataset=imagefolder", "dataset.root=images"]
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    in_a = _cache(folder)
    monkeypatch.chdir(tmp_path / "b")
    assert _cache(folder) != in_a  # a relative root is resolved: another folder, another teacher
    assert _cache(["dataset=imagefolder", f"dataset.root={tmp_path / 'a' / 'images'}"]) == in_a


def test_an_image_folder_teacher_cache_follows_the_folders_contents(tmp_path):
    """Images or classes added to dataset.root (or test_root) kept the same cache path: a stale teacher,
    and its stored accuracy, were reused, its training images possibly now in val/test."""
    import os

    from nascomp.pipeline import teacher_key

    def add(folder, name, size=10):
        (tmp_path / folder / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / name).write_bytes(b"x" * size)

    for i in range(3):
        add("root", f"a/{i}.png"), add("root", f"b/{i}.png"), add("test", f"a/{i}.png"), add("test", f"b/{i}.png")
    folder = ["dataset=imagefolder", f"dataset.root={tmp_path / 'root'}"]
    base, with_test = _cache(folder), _cache([*folder, f"dataset.test_root={tmp_path / 'test'}"])
    assert with_test != base
    os.utime(tmp_path / "root" / "a" / "0.png", (0, 0))  # times are not contents: a copied folder keeps its cache
    add("root", ".ipynb_checkpoints/a-checkpoint.png")  # not a class folder
    add("root", "notes.txt")  # a file of root itself: not read
    assert _cache(folder) == base
    add("root", "a/3.png")  # another image
    assert _cache(folder) not in (base, with_test)
    more = _cache(folder)
    add("root", "c/0.png")  # another class
    assert _cache(folder) not in (base, more)
    add("root", "c/0.png", size=11)  # another image under the same name
    changed = _cache(folder)
    assert changed != more
    add("test", "b/3.png")
    assert _cache([*folder, f"dataset.test_root={tmp_path / 'test'}"]) not in (with_test, changed)
    for other in (["dataset=digits"], ["dataset=cifar10"], ["dataset=synthetic"]):  # only image folders read contents
        assert "contents" not in teacher_key(validate(compose(["experiment=quickstart", *other])))["dataset"]


def test_teacher_cache_path_is_the_same_in_another_process():
    code = ("from nascomp.config import compose; from nascomp.schema import validate; "
            "from nascomp.pipeline import teacher_checkpoint; "
            "print(teacher_checkpoint(validate(compose(['experiment=quickstart', 'dataset.split.seed=2']))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(_cache(["dataset.split.seed=2"]))


@pytest.mark.slow
def test_a_search_where_every_student_diverges_exits_2_and_keeps_its_store(tmp_path):
    """proxy.optimizer.lr=1e30: every student's loss is non-finite. It used to spin forever at 100% CPU."""
    import os
    import sqlite3

    args = ["experiment=quickstart", "search.K=2", "search.T=9", "search.acquisition.samples=20", "proxy.epochs=1",
            "teacher_training.epochs=2", "teacher.width=0.25", "logger=none", "proxy.optimizer.lr=1e30",
            "search.max_failed_steps=2", f"hydra.run.dir={tmp_path / 'run'}"]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "nascomp.run", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.rstrip().splitlines()[-1] == (
        "error: every student of 2 consecutive steps (up to step 1) failed (search.max_failed_steps=2); the first error: "
        "training loss diverged (non-finite). Check the proxy recipe (proxy.optimizer.lr, proxy.batch_size), the memory "
        "it needs and the teacher; the failed evaluations are kept in the store")
    db = sqlite3.connect(tmp_path / "run" / "store.sqlite")
    assert db.execute("SELECT count(*), count(error) FROM evaluations").fetchone() == (4, 4)
