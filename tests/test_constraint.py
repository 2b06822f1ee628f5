"""The constraint form's finalists (nascomp.pipeline.select_finalists): students that meet every cap."""
import logging

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from nascomp import ArchGraph, CompressionSpace, teachers
from nascomp.config import group
from nascomp.cost import Meter
from nascomp.pipeline import select_finalists
from nascomp.reward import Objective
from nascomp.search import Record, SearchResult
from nascomp.schema import OPERATORS  # the paper's operators: students that remove layers and add skips


@pytest.fixture(scope="module")
def students():
    """16 distinct students of small_resnet (w 0.5, 1x8x8 inputs) and the teacher's graph."""
    torch.manual_seed(0)
    graph = ArchGraph.from_module(teachers.create("small_resnet", width=0.5).eval(), (1, 8, 8))
    space, rng, out = CompressionSpace(graph, ops=OPERATORS), np.random.default_rng(0), {}
    while len(out) < 16:
        arch = space.sample(rng)
        out[arch.key] = arch
    return graph, sorted(out.values(), key=lambda a: a.flops)


def _objective(graph, penalty=0.5, **constraint):
    cfg = OmegaConf.merge(group("objective", "params"), {"repeats": 3, "warmup": 1, "penalty": penalty, "constraint": constraint})
    return Objective(cfg, Meter(cfg), graph, teacher_accuracy=0.9)


def _records(graph, archs, objective):
    """Accuracy in proportion to FLOPs (0.9 at the most), f the objective's, costs
    as recorded; the last record has no FLOPs recorded (a store row older than the cost)."""
    out = []
    for i, arch in enumerate(archs):
        acc = 0.9 * arch.flops / archs[-1].flops
        costs = objective.costs(arch.graph)
        out.append(Record(arch, objective.reward(acc, costs), acc, arch.num_params, 0, None, 1.0,
                          flops=costs.flops if i < len(archs) - 1 else None, latency_ms=costs.latency_ms,
                          memory_mb=costs.memory_mb))
    return out


def test_finalists_meet_a_flops_cap_where_the_best_f_does_not(students):
    graph, archs = students
    cap = archs[7].flops  # the 8 lowest-FLOPs students meet it
    objective = _objective(graph, flops=cap)
    history = _records(graph, archs, objective)
    # accuracy ~ FLOPs and penalty p = 0.5: over the cap, f ~ sqrt(FLOPs * cap) rises with FLOPs, so the
    # bare top 3 by f are all over the cap
    assert all(r.arch.flops > cap for r in SearchResult(history).top(3))
    chosen = select_finalists(history, objective, 3)
    within = sorted((r for r in history if r.arch.flops <= cap), key=lambda r: -r.accuracy)
    assert [r.arch.key for r in chosen] == [r.arch.key for r in within[:3]]
    assert all(r.arch.flops <= cap for r in chosen)
    assert chosen[0].arch.key == archs[7].key  # the most accurate within the cap: the one at it
    assert chosen[0].f == pytest.approx(chosen[0].accuracy / 0.9)  # no penalty within the cap


def test_too_few_feasible_students_give_fewer_finalists(students, caplog):
    graph, archs = students
    objective = _objective(graph, flops=archs[1].flops)  # 2 students meet it
    history = _records(graph, archs, objective)
    # accuracy ~ FLOPs, penalty 0.5: the students just over the cap have a higher f than both within it
    assert min(r.f for r in history[:2]) < max(r.f for r in history[2:4])
    with caplog.at_level(logging.WARNING, logger="nascomp"):
        chosen = select_finalists(history, objective, 4)
    assert [r.arch.key for r in chosen] == [archs[1].key, archs[0].key]  # the 2 within the cap, best f first
    assert "only 2 of 16 evaluated students meet the caps" in caplog.text and "2 finalists instead of 4" in caplog.text


def test_no_feasible_student_gives_the_least_violating(students, caplog):
    graph, archs = students
    objective = _objective(graph, flops=archs[0].flops - 1)  # none meets it
    history = _records(graph, archs, objective)
    with caplog.at_level(logging.WARNING, logger="nascomp"):
        chosen = select_finalists(history, objective, 3)
    # the 3 least over it: the lowest FLOPs (the last record's FLOPs are measured from its graph, the highest)
    assert [r.arch.key for r in chosen] == [archs[0].key, archs[1].key, archs[2].key]
    assert objective.violation({"flops": archs[2].flops}) == pytest.approx(archs[2].flops / (archs[0].flops - 1))
    assert "none of 16 evaluated students meets the caps" in caplog.text


