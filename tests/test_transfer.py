"""Kernel transfer (paper Table 3), per-step kernels and random-number states, and search.budget."""
import pytest
import torch

from nascomp.config import compose
from nascomp.nb201 import NB201Space, TableEvaluator
from nascomp.search import run_search
from nascomp.transfer import SourceKernels


def _setup(*overrides):
    cfg = compose(["space.max_offset=8", "search.K=2", "search.T=2", "search.acquisition.samples=30", *overrides])
    space = NB201Space("cifar10")
    return cfg, space, TableEvaluator(space.accuracy, space.params, space.reference, "compression")


def test_transferred_kernels_are_conditioned_not_trained():
    cfg, space, ev = _setup()
    learned, fit_steps, states = [], [], []
    run_search(space, ev, cfg, seed=0, on_fit=lambda step, s, data: (fit_steps.append(step), learned.append(s)),
               before_step=lambda step, s: states.append((step, s)))
    assert len(learned) == 2 and [s for s, _ in states] == [1, 2] == fit_steps  # one kernel set and one RNG state per step
    assert not torch.equal(learned[0]["embed.lstm.w_ih.0"], learned[1]["embed.lstm.w_ih.0"])  # trained anew each step
    used = []
    result = run_search(space, ev, cfg, seed=1, transfer=SourceKernels(learned[-1]), on_fit=lambda step, s, data: used.append(s))
    assert len(result.history) == 6
    for state in used:  # conditioned on this search's data, weights untouched
        assert all(torch.equal(state[k], learned[-1][k]) for k in state)


def test_transfer_with_target_accuracy_conditions_the_source_kernels_on_accuracy_ratios():
    """``search.target=accuracy`` with ``kernel.transfer_mode=search``: a source search stores its kernels with
    targets A / A(ref) (marked ``target: accuracy``); a target search on CIFAR-100 conditions those kernels,
    untrained, on its own accuracy ratios (the reference first, at 1)."""
    cfg, space, ev = _setup("search.target=accuracy")
    learned, data = [], []
    run_search(space, ev, cfg, seed=0, on_fit=lambda step, s, d: (learned.append(s), data.append(d)))
    assert [d["target"] for d in data] == ["accuracy", "accuracy"]
    target = NB201Space("cifar100")
    target_ev = TableEvaluator(target.accuracy, target.params, target.reference, "compression")
    used = []
    result = run_search(target, target_ev, cfg, seed=1, transfer=SourceKernels(learned[-1], data[-1]),
                        on_fit=lambda step, s, d: used.append((step, s, d)))
    assert len(result.history) == 6 and [step for step, _, _ in used] == [1, 2]
    ref = target.accuracy[target.reference.code]
    for step, state, d in used:
        assert all(torch.equal(state[k], learned[-1][k]) for k in state)  # not trained here
        before = [r for r in result.history if r.step < step]
        assert d["target"] == "accuracy"
        assert d["y"].tolist() == pytest.approx([1.0] + [target.accuracy[r.arch.code] / ref for r in before], rel=1e-12)


def test_budget_overrides_T():
    cfg, space, ev = _setup("search.K=4", "search.T=100", "search.budget=10")
    fits = []
    result = run_search(space, ev, cfg, seed=0, on_fit=lambda step, s, data: fits.append((step, s)))
    assert len(result.history) == 10 and [r.step for r in result.history][-2:] == [2, 2]
    # the short last step's 2 kernels are not handed on (no search of K = 4 could load them): step 1's 4 are the last
    assert [(step, s["log_sigma_scale"].shape[0]) for step, s in fits] == [(1, 4)]


def test_transfer_refuses_a_budget_that_is_no_multiple_of_k():
    """From Python as from the config (schema.validate): transferred kernels propose K a step."""
    cfg, space, ev = _setup()
    learned = []
    run_search(space, ev, cfg, seed=0, on_fit=lambda step, s, data: learned.append(s))
    with pytest.raises(ValueError, match=r"the budget \(5\) must be a multiple of K"):
        run_search(space, ev, cfg, seed=1, budget=5, transfer=SourceKernels(learned[-1]))


