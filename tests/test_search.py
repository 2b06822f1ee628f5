"""Algorithm 1 and the baselines: one complete loop on NAS-Bench-201 per method, reproducibility."""
import math

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from nascomp.nb201 import NB201Space, TableEvaluator
from nascomp.search import run_search

CONF = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "conf")
TINY = ["search.K=3", "search.T=3", "search.acquisition.samples=30", "kernel.max_steps=5",
        "kernel.hidden=8", "search.rea.population=5", "search.rea.tournament=2"]
METHODS = {
    "ours": [],
    "flat": ["kernel=flat"],
    "paper": ["kernel=paper", "kernel.hidden=8", "kernel.layers=2"],
    "evolution": ["search.acquisition.maximizer=evolution", "search.acquisition.parents=3"],
    "marginal": ["kernel.objective=marginal"],
    "euclidean": ["kernel.objective=euclidean", "search.best_f=global"],
    "relative": ["kernel.numeric=relative"],  # channels relative to the space's reference cell
    "random": ["search.method=random"],
    "tpe": ["search.method=tpe"],
    "rea": ["search.method=rea"],
    "local": ["search.method=local"],
    "smac": ["search.method=smac"],
}
BASELINES = {"random", "tpe", "rea", "local", "smac"}
try:
    import smac  # noqa: F401  the peer library, an optional extra (in dev)
    NO_SMAC = None
except ImportError:
    NO_SMAC = "SMAC3 is not installed: pip install 'nascomp[peer]'"


def method_param(m, slow=False):
    marks = ([pytest.mark.slow] if slow else []) + ([pytest.mark.skip(reason=NO_SMAC)] if m == "smac" and NO_SMAC else [])
    return pytest.param(m, marks=marks)


def config(overrides):
    with initialize_config_dir(version_base="1.3", config_dir=CONF):
        return compose(config_name="config", overrides=TINY + overrides)


@pytest.fixture(scope="module")
def space():
    return NB201Space("cifar100")


SLOW = {"paper", "evolution", "marginal", "euclidean"}


@pytest.mark.parametrize("objective", ["accuracy", "compression"])
@pytest.mark.parametrize("method", [method_param(m, m in SLOW) for m in METHODS])
def test_one_complete_loop(space, method, objective):
    evaluator = TableEvaluator(space.accuracy, space.params, space.reference, objective)
    result = run_search(space, evaluator, config(METHODS[method]), seed=3)
    keys = [r.arch.key for r in result.history]
    assert len(keys) == 12 and len(set(keys)) == 12  # budget K (T + 1), nothing evaluated twice
    assert [r.step for r in result.history] == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    if objective == "compression":
        assert space.reference.key not in keys  # known a priori (f = 0), never proposed
    kernels = [r.proposer for r in result.history[3:]]
    assert kernels == ([0, 1, 2] * 3 if method not in BASELINES else [None] * 9)
    top = result.top(4)
    assert [r.f for r in top] == sorted((r.f for r in result.history), reverse=True)[:4]
    assert result.best_after(12) == top[0].f and evaluator.calls == 12


def test_all_methods_share_the_first_random_architectures(space):
    evaluator = TableEvaluator(space.accuracy, space.params, space.reference, "accuracy")
    firsts = {m: [r.arch.key for r in run_search(space, evaluator, config(METHODS[m] + ["search.T=0"]), seed=5).history]
              for m in ("ours", "random", "tpe", "rea", "local") + (() if NO_SMAC else ("smac",))}
    assert len({tuple(v) for v in firsts.values()}) == 1


