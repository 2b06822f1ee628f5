"""Pareto mode on real students (``search.mode=pareto`` through the main job): the Pareto problem built
from the objective against the built student modules, and the quickstart run end to end through the
CLI, its front, hypervolume, finalists, plots and report recomputed from history.csv."""
import csv
import json
import math
import os
import subprocess
import sys

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
    space = CompressionSpace(graph)
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
    space = CompressionSpace(graph)
    assert problem.cost_of(space.reference) == pytest.approx(measured, rel=1e-12)
    arch = space.sample(np.random.default_rng(1))
    again = problem.cost_of(arch)
    assert again > 0 and problem.cost_of(arch) == again  # each distinct layer timed once: the same prediction
    # with objective.latency_table=true the measured figures are the table's: the calibration is 1
    objective, problem = problem_of("latency", graph, ["objective.latency_table=true"])
    assert problem.cost_of(arch) == pytest.approx(objective.costs(arch.graph).latency_ms, rel=1e-12)


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

    for name in ("pareto_front.png", "hypervolume.png"):
        data = (run / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000, name
    report = (run / "report.md").read_text()
    assert "## Pareto front" in report and "![Front of accuracy and cost](pareto_front.png)" in report
    assert "![Hypervolume against evaluations](hypervolume.png)" in report
    assert all(f"`{p['key'][:12]}`" in report for p in front)
    assert f"hypervolume {hv:.4f}" in report and not math.isnan(hv)
