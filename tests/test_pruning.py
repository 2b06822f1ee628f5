"""The pruning baseline (nascomp.pruning): Torch-Pruning's channel pruning of a real trained teacher to
a parameter count, its proxy training through the searched students' path, scored by Eq. 6, and the
benchmark script (benchmarks/pruning.py) against the search-efficiency benchmark's stored run."""
import copy
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nascomp.config import compose
from nascomp.pipeline import Setup
from nascomp.pruning import IMPORTANCES, PruningError, num_params, prune

pytestmark = pytest.mark.usefixtures("one_thread")
BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """experiment=cpu (the benchmark's half-width small_resnet teacher), the teacher trained for 2 epochs on digits."""
    tmp = tmp_path_factory.mktemp("pruning")
    torch.set_num_threads(1)
    cfg = compose(["experiment=cpu", "teacher_training.epochs=2", "logger=none",
                   f"teacher_dir={tmp / 'teachers'}", f"store.path={tmp / 'store.sqlite'}"])
    return Setup.build(cfg, tmp)


@pytest.mark.parametrize("importance", IMPORTANCES)
def test_prune_lands_just_below_the_target_and_keeps_the_classes(setup, importance):
    teacher, x = setup.teacher, setup.dataset.val.images[:16]  # (16, 1, 8, 8)
    before = copy.deepcopy(teacher.state_dict())
    target = int(0.4 * setup.graph.num_params)
    pruned = prune(teacher, x, target, importance)
    n = num_params(pruned)
    assert 0.97 * target <= n <= target
    assert num_params(teacher) == setup.graph.num_params
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())  # the teacher is untouched
    with torch.no_grad():
        assert pruned.eval()(x).shape == teacher(x).shape == (16, 10)
    assert pruned.linear.out_features == 10 and pruned.linear.in_features < teacher.linear.in_features
    # the copy holds the teacher's surviving weights: each kept column of the classifier is one of the
    # teacher's (its inputs were pruned, above), and so is each kept filter of a conv whose inputs were
    # all kept (the stem at least; which layers lose channels depends on the trained weights)
    kept, full = pruned.linear.weight.detach().T, teacher.linear.weight.detach().T
    assert all(any(torch.equal(k, f) for f in full) for k in kept)
    convs = dict(teacher.named_modules())
    whole_inputs = [(m.weight.detach(), convs[name].weight.detach()) for name, m in pruned.named_modules()
                    if isinstance(m, torch.nn.Conv2d) and m.in_channels == convs[name].in_channels]
    assert whole_inputs  # the stem
    assert all(any(torch.equal(k, f) for f in full) for kept, full in whole_inputs for k in kept)
    assert sum(m.out_channels for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)) < \
        sum(m.out_channels for m in teacher.modules() if isinstance(m, torch.nn.Conv2d))
    assert all(p.requires_grad for p in pruned.parameters())


def test_proxy_training_of_the_pruned_teacher_is_the_searched_students_and_scored_by_eq6(setup):
    torch.manual_seed(0)
    arch = setup.space.sample(seed=3)
    (searched,) = setup.proxy.evaluate([arch])
    torch.manual_seed(0)
    ((same, _),) = setup.proxy.evaluate_modules([arch.build(setup.teacher, inherit=setup.cfg.inherit)])
    assert (same.f, same.accuracy, same.num_params) == pytest.approx((searched.f, searched.accuracy, arch.num_params))

    pruned = prune(setup.teacher, setup.dataset.train.images[:2], arch.num_params)
    ((evaluation, result),) = setup.proxy.evaluate_modules([pruned])
    assert not evaluation.failed and 0.1 < evaluation.accuracy <= 1.0 and result.epoch == 0
    assert evaluation.accuracy == result.val_accuracy and evaluation.num_params == num_params(pruned) <= arch.num_params
    c = 1 - num_params(pruned) / setup.graph.num_params
    assert evaluation.f == pytest.approx(c * (2 - c) * evaluation.accuracy / setup.teacher_accuracy)
    assert result.state_dict.keys() == pruned.state_dict().keys()
    assert all(torch.equal(result.state_dict[k], v) for k, v in pruned.state_dict().items())  # it holds its best epoch


def test_the_pruned_teacher_as_a_student_is_the_same_function(setup, tmp_path):
    """``as_student``: the pruned copy as the reference student of the space over its own graph, with its
    weights and BatchNorm statistics: the same outputs, the same count, saved and loaded as every student."""
    from nascomp import load_student
    from nascomp.pruning import as_student

    x = setup.dataset.val.images[:32]
    pruned = prune(setup.teacher, x[:2], int(0.3 * setup.graph.num_params), "l1")
    for m in pruned.modules():  # statistics that differ from a fresh BatchNorm's, as a trained one's do
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    candidate, student = as_student(pruned, tuple(x.shape[1:]))
    assert candidate.num_params == num_params(student) == num_params(pruned) and student.training
    with torch.no_grad():
        assert torch.allclose(student.eval()(x), pruned.eval()(x), atol=1e-6)
        candidate.save(tmp_path / "pruned", student)
        assert torch.allclose(load_student(tmp_path / "pruned").eval()(x), pruned(x), atol=1e-6)