def test_transfer_from_a_store_whose_last_step_was_short(tmp_path):
    """A store written before short last steps stopped storing their kernels: the source is the run's
    last step with K kernels, not the short one (whose k < K kernels would not load)."""
    from nascomp.pipeline import transferred_kernels
    from nascomp.store import RunStore

    cfg, space, ev = _setup("search.K=2", "search.T=3")
    fits = []
    run_search(space, ev, cfg, seed=0, on_fit=lambda step, s, data: fits.append((step, s, data)))
    store = RunStore(tmp_path / "store.sqlite")
    store.open_run("source", {"a": 1})
    for step, state, data in fits:
        store.save_kernels("source", step, state, data)
    short = {k: (v[:1] if k == "log_sigma_scale" else v) for k, v in fits[-1][1].items()}
    store.save_kernels("source", fits[-1][0] + 1, short, fits[-1][2])
    store.close()
    target = compose(["space.max_offset=8", "search.K=2", f"kernel.transfer_from={tmp_path}"])
    kernels = transferred_kernels(target, space)
    assert all(torch.equal(kernels.state[k], fits[-1][1][k]) for k in fits[-1][1])
    assert f"(step {fits[-1][0]})" in kernels.where


# ---- kernel.transfer_mode=zero_shot (paper 4.3): the source's kernels propose K, nothing is trained in the target
import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from nascomp.acquisition import random_candidates
from nascomp.kernel import EmbeddingKernelModule, Featurizer
from nascomp.schema import ConfigError, validate

# the paper's kernel (zero mean, no standardisation, σ² = 0.01 fixed), small enough for seconds; random maximiser
ZERO_SHOT = ["kernel=paper", "kernel.hidden=8", "kernel.layers=1", "kernel.max_steps=5", "space.max_offset=8",
             "search.K=4", "search.T=3", "search.acquisition.maximizer=random", "search.acquisition.samples=200"]


@pytest.fixture(scope="module")
def source():
    """A real short source search on NAS-Bench-201 CIFAR-10 (compression objective): its last kernels and data."""
    cfg = compose(ZERO_SHOT)
    space = NB201Space("cifar10")
    fits = []
    run_search(space, TableEvaluator(space.accuracy, space.params, space.reference, "compression"), cfg, seed=0,
               on_fit=lambda step, state, data: fits.append((step, state, data)))
    assert [s for s, _, _ in fits] == [1, 2, 3]
    _, state, data = fits[-1]
    return SourceKernels(state, data)


def _zero_shot(source, dataset, seed, *overrides):
    cfg = compose(ZERO_SHOT + ["kernel.transfer_mode=zero_shot", "kernel.transfer_from=unused", *overrides])
    space = NB201Space(dataset)
    ev = TableEvaluator(space.accuracy, space.params, space.reference, "compression")
    fits, steps = [], []
    result = run_search(space, ev, cfg, seed=seed, transfer=source, on_fit=lambda *a: fits.append(a),
                        after_step=lambda step, records: steps.append((step, len(records))))
    return space, ev, result, fits, steps


def test_source_data_is_what_the_last_step_conditioned_on(source):
    x, y, mask = source.data["x"], source.data["y"], source.data["mask"]
    # steps 0..2 evaluated 3 K = 12 architectures before the last step, plus the reference (f = 0) as point 0
    assert x.shape == (13, 9, Featurizer(NB201Space("cifar10"), compose(ZERO_SHOT).kernel).input_size)
    assert y.shape == (13,) and y[0] == 0.0 and mask.shape == (4, 13) and mask[:, 0].all()


