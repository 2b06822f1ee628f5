"""The main job through the real CLI: the quickstart pipeline at a tiny budget, its outputs, bad
overrides, a 2-job multirun, and every option of every config group composing and validating."""
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from omegaconf import OmegaConf

from nascomp.config import compose, config_dir
from nascomp.config import group as config_group
from nascomp.schema import ConfigError, validate

# the quickstart, shrunk to seconds: 2 steps of K = 2, one epoch everywhere
TINY = ["experiment=quickstart", "search.K=2", "search.T=1", "search.acquisition.samples=20", "proxy.epochs=1",
        "full.epochs=1", "teacher_training.epochs=2", "final.top_k=1", "teacher.width=0.25"]


def cli(args, cwd, check=True, timeout=600):
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "nascomp.run", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A working directory whose teachers/ cache is shared by the tests of this module."""
    return tmp_path_factory.mktemp("work")


@pytest.mark.slow
def test_quickstart_pipeline_through_the_cli(workdir):
    proc = cli(TINY, workdir)
    assert "| best student |" in proc.stdout
    runs = list((workdir / "outputs" / "quickstart").iterdir())
    assert len(runs) == 1
    run = runs[0]
    for name in ("summary.json", "history.csv", "metrics.csv", "report.md", "store.sqlite", "f_vs_index.png",
                 "f_histogram.png", "accuracy_vs_params.png", "best_student/architecture.json", "best_student/weights.pt"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert len(rows) == summary["evaluations"] == 4  # K (T + 1)
    assert [int(r["step"]) for r in rows] == [0, 0, 1, 1]
    assert summary["search"]["best_f"] == pytest.approx(max(float(r["f"]) for r in rows))
    best = summary["best"]
    assert best["fully_trained"] and 0 < best["num_params"] < summary["teacher"]["num_params"]
    assert summary["opaque"] == {"params": 0, "share": 0.0, "constructs": {}}  # small_resnet: every layer understood
    ratio = 1 - best["num_params"] / summary["teacher"]["num_params"]
    assert best["f"] == pytest.approx(ratio * (2 - ratio) * best["accuracy"] / summary["teacher"]["accuracy"])
    assert "![Reward along the search](f_vs_index.png)" in (run / "report.md").read_text()
    from nascomp import load_student

    model = load_student(run / "best_student")
    assert sum(p.numel() for p in model.parameters()) == best["num_params"]
    assert len(list((workdir / "teachers").glob("small_resnet-digits-w0.25-*.pt"))) == 1  # trained once, cached


@pytest.mark.slow
def test_flops_objective_run_records_every_cost(workdir):
    """``objective=flops`` end to end: f is Eq. 6 on FLOPs; every student's four costs are in history.csv,
    summary.json and the report; every distinct architecture (and the teacher) is timed once, in the store."""
    proc = cli(TINY + ["objective=flops", "final.enabled=false", "hydra.run.dir=outputs/flops"], workdir)
    run = workdir / "outputs" / "flops"
    summary = json.loads((run / "summary.json").read_text())
    rows = list(csv.DictReader(open(run / "history.csv")))
    teacher = summary["teacher"]
    assert summary["objective"]["name"] == "flops" and summary["objective"]["teacher_costs"]["flops"] == teacher["flops"] > 0
    for r in rows:
        assert all(float(r[c]) > 0 for c in ("num_params", "flops", "latency_ms", "memory_mb")), r
        c = 1 - int(r["flops"]) / teacher["flops"]
        assert float(r["f"]) == pytest.approx(c * (2 - c) * float(r["accuracy"]) / teacher["accuracy"])
    best = summary["best"]
    assert best["flops"] == int(next(r for r in rows if r["key"] == best["key"])["flops"])
    assert all(best[c] is not None for c in ("flops", "latency_ms", "memory_mb"))
    assert "MFLOPs | latency ms | memory MiB" in (run / "report.md").read_text() and "MFLOPs" in proc.stdout
    import sqlite3

    timed = sqlite3.connect(run / "store.sqlite").execute("SELECT COUNT(*) FROM latency").fetchone()[0]
    assert timed == len({r["key"] for r in rows}) + 1  # the students and the teacher, once each


@pytest.mark.slow
def test_final_prune_reports_the_pruned_teacher_beside_the_answer(workdir):
    """``final.prune=[l1,l2]``: the teacher pruned to the answer's parameter count, proxy-distilled and fully
    trained, in summary.json, the report and the printed table; its exported weights score the recorded
    validation accuracy; a rerun takes it from the store."""
    import torch

    from nascomp import data, load_student
    from nascomp.config import compose

    args = TINY + ["final.prune=[l1,l2]", "hydra.run.dir=outputs/prune"]
    proc = cli(args, workdir)
    run = workdir / "outputs" / "prune"
    summary = json.loads((run / "summary.json").read_text())
    best, teacher = summary["best"], summary["teacher"]
    assert [r["importance"] for r in summary["pruning"]] == ["l1", "l2"]
    dataset = data.load(compose(args).dataset)
    for r in summary["pruning"]:
        assert r["fully_trained"] and 0 < r["num_params"] <= best["num_params"], r
        ratio = 1 - r["num_params"] / teacher["num_params"]
        assert r["f"] == pytest.approx(ratio * (2 - ratio) * r["accuracy"] / teacher["accuracy"])
        assert r["f_minus_answer"] == pytest.approx(r["f"] - best["f"])
        model = load_student(run / f"pruned_{r['importance']}").eval()
        assert sum(p.numel() for p in model.parameters()) == r["num_params"]
        with torch.no_grad():
            predicted = model(dataset.val.images).argmax(1)
        assert (predicted == dataset.val.labels).float().mean().item() == pytest.approx(r["accuracy"], abs=1e-6)
        assert f"pruned ({r['importance']})" in proc.stdout
    report = (run / "report.md").read_text()
    assert "## Pruning at equal parameters" in report and report.count("| pruned (") == 2
    again = cli(args, workdir)
    log = again.stdout + again.stderr
    assert "pruning baseline (l1): from the store" in log and "pruning baseline (l2): from the store" in log
    assert "pruning baseline: the teacher pruned" not in log  # nothing trained again
    assert json.loads((run / "summary.json").read_text())["pruning"] == summary["pruning"]


@pytest.mark.slow
def test_main_job_trains_teacher_and_finalists_with_ddp_on_two_processes(tmp_path):
    """``trainer.devices=2 trainer.strategy=ddp`` in the main job (gloo on the CPU): the teacher and both
    finalists train on 2 processes in the DDP worker (nascomp.ddp_worker), not in re-runs of the job."""
    proc = cli(TINY + ["final.top_k=2", "logger=none", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp",
                       "trainer.threads=1", "teacher_dir=teachers", "hydra.run.dir=outputs/ddp"], tmp_path)
    output = proc.stdout + proc.stderr
    assert output.count("DDP: trained on 2 processes") == 3  # the teacher, then the two finalists
    assert "is already running" not in output
    run = tmp_path / "outputs" / "ddp"
    summary = json.loads((run / "summary.json").read_text())
    finalists = summary["finalists"]
    assert len(finalists) == 2 and len({r["key"] for r in finalists}) == 2
    for r in finalists:
        assert r["fully_trained"] and 0 <= r["accuracy"] <= 1 and 0 <= r["test_accuracy"] <= 1, r
    assert summary["best"] == max(finalists, key=lambda r: r["f"])
    # the default finalists (final.select=front): on the (accuracy, params) front of the pool, here every student
    rows = [r for r in csv.DictReader(open(run / "history.csv")) if not r["error"]]
    front = {r["key"] for r in rows if not any(
        float(o["accuracy"]) >= float(r["accuracy"]) and int(o["num_params"]) <= int(r["num_params"])
        and (float(o["accuracy"]) > float(r["accuracy"]) or int(o["num_params"]) < int(r["num_params"])) for o in rows)}
    keys = {r["key"] for r in finalists}
    assert keys <= front if len(front) >= 2 else front <= keys  # spread takes front points first
    (teacher,) = (tmp_path / "teachers").glob("small_resnet-digits-w0.25-*.json")
    assert json.loads(teacher.read_text())["val_accuracy"] == pytest.approx(summary["teacher"]["accuracy"])
    from nascomp import load_student
    from nascomp.store import RunStore

    model = load_student(run / "best_student")  # rank 0's weights, exported as on one device
    assert sum(p.numel() for p in model.parameters()) == summary["best"]["num_params"]
    store = RunStore(run / "store.sqlite")
    assert [status for _, status in store.runs()] == ["finished"]
    store.close()
    assert not list(run.glob("store.sqlite.*.lock"))


def test_the_default_objective_keeps_run_ids_and_contexts():
    """Runs made before the objective group existed keep their run ids and store contexts (they resume
    and share evaluations); another objective is another run and another context."""
    from nascomp import teachers
    from nascomp.pipeline import proxy_context, run_id_of

    cfg = validate(compose(TINY))
    config = OmegaConf.to_container(cfg, resolve=True)
    before = {k: v for k, v in config.items() if k != "objective"}  # a config as composed before the group existed
    assert run_id_of(config) == run_id_of(before)
    flops = validate(compose(TINY + ["objective=flops"]))
    assert run_id_of(OmegaConf.to_container(flops, resolve=True)) != run_id_of(config)
    teacher = teachers.create("small_resnet", width=0.25)
    assert proxy_context(cfg, teacher) != proxy_context(flops, teacher)
    tweaked = validate(compose(TINY + ["objective.batch_size=8"]))  # the costs recorded change: another context
    assert proxy_context(tweaked, teacher) not in (proxy_context(cfg, teacher), proxy_context(flops, teacher))


def test_late_keys_at_their_default_keep_run_ids():
    """``search.acquisition.ei_units`` came after runs were stored: at ``target`` (as those runs behaved)
    it is left out of the stored config, so their run ids hold, for ours and for the paper's method;
    ``reward`` is another run. The value still reaches the search (the composed config has it)."""
    import copy

    from nascomp.pipeline import run_id_of, stored_config

    for extra in ([], ["search.method=paper"]):
        cfg = validate(compose(TINY + extra))
        config = OmegaConf.to_container(cfg, resolve=True)
        assert config["search"]["acquisition"]["ei_units"] == config["search"]["paper"]["acquisition"]["ei_units"] == "target"
        before = copy.deepcopy(config)  # a config as composed before the key existed
        del before["search"]["acquisition"]["ei_units"], before["search"]["paper"]["acquisition"]["ei_units"]
        assert stored_config(config) == stored_config(before) and run_id_of(config) == run_id_of(before)
        assert config["search"]["acquisition"]["ei_units"] == "target"  # stored_config does not change its input
        reward = OmegaConf.to_container(validate(compose(TINY + extra + ["search.acquisition.ei_units=reward"])), resolve=True)
        assert run_id_of(reward) != run_id_of(config)
        assert stored_config(reward)["search"]["acquisition"]["ei_units"] == "reward"


def test_pareto_mean_moves_run_ids_only_in_pareto_mode():
    """``search.acquisition.pareto_mean`` came after runs were stored and its default is ``auto``: a single-objective
    run's id does not hold it, nor does another method's Pareto run (only ours in Pareto mode reads it); ours' Pareto
    run at ``zero`` (as the runs before it) keeps its id; at ``auto`` a params cost resolves to ``front`` (the
    front-prior rule) and a FLOPs cost to ``cost``, other runs, recorded as they resolve."""
    import copy

    from nascomp.pipeline import run_id_of, stored_config

    def ids(extra):
        config = OmegaConf.to_container(validate(compose(TINY + extra)), resolve=True)
        before = copy.deepcopy(config)
        del before["search"]["acquisition"]["pareto_mean"], before["search"]["paper"]["acquisition"]["pareto_mean"]
        return run_id_of(config), run_id_of(before), config

    single, single_before, config = ids([])
    assert config["search"]["acquisition"]["pareto_mean"] == "auto" and single == single_before
    assert "pareto_mean" not in stored_config(config)["search"]["acquisition"]
    zero, zero_before, _ = ids(["search.mode=pareto", "search.acquisition.pareto_mean=zero"])
    assert zero == zero_before
    auto, auto_before, config = ids(["search.mode=pareto"])
    assert auto == ids(["search.mode=pareto", "search.acquisition.pareto_mean=front"])[0] != auto_before == zero
    assert stored_config(config)["search"]["acquisition"]["pareto_mean"] == "front"
    flops_cost, _, _ = ids(["search.mode=pareto", "objective=flops", "search.acquisition.pareto_mean=cost"])
    flops_auto, flops_before, config = ids(["search.mode=pareto", "objective=flops"])
    assert flops_auto == flops_cost != flops_before and stored_config(config)["search"]["acquisition"]["pareto_mean"] == "cost"
    memory_auto, _, _ = ids(["search.mode=pareto", "objective=memory"])
    assert memory_auto == ids(["search.mode=pareto", "objective=memory", "search.acquisition.pareto_mean=cost"])[0]
    for method in ("paper", "random", "nsga2", "motpe"):
        now, before, _ = ids(["search.mode=pareto", f"search.method={method}"])
        assert now == before


def test_final_select_moves_run_ids_only_where_it_is_read():
    """``final.select`` and ``final.pool`` came after runs were stored: at ``top`` (as those runs) they are left out
    of the stored config, and also where ``select_finalists`` reads neither (one finalist, caps, Pareto mode), so
    those runs keep their ids under the new default ``front``; with several finalists and no caps ``front`` is
    another run."""
    from nascomp.pipeline import run_id_of, stored_config

    def ids(*extra):
        configs = [OmegaConf.to_container(validate(compose(TINY + list(extra) + sel)), resolve=True)
                   for sel in ([], ["final.select=top"])]
        assert configs[0]["final"]["select"] == "front"  # the default reaches the run
        return [run_id_of(c) for c in configs], stored_config(configs[0])["final"]

    for extra in ([], ["objective.constraint.flops=1000", "final.top_k=2"], ["search.mode=pareto", "final.top_k=2"]):
        (front, top), final = ids(*extra)
        assert front == top and "select" not in final and "pool" not in final, extra
    (front, top), final = ids("final.top_k=2")
    assert front != top and final["select"] == "front" and "pool" not in final  # pool at its default 16 is left out
    cpu = OmegaConf.to_container(validate(compose(["experiment=cpu"])), resolve=True)
    assert "select" not in stored_config(cpu)["final"]  # the benchmarks' preset keeps top: their run ids hold


def test_space_ops_auto_is_recorded_as_the_operators_it_searches():
    """``space.ops: auto`` (the skip-free, latency and Pareto-space rules) resolves by the objective, in either mode: all
    three operators where latency is rewarded or capped (a Pareto front of latency included), shrinkage only
    elsewhere. The stored config records the resolved list, so a
    latency run started when the default was the explicit list keeps its id, and a run that names its operators
    has the id of the ``auto`` run they equal; a bad value is a clear config error."""
    from nascomp.pipeline import run_id_of, stored_config
    from nascomp.schema import ConfigError

    def run(*extra):
        config = OmegaConf.to_container(validate(compose(TINY + list(extra))), resolve=True)
        return run_id_of(config), stored_config(config)["space"]["ops"]

    for extra, ops in (([], ["shrink"]), (["objective.constraint.flops=1000"], ["shrink"]),
                       (["objective=latency"], ["remove", "shrink", "skip"]),
                       (["objective.constraint.latency_ms=5"], ["remove", "shrink", "skip"]),
                       (["search.mode=pareto", "final.top_k=2"], ["shrink"]),
                       (["search.mode=pareto", "objective=memory", "final.top_k=2"], ["shrink"]),
                       (["search.mode=pareto", "objective=latency", "final.top_k=2"], ["remove", "shrink", "skip"])):
        auto, recorded = run(*extra)
        assert recorded == ops and auto == run(*extra, f"space.ops=[{','.join(ops)}]")[0], extra
    assert run()[0] != run("space.ops=[remove,shrink,skip]")[0]  # shrinkage only is another space: another run
    assert run("objective=latency", "objective.constraint.flops=1000")[1] == ["shrink"]  # capped: latency is not rewarded
    for bad, message in (("space.ops=everything", "space.ops must be auto or a list"), ("space.ops=[prune]", "non-empty subset"),
                         ("space.ops=null", "space.ops must be auto or a list"), ("space.ops=5", "space.ops must be auto or a list"),
                         ("space.ops=[shrink,shrink]", "names an operator twice")):
        with pytest.raises(ConfigError, match=message):
            validate(compose(TINY + [bad]))


def test_sigma2_grid_is_checked_and_its_default_keeps_run_ids():
    """``kernel.sigma2_grid`` came after runs were stored: at null (σ² fixed, as those runs) it is left out of the
    stored config, so those runs keep their ids under ``kernel.sigma2_grid=null``; the default since the σ² grid
    rule passed is the grid [0.25, 0.5, 1.0] (``kernel=nb201`` inherits it, ``kernel=paper`` and ``kernel=flat``
    pin null), another run id; an empty grid or a non-positive value is a ConfigError."""
    import copy

    from nascomp.pipeline import run_id_of, stored_config

    config = OmegaConf.to_container(validate(compose(TINY + ["kernel.sigma2_grid=null"])), resolve=True)
    assert config["kernel"]["sigma2_grid"] is None
    before = copy.deepcopy(config)
    del before["kernel"]["sigma2_grid"]
    assert stored_config(config) == stored_config(before) and run_id_of(config) == run_id_of(before)
    grid = OmegaConf.to_container(validate(compose(TINY)), resolve=True)
    assert run_id_of(grid) != run_id_of(config) and stored_config(grid)["kernel"]["sigma2_grid"] == [0.25, 0.5, 1.0]
    kernels = {option: OmegaConf.to_container(validate(compose(TINY + [f"kernel={option}"])), resolve=True)["kernel"]["sigma2_grid"]
               for option in ("default", "nb201", "paper", "flat")}
    assert kernels == {"default": [0.25, 0.5, 1.0], "nb201": [0.25, 0.5, 1.0], "paper": None, "flat": None}
    for method in ("random", "paper"):  # methods that do not read kernel.sigma2_grid keep the ids they had before it
        other = OmegaConf.to_container(validate(compose(TINY + [f"search.method={method}"])), resolve=True)
        old = copy.deepcopy(other)
        del old["kernel"]["sigma2_grid"]
        assert run_id_of(other) == run_id_of(old) and "sigma2_grid" not in stored_config(other)["kernel"]
    for bad in ("[]", "[0.5,0]", "[-1]", "[a]"):
        with pytest.raises(ConfigError, match=re.escape("kernel.sigma2_grid must be null or a non-empty list of positive numbers")):
            validate(compose(TINY + [f"kernel.sigma2_grid={bad}"]))


@pytest.mark.slow
def test_two_job_multirun(workdir):
    cli(["-m", *TINY, "search.method=random,rea", "final.enabled=false", "experiment_group=mr"], workdir)
    jobs = sorted(j for j in (workdir / "multirun" / "mr").iterdir() if j.is_dir())
    assert [j.name.split("search.method=")[1].split(",")[0] for j in jobs] == ["random", "rea"]
    for job in jobs:
        summary = json.loads((job / "summary.json").read_text())
        assert summary["evaluations"] == 4 and summary["finalists"] == []
        assert summary["config"]["experiment_group"] == "mr"


SCHEMA_ERRORS = [
    ("search.K=eight", "search.K: Value 'eight' of type 'str' could not be converted to Integer"),
    ("search.K=0", "search.K: 0 is out of range"),
    ("kernel.objective=likelihood", "kernel.objective: 'likelihood' is not one of posterior, marginal, euclidean"),
    ("kernel.warp=log", "kernel.warp: 'log' is not one of none, power"),
    ("+search.speed=3", "search.speed"),
    ("space.ops=[skip]", "skip addition alone cannot make a student smaller"),
    ("objective.penalty=0", "objective.penalty: 0.0 is out of range (must be > 0.0)"),
    ("objective.constraint.latency_ms=-5", "objective.constraint.latency_ms: -5.0 is out of range (must be > 0.0)"),
    ("objective.name=speed", "objective.name: 'speed' is not one of params, flops, latency, memory"),
    ("search.target=params", "search.target: 'params' is not one of f, accuracy"),
    ("search.acquisition.within_caps=maybe", "search.acquisition.within_caps: Value 'maybe' is not a valid bool"),
    ("search.acquisition.pareto_parents=front", "search.acquisition.pareto_parents: 'front' is not one of accuracy, spread"),
    ("search.acquisition.pareto_batch=greedy", "search.acquisition.pareto_batch: 'greedy' is not one of believer, independent"),
    ("search.acquisition.pareto_units=hypervolume", "search.acquisition.pareto_units: 'hypervolume' is not one of target, accuracy"),
    ("search.acquisition.pareto_mean=linear", "search.acquisition.pareto_mean: 'linear' is not one of auto, zero, cost, front"),
    ("search.acquisition.ei_units=accuracy", "search.acquisition.ei_units: 'accuracy' is not one of target, reward"),
    ("final.prune=[l3]", "final.prune must be a list of distinct pruning importances (l2, l1, bn_scale), e.g. final.prune=[l1]; got ['l3']"),
    ("final.prune=l1", "final.prune must be a list of distinct pruning importances (l2, l1, bn_scale), e.g. final.prune=[l1]; got l1"),
    ("final.prune=[l1] final.enabled=false", "final.prune compares fully trained students: it needs final.enabled=true"),
    ("search.target=accuracy objective=latency", "search.target=accuracy needs f's cost known before training (num_params or "
                                                 "flops); latency_ms is measured: use search.target=f"),
    ("search.mode=pareto search.acquisition.local_kernels=2", "Pareto mode has no single incumbent: set it to 0"),
    ("search.mode=pareto search.target=accuracy", "search.target=accuracy is for search.mode=single"),
    # recipes, placement, baselines and the logger: checked before any work, not at their first use
    ("proxy.optimizer.lr=-1", "proxy.optimizer: ValueError: Invalid learning rate: -1"),
    ("full.optimizer.lr=-1", "full.optimizer: ValueError: Invalid learning rate: -1"),
    ("full.optimizer._target_=torch.optim.Nope", "full.optimizer: "),
    ("full.scheduler._target_=torch.optim.lr_scheduler.Nope", "full.scheduler: "),
    ("trainer.devices=0", "trainer.devices: 0 must be -1 (every device) or a count >= 1"),
    ("trainer.precision=foo", "trainer.precision: 'foo' is not one of auto, transformer-engine"),
    ("+full.trainer.devices=-2", "full.trainer.devices: -2 must be -1"),
    ("search.rea.tournament=0", "search.rea.tournament: 0 is out of range"),
    ("logger._target_=nascomp.tracking.Nope", "logger._target_: 'nascomp.tracking.Nope' names no class"),
    ("logger._target_=nascomp.data.Dataset", "logger._target_: 'nascomp.data.Dataset' is not a nascomp.tracking.Tracker"),
]


def test_precisions_are_lightnings():
    """trainer.precision's choices are Lightning's precision inputs, and auto (nascomp.training.make_trainer)."""
    import typing

    import lightning.fabric.connector as connector

    from nascomp.schema import PRECISIONS

    lightning = {str(p) for alias in (connector._PRECISION_INPUT_STR, connector._PRECISION_INPUT_STR_ALIAS)
                 for p in typing.get_args(alias)}
    assert set(PRECISIONS) == lightning | {"auto"}


@pytest.mark.parametrize("override, message", SCHEMA_ERRORS)
def test_bad_override_is_refused_by_the_schema(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose(TINY + override.split()))


@pytest.mark.parametrize("override, message", [
    ("search.K=0", "error: bad configuration: search.K: 0 is out of range"),  # the schema
    ("teacher.checkpoint=missing.pt", "does not exist"),  # the setup (nascomp.pipeline.StartupError)
    ("search.target=accuracy objective=latency", "error: bad configuration: search.target=accuracy needs f's cost known"),
    ("kernel.transfer_mode=zero_shot kernel.transfer_from=src search.target=accuracy",
     "error: bad configuration: kernel.transfer_mode=zero_shot proposes by EI on f"),
    ("search.mode=pareto search.acquisition.local_kernels=2", "error: bad configuration: search.acquisition.local_kernels"),
    ("full.optimizer.lr=-1", "error: bad configuration: full.optimizer: ValueError: Invalid learning rate: -1"),
    ("+teacher.kwargs.foo=1", "teacher.kwargs"),  # the setup: the teacher's constructor refuses it
    ("final.select=best", "error: bad configuration: final.select: 'best' is not one of top, front"),
    ("final.pool=0", "error: bad configuration: final.pool: 0 is out of range (must be >= 1)"),
    ("final.prune=[l1,l1]", "error: bad configuration: final.prune must be a list of distinct pruning importances"),
    ("space.ops=null", "error: bad configuration: space.ops must be auto or a list of remove, shrink, skip, got None"),
])
def test_bad_input_exits_2_through_the_cli(tmp_path, override, message):
    """The one CLI check of the mapping: a bad input ends with exit status 2 and its message."""
    proc = cli(TINY + override.split(), tmp_path, check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr
    assert not (tmp_path / "teachers").exists() and not list(tmp_path.glob("outputs/*/*/store.sqlite"))  # no work was done



def test_a_corrupt_image_in_the_folder_exits_2_naming_it(tmp_path):
    """PIL's UnidentifiedImageError (an OSError, once a traceback with exit 1) is a bad input: exit 2, one line."""
    from PIL import Image

    for c in range(2):
        (tmp_path / "images" / f"c{c}").mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (10, 10), (40 * c + i,) * 3).save(tmp_path / "images" / f"c{c}" / f"{i}.png")
    broken = tmp_path / "images" / "c1" / "broken.png"
    broken.write_bytes(b"not a png at all")
    proc = cli(TINY + ["dataset=imagefolder", f"dataset.root={tmp_path / 'images'}", "dataset.image_size=8",
                       "dataset.split.val=2", "dataset.split.test=2"], tmp_path, check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"image '{broken}' cannot be read (UnidentifiedImageError: " in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "teachers").exists()