def test_a_failing_pruning_baseline_is_a_row_not_the_end_of_the_run(setup, tmp_path, monkeypatch, caplog):
    """``final.prune``: an importance that cannot reach the answer's size, or whose training fails, gives a row
    with its error and a warning; the other importances and the run's outputs go on; the report says so."""
    import dataclasses
    import logging

    from omegaconf import OmegaConf

    from nascomp import pipeline
    from nascomp.report import write_report

    cfg = OmegaConf.merge(setup.cfg, {"final": {"prune": ["l1", "l2"]}})
    s = dataclasses.replace(setup, cfg=cfg)
    with caplog.at_level(logging.WARNING, logger="nascomp"):
        rows = pipeline.pruning_baseline(s, {"num_params": 50, "f": 0.5}, tmp_path)
    assert [r["importance"] for r in rows] == ["l1", "l2"]
    assert all(r["error"].startswith("PruningError: ") and "above the target 50" in r["error"] for r in rows)
    assert len([r for r in caplog.records if "pruning baseline" in r.getMessage()]) == 2
    monkeypatch.setattr(type(s.proxy), "evaluate_modules", lambda self, students: (_ for _ in ()).throw(RuntimeError("worker lost")))
    (row, _) = pipeline.pruning_baseline(s, {"num_params": setup.graph.num_params // 2, "f": 0.5}, tmp_path)
    assert row == {"importance": "l1", "error": "RuntimeError: worker lost"} and not (tmp_path / "pruned_l1").exists()
    summary = {"name": "n", "teacher": {"accuracy": 0.9, "num_params": 100, "ratio": 0.0, "times": 1.0, "f": 1.0},
               "best": {"key": "k" * 12, "accuracy": 0.8, "test_accuracy": 0.8, "num_params": 40, "ratio": 0.6, "times": 2.5, "f": 0.7},
               "evaluations": 4, "steps": 2, "search": {"method": "ours", "K": 2}, "seconds": {"search": 1, "final": 1},
               "pruning": rows}
    report = write_report(summary, {"f_vs_index": "a.png", "f_histogram": "b.png", "accuracy_vs_params": "c.png"}, tmp_path).read_text()
    assert "| pruned (l1) | not reached: PruningError" in report and "No importance gave a pruned student" in report


def test_unreachable_target_and_bad_inputs_are_refused(setup, monkeypatch):
    teacher, x, n = setup.teacher, setup.dataset.train.images[:2], setup.graph.num_params
    with pytest.raises(PruningError, match=r"reaches no fewer than \d+ parameters, above the target 50"):
        prune(teacher, x, 50)
    with pytest.raises(PruningError, match=f"must be positive and below the teacher's {n}"):
        prune(teacher, x, n)
    with pytest.raises(PruningError, match="unknown pruning importance 'l3'; choose from l2, l1, bn_scale"):
        prune(teacher, x, n // 2, "l3")
    monkeypatch.setitem(sys.modules, "torch_pruning", None)  # the library not installed
    with pytest.raises(ImportError, match=r"pip install 'nascomp\[prune\]'"):
        prune(teacher, x, n // 2)


@pytest.mark.slow
def test_pruning_benchmark_reads_ours_from_the_search_efficiency_store(tmp_path):
    common = ["--dataset", "digits", "--teacher", "small_resnet", "--width", "0.5", "--K", "2", "--samples", "20",
              "--override", "kernel.max_steps=5", "--override", "kernel.hidden=8",
              "--override", "teacher_training.epochs=2", "--store", str(tmp_path / "store.sqlite")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = lambda script, *args: subprocess.run([sys.executable, str(BENCH / script), *common, *args], cwd=tmp_path,
                                               env=env, capture_output=True, text=True, timeout=300)
    search = run("search_efficiency.py", "--space", "compression", "--methods", "ours", "--seeds", "1",
                 "--budgets", "2,4", "--csv", str(tmp_path / "s.csv"))
    assert search.returncode == 0, search.stderr[-3000:]
    out = tmp_path / "p.csv"
    res = run("pruning.py", "--seeds", "1", "--budget", "4", "--full", "--csv", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "searching it" not in res.stdout  # ours' best came from the stored run
    rows = {r["method"]: r for r in csv.DictReader(out.open())}
    assert sorted(rows) == ["ours", "prune[l2]"]
    ours_best = [float(r["best"]) for r in csv.DictReader((tmp_path / "s.csv").open()) if r["budget"] == "4"]
    assert float(rows["ours"]["f"]) == pytest.approx(ours_best[0])
    target, n = int(rows["ours"]["num_params"]), int(rows["prune[l2]"]["num_params"])
    assert 0.8 * target <= n <= target  # at ~1.4k parameters one pruning step removes channels worth ~10% of them
    (teacher,) = (tmp_path / "teachers").glob("small_resnet-digits-w0.5-*.json")
    t = json.loads(teacher.read_text())
    for r in rows.values():
        c = float(r["ratio"])
        assert float(r["f"]) == pytest.approx(c * (2 - c) * float(r["accuracy"]) / t["val_accuracy"])
        assert float(r["full_f"]) == pytest.approx(c * (2 - c) * float(r["full_accuracy"]) / t["val_accuracy"])
        assert 0.0 < float(r["test_accuracy"]) <= 1.0
    assert "| prune[l2] | 1 |" in res.stdout and "prune[l2] - ours, proxy f:" in res.stdout
    again = run("pruning.py", "--seeds", "1", "--budget", "4", "--full", "--csv", str(out))
    assert again.returncode == 0 and len(list(csv.DictReader(out.open()))) == 2 and "[1/1" not in again.stdout
    # the main job's answer: final.top_k finalists of ours' own search fully trained, the best by full f
    top2 = tmp_path / "top2.csv"
    answer = run("pruning.py", "--seeds", "1", "--budget", "4", "--full", "--against", "ours[final.top_k=2]", "--csv", str(top2))
    assert answer.returncode == 0, answer.stderr[-3000:]
    assert "searching it" not in answer.stdout  # final.* does not change the search: ours' stored run is read
    a = {r["method"]: r for r in csv.DictReader(top2.open())}
    assert sorted(a) == ["ours[final.top_k=2]", "prune[l2]"] and a["prune[l2]"]["against"] == "ours[final.top_k=2]"
    # the proxy-best student is one of the two finalists, and its full training is the store's: the answer's
    # full f is at least its; the answer's proxy f is one of the two best of the search (its 4 evaluations, the only
    # ones in the store so far; another reference method searches below)
    ans, top1 = a["ours[final.top_k=2]"], rows["ours"]
    assert float(ans["full_f"]) >= float(top1["full_f"])
    import sqlite3
    with sqlite3.connect(tmp_path / "store.sqlite") as db:
        proxy_f = sorted((f for (f,) in db.execute("SELECT f FROM evaluations WHERE error IS NULL")), reverse=True)
    assert len(proxy_f) == 4 and float(top1["f"]) == pytest.approx(proxy_f[0])
    assert float(ans["f"]) == pytest.approx(proxy_f[0]) or float(ans["f"]) == pytest.approx(proxy_f[1])
    assert int(a["prune[l2]"]["num_params"]) <= int(ans["num_params"])
    both = run("pruning.py", "--seeds", "1", "--budget", "4", "--full", "--importance", "l1",
               "--against", "ours[final.top_k=2]", "--csv", str(top2))
    assert both.returncode == 0, both.stderr[-3000:]
    pr = {r["method"]: r for r in csv.DictReader(top2.open()) if r["method"].startswith("prune[")}
    assert sorted(pr) == ["prune[l1]", "prune[l2]"]
    best = max(pr.values(), key=lambda r: float(r["full_f"]))  # pruning at its best: the importance with the higher full f
    line, = [ln for ln in both.stdout.splitlines() if ln.startswith("| prune[best] | 1 |")]
    assert f"{float(best['full_f']):.4f} ± 0.0000" in line and f"{int(best['num_params'])} ± 0" in line
    # another reference method sets another target: its rows are done apart, not taken for done
    other = run("pruning.py", "--seeds", "1", "--budget", "4", "--against", "ours[kernel.pool=both]", "--csv", str(out))
    assert other.returncode == 0, other.stderr[-3000:]
    assert "searching it" in other.stdout and "[1/1" in other.stdout
    by = [(r["method"], r["against"]) for r in csv.DictReader(out.open())]
    assert by == [("ours", "ours"), ("prune[l2]", "ours"), ("ours[kernel.pool=both]", "ours[kernel.pool=both]"),
                  ("prune[l2]", "ours[kernel.pool=both]")]
    assert "| ours[kernel.pool=both] | 1 |" in other.stdout and "| ours | 1 |" not in other.stdout
    # a method of another space (space.* overrides): its students are read back in its own space, so the
    # answer fully trained is the student it searched, and its full f is Eq. 6 of that student's count
    structural = tmp_path / "structural.csv"
    st = run("pruning.py", "--seeds", "1", "--budget", "4", "--full", "--against", "ours[space.shrink_groups=structural]",
             "--csv", str(structural))
    assert st.returncode == 0, st.stderr[-3000:]
    assert "a space of its own" in st.stdout
    for r in csv.DictReader(structural.open()):
        c = float(r["ratio"])
        assert float(r["full_f"]) == pytest.approx(c * (2 - c) * float(r["full_accuracy"]) / t["val_accuracy"])
    bad = tmp_path / "bad.csv"
    bad.write_text("method,seed\nours,0\n")
    refused = run("pruning.py", "--seeds", "1", "--budget", "4", "--csv", str(bad))
    assert refused.returncode == 2 and f"{bad}: columns ['method', 'seed'], expected" in refused.stderr
    assert bad.read_text() == "method,seed\nours,0\n"