def test_zero_shot_evaluates_k_proposals_and_trains_nothing(source):
    space, ev, result, fits, steps = _zero_shot(source, "cifar100", seed=3)
    assert len(result.history) == 4 and steps == [(0, 4)]  # exactly K evaluations, one step
    assert [r.proposer for r in result.history] == [0, 1, 2, 3]  # each kernel proposed one
    assert len({r.arch.key for r in result.history}) == 4 and space.reference.key not in {r.arch.key for r in result.history}
    assert fits == [] and result.seconds["train"] == 0.0  # no kernel was fitted in the target
    assert result.best_after(4) == max(ev.f(r.arch.code) for r in result.history)
    # deterministic given the seed; another seed samples other candidates
    again = _zero_shot(source, "cifar100", seed=3)[2]
    assert [r.arch.key for r in again.history] == [r.arch.key for r in result.history]
    other = _zero_shot(source, "cifar100", seed=4)[2]
    assert [r.arch.key for r in other.history] != [r.arch.key for r in result.history]


def test_zero_shot_proposals_maximise_the_source_gps_expected_improvement(source):
    """The proposals equal the EI maximisers computed by hand (numpy GP algebra, scipy normal) over the
    same random candidates: kernel k conditioned on its source subset, f* its best source reward."""
    seed = 5
    space, ev, result, _, _ = _zero_shot(source, "imagenet", seed)
    kcfg = compose(ZERO_SHOT).kernel
    featurize = Featurizer(space, kcfg)
    module = EmbeddingKernelModule(kcfg, 4, featurize.input_size)
    module.load_state_dict(source.state)
    rng = np.random.default_rng([seed, 1])  # the search's proposal stream: the random maximiser's pools come first
    exclude = {space.reference.key}
    pools = [random_candidates(space, 200, exclude, rng) for _ in range(4)]
    x, y, mask = source.data["x"], source.data["y"].numpy(), source.data["mask"].numpy()
    with torch.no_grad():
        z = module.embed(x).double().numpy()  # (K, N, E)
    s2, beta = float(kcfg.sigma2), float(kcfg.noise)
    taken, expected = set(exclude), []
    for k in range(4):
        zs, ys = z[k][mask[k]], y[mask[k]]
        with torch.no_grad():
            zc = module.embed(featurize(pools[k])).double().numpy()[k]  # (C, E)
        rbf = lambda a, b: np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * s2))
        gram = rbf(zs, zs) + beta * np.eye(len(zs))
        kc = rbf(zc, zs)  # (C, n)
        mean = kc @ np.linalg.solve(gram, ys)
        sd = np.sqrt(1 + beta - np.einsum("cn,cn->c", kc, np.linalg.solve(gram, kc.T).T))
        u = (mean - ys.max()) / sd
        ei = sd * (u * scipy.stats.norm.cdf(u) + scipy.stats.norm.pdf(u))
        choice = next(pools[k][i] for i in np.argsort(-ei, kind="stable") if pools[k][i].key not in taken)
        taken.add(choice.key)
        expected.append(choice.key)
    assert [r.arch.key for r in result.history] == expected


def test_zero_shot_with_evolution_starts_from_the_reference(source):
    space, ev, result, fits, _ = _zero_shot(source, "cifar10", 0, "search.acquisition.maximizer=evolution",
                                            "search.acquisition.random_share=0.0", "search.acquisition.generations=1")
    assert len(result.history) == 4 and fits == []
    # one generation of mutants of the reference only: each proposal is one edge away from it
    assert all(sum(a != b for a, b in zip(r.arch.ops, space.reference.ops)) == 1 for r in result.history)


def test_zero_shot_from_accuracy_ratio_kernels_is_refused():
    """Zero-shot proposes by EI on the source's stored targets read as f: kernels stored by a
    ``search.target=accuracy`` source (their targets A / A(ref)) are refused before anything is evaluated."""
    cfg, space, ev = _setup("search.target=accuracy")
    fits = []
    run_search(space, ev, cfg, seed=0, on_fit=lambda step, s, d: fits.append((s, d)))
    state, data = fits[-1]
    with pytest.raises(ValueError, match=re.escape("kernels model accuracy, not f (a source run with search.target=accuracy "
                                                   "or search.mode=pareto)")):
        _zero_shot(SourceKernels(state, data), "cifar100", seed=0)


