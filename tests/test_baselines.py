"""The baselines at their best (nascomp.baselines): TPE's sampler settings, its batch of pending
trials and its random start after a failure, NSGA-II's one generation per step, local search's
neighbourhood, incumbent and restart, SMAC's clear error without the extra.
The loop-level checks (budget, nothing evaluated twice, the shared first K, failures) are in
tests/test_search.py, parametrised over every method."""
import itertools
import sys

import numpy as np
import optuna
import pytest
from hydra import compose, initialize_config_dir

from nascomp.nb201 import EDGES, OPS, NB201Space, TableEvaluator
from nascomp.schema import OPERATORS  # the paper's operators: students that remove layers and add skips
from nascomp.search import Record, Search, make_proposer, run_search
from nascomp.evaluator import Evaluation, Evaluator
from nascomp.search_space import Space

CONF = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "conf")


def config(overrides):
    with initialize_config_dir(version_base="1.3", config_dir=CONF):
        return compose(config_name="config", overrides=overrides)


@pytest.fixture(scope="module")
def space():
    return NB201Space("cifar10")


@pytest.fixture(scope="module")
def evaluator(space):
    return TableEvaluator(space.accuracy, space.params, space.reference, "accuracy")


def records(space, evaluator, cells, step):
    return [Record(c, e.f, e.accuracy, e.num_params, step, None, e.seconds) for c, e in zip(cells, evaluator.evaluate(cells))]


def test_nb201_neighbours_are_the_24_one_edge_changes(space):
    cell = space.cell((3, 0, 1, 4, 2, 3))
    by_hand = {space.cell(ops).code for ops in itertools.product(range(len(OPS)), repeat=len(EDGES))
               if sum(a != b for a, b in zip(ops, cell.ops)) == 1}  # brute force over all 15,625 cells
    neighbours = space.neighbours(cell)
    assert len(by_hand) == 24 and len(neighbours) == 24 and {c.code for c in neighbours} == by_hand


def test_default_neighbours_are_distinct_mutants(space):
    cell = space.cell((0, 1, 2, 3, 4, 0))
    drawn = Space.neighbours(space, cell, np.random.default_rng(0), 300)  # the abstract default, from mutate
    assert len({c.key for c in drawn}) == len(drawn)  # distinct
    assert {c.code for c in drawn} == {c.code for c in space.neighbours(cell)}  # 300 draws find all 24
    assert len(Space.neighbours(space, cell, np.random.default_rng(0), 5)) <= 5


@pytest.mark.parametrize("overrides, startup, multivariate, liar", [
    (["search.K=8"], 8, True, True),  # the default: startup = K, the shared random start
    (["search.K=5"], 5, True, True),
    (["search.tpe.multivariate=false", "search.tpe.constant_liar=false", "search.tpe.n_startup_trials=10"], 10, False, False),
])
def test_tpe_sampler_settings(space, evaluator, overrides, startup, multivariate, liar):
    cfg = config(["search.method=tpe"] + overrides)
    proposer = make_proposer(space, evaluator, cfg, seed=0)
    assert (proposer.sampler._n_startup_trials, proposer.sampler._multivariate, proposer.sampler._constant_liar) == \
           (startup, multivariate, liar)


def test_tpe_asks_the_whole_step_before_telling_and_models_from_step_one(space, evaluator):
    """The constant liar needs the step's trials RUNNING while the next is asked; with startup = K the
    K shared random architectures are the whole random start."""
    cfg = config(["search.method=tpe", "search.K=8"])
    proposer = make_proposer(space, evaluator, cfg, seed=0)
    rng = np.random.default_rng(0)
    first = records(space, evaluator, [space.sample(rng) for _ in range(8)], 0)
    batch = proposer.propose(first, 8, {r.arch.key for r in first}, rng)
    study = proposer.study
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    running = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    assert len(complete) == 8 == proposer.sampler._n_startup_trials  # TPE's model, not random, from the first ask
    assert len(running) == 8 and {space.from_flat(t.params).key for t in running} == {a.key for a, _ in batch}
    history = first + records(space, evaluator, [a for a, _ in batch], 1)
    proposer.propose(history, 8, {r.arch.key for r in history}, rng)
    trials = study.get_trials()
    assert all(trials[t.number].state == optuna.trial.TrialState.COMPLETE for t in running)  # the batch told its f ...
    assert sorted(trials[t.number].value for t in running) == sorted(r.f for r in history[8:])
    assert len(study.get_trials(states=(optuna.trial.TrialState.RUNNING,))) == 8  # ... and the next batch asked