def test_a_run_directory_rerun_with_another_config_warns_and_keeps_the_first_run(tmp_path):
    """The README: rerunning a directory with a changed config starts a new run in its store, and a WARNING
    names the keys that differ. Through the real CLI twice in one directory: the second run warns, naming
    the one key changed, and the first run's records (status, history) are still in the store as they were."""
    from nascomp.store import RunStore

    args = TINY + ["final.enabled=false", "hydra.run.dir=out"]
    first = cli(args, tmp_path)
    assert "already holds run" not in first.stdout + first.stderr
    store = RunStore(tmp_path / "out" / "store.sqlite")
    ((run_id, status),) = store.runs()
    history = store.history(run_id)
    store.close()
    assert status == "finished" and len(history) == 4  # K (T + 1)
    second = cli(args + ["search.acquisition.samples=30"], tmp_path)
    (warning,) = [line for line in (second.stdout + second.stderr).splitlines() if "already holds run" in line]
    assert "[WARNING]" in warning
    assert f"already holds run {run_id} (finished) with another config (search.acquisition.samples: 20 -> 30): " \
           "starting a new run " in warning
    store = RunStore(tmp_path / "out" / "store.sqlite")
    runs, first_history = dict(store.runs()), store.history(run_id)
    (new_id,) = set(runs) - {run_id}
    new_history = store.history(new_id)
    store.close()
    assert len(runs) == 2 and runs[run_id] == "finished" and first_history == history
    assert runs[new_id] == "finished" and f"starting a new run {new_id} " in warning and len(new_history) == 4
    assert len(list(csv.DictReader(open(tmp_path / "out" / "history.csv")))) == 4  # the new run's, replacing the first's