def test_zero_shot_without_source_data_is_refused(source):
    with pytest.raises(ValueError, match="without the data their GPs were conditioned on"):
        _zero_shot(SourceKernels(source.state), "cifar100", seed=0)


@pytest.mark.parametrize("overrides, message", [
    (["kernel.transfer_mode=zero_shot"], "kernel.transfer_mode=zero_shot needs kernel.transfer_from"),
    (["kernel.transfer_mode=once"], "kernel.transfer_mode: 'once' is not one of search, zero_shot"),
    (["kernel.transfer_mode=zero_shot", "kernel.transfer_from=src", "search.target=accuracy"],
     "search.target=accuracy needs this run's data: use kernel.transfer_mode=search"),
    (["kernel.transfer_from=src", "search.method=random"],
     "kernel.transfer_from is set but search.method=random trains no kernels; kernel transfer needs search.method=ours or paper"),
])
def test_bad_transfer_configs_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose(overrides))


def test_zero_shot_budget_is_k():
    """zero_shot evaluates K: a budget that is no multiple of K is no error, final.top_k is checked against K."""
    validate(compose(["kernel.transfer_mode=zero_shot", "kernel.transfer_from=src", "search.K=4", "search.budget=10"]))
    with pytest.raises(ConfigError, match=re.escape("final.top_k (5) exceeds the search budget (4)")):
        validate(compose(["kernel.transfer_mode=zero_shot", "kernel.transfer_from=src", "search.K=4", "final.top_k=5"]))


