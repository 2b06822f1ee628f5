"""Pareto mode on real students (``search.mode=pareto`` through the main job): the Pareto problem built
from the objective against the built student modules, and the quickstart run end to end through the
CLI, its front, hypervolume, finalists, plots and report recomputed from history.csv."""
import csv
import json
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks.costs import fvcore_ops
from nascomp import teachers
from nascomp.compression_space import CompressionSpace
from nascomp.config import compose
from nascomp.cost import Meter, memory_mb
from nascomp.graph import ArchGraph
from nascomp.pareto import Scale, hypervolume, spread
from nascomp.pipeline import pareto_problem
from nascomp.reward import Objective
from nascomp.schema import OPERATORS  # the paper's operators: students that remove layers and add skips

SHAPE = (1, 8, 8)  # digits
TEACHER_ACC = 0.9


@pytest.fixture(scope="module")
def teacher():
    model = teachers.create("small_resnet", num_classes=10, width=0.25, in_channels=1).eval()
    return model, ArchGraph.from_module(model, SHAPE)


def problem_of(name, graph, overrides=()):
    cfg = compose([f"objective={name}", "objective.repeats=3", "objective.warmup=1", *overrides]).objective
    objective = Objective(cfg, Meter(cfg), graph, TEACHER_ACC)
    return objective, pareto_problem(objective)


@pytest.mark.parametrize("name, cost", [("params", "num_params"), ("flops", "flops"), ("memory", "memory_mb")])
def test_problem_of_an_exact_cost(teacher, name, cost):
    """The cost, the teacher's scale and reference, and cost_of of sampled students equal to the
    parameters of the built module, fvcore's conv + linear count and the memory of the graph."""
    model, graph = teacher
    objective, problem = problem_of(name, graph)
    teacher_cost = getattr(objective.teacher_costs, cost)
    assert problem.cost == cost
    assert problem.scale == Scale(0.0, TEACHER_ACC, 0.0, teacher_cost)
    assert problem.reference == (TEACHER_ACC, teacher_cost)
    assert teacher_cost == {"num_params": graph.num_params, "flops": graph.flops, "memory_mb": memory_mb(graph, 1)}[cost]
    space = CompressionSpace(graph, ops=OPERATORS)
    rng = np.random.default_rng(0)
    for arch in [space.sample(rng) for _ in range(4)]:
        built = arch.build(model)
        if cost == "num_params":
            assert problem.cost_of(arch) == sum(p.numel() for p in built.parameters()) < graph.num_params
        elif cost == "flops":
            ops = fvcore_ops(built, SHAPE)
            assert problem.cost_of(arch) == ops.get("conv", 0) + ops.get("linear", 0) < graph.flops
        else:
            assert problem.cost_of(arch) == memory_mb(arch.graph, 1) == objective.costs(arch.graph).memory_mb
    assert problem.cost_of(space.reference) == teacher_cost  # the teacher, as the space's reference


def test_problem_of_latency_is_the_table_calibrated_on_the_teacher(teacher):
    """Latency: per-layer table predictions scaled so that the teacher's is its measured latency."""
    model, graph = teacher
    objective, problem = problem_of("latency", graph)
    measured = objective.teacher_costs.latency_ms
    assert problem.cost == "latency_ms" and problem.scale == Scale(0.0, TEACHER_ACC, 0.0, measured) and measured > 0
    space = CompressionSpace(graph, ops=OPERATORS)
    assert problem.cost_of(space.reference) == pytest.approx(measured, rel=1e-12)
    arch = space.sample(np.random.default_rng(1))
    again = problem.cost_of(arch)
    assert again > 0 and problem.cost_of(arch) == again  # each distinct layer timed once: the same prediction
    # with objective.latency_table=true the measured figures are the table's: the calibration is 1
    objective, problem = problem_of("latency", graph, ["objective.latency_table=true"])
    assert problem.cost_of(arch) == pytest.approx(objective.costs(arch.graph).latency_ms, rel=1e-12)


def test_every_finalist_is_in_the_summary_plot_and_report_on_the_front_or_not(tmp_path, monkeypatch):
    """final.top_k = 4 of a front of 2: spread takes two points off the front, and they are shown too."""
    from nascomp import report
    from nascomp.pareto import ParetoProblem
    from nascomp.pipeline import pareto_summary
    from nascomp.search import Record

    points = [(0.50, 100), (0.80, 400), (0.70, 500), (0.60, 900), (0.40, 300)]  # (accuracy, parameters)
    history = [Record(SimpleNamespace(key=f"k{i}"), 0.0, acc, params, 0, None, 0.0) for i, (acc, params) in enumerate(points)]
    problem = ParetoProblem("num_params", lambda arch: 0, Scale(0.0, 0.9, 0.0, 1000.0), reference=(0.9, 1000.0))
    # by hand: k1 alone holds the most volume (0.7 x (0.8 / 0.9 + 0.1) > 1.0 x (0.5 / 0.9 + 0.1)), then k0,
    # the rest of the front; nothing else adds volume, so by rank, then accuracy: k2 (it dominates k3), k3 (over k4)
    pareto = pareto_summary(problem, history, problem.spread(history, 4), "params")
    assert [p["key"] for p in pareto["front"]] == ["k0", "k1"]
    assert pareto["finalists"] == [
        {"index": i, "key": f"k{i}", "accuracy": points[i][0], "cost": points[i][1], "on_front": i in (0, 1)} for i in (1, 0, 2, 3)]

    circled, save = [], report._save

    def capture(fig, path):  # the finalists' circles, before the figure is closed
        circled.extend(c.get_offsets().tolist() for c in fig.axes[0].collections if c.get_label() == "finalists")
        return save(fig, path)

    monkeypatch.setattr(report, "_save", capture)
    rows = report.history_rows(history, teacher_params=1000)
    plots = report.plot_pareto(pareto, rows, tmp_path)
    assert circled == [[[400, 0.8], [100, 0.5], [500, 0.7], [900, 0.6]]]
    line = ("4 finalists (final.top_k), circled in the plot: `k1` (#1, 80.00%, 400); `k0` (#0, 50.00%, 100); "
            "`k2` (#2, 70.00%, 500, off the front); `k3` (#3, 60.00%, 900, off the front).")
    assert report.finalists_line(pareto) == line
    summary = {"name": "t", "teacher": {"accuracy": 0.9, "num_params": 1000, "ratio": 0.0, "times": 1.0, "f": 0.0},
               "best": {"accuracy": 0.8, "num_params": 400, "ratio": 0.6, "times": 2.5, "f": 0.0}, "finalists": [],
               "evaluations": 5, "steps": 1, "search": {"method": "ours", "K": 2}, "seconds": {"search": 3, "final": 1},
               "pareto": pareto}
    plots |= {name: f"{name}.png" for name in ("f_vs_index", "f_histogram", "accuracy_vs_params")}
    assert line in report.write_report(summary, plots, tmp_path).read_text().splitlines()