class FailsFirstOfEachStep(TableEvaluator):
    """The table, but the first cell of every step fails (a diverged proxy training, say): one failure
    among the shared first K and one in every later step."""

    def evaluate(self, archs, step=0):
        out = super().evaluate(archs, step)
        out[0] = Evaluation.failure(out[0].num_params, 0.0, "diverged")
        return out


@pytest.mark.parametrize("method", ["tpe", "motpe"])
def test_tpe_models_step_one_after_a_failure_among_the_first_K(space, method):
    """Optuna counts only finished trials against n_startup_trials: with one of the first 8 failed, the
    startup is the 7 that succeeded and every ask of step 1 is still drawn from TPE's model (sampled
    relative to the trials, which the constant liar shares as ``tpe:relative_params``), none at random."""
    pareto = ["search.mode=pareto"] if method == "motpe" else []
    evaluator = FailsFirstOfEachStep(space.accuracy, space.params, space.reference, "accuracy")
    proposer = make_proposer(space, evaluator, config([f"search.method={method}", "search.K=8"] + pareto), seed=0,
                             problem=space.pareto("num_params") if pareto else None)
    Search(space, evaluator, proposer, 8, 1, 0, 16).run()  # the first K, then step 1 (asked, not yet told)
    study = proposer.study
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 7
    assert len(study.get_trials(states=(optuna.trial.TrialState.FAIL,))) == 1
    step1 = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    assert len(step1) == 8 and all(any(k.startswith("tpe:relative_params") for k in t.system_attrs) for t in step1)


@pytest.mark.parametrize("failing", [False, True])
def test_nsga2_asks_step_s_in_generation_s(space, failing):
    """One NSGA-II generation per step: every ask of step s is in generation s, also when an ask lands on
    an evaluated cell (told its known values after the step's asks, not mid-step) and when an evaluation
    failed (told the worst values, so it is a member of its generation that every success dominates).
    Each told generation holds at least its K evaluated members; from generation 2 on NSGA-II's own
    selection keeps every failure out of the parents."""
    K, T = 8, 19
    cls = FailsFirstOfEachStep if failing else TableEvaluator
    evaluator = cls(space.accuracy, space.params, space.reference, "accuracy")
    cfg = config(["search.method=nsga2", "search.mode=pareto", f"search.K={K}"])
    proposer = make_proposer(space, evaluator, cfg, seed=0, problem=space.pareto("num_params"))
    study, propose, ask = proposer.study, proposer.propose, proposer.study.ask
    asked, step = {}, [0]  # trial number -> the step that asked it

    def spy_propose(history, k, exclude, rng):
        step[0] = history[-1].step + 1
        return propose(history, k, exclude, rng)

    def spy_ask(*args, **kwargs):
        trial = ask(*args, **kwargs)
        asked[trial.number] = step[0]
        return trial

    proposer.propose, study.ask = spy_propose, spy_ask
    history = Search(space, evaluator, proposer, K, T, 0, K * (T + 1)).run().history
    key = proposer.sampler._get_generation_key()
    trials = study.get_trials(deepcopy=False)
    generation = {t.number: t.system_attrs[key] for t in trials}
    assert sorted(set(asked.values())) == list(range(1, T + 1))
    assert {n: generation[n] for n in asked} == asked
    assert all(generation[t.number] == 0 for t in trials if t.number not in asked)  # the first K, added
    first_step = {r.arch.key: r.step for r in reversed(history)}
    repeats = [t for t in trials if t.number in asked
               and first_step.get(space.from_flat(t.params).key, T + 1) < asked[t.number]]
    assert repeats  # asks that landed on cells evaluated in an earlier step: the case that shifted generations
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    members = np.bincount([generation[t.number] for t in complete], minlength=T + 1)
    assert all(members[:T] >= K)  # generation T (the last step) is never told
    failed = {r.arch.key for r in history if r.failed}
    assert len(failed) == (T + 1 if failing else 0)
    worst = [t.values for t in complete if space.from_flat(t.params).key in failed]  # the failures of steps 0..T-1
    assert len(worst) >= (T if failing else 0) and all(v == [-np.inf, np.inf] for v in worst)
    attrs = study._storage.get_study_system_attrs(study._study_id)
    for s in range(2, T + 1):
        ids = attrs[proposer.sampler._get_parent_cache_key_prefix() + str(s)]  # NSGA-II's selection for generation s
        parents = [t for t in trials if t._trial_id in ids]
        assert len(parents) == K and not any(space.from_flat(t.params).key in failed for t in parents)