def test_zero_shot_without_source_exits_2_through_the_cli(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nascomp.run", "kernel.transfer_mode=zero_shot"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "kernel.transfer_mode=zero_shot needs kernel.transfer_from" in proc.stderr + proc.stdout


@pytest.mark.slow
def test_zero_shot_main_job_on_real_students(tmp_path, monkeypatch):
    """The main job: a real short source search (proxy-trained students), then kernel.transfer_mode=zero_shot
    (another seed: the proxy training differs): K evaluations, no kernels trained, the summary says so."""
    from nascomp.pipeline import run
    from nascomp.store import RunStore

    monkeypatch.chdir(tmp_path)
    tiny = ["experiment=quickstart", "search.K=2", "search.T=1", "search.acquisition.samples=20", "proxy.epochs=1",
            "teacher_training.epochs=2", "teacher.width=0.25", "final.enabled=false", "logger=none",
            "space.ops=[remove,shrink,skip]"]  # students of other lengths than the teacher's reach the kernels
    run(validate(compose(tiny)), tmp_path / "source")
    target = run(validate(compose(tiny + ["seed=1", "kernel.transfer_mode=zero_shot", f"kernel.transfer_from={tmp_path / 'source'}"])),
                 tmp_path / "target")
    summary = json.loads((tmp_path / "target" / "summary.json").read_text())
    assert summary["search"]["transfer_mode"] == "zero_shot" and summary["evaluations"] == 2 == target["evaluations"]
    rows = list(csv.DictReader(open(tmp_path / "target" / "history.csv")))
    assert len(rows) == 2 and summary["search"]["best_f"] == max(float(r["f"]) for r in rows)
    store = RunStore(tmp_path / "target" / "store.sqlite")
    assert store.latest_kernels() is None  # the target trained (and stored) no kernels
    store.close()


# ---- benchmarks/search_efficiency.py --mode transfer: Table 3 on NAS-Bench-201 through the benchmark's CLI
BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "search_efficiency.py"
TINY_OURS = "ours[search.K=2,kernel.max_steps=5,kernel.hidden=8,search.acquisition.samples=30]"


@pytest.mark.slow
def test_transfer_benchmark_cli_zero_shot_search_and_random_rows(tmp_path):
    """A source search on CIFAR-10, its last kernels on CIFAR-100 and ImageNet16: zero-shot (K rows, no kernel
    trained), the transfer search at every budget, random search once per seed (at K too); regret against
    each target's optimum; a rerun finds every row done."""
    out = tmp_path / "t.csv"
    cmd = [sys.executable, str(BENCH), "--space", "nb201", "--mode", "transfer", "--source", "cifar10",
           "--dataset", "cifar10,cifar100,imagenet", "--objective", "compression", "--methods", TINY_OURS,
           "--seeds", "1", "--seed-offset", "1000", "--budgets", "4,6", "--csv", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader(out.open()))
    zero, search = f"{TINY_OURS} zero_shot from cifar10", f"{TINY_OURS} search from cifar10"
    for dataset in ("cifar100", "imagenet"):  # the source is no target
        mine = [(r["method"], int(r["budget"])) for r in rows if r["dataset"] == dataset]
        assert mine == [(zero, 2), (search, 4), (search, 6), ("random", 2), ("random", 4), ("random", 6)]
    assert {r["dataset"] for r in rows} == {"cifar100", "imagenet"} and {r["seed_set"] for r in rows} == {"held-out"}
    for r in rows:
        target = NB201Space(r["dataset"])
        optimum = TableEvaluator(target.accuracy, target.params, target.reference, "compression").optimum
        assert abs(float(r["regret"]) - (optimum - float(r["best"]))) < 1e-9 and 0 < float(r["best"]) <= optimum
    assert all(float(r["train_s"]) == 0.0 for r in rows if r["method"] == zero)  # nothing trained in the target
    assert "kernels from cifar10" in proc.stdout and f"| {zero} | 1 |" in proc.stdout
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and len(list(csv.DictReader(out.open()))) == len(rows)


@pytest.mark.parametrize("flags, message", [
    (["--methods", "random"], "--mode transfer: method 'random' has no learned kernels to transfer; choose from ours, paper"),
    (["--methods", "ours", "--dataset", "cifar10"], "--mode transfer: --dataset names no target other than the source 'cifar10'"),
])
def test_transfer_benchmark_refuses_bad_flags(tmp_path, flags, message):
    proc = subprocess.run([sys.executable, str(BENCH), "--mode", "transfer", "--csv", str(tmp_path / "t.csv"), *flags],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr and not (tmp_path / "t.csv").exists()


def test_zero_shot_from_an_accuracy_source_store_exits_2_through_the_cli(tmp_path):
    """A real store file whose latest kernels model accuracy (``target: accuracy`` in their data):
    ``kernel.transfer_mode=zero_shot`` from it exits 2 at startup, naming why, before any student is
    evaluated; the source's stored kernels and data are left as they were."""
    from nascomp.store import RunStore

    from test_run import TINY, cli

    path = tmp_path / "source.sqlite"
    data = {"x": torch.zeros(3, 2, 4), "y": torch.tensor([0.0, 1.0, 1.1], dtype=torch.float64),
            "mask": torch.ones(2, 3, dtype=torch.bool), "target": "accuracy"}
    store = RunStore(path)
    store.open_run("source", {"search": {"target": "accuracy"}})
    store.save_kernels("source", 1, {"w": torch.ones(2)}, data)
    store.close()
    proc = cli(TINY + ["kernel.transfer_mode=zero_shot", f"kernel.transfer_from={path}"], tmp_path, check=False, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "kernels model accuracy, not f (a source run with search.target=accuracy or search.mode=pareto)" in proc.stderr
    assert not list(tmp_path.glob("outputs/*/*/history.csv"))  # nothing evaluated
    store = RunStore(path)
    run, step, state = store.latest_kernels()
    kept = store.kernel_data(run, step)
    store.close()
    assert (run, step) == ("source", 1) and torch.equal(state["w"], torch.ones(2))
    assert kept["target"] == "accuracy" and all(torch.equal(kept[k], data[k]) for k in ("x", "y", "mask"))