# the quickstart, shrunk to seconds (tests/test_run.py's TINY), with 2 finalists
TINY = ["experiment=quickstart", "search.K=2", "search.T=1", "search.acquisition.samples=20", "proxy.epochs=1",
        "full.epochs=1", "teacher_training.epochs=2", "teacher.width=0.25", "search.mode=pareto", "final.top_k=2"]


def cli(args, cwd):
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "nascomp.run", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow  # 5-15 s: a process that imports torch
def test_bad_pareto_config_exits_2_with_one_line(tmp_path):
    proc = cli(["experiment=quickstart", "search.mode=pareto", "search.method=tpe"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == ("error: bad configuration: search.method=tpe has no Pareto mode; with "
                                                    "search.mode=pareto choose one of ours, paper, random, nsga2, motpe")


@pytest.mark.slow
def test_pareto_run_through_the_cli(tmp_path):
    """About 35 s on a shared 2-core CPU: 4 students, 2 finalists fully trained."""
    proc = cli(TINY + ["hydra.run.dir=outputs/pareto"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "outputs" / "pareto"
    summary = json.loads((run / "summary.json").read_text())
    pareto = summary["pareto"]
    rows = [r for r in csv.DictReader(open(run / "history.csv")) if not r["error"]]
    assert len(rows) == summary["evaluations"] == 4
    cost = [float(r["num_params"]) for r in rows]
    acc = [float(r["accuracy"]) for r in rows]
    teacher = summary["teacher"]
    assert pareto["cost"] == "num_params" and pareto["objective"] == "params"
    assert pareto["teacher"] == {"accuracy": teacher["accuracy"], "cost": teacher["num_params"]}

    # the front: the students no other one dominates, by hand
    dominated = [any(cost[j] <= cost[i] and acc[j] >= acc[i] and (cost[j] < cost[i] or acc[j] > acc[i])
                     for j in range(len(rows))) for i in range(len(rows))]
    on = {rows[i]["key"] for i in range(len(rows)) if not dominated[i]}
    front = pareto["front"]
    assert {p["key"] for p in front} == on and len(front) == len(on)
    assert [p["cost"] for p in front] == sorted(p["cost"] for p in front)
    for p in front:
        row = rows[[r["key"] for r in rows].index(p["key"])]
        assert p["index"] == int(row["index"]) and p["accuracy"] == pytest.approx(float(row["accuracy"]))
        assert p["u"] == pytest.approx(p["accuracy"] / teacher["accuracy"]) and p["v"] == pytest.approx(p["cost"] / teacher["num_params"])

    # the hypervolume, normalised by the teacher, from the rows; after each evaluation and per step in metrics.csv
    scale = Scale(0.0, teacher["accuracy"], 0.0, teacher["num_params"])
    hv = hypervolume(scale.v(cost), scale.u(acc))
    assert pareto["hypervolume"] == pytest.approx(hv, abs=1e-12) and 0 < hv < 1.21
    assert pareto["curve"][-1] == pytest.approx(hv) and np.all(np.diff(pareto["curve"]) >= 0)
    assert pareto["curve"][0] == pytest.approx(hypervolume(scale.v(cost[:1]), scale.u(acc[:1])))
    metrics = list(csv.DictReader(open(run / "metrics.csv")))
    assert [float(m["hypervolume"]) for m in metrics] == pytest.approx([pareto["curve"][1], pareto["curve"][3]])

    # finalists: final.top_k, spread along the front, fully trained, marked in the front table
    chosen = [rows[i]["key"] for i in spread(scale.v(cost), scale.u(acc), 2)]
    assert [f["key"] for f in summary["finalists"]] == chosen
    assert all(f["fully_trained"] for f in summary["finalists"])
    if len(on) >= 2:
        assert set(chosen) <= on
    assert {p["key"] for p in front if p["finalist"]} == set(chosen) & on
    assert [(p["key"], p["on_front"]) for p in pareto["finalists"]] == [(key, key in on) for key in chosen]

    for name in ("pareto_front.png", "hypervolume.png"):
        data = (run / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000, name
    report = (run / "report.md").read_text()
    assert "## Pareto front" in report and "![Front of accuracy and cost](pareto_front.png)" in report
    assert "![Hypervolume against evaluations](hypervolume.png)" in report
    assert all(f"`{p['key'][:12]}`" in report for p in front)
    assert f"hypervolume {hv:.4f}" in report and not math.isnan(hv)