def test_the_violation_of_a_record_without_its_cost_is_measured(students):
    graph, archs = students
    objective = _objective(graph, flops=archs[-2].flops)  # every student but the last (no FLOPs recorded) meets it
    history = _records(graph, archs, objective)
    assert history[-1].flops is None
    chosen = select_finalists(history, objective, 16)
    assert len(chosen) == 15 and archs[-1].key not in {r.arch.key for r in chosen}  # measured over the cap: left out
    assert [r.arch.key for r in chosen] == [a.key for a in archs[-2::-1]]


def test_without_caps_the_finalists_are_the_best_by_f(students):
    graph, archs = students
    objective = _objective(graph)
    history = _records(graph, archs, objective)
    failed = Record(archs[0], 0.0, 0.0, 0, 0, None, 1.0, error="diverged")
    assert [r.arch.key for r in select_finalists(history + [failed], objective, 5)] == \
        [r.arch.key for r in SearchResult(history).top(5)]
    assert objective.violation({}) == 1.0


@pytest.mark.slow
def test_capped_run_trains_feasible_finalists_through_the_cli(tmp_path):
    """The main job with a FLOPs cap at half the teacher's: its finalists are the best by f among the
    evaluated students within the cap (history.csv), each fully trained, best within the cap too (with caps
    the default ``final.select=front`` is the best by f: f is the accuracy ratio, no size to trade)."""
    import csv
    import json
    import os
    import subprocess
    import sys

    teacher_flops = ArchGraph.from_module(teachers.create("small_resnet", width=0.25), (1, 8, 8)).flops
    cap = teacher_flops // 2
    args = ["experiment=quickstart", "search.K=4", "search.T=1", "search.acquisition.samples=20", "proxy.epochs=1",
            "full.epochs=1", "teacher_training.epochs=2", "final.top_k=2", "teacher.width=0.25",
            f"objective.constraint.flops={cap}"]
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "nascomp.run", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "quickstart").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    rows = [r for r in csv.DictReader(open(run / "history.csv")) if not r["error"]]
    within = sorted((r for r in rows if int(r["flops"]) <= cap), key=lambda r: -float(r["f"]))
    assert len(rows) == 8 and len(within) >= 2, "the test needs 2 students within the cap: lower it"
    assert summary["objective"]["constraint"] == {"flops": float(cap)}
    assert [r["key"] for r in summary["finalists"]] == [r["key"] for r in within[:2]]
    assert all(r["fully_trained"] and r["flops"] <= cap for r in summary["finalists"])
    assert summary["best"]["flops"] <= cap


def test_within_caps_checks_every_cap_before_training(students):
    """``Objective.within_caps``: whether a graph meets every cap by its ``predicted`` costs: parameters,
    FLOPs and memory exactly, latency by the per-layer table calibrated on the teacher; None without caps."""
    from nascomp.cost import memory_mb

    graph, archs = students
    cap = archs[7].flops
    flops = _objective(graph, flops=cap)
    assert [flops.within_caps(a.graph) for a in archs] == [a.flops <= cap for a in archs] == [True] * 8 + [False] * 8
    both = _objective(graph, flops=cap, num_params=archs[3].num_params)
    assert [both.within_caps(a.graph) for a in archs] == [a.flops <= cap and a.num_params <= archs[3].num_params for a in archs]
    assert _objective(graph).within_caps(archs[0].graph) is None
    memory = sorted(memory_mb(a.graph, 1) for a in archs)[7]
    capped = _objective(graph, memory_mb=memory)
    assert [capped.within_caps(a.graph) for a in archs] == [memory_mb(a.graph, 1) <= memory for a in archs]
    latency = _objective(graph, latency_ms=1.0)
    predicted = [latency.predicted(a.graph, "latency_ms") for a in archs]
    assert latency.predicted(graph, "latency_ms") == pytest.approx(latency.teacher_costs.latency_ms)  # calibrated
    assert all(p > 0 for p in predicted) and latency.predicted(archs[0].graph, "latency_ms") == predicted[0]  # layers timed once
    middle = sorted(predicted)[7]
    cfg = OmegaConf.merge(group("objective", "params"), {"constraint": {"latency_ms": middle}})
    mid = Objective(cfg, latency.meter, graph, teacher_accuracy=0.9)  # the same meter: the same predictions
    assert [mid.within_caps(a.graph) for a in archs] == [p <= middle for p in predicted]