@pytest.mark.parametrize("args, message", [
    (["--teacher", "small_resnet", "--dataset", "imagefolder"],  # once omegaconf's MissingMandatoryValue
     "error: bad configuration: dataset.root: no value given (???); dataset=imagefolder needs dataset.root="),
    (["--teacher", "small_resnet", "--dataset", "digits", "dataset.split.val=abc"],  # once a TypeError
     "error: dataset.split.val: 'abc' must be an integer (an image count >= 0)"),
    (["--teacher", "torchvision.models:resnet18", "--dataset", "digits"],  # once a RuntimeError inside Lightning
     "error: teacher torchvision.models:resnet18 cannot take this dataset's input (1, 8, 8): Given groups=1, "
     "weight of size [64, 3, 7, 7], expected input[8, 1, 8, 8] to have 3 channels"),
    (["--teacher", "small_resnet", "--dataset", "digits", "training.epochs=0"],  # the run's schema, as spelled here
     "error: bad configuration: training.epochs: 0 is out of range (must be >= 1)"),
    (["--teacher", "small_resnet", "--dataset", "digits", "--width", "0"],
     "error: bad configuration: --width: 0.0 is out of range (must be > 0.0)"),
])
def test_train_teacher_cli_refuses_bad_input_with_exit_2_and_one_line(tmp_path, args, message):
    """``python -m nascomp.train_teacher`` checks its dataset and training nodes as nascomp.run does, and
    runs one batch through the teacher, before training: exit 2, one error line, nothing written."""
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "nascomp.train_teacher", *args, "--out", str(tmp_path / "t.pt")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(message), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and sum(line.startswith("error:") for line in lines) == 1
    assert not (tmp_path / "t.pt").exists() and proc.stdout == ""