def local_optimum(space):
    """The table's best cell: all its 24 neighbours are worse (a random restart is too)."""
    cell = space.cell(map(int, max(space.accuracy, key=space.accuracy.get)))
    assert all(space.accuracy[n.code] < space.accuracy[cell.code] for n in space.neighbours(cell))
    return cell


def test_local_search_walks_the_incumbents_neighbours_then_restarts(space, evaluator):
    cfg = config(["search.method=local"])
    proposer = make_proposer(space, evaluator, cfg, seed=0)
    rng = np.random.default_rng(0)
    # step 1: K = 8 of the best first architecture's 24 neighbours
    first = records(space, evaluator, [space.sample(rng) for _ in range(8)], 0)
    best = max(first, key=lambda r: r.f)
    batch = [a for a, _ in proposer.propose(first, 8, {r.arch.key for r in first}, rng)]
    assert proposer.incumbent is best and len({a.key for a in batch}) == 8
    assert {a.code for a in batch} <= {c.code for c in space.neighbours(best.arch)}
    # stuck: a local optimum with all its neighbours evaluated -> 8 random architectures (the restart)
    top = local_optimum(space)
    history = records(space, evaluator, [top] + space.neighbours(top), 0)
    proposer = make_proposer(space, evaluator, cfg, seed=0)
    known = {r.arch.key for r in history}
    restart = [a for a, _ in proposer.propose(history, 8, set(known), rng)]
    assert proposer.incumbent.arch.code == top.code and len(restart) == 8
    assert not known & {a.key for a in restart}
    # then: the best restart architecture is the incumbent (worse than the optimum), its neighbours are proposed
    history += records(space, evaluator, restart, 1)
    nxt = [a for a, _ in proposer.propose(history, 8, {r.arch.key for r in history}, rng)]
    best_restart = max(history[-8:], key=lambda r: r.f)
    assert best_restart.f < space.accuracy[top.code] and proposer.incumbent is best_restart
    assert {a.code for a in nxt} <= {c.code for c in space.neighbours(best_restart.arch)}


def test_local_search_moves_to_a_better_neighbour_evaluated_before(space, evaluator):
    """After a restart the new incumbent can have neighbours evaluated earlier: local search moves to the
    best of them when it beats the incumbent (its value is known), and proposes that one's neighbours."""
    cfg = config(["search.method=local"])
    proposer = make_proposer(space, evaluator, cfg, seed=0)
    rng = np.random.default_rng(4)
    top = local_optimum(space)
    worse = sorted(space.neighbours(top), key=lambda c: space.accuracy[c.code])[0]  # the optimum's worst neighbour
    assert space.accuracy[worse.code] < space.accuracy[top.code]
    history = records(space, evaluator, [top], 0)  # the optimum, evaluated long ago
    proposer.propose(history, 1, {top.key}, rng)
    start = records(space, evaluator, [worse], 1)[0]
    proposer.move(start, rng)  # as after a restart: the incumbent is `worse`, whose neighbour `top` is known
    history.append(start)
    batch = [a for a, _ in proposer.propose(history, 8, {r.arch.key for r in history}, rng)]
    assert proposer.incumbent.arch.key == top.key
    assert {a.code for a in batch} <= {c.code for c in space.neighbours(top)}