@pytest.mark.parametrize("method", [method_param(m) for m in ("ours", "tpe", "rea", "local", "smac")])
def test_same_seed_same_trajectory(space, method):
    evaluator = TableEvaluator(space.accuracy, space.params, space.reference, "compression")
    runs = [[r.arch.key for r in run_search(space, evaluator, config(METHODS[method]), seed=s).history] for s in (7, 7, 8)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


class FailingEvaluator(TableEvaluator):
    """Fails on every cell whose first edge is a zero op."""

    def evaluate(self, archs, step=0):
        from nascomp.evaluator import Evaluation

        return [Evaluation.failure(a.num_params, 0.0, "diverged") if a.ops[0] == 0 else e
                for a, e in zip(archs, super().evaluate(archs, step))]


@pytest.mark.slow
@pytest.mark.parametrize("method", [method_param(m) for m in ("ours", "tpe", "rea", "local", "smac")])
def test_failed_evaluations_are_kept_out_of_the_models(space, method):
    from nascomp.search import Search, make_proposer

    evaluator = FailingEvaluator(space.accuracy, space.params, space.reference, "accuracy")
    cfg = config(METHODS[method] + ["search.T=5", "search.rea.population=6"])
    proposer = make_proposer(space, evaluator, cfg, seed=0)
    result = Search(space, evaluator, proposer, cfg.search.K, cfg.search.T, seed=0).run()
    assert len(result.history) == 18 and all(r.failed == (r.arch.ops[0] == 0) for r in result.history)
    failed = [r for r in result.history if r.failed]
    assert failed and all(r.f == 0.0 for r in failed)  # the one convention: flagged, f = 0
    assert not result.top(1)[0].failed
    assert result.best_after(18) == max(r.f for r in result.history if not r.failed)
    if method == "tpe":  # TPE is told each failure as a failed trial, never as f = 0
        import optuna

        study = proposer.study
        told_failed = {proposer.space.from_flat(t.params).key for t in study.get_trials(states=(optuna.trial.TrialState.FAIL,))}
        assert {r.arch.key for r in failed if r.step < 5} <= told_failed
        assert all(t.value != 0.0 for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    if method == "smac":  # SMAC is told each failure as a crash at the worst cost seen, never as f = 0
        from smac.runhistory.enumerations import StatusType

        rh = proposer.smac.runhistory
        told = {proposer.space.from_flat(dict(rh.get_config(k.config_id))).key: v for k, v in rh.items()}
        assert {r.arch.key for r in failed if r.step < 5} <= {key for key, v in told.items() if v.status == StatusType.CRASHED}
        worst = max(-r.f for r in result.history if not r.failed)
        assert all(v.cost <= worst for v in told.values() if v.status != StatusType.RUNNING)
    if method == "local":  # a failed student is never the incumbent
        assert not proposer.incumbent.failed and proposer.incumbent.arch.ops[0] != 0


class AlwaysFailing(TableEvaluator):
    """Every student fails, as with proxy.optimizer.lr=1e30 (every loss non-finite)."""

    def evaluate(self, archs, step=0):
        from nascomp.evaluator import Evaluation

        self.calls += len(archs)
        return [Evaluation.failure(1, 0.0, "training loss diverged (non-finite)") for _ in archs]


def test_a_search_where_every_student_fails_stops_with_a_clear_error(space, tmp_path):
    import time

    from nascomp.search import SearchFailed
    from nascomp.evaluator import StoredEvaluator
    from nascomp.store import RunStore

    store = RunStore(tmp_path / "store.sqlite")
    evaluator = StoredEvaluator(AlwaysFailing(space.accuracy, space.params, space.reference, "compression"), store, "r", "ctx")
    start = time.perf_counter()
    with pytest.raises(SearchFailed) as info:
        run_search(space, evaluator, config(["search.T=50", "search.max_failed_steps=3"]), seed=0)
    assert time.perf_counter() - start < 60  # it used to spin forever in KernelProposer.subsets
    assert str(info.value).startswith("every student of 3 consecutive steps (up to step 2) failed (search.max_failed_steps=3); "
                                      "the first error: training loss diverged (non-finite). Check the proxy recipe (proxy.optimizer.lr")
    assert store.count("ctx") == 9  # three steps of K = 3, every failure recorded
    assert all(r["error"] for r in store.cached("ctx", _keys(store)).values())


def _keys(store):
    return [k for (k,) in store.db.execute("SELECT key FROM evaluations")]


def test_a_search_without_one_success_within_its_budget_fails(space):
    from nascomp.search import SearchFailed

    evaluator = AlwaysFailing(space.accuracy, space.params, space.reference, "accuracy")
    with pytest.raises(SearchFailed, match=r"^every one of the 6 students of the search failed; the first error: training loss"):
        run_search(space, evaluator, config(["search.T=1", "search.max_failed_steps=5"]), seed=0)
    assert evaluator.calls == 6


class FailingFirst(TableEvaluator):
    """The first ``n`` evaluations fail (out of memory); the rest are looked up."""

    def __init__(self, *args, n: int):
        super().__init__(*args)
        self.n = n

    def evaluate(self, archs, step=0):
        from nascomp.evaluator import Evaluation

        first = self.calls  # the index of archs[0] among all evaluations
        return [Evaluation.failure(1, 0.0, "out of memory") if first + i < self.n else e
                for i, e in enumerate(super().evaluate(archs, step))]


@pytest.mark.parametrize("n, random_steps", [(3, [1]), (5, [1, 2]), (0, [])])
def test_kernels_propose_at_random_until_two_students_succeed(space, n, random_steps):
    evaluator = FailingFirst(space.accuracy, space.params, space.reference, "accuracy", n=n)
    result = run_search(space, evaluator, config(["search.T=3"]), seed=0)
    assert [r.failed for r in result.history[:6]] == [i < n for i in range(6)]
    for step in (1, 2, 3):  # n = 5: no success after step 0, one after step 1: random twice
        kernels = [r.proposer for r in result.history if r.step == step]
        assert kernels == ([None] * 3 if step in random_steps else [0, 1, 2])


@pytest.mark.parametrize("reference_f", [None, 0.0])
def test_kernel_subsets_hold_two_points_even_when_draws_cannot(space, reference_f):
    import numpy as np
    import torch

    from nascomp.search import KernelProposer

    cfg = config(["search.subset_prob=1e-9"])  # a draw essentially never puts 2 points in a subset
    proposer = KernelProposer(space, cfg.kernel, cfg.search, reference_f)
    mask = proposer.subsets(3, 4, np.random.default_rng(0))  # (K, n)
    assert mask.shape == (4, 3) and (mask.sum(1) >= 2).all()
    assert torch.equal(proposer.subsets(3, 4, np.random.default_rng(0)), mask)  # reproducible
    with pytest.raises(ValueError, match="at least 2 data points, got 1"):
        proposer.subsets(1, 4, np.random.default_rng(0))


def test_the_paper_method_is_the_reference_settings_whatever_the_kernel_group_says():
    """search.method=paper reads conf/kernel/paper.yaml and the random maximiser with 1000 samples,
    not kernel.* / search.acquisition.*; its kernels see NAS-Bench-201 accuracy as a fraction."""
    from nascomp.search import KernelProposer, kernel_settings, make_proposer

    cfg = config(["search.method=paper", "kernel.hidden=8", "search.acquisition.maximizer=evolution",
                  "search.acquisition.within_caps=true"])
    kernel, search = kernel_settings(cfg)
    assert (kernel.hidden, kernel.layers, kernel.pool, kernel.sigma2, kernel.standardize, kernel.max_steps) == (64, 4, "mean", 0.01, False, 100)
    assert (search.acquisition.maximizer, search.acquisition.samples, search.acquisition.within_caps) == ("random", 1000, False)
    assert search.K == 3  # the loop's settings are the run's
    space = NB201Space("cifar10")
    accuracy = TableEvaluator(space.accuracy, space.params, space.reference, "accuracy")
    compression = TableEvaluator(space.accuracy, space.params, space.reference, "compression")
    assert (accuracy.reward_scale, compression.reward_scale) == (0.01, 1.0)
    proposer = make_proposer(space, accuracy, cfg, seed=0)
    assert isinstance(proposer, KernelProposer) and proposer.reward_scale == 0.01 and proposer.kcfg.layers == 4
    result = run_search(space, accuracy, config(["search.method=paper", "search.T=1"]), seed=1)
    assert len(result.history) == 6 and len({r.arch.key for r in result.history}) == 6
    assert {r.proposer for r in result.history[3:]} == {0, 1, 2}


class FirstStepFails(TableEvaluator):
    """Every student of step 0 fails; later students succeed."""

    def evaluate(self, archs, step=0):
        from nascomp.evaluator import Evaluation

        return [Evaluation.failure(a.num_params, 0.0, "diverged") for a in archs] if step == 0 else super().evaluate(archs, step)


@pytest.mark.parametrize("mode", ["single", "pareto"])
def test_with_fewer_than_two_successes_the_kernels_step_explores_at_random(space, mode, caplog):
    """One cold start for both modes: step 1 has no successful student to fit a kernel on, so it
    proposes at random (and says so once); from step 2 on the kernels propose."""
    evaluator = FirstStepFails(space.accuracy, space.params, space.reference, "accuracy", space.latency)
    overrides = ["search.max_failed_steps=5"] + (["search.mode=pareto"] if mode == "pareto" else [])
    with caplog.at_level("WARNING", logger="nascomp"):
        result = run_search(space, evaluator, config(overrides), seed=1,
                            problem=space.pareto("latency_ms") if mode == "pareto" else None)
    steps = [[r for r in result.history if r.step == s] for s in range(4)]
    assert all(r.failed for r in steps[0]) and not any(r.failed for s in steps[1:] for r in s)
    assert [r.proposer for r in steps[1]] == [None] * 3  # random: no kernel proposed them
    assert [r.proposer for r in steps[2] + steps[3]] == [0, 1, 2] * 2
    warned = [m for m in caplog.messages if "fewer than the 2 a kernel needs" in m]
    assert warned == ["0 of 3 evaluated students succeeded, fewer than the 2 a kernel needs: 3 random proposals this step instead of the kernels'"]


def test_local_kernels_propose_the_incumbents_unevaluated_neighbours(space):
    """``search.acquisition.local_kernels=1``: in a real search, kernel 0's proposal of every step is an
    unevaluated neighbour of the best architecture evaluated before the step that still has one; the
    other kernels' proposals are not bound to it."""
    evaluator = TableEvaluator(space.accuracy, space.params, space.reference, "accuracy")
    result = run_search(space, evaluator, config(["search.acquisition.local_kernels=1", "search.T=5"]), seed=4)
    assert len(result.history) == 18
    far = 0
    for step in range(1, 6):
        before = [r for r in result.history if r.step < step]
        seen = {r.arch.key for r in before}
        ranked = sorted(before, key=lambda r: -r.f)
        open_ = next(r.arch for r in ranked if any(n.key not in seen for n in space.neighbours(r.arch)))
        local = {n.key for n in space.neighbours(open_)} - seen
        proposed = {r.proposer: r.arch for r in result.history if r.step == step}
        assert sorted(proposed) == [0, 1, 2]
        assert proposed[0].key in local
        far += sum(proposed[k].key not in local for k in (1, 2))
    assert far >= 5  # the two other kernels search the whole space (a neighbour only by chance)


def test_target_accuracy_kernels_model_the_accuracy_ratio(space):
    """``search.target=accuracy`` on NAS-Bench-201 compression: every step's kernels are conditioned on
    A / A(ref) of the evaluated cells (the reference first, at 1), not on f; the search runs its budget."""
    evaluator = TableEvaluator(space.accuracy, space.params, space.reference, "compression")
    seen = []
    result = run_search(space, evaluator, config(["search.target=accuracy"]), seed=5,
                        on_fit=lambda step, state, data: seen.append((step, data["y"])))
    assert len(result.history) == 12 and [s for s, _ in seen] == [1, 2, 3]
    ref = space.accuracy[space.reference.code]
    for step, y in seen:
        before = [r for r in result.history if r.step < step]
        assert y.tolist() == pytest.approx([1.0] + [space.accuracy[r.arch.code] / ref for r in before], rel=1e-12)
    f = [r.f for r in result.history]
    assert f == pytest.approx([evaluator.f(r.arch.code) for r in result.history])  # records keep f


def _split_scores(space, mean, var, transform, g, best_f, cap=math.inf, overrides=("search.target=accuracy",)):
    """The scores ``KernelProposer.acquire`` gives two cells under ``search.target=accuracy`` (or
    ``overrides``; g None: ``search.target=f``): one kernel whose posterior of the target is ``mean``,
    ``var`` and whose targets are ``transform`` of the ratio (or of f)."""
    import numpy as np
    import torch
    from unittest import mock

    import nascomp.search as search

    a, b = space.cell([3, 3, 3, 3, 3, 2]), space.cell([1, 1, 1, 1, 1, 2])
    factor = {a.key: g[0], b.key: g[1]} if g is not None else {}

    class Kernel:  # a conditioned kernel, fixed
        def posterior(self, xc):
            return torch.tensor([mean], dtype=torch.float64), torch.tensor([var], dtype=torch.float64)

        def standardise(self, f):
            return transform(f)

    Kernel.transform = transform
    cfg = config(list(overrides))
    captured = {}
    proposer = search.KernelProposer(space, cfg.kernel, cfg.search, 0.0, split=None if g is None else (lambda x: factor[x.key], 1.0))
    with mock.patch.object(search, "maximize", lambda score, *args, **kw: captured.setdefault("score", score) and []):
        proposer.acquire(Kernel(), torch.tensor([0.0, best_f], dtype=torch.float64), torch.ones(1, 2, dtype=torch.bool),
                         [a], set(), np.random.default_rng(0), cap=cap)
    return captured["score"]([[a, b]])[0]


def test_target_accuracy_ei_is_expected_improvement_of_f():
    """EI on f = g r is g E[max(0, r - f*/g)]: a cell with f ~ 0.9 N(0.30, 0.05²) (mean 0.27) beats one
    with f ~ 0.3 N(0.80, 0.05²) (mean 0.24) over f* = 0.2, though the second's ratio is far above its
    threshold (without the factor g the second won); equal to the closed form on f."""
    import numpy as np
    import scipy.stats
    import torch

    from nascomp.kernel import TargetTransform

    space = NB201Space("cifar10")
    identity = TargetTransform(torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64))
    scores = _split_scores(space, [0.30, 0.80], [0.05 ** 2] * 2, identity, (0.9, 0.3), 0.2)

    def ei(m, s, best):
        u = (m - best) / s
        return s * (u * scipy.stats.norm.cdf(u) + scipy.stats.norm.pdf(u))

    expected = [np.log(ei(g * m, g * 0.05, 0.2)) for g, m in ((0.9, 0.30), (0.3, 0.80))]
    assert scores.tolist() == pytest.approx(expected, abs=1e-6) and int(scores.argmax()) == 0


def test_target_accuracy_ei_through_the_power_warp_against_monte_carlo():
    """With a power warp the ratio is the warp's inverse of the Gaussian target: the score is
    g E[max(0, inverse(t) - f*/g)] (by quadrature), within 1 % of a Monte Carlo estimate."""
    import torch

    from nascomp.kernel import TargetTransform

    space = NB201Space("cifar10")
    y = torch.tensor([[0.2, 0.5, 0.7, 0.8, 0.85, 0.88, 0.9, 0.91]], dtype=torch.float64)
    warp = TargetTransform.fit(y, torch.ones_like(y, dtype=torch.bool), warp="power")
    assert abs(float(warp.lam[0]) - 1.0) > 0.5  # a warp far from the identity
    mean, var, g = [0.3, 1.2], [0.4, 0.2], (0.95, 0.6)
    scores = _split_scores(space, mean, var, warp, g, 0.5, cap=2.0)
    gen = torch.Generator().manual_seed(0)
    for j in range(2):
        t = mean[j] + var[j] ** 0.5 * torch.randn(400_000, generator=gen, dtype=torch.float64)
        mc = (g[j] * warp.inverse(t, 0).clamp_max(2.0) - 0.5).clamp_min(0.0).mean()
        assert float(scores[j].exp()) == pytest.approx(float(mc), rel=0.01)


def test_ei_units_reward_is_expected_improvement_of_f_through_the_warp():
    """``search.acquisition.ei_units=reward`` (``search.target=f``): the score is E[max(0, inverse(t) - f*)],
    f's own units, within 1 % of a Monte Carlo estimate; ``ei_units=target`` (the default) scores the
    warped target's closed-form EI. The two rank these cells in opposite orders: warped, the wide
    posterior (variance 1.0) wins; in f the confident one (variance 0.02) does, since this warp
    (λ ≈ 2.5) stretches the best rewards apart, so the wide posterior's far tail buys less f than
    it buys target."""
    import torch

    from nascomp.acquisition import expected_improvement
    from nascomp.kernel import TargetTransform

    space = NB201Space("cifar10")
    y = torch.tensor([[0.2, 0.5, 0.7, 0.8, 0.85, 0.88, 0.9, 0.91]], dtype=torch.float64)
    warp = TargetTransform.fit(y, torch.ones_like(y, dtype=torch.bool), warp="power")
    mean, var, best = [1.3, 0.5], [0.02, 1.0], 0.91
    reward = _split_scores(space, mean, var, warp, None, best, cap=1.91, overrides=["search.acquisition.ei_units=reward"])
    target = _split_scores(space, mean, var, warp, None, best, cap=1.91, overrides=[])
    gen = torch.Generator().manual_seed(0)
    for j in range(2):
        t = mean[j] + var[j] ** 0.5 * torch.randn(400_000, generator=gen, dtype=torch.float64)
        mc = (warp.inverse(t, 0).clamp_max(1.91) - best).clamp_min(0.0).mean()
        assert float(reward[j].exp()) == pytest.approx(float(mc), rel=0.01)
    level = warp(torch.tensor([best], dtype=torch.float64))
    closed = expected_improvement(torch.tensor([mean], dtype=torch.float64), torch.tensor([var], dtype=torch.float64), level, log=True)
    assert target.tolist() == pytest.approx(closed[0].tolist(), abs=1e-9)
    assert abs(float(warp.lam[0]) - 2.5) < 0.1 and int(target.argmax()) == 1 and int(reward.argmax()) == 0


def test_ei_units_reward_is_finite_past_a_bounded_warp_without_a_given_cap():
    """A warp with λ < 0 is bounded: targets past its bound map back to f = inf. ``acquire`` without a cap
    (kernel.transfer_mode=zero_shot calls it so) bounds f one unit above the best of its data, so EI stays
    finite and ranks the candidates (with cap=inf it was NaN for all: inf - inf)."""
    import numpy as np
    import torch

    from nascomp.kernel import TargetTransform

    space = NB201Space("cifar10")
    warp = TargetTransform(torch.tensor([0.5], dtype=torch.float64), torch.tensor([0.1], dtype=torch.float64), lam=np.array([-1.0]),
                           mean2=torch.tensor([0.0], dtype=torch.float64), std2=torch.tensor([0.3], dtype=torch.float64))
    assert torch.isinf(warp.inverse(torch.tensor([4.0], dtype=torch.float64), 0)).all()  # past the bound
    scores = _split_scores(space, [1.0, 2.5], [1.0, 1.0], warp, None, 0.55, cap=None, overrides=["search.acquisition.ei_units=reward"])
    assert torch.isfinite(scores).all() and int(scores.argmax()) == 1


def test_target_accuracy_needs_a_known_cost(space):
    from nascomp.evaluator import Evaluator
    from nascomp.search import make_proposer

    class Measured(Evaluator):  # an evaluator whose f has no known cost factor (the base's factor: None)
        def evaluate(self, archs, step=0):
            raise AssertionError("not reached")

    with pytest.raises(ValueError, match="search.target=accuracy needs an objective whose cost is known"):
        make_proposer(space, Measured(), config(["search.target=accuracy"]), seed=0)


class FiveCells(NB201Space):
    """The 5 cells of NAS-Bench-201 whose edges 1..5 are 3x3 convs (edge 0 varies): a space that a
    budget of 12 exhausts."""

    REST = [3] * 5

    def sample(self, rng):
        from nascomp.nb201 import OPS

        return self.cell([int(rng.integers(len(OPS)))] + self.REST)

    def mutate(self, arch, rng):
        from nascomp.nb201 import OPS

        return self.cell([(arch.ops[0] + 1 + int(rng.integers(len(OPS) - 1))) % len(OPS)] + self.REST)

    def neighbours(self, arch, rng=None, n=None):
        return [self.cell([o] + self.REST) for o in range(5) if o != arch.ops[0]]

    def all(self):
        return [self.cell([o] + self.REST) for o in range(5)]

    def flat_dims(self):
        from nascomp.nb201 import OPS
        from nascomp.search_space import FlatDim

        return [FlatDim("Op0", "choice", choices=OPS)]

    def to_flat(self, arch):
        return np.asarray(arch.ops[:1], dtype=float)

    def from_flat(self, values):
        from nascomp.nb201 import OPS

        v = values["Op0"]
        return self.cell([OPS.index(v) if isinstance(v, str) else int(v)] + self.REST)


@pytest.mark.parametrize("method", [method_param(m) for m in ("ours", "random", "tpe", "rea", "local", "smac")])
def test_an_exhausted_space_stops_the_search_and_counts_only_steps_that_evaluated(method, caplog):
    """A budget of 12 (K = 2) over a space of 5 cells: the search evaluates all 5 in steps 0, 1, 2 and stops
    with a warning. It counted a 4th, empty step (summary.json's ``steps`` is ``result.steps + 1``: 4 for 3),
    and TPE, REA and SMAC raised IndexError once their proposals fell back to a random cell and none was left."""
    import logging

    space = FiveCells("cifar10")
    evaluator = TableEvaluator(space.accuracy, space.params, space.reference, "accuracy")
    steps = []
    with caplog.at_level(logging.WARNING, logger="nascomp"):
        result = run_search(space, evaluator, config(METHODS[method] + ["search.K=2", "search.T=5"]), seed=0,
                            after_step=lambda step, records: steps.append((step, len(records))))
    keys = [r.arch.key for r in result.history]
    assert len(keys) == len(set(keys)) == 5 and evaluator.calls == 5  # every cell once, nothing twice
    assert [r.step for r in result.history] == [0, 0, 1, 1, 2] and steps == [(0, 2), (1, 2), (2, 1)]
    assert result.steps == 2
    assert [r.getMessage() for r in caplog.records if "stops" in r.getMessage()] == [
        "the proposer found no unevaluated architecture to propose (the space is exhausted, or its random draws found "
        "none left): the search stops after step 2 with 5 of its budget of 12 evaluations"]


class OneDraw(FiveCells):
    """FiveCells whose random draws always give the same cell: only its list of members reaches the rest."""

    def sample(self, rng):
        return self.cell([0] + self.REST)


def test_random_draws_that_miss_are_made_up_from_the_members_a_space_lists():
    """Random candidates in a space that lists its members (``all()``): when the draws keep hitting evaluated
    cells, the cells left are drawn from the list, so a search stops only once every cell is evaluated
    (it stopped after one cell, saying the space was exhausted)."""
    from nascomp.acquisition import random_candidates

    space = OneDraw("cifar10")
    got = random_candidates(space, 3, {space.cell([0] + space.REST).key}, np.random.default_rng(0))
    assert len({a.key for a in got}) == 3 and all(a.ops[0] != 0 and list(a.ops[1:]) == space.REST for a in got)
    assert random_candidates(space, 3, {a.key for a in space.all()}, np.random.default_rng(0)) == []
    evaluator = TableEvaluator(space.accuracy, space.params, space.reference, "accuracy")
    result = run_search(space, evaluator, config(METHODS["random"] + ["search.K=1", "search.T=9"]), seed=0)
    assert sorted(r.arch.key for r in result.history) == sorted(a.key for a in space.all()) and result.steps == 4