TEACHER_QUICK = ["--teacher", "small_resnet", "--dataset", "digits", "--width", "0.25", "training.epochs=3",
                 "training.optimizer.lr=0.05", "training.scheduler.milestones=[2]", "training.batch_size=64",
                 "training.trainer.enable_progress_bar=false", "training.trainer.accelerator=cpu"]


@pytest.mark.parametrize("case", ["disk full", "folder blocked", "folder takes no file"])
def test_train_teacher_cli_exits_2_with_one_line_when_the_checkpoint_cannot_be_written(tmp_path, case):
    """An OutputError (the checkpoint or its folder could not be written) was a traceback and exit 1; it is one
    line naming the file and the reason, and exit 2, as in the main job. "disk full": the checkpoint's temporary
    file is /dev/full (a real ENOSPC through the real writer, after a real training); "folder blocked": a file
    stands where --out's folder should be (refused before training, and as root too, unlike chmod); "folder takes
    no file": --out's folder exists but refuses new files (/sys, which refuses root too; refused before training)."""
    out = tmp_path / "teachers" / "t.pt"
    quick = TEACHER_QUICK
    if case == "folder takes no file":
        out = Path("/sys") / "t.pt"
        tmp = ""
        quick = [*quick, "training.epochs=1000"]
        expected = "error: cannot write '/sys/t.pt': its folder '/sys' takes no file: "  # errno 13, or 30 where /sys is read-only
    elif case == "disk full":
        out.parent.mkdir()
        tmp = "(pathlib.Path(sys.argv[-1]).parent / f'.t.pt.{os.getpid()}.tmp').symlink_to('/dev/full')\n"
        expected = f"error: cannot write '{out}': No space left on device (errno 28); the teacher was not saved: "
    else:
        out.parent.write_text("a file, not a folder")
        tmp = ""
        quick = [*quick, "training.epochs=1000"]  # minutes of training: refused before it, or the timeout fails the test
        expected = (f"error: cannot write '{out}': cannot make its folder '{out.parent}': File exists (errno 17); "
                    "the teacher was not saved: ")
    script = ("import os, pathlib, runpy, sys\n" + tmp +
              "sys.argv = ['nascomp.train_teacher', *sys.argv[1:]]\n"
              "runpy.run_module('nascomp.train_teacher', run_name='__main__')\n")
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-c", script, *quick, "--out", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(expected), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and sum(line.startswith("error:") for line in lines) == 1
    assert proc.stdout == "" and not out.exists() and not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("*.probe"))