@pytest.mark.parametrize("method", ["tpe", "local", "smac"])
def test_a_budget_off_the_step_grid_is_respected(space, evaluator, method):
    if method == "smac":
        pytest.importorskip("smac", reason="SMAC3 is not installed: pip install 'nascomp[peer]'")
    result = run_search(space, evaluator, config([f"search.method={method}", "search.K=4", "search.T=10"]), seed=1, budget=14)
    keys = [r.arch.key for r in result.history]
    assert len(keys) == 14 and len(set(keys)) == 14
    assert [r.step for r in result.history] == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 2


def test_smac_without_the_extra_is_a_clear_error(space, evaluator, monkeypatch):
    from nascomp.schema import ConfigError, validate

    monkeypatch.setitem(sys.modules, "smac", None)  # as if SMAC3 were not installed: importing it fails
    cfg = config(["search.method=smac"])
    with pytest.raises(ConfigError, match=r"^search.method: smac needs SMAC3, an optional dependency: pip install 'nascomp\[peer\]'$"):
        validate(cfg)  # at startup: python -m nascomp.run exits with status 2 before training anything
    with pytest.raises(ImportError, match=r"search.method=smac needs SMAC3, an optional dependency: pip install 'nascomp\[peer\]'"):
        make_proposer(space, evaluator, cfg, seed=0)  # the Python API
    validate(config(["search.method=tpe"]))  # the other methods do not need it


class CompressionOnly(Evaluator):
    """f = C (2 - C) of Eq. 6 with the accuracy ratio 1, C = 1 - params / teacher params: a reward
    computed from the student's real parameter count, no training (the teacher: f = 0)."""

    def __init__(self, teacher_params):
        self.teacher_params = teacher_params

    @property
    def reference_f(self):
        return 0.0

    def evaluate(self, archs, step=0):
        from nascomp.evaluator import Evaluation

        out = []
        for a in archs:
            c = 1 - a.num_params / self.teacher_params
            out.append(Evaluation(c * (2 - c), 1.0, a.num_params, 0.0))
        return out


@pytest.mark.parametrize("method", ["tpe", "local", "smac"])
def test_the_baselines_search_the_compression_space(method):
    """The flat view with bool (keep, skip) and float (shrink) dimensions, and neighbours drawn with
    mutate: a small ResNet's students, nothing evaluated twice, the teacher never proposed."""
    if method == "smac":
        pytest.importorskip("smac", reason="SMAC3 is not installed: pip install 'nascomp[peer]'")
    from nascomp import teachers
    from nascomp.compression_space import CompressionSpace
    from nascomp.graph import ArchGraph

    space = CompressionSpace(ArchGraph.from_module(teachers.create("small_resnet", width=0.5).eval(), (1, 8, 8)), ops=OPERATORS)
    evaluator = CompressionOnly(space.graph.num_params)
    result = run_search(space, evaluator, config([f"search.method={method}", "search.K=3", "search.T=3",
                                                  "search.local.neighbours=10"]), seed=0)
    keys = [r.arch.key for r in result.history]
    assert len(keys) == 12 and len(set(keys)) == 12 and space.reference.key not in keys
    assert all(0 < r.f < 1 for r in result.history)


def test_smac_proposes_the_same_whatever_pythons_string_hashing():
    """SMAC's local search starts from list(set(configurations)), whose order follows PYTHONHASHSEED; sorted
    by nascomp, one seed's proposals are the same in processes with different string hashing (a resumed
    run replays the search)."""
    import os
    import subprocess

    pytest.importorskip("smac", reason="SMAC3 is not installed: pip install 'nascomp[peer]'")
    script = """
import numpy as np
from nascomp.nb201 import NB201Space
from nascomp.baselines import SMACProposer
from nascomp.search import Record
space = NB201Space("cifar10")
rng = np.random.default_rng(0)
first = [space.sample(rng) for _ in range(6)]
history = [Record(a, space.accuracy[a.code] / 100, space.accuracy[a.code] / 100, 0, 0, None, 1.0, None, None, None, None) for a in first]
proposer = SMACProposer(space, 4, 20, seed=3)
print(" ".join(a.key for a, _ in proposer.propose(history, 4, {a.key for a in first}, np.random.default_rng(1))))
"""
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(h)}).stdout.split() for h in (0, 1, 2)]
    assert len(runs[0]) == 4 and runs[0] == runs[1] == runs[2]