@pytest.mark.parametrize("within_caps", [True, False])
def test_kernels_propose_only_students_within_the_caps(students, within_caps):
    """``search.acquisition.within_caps``: with a FLOPs cap, every kernel's proposal meets it. Accuracy
    rises with FLOPs here, and so does the penalised f over the cap (p = 0.5), so without the option
    the kernels propose students over it."""
    from nascomp.config import compose
    from nascomp.proxy_evaluator import ProxyEvaluator
    from nascomp.search import make_proposer

    graph, archs = students
    cap = archs[7].flops
    objective = _objective(graph, flops=cap)
    evaluator = ProxyEvaluator(teachers.create("small_resnet", width=0.5), 0.9, None, None, objective=objective)
    space = CompressionSpace(graph, ops=OPERATORS)
    cfg = compose(["search.K=8", "search.acquisition.samples=100", "kernel.max_steps=5", "kernel.hidden=8",
                   f"search.acquisition.within_caps={within_caps}"])
    proposer = make_proposer(space, evaluator, cfg, seed=0)
    assert (proposer.within_caps is not None) == within_caps
    history = _records(graph, archs, objective)
    proposals = proposer.propose(history, 8, {a.key for a in archs}, np.random.default_rng(0))
    assert len(proposals) == 8 and [i for _, i in proposals] == list(range(8))
    over = [a.flops > cap for a, _ in proposals]
    if within_caps:
        assert not any(over)
    else:
        assert any(over)


def _non_dominated(records):
    """Keys of the records no other record beats: accuracy at least as high at no more parameters, better in one."""
    return {r.arch.key for r in records
            if not any(o.accuracy >= r.accuracy and o.num_params <= r.num_params
                       and (o.accuracy > r.accuracy or o.num_params < r.num_params) for o in records)}


def test_front_finalists_are_spread_along_the_pools_front(students):
    """final.select=front: the finalists are students of the pool (the best `pool` by f) on its (accuracy, params)
    front; where the front has exactly k points, the finalists are that front."""
    graph, archs = students
    objective = _objective(graph)
    rng = np.random.default_rng(1)
    history = []
    for arch in archs:  # accuracy not tied to size: fronts of a few points among near-best f
        acc = float(rng.uniform(0.5, 0.9))
        history.append(Record(arch, objective.reward(acc, objective.costs(arch.graph)), acc, arch.num_params, 0, None, 1.0))
    pool = SearchResult(history).top(8)
    front = _non_dominated(pool)
    assert 2 <= len(front) < 8
    chosen = select_finalists(history, objective, 2, "front", 8)
    assert len(chosen) == 2 and {r.arch.key for r in chosen} <= front
    everything = select_finalists(history, objective, len(front), "front", 8)
    assert {r.arch.key for r in everything} == front
    # with pool = k it is the top k by f, in another order at most
    assert {r.arch.key for r in select_finalists(history, objective, 3, "front", 3)} == {r.arch.key for r in pool[:3]}


def test_front_finalists_under_caps_are_the_best_by_f(students):
    """With caps f is the accuracy ratio, with no cost to trade against: front's finalists are top's."""
    graph, archs = students
    cap = archs[7].flops
    objective = _objective(graph, flops=cap)
    history = _records(graph, archs, objective)
    chosen = select_finalists(history, objective, 3, "front", 6)
    assert [r.arch.key for r in chosen] == [r.arch.key for r in select_finalists(history, objective, 3)]
    assert all(r.arch.flops <= cap for r in chosen)


def test_front_with_one_finalist_or_a_small_pool(students):
    """One finalist is the best by f; a pool smaller than k is k (its front spread is then the top k by f)."""
    graph, archs = students
    objective = _objective(graph)
    rng = np.random.default_rng(2)
    history = []
    for arch in archs:
        acc = float(rng.uniform(0.5, 0.9))
        history.append(Record(arch, objective.reward(acc, objective.costs(arch.graph)), acc, arch.num_params, 0, None, 1.0))
    assert [r.arch.key for r in select_finalists(history, objective, 1, "front", 16)] == [SearchResult(history).top(1)[0].arch.key]
    assert ({r.arch.key for r in select_finalists(history, objective, 4, "front", 2)}
            == {r.arch.key for r in SearchResult(history).top(4)})


def test_the_store_keeps_the_weights_front_may_pick():
    """final.select=front picks among the best final.pool by f: the store keeps that many proxy weights per
    context; one finalist is the best by f, so one is kept, as with select=top."""
    from nascomp.config import compose
    from nascomp.pipeline import kept_weights
    from nascomp.schema import validate

    final = lambda *o: validate(compose(["experiment=quickstart", *o])).final
    assert kept_weights(final("final.top_k=4")) == 16 and kept_weights(final("final.top_k=4", "final.pool=8")) == 8
    assert kept_weights(final("final.top_k=20")) == 20  # the pool is at least top_k
    assert kept_weights(final("final.top_k=1")) == 1 and kept_weights(final("final.top_k=4", "final.select=top")) == 4