def _leaves(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _options():
    root = config_dir()
    for group in ("teacher", "dataset", "space", "search", "kernel", "objective", "trainer", "logger", "experiment"):
        for f in sorted((root / group).glob("*.yaml")):
            yield group, f.stem


@pytest.mark.parametrize("group, option", list(_options()))
def test_every_option_composes_and_validates(group, option):
    overrides = [f"{group}={option}"]
    if (group, option) == ("teacher", "custom"):
        overrides += ["teacher.name=torchvision.models:resnet18", "teacher.checkpoint=t.pt"]
    if (group, option) in (("teacher", "torchvision"), ("teacher", "timm")):
        overrides += ["teacher.name=resnet18"]
    if (group, option) == ("dataset", "imagefolder"):
        overrides += ["dataset.root=/data/images"]
    cfg = validate(compose(overrides))
    # the composed config carries every value the option's file sets (its own defaults list followed)
    chosen = OmegaConf.to_container(config_group(group, option, [o.split(".", 1)[1] for o in overrides[1:]]))
    for key, value in _leaves(chosen if group == "experiment" else {group: chosen}):
        if key.startswith("hydra.") or (isinstance(value, str) and "${" in value):
            continue
        got = OmegaConf.select(cfg, key)
        assert (OmegaConf.to_container(got) if OmegaConf.is_config(got) else got) == value, key
    if group == "experiment":
        assert cfg.experiment_group == chosen.get("experiment_group", "default")
    if group == "space":
        from nascomp import ArchGraph, CompressionSpace, teachers

        graph = ArchGraph.from_module(teachers.create("small_resnet", width=0.25), (1, 8, 8))
        assert CompressionSpace(graph, **OmegaConf.to_container(cfg.space)).sample(seed=0).num_params < graph.num_params
    if group == "logger":
        from nascomp.tracking import make_tracker

        os.environ["WANDB_MODE"] = "disabled"
        make_tracker(cfg.logger, Path("/tmp"), {"name": "t"}).finish()


@pytest.mark.slow
def test_aggregate_real_runs(workdir):
    if not (workdir / "multirun" / "mr").is_dir():
        cli(["-m", *TINY, "search.method=random,rea", "final.enabled=false", "experiment_group=mr"], workdir)
    script = Path(__file__).resolve().parents[1] / "experiments" / "aggregate.py"
    out = subprocess.run([sys.executable, str(script), str(workdir / "multirun" / "mr"), "--csv", str(workdir / "mr.csv")],
                         capture_output=True, text=True, check=True).stdout
    rows = list(csv.DictReader(open(workdir / "mr.csv")))
    assert [r["search.method"] for r in rows] == ["random", "rea"]
    for r in rows:
        summary = json.loads(next((workdir / "multirun" / "mr").glob(f"*search.method={r['search.method']}*/summary.json")).read_text())
        assert r["runs"] == "1" and r["f(x)"] == f"{summary['best']['f']:.4f} ± 0.0000"
    assert "| search.method |" in out


def test_bad_inputs_fail_before_any_work(tmp_path, monkeypatch):
    import torch

    from nascomp import teachers
    from nascomp.pipeline import StartupError, run

    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    torch.save(teachers.create("resnet18", width=0.125).state_dict(), tmp_path / "resnet.pt")
    cases = [
        (["dataset=cifar10", f"dataset.root={tmp_path / 'nodata'}"], "download"),
        ([f"teacher.checkpoint={tmp_path / 'broken.pt'}"], "cannot be read as a weights-only state_dict"),
        ([f"teacher.checkpoint={tmp_path / 'resnet.pt'}"], "does not match the small_resnet architecture"),
        ([f"teacher.checkpoint={tmp_path / 'missing.pt'}"], "does not exist"),
        (["objective.device=gpu0"], "objective.device='gpu0' is not a torch device"),
        (["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp_spawn"],
         "trainer.strategy=ddp_spawn on 2 devices starts its ranks with _MultiProcessingLauncher"),
    ] + ([(["objective=latency", "objective.device=cuda"], "CUDA is not available here")] if not torch.cuda.is_available() else [])
    for overrides, message in cases:
        with pytest.raises(StartupError, match=re.escape(message)):
            run(validate(compose(TINY + overrides)), tmp_path / "run")
    assert not (tmp_path / "run" / "store.sqlite").exists() and not (tmp_path / "teachers").exists()  # nothing was started


def test_an_unreadable_cached_teacher_exits_2_naming_the_cache_file(tmp_path, monkeypatch):
    """A cached teacher left truncated (a kill while an older nascomp wrote it) made every rerun exit 2 with
    the advice for a user's checkpoint; the message now names it as a cache file to delete."""
    from nascomp.pipeline import StartupError, run, teacher_checkpoint

    monkeypatch.chdir(tmp_path)
    cfg = validate(compose(TINY))
    cached = teacher_checkpoint(cfg)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(StartupError, match=rf"^the cached teacher '{re.escape(str(cached))}' cannot be loaded .*; it is "
                                           rf"a cache file \(teacher_dir\), not an input: delete it"):
        run(cfg, tmp_path / "run")


def test_a_full_disk_while_writing_outputs_exits_2_with_one_line(tmp_path):
    """ENOSPC writing summary.json was a traceback and exit 1; it is one line naming the file and the reason, and
    exit 2 (the run resumes from its store). The main job runs with the pipeline replaced by the write alone,
    whose temporary file is /dev/full: a real ENOSPC through the real writer and the real CLI boundary."""
    script = ("import os, runpy, sys\n"
              "import nascomp.pipeline as pipeline\n"
              "from nascomp.report import write_summary\n"
              "def run(cfg, run_dir):\n"
              "    (run_dir / f'.summary.json.{os.getpid()}.tmp').symlink_to('/dev/full')\n"
              "    write_summary({'best': {'f': 1.0}}, run_dir)\n"
              "pipeline.run = run\n"
              "sys.argv = ['nascomp.run', *sys.argv[1:]]\n"
              "runpy.run_module('nascomp.run', run_name='__main__')\n")
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-c", script, *TINY, f"hydra.run.dir={out}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: cannot write '{out / 'summary.json'}': No space left on device (errno 28); "
                                f"the run resumes from its store in {out}"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (out / "summary.json").exists() and not list(out.glob(".*.tmp"))
