"""benchmarks/search_efficiency.py --space compression through its CLI: real proxy-trained students,
one shared store (an architecture is trained once across methods), the CSV and the table."""
import argparse
import csv
import importlib
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "search_efficiency.py"
TINY = ["--seeds", "1", "--budgets", "2,4", "--K", "2", "--samples", "20", "--override", "kernel.max_steps=5",
        "--override", "kernel.hidden=8"]  # one seed of a tiny search: 2 steps of K = 2, small kernels


def compression_cli(tmp_path: Path, out: Path, *flags: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``search_efficiency.py --space compression --dataset digits`` with ``flags`` in ``tmp_path``, its
    own store there, writing ``out``; fails the test with the script's stderr when it does not exit 0."""
    cmd = [sys.executable, str(SCRIPT), "--space", "compression", "--dataset", "digits", *flags, "--csv", str(out),
           "--store", str(tmp_path / "store.sqlite")]
    res = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.mark.slow
def test_compression_benchmark_cli(tmp_path):
    out = tmp_path / "c.csv"
    flags = ["--teacher", "small_resnet", "--methods", "ours,random,random[space.ops=[remove]],random[inherit=l1]", *TINY]
    res = compression_cli(tmp_path, out, *flags)
    rows = list(csv.DictReader(out.open()))
    assert [(r["method"], int(r["budget"])) for r in rows] == [
        (m, b) for m in ("ours", "random", "random[space.ops=[remove]]", "random[inherit=l1]") for b in (2, 4)]
    # a method whose overrides change the space (Tables 5 and 7) searches that space over the same teacher
    assert "space.ops=['remove']: a space of its own over the same teacher, operators remove" in res.stdout
    # one whose overrides change what scores a student (here the weight inheritance) gets an evaluator of its
    # own: the same random students as random's, scored again in another store context
    assert "inherit=l1: an evaluator of its own (another f)" in res.stdout
    # and only that one: random's run name differs from ours' (<teacher>-<dataset>-<search.method>), which
    # scores nothing, so random shares the bench's evaluator
    assert res.stdout.count("an evaluator of its own") == 1
    db = sqlite3.connect(tmp_path / "store.sqlite")
    contexts = {}
    for context, key, f in db.execute("SELECT context, key, f FROM evaluations"):
        contexts.setdefault(context, {})[key] = f
    assert len(contexts) == 2
    first, l1 = sorted(contexts.values(), key=len, reverse=True)  # every other method's students; random[inherit=l1]'s
    assert len(l1) == 4 and set(l1) <= set(first) and any(l1[k] != first[k] for k in l1)
    l1_best = [float(r["best"]) for r in rows if r["method"] == "random[inherit=l1]"]
    assert l1_best[1] == pytest.approx(max(l1.values()))
    rows = rows[:4]
    teacher, = (tmp_path / "teachers").glob("small_resnet-digits-w0.5-*.pt")  # named by its cache key's hash
    space = f"compression:small_resnet-w0.5-p1-K2-t{teacher.stem.rsplit('-', 1)[1][:8]}-"  # then the weights' digest
    assert all(r["space"].startswith(space) and len(r["space"]) == len(space) + 8 and r["regret"] == "" for r in rows)
    for method in ("ours", "random"):
        best = [float(r["best"]) for r in rows if r["method"] == method]
        assert 0.0 <= best[0] <= best[1] <= 1.0
    # both methods start from the same K random students: the second method gets them from the store
    assert "(2 from the store)" in res.stdout
    assert "| method | seeds | best @2 | best @4 | gap @2 | gap @4 |" in res.stdout
    assert len(list((tmp_path / "teachers").glob("small_resnet-digits-w0.5-*.pt"))) == 1
    # rerunning the command finds every row done and only prints the table
    again = compression_cli(tmp_path, out, *flags, timeout=120)
    assert len(list(csv.DictReader(out.open()))) == 8 and "| ours | 1 |" in again.stdout


@pytest.mark.slow
def test_compression_pareto_benchmark_cli(tmp_path):
    """``--space compression --mode pareto``: the Pareto columns, no regret (no true front), the first K
    students shared by every method (the same hypervolume at budget K), the hypervolume non-decreasing."""
    out = tmp_path / "p.csv"
    res = compression_cli(tmp_path, out, "--mode", "pareto", "--cost", "flops", "--methods", "ours,random,nsga2", *TINY)
    with out.open() as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["method", "space", "dataset", "cost", "seed", "seed_set", "budget", "hypervolume", "hv_regret"]
        rows = list(reader)
    assert [(r["method"], int(r["budget"])) for r in rows] == [(m, b) for m in ("ours", "random", "nsga2") for b in (2, 4)]
    assert all(re.fullmatch(r"compression:small_resnet-w0\.5-p1-K2-t[0-9a-f]{8}-[0-9a-f]{8}", r["space"]) and r["cost"] == "flops"
               and r["hv_regret"] == "" for r in rows)
    hv = {(r["method"], int(r["budget"])): float(r["hypervolume"]) for r in rows}
    assert len({hv[m, 2] for m in ("ours", "random", "nsga2")}) == 1 and hv["ours", 2] > 0
    assert all(hv[m, 2] <= hv[m, 4] for m in ("ours", "random", "nsga2"))
    assert "| method | seeds | HV @2 | HV @4 | HV regret @2 | HV regret @4 |" in res.stdout and "| ours | 1 |" in res.stdout


def test_a_real_student_row_names_its_teacher(tmp_path, monkeypatch):
    """The ``space`` of a real-student row ends with the teacher's cache key and its trained weights'
    digest: another recipe (here its seed) is another key, and other weights under the same key (another
    machine's training of the same seed) are another space, so their rows neither mix with these in a
    table nor count as done. Settings that are not the teacher's leave the label alone."""
    import torch

    from nascomp.pipeline import teacher_checkpoint, teacher_key
    from nascomp.store import digest, tensor_digest

    se = _bench_module()
    monkeypatch.chdir(tmp_path)  # teacher_dir is relative: the teacher is trained and cached here
    args = argparse.Namespace(teacher="small_resnet", width=0.5, dataset="digits", proxy_epochs=1, K=8, samples=200,
                              store="s.sqlite", override=[])
    label = se.compression_space_label(args)  # trains the teacher and caches it
    checkpoint = teacher_checkpoint(se.compression_config(args, []))
    saved = torch.load(checkpoint, weights_only=True)
    key = checkpoint.stem[-12:-4]
    assert label == f"compression:small_resnet-w0.5-p1-K8-t{key}-{tensor_digest(saved['state_dict'])[:8]}"
    assert se.compression_space_label(argparse.Namespace(**{**vars(args), "override": ["kernel.hidden=8"]})) == label
    seed1 = se.compression_config(argparse.Namespace(**{**vars(args), "override": ["teacher_training.seed=1"]}), [])
    assert digest(teacher_key(seed1))[:8] != key  # another recipe: another cache key, another -t part
    # the same cache key holding other weights (as another machine trains them) is another space
    first = sorted(saved["state_dict"])[0]
    saved["state_dict"][first] = saved["state_dict"][first] + 1e-6
    torch.save(saved, checkpoint)
    other = se.compression_space_label(args)
    assert other != label and other.rsplit("-", 1)[0] == label.rsplit("-", 1)[0]
    assert other == f"compression:small_resnet-w0.5-p1-K8-t{key}-{tensor_digest(saved['state_dict'])[:8]}"
    # and its runs are other runs in a shared store: equal configs, other store context, other run ids
    saved["state_dict"][first] = saved["state_dict"][first] - 1e-6
    torch.save(saved, checkpoint)
    args.threads = 1
    ids = [se.CompressionBench(args).run_config([], 0, 16)]
    saved["state_dict"][first] = saved["state_dict"][first] + 1e-6
    torch.save(saved, checkpoint)
    ids.append(se.CompressionBench(args).run_config([], 0, 16))
    assert ids[0][1] == ids[1][1] and ids[0][2] != ids[1][2]


def test_result_csv_refuses_another_header(tmp_path):
    search_efficiency = _bench_module()
    bad = tmp_path / "old.csv"
    bad.write_text("method,space,dataset,objective,seed,budget,best,regret,train_s,acq_s\nours,nb201,cifar10,accuracy,0,50,90.0,1.0,0,0\n")
    with pytest.raises(SystemExit, match=r"columns \[.*\], expected \['method', 'space', 'dataset', 'objective', 'seed', "
                                         r"'seed_set', 'budget', .*write to a new --csv"):
        search_efficiency.ResultCSV(bad, search_efficiency.COLUMNS, key=("method", "seed"))
    good = tmp_path / "new.csv"
    good.write_text(",".join(search_efficiency.COLUMNS) + "\nours,nb201,cifar10,accuracy,0,tuning,50,90.0,1.0,0,0\n")
    assert [r["seed_set"] for r in search_efficiency.ResultCSV(good, search_efficiency.COLUMNS).rows()] == ["tuning"]


def test_result_csv_keys_jobs_by_field_and_budget(tmp_path):
    """ResultCSV: a job is missing while any budget lacks a row; write appends only rows not yet held
    (also across instances, i.e. a rerun); a job named by other fields than the key is an error; without
    a key every row is appended."""
    se = _bench_module()
    path = tmp_path / "r.csv"
    row = lambda m, s, b: dict(method=m, space="nb201", dataset="cifar10", objective="accuracy", seed=s,
                               seed_set=se.seed_set(s), budget=b, best=1.0, regret=0.0, train_s=0, acq_s=0)
    results = se.ResultCSV(path, se.COLUMNS, key=("method", "dataset", "objective", "seed"))
    job = dict(method="ours", dataset="cifar10", objective="accuracy", seed=3)
    assert results.missing([8], **job) and results.rows() == []
    assert len(results.write([row("ours", 3, 8), row("ours", 3, 16)])) == 2
    assert not results.missing([8, 16], **job) and results.missing([8, 16, 24], **job)
    again = se.ResultCSV(path, se.COLUMNS, key=("method", "dataset", "objective", "seed"))
    assert again.write([row("ours", 3, 8), row("ours", 3, 16), row("ours", 3, 24)]) == [row("ours", 3, 24)]
    assert [(r["seed"], r["budget"]) for r in again.rows()] == [("3", "8"), ("3", "16"), ("3", "24")]
    assert not again.missing([8, 16, 24], **job) and again.missing([8], **{**job, "seed": 4})
    with pytest.raises(TypeError, match="named by method, dataset, objective, seed; got method, seed"):
        again.missing([8], method="ours", seed=3)
    plain = se.ResultCSV(path, se.COLUMNS)
    plain.write([row("ours", 3, 8)])
    assert len(plain.rows()) == 4 and path.read_text().count("method,space") == 1


def _bench_module(name: str = "search_efficiency"):
    """A script of ``benchmarks/`` as a module (``pruning`` imports ``search_efficiency`` from there)."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(SCRIPT.parent))


def test_constraint_table_pairs_the_seeds():
    """The best feasible accuracy per method, and ours against random paired by seed (no feasible
    student: accuracy 0)."""
    se = _bench_module()
    rows = [dict(method=m, seed=str(s), budget="8", accuracy=str(a), feasible=str(f))
            for m, s, a, f in [("ours", 1, 0.9, True), ("ours", 2, 0.5, True), ("ours", 3, 0.7, True),
                               ("random", 1, 0.8, True), ("random", 2, 0.6, True), ("random", 3, 0.95, False)]]
    out = se.constraint_table(rows, [8], ["ours", "random"])
    assert "| ours | 3 | 0.7000 ± 0.2000 | 3/3 |" in out
    assert "| random | 3 | 0.7000 ± 0.1414 | 2/3 |" in out  # the infeasible 0.95 is no feasible accuracy
    # differences +0.1, -0.1, +0.7: mean 0.2333, sd 0.4163, s.e. 0.2404
    assert "- ours vs random @8: ours >= random on 2/3 seeds, mean difference +0.2333 ± 0.2404 (s.e.)" in out


CONSTRAINT_SPACE = "compression:small_resnet-w0.5-p1-K4-tcf78a769-9d1e1d14"  # the seeded digits teacher's rows
OURS = "ours[kernel.sigma2_grid=null]"  # σ² fixed: ours when the constraint rows ran (the σ² grid became the default later)
WITHIN = "ours[kernel.sigma2_grid=null,search.acquisition.within_caps=true]"
BEFORE = "ours[kernel.sigma2_grid=null,search.acquisition.within_caps=false]"
MEMORY_CAP = "memory_mb<=0.04537391662597656"  # memory=0.25x: a quarter of the teacher's computed peak memory


@pytest.mark.parametrize("name, constraint, seed_set, methods, full", [
    ("compression_constraint.csv", "flops<=561824", "tuning", [WITHIN, BEFORE, "random"], False),
    ("compression_constraint.csv", "flops<=561824", "held-out", [OURS, BEFORE, "random"], False),
    ("compression_constraint_full.csv", "flops<=561824", "held-out", [OURS, BEFORE, "random"], True),
    ("compression_constraint.csv", "latency_ms<=0.2", "tuning", [WITHIN, BEFORE, "random"], False),
    ("compression_constraint.csv", "latency_ms<=0.2", "held-out", [OURS, BEFORE, "random"], False),
    ("compression_constraint_full.csv", "latency_ms<=0.2", "held-out", [OURS, BEFORE, "random"], True),
    ("compression_constraint_full.csv", "latency_ms<=0.2", "tuning", [WITHIN, BEFORE, "random"], True),
    ("compression_constraint.csv", MEMORY_CAP, "held-out", [OURS, BEFORE, "random"], False),
    ("compression_constraint_full.csv", MEMORY_CAP, "held-out", [OURS, BEFORE, "random"], True),
])
def test_readme_constraint_tables_are_the_benchmarks_output(name, constraint, seed_set, methods, full):
    """The README's constraint-form tables (the within-caps rules' tuning seeds, the held-out seeds, fully
    trained; a FLOPs, a latency and a memory cap) are ``constraint_table`` of the committed rows, 20 seeds each;
    the rules' numbers hold: paired mean >= 0 at 24 and 32, at least random's on as many seeds at 32."""
    se = _bench_module()
    root = SCRIPT.parents[1]
    rows = [r for r in csv.DictReader((root / "benchmarks" / "results" / name).open())
            if r["space"] == CONSTRAINT_SPACE and r["seed_set"] == seed_set and r["constraint"] == constraint]
    assert len(rows) == 3 * 20 * 4
    printed = se.constraint_table(rows, [8, 16, 24, 32], methods, full=full)
    assert printed in (root / "README.md").read_text()
    if seed_set == "tuning":
        for b in (24, 32):
            assert re.search(rf"- {re.escape(WITHIN)} vs {re.escape(BEFORE)} @{b}: .* mean difference \+", printed)
        if full:  # the second latency rule reads the fully trained paired mean at 32 only (>= 0, above)
            return
        wins = [int(re.search(rf"- {re.escape(m)} vs random @32: .* on (\d+)/20", se.constraint_table(rows, [32], [m, "random"]))[1])
                for m in (WITHIN, BEFORE)]
        assert wins[0] >= wins[1] and wins == ([18, 16] if constraint.startswith("flops") else [15, 9])


@pytest.mark.parametrize("constraint, top_k", [("flops<=561824", 4), (MEMORY_CAP, 4), ("latency_ms<=0.2", 4), ("latency_ms<=0.2", 1)])
def test_readme_finalist_tables_are_the_benchmarks_output(constraint, top_k):
    """The README's constraint tables with the main job's ``final.top_k=4`` (seeds 1000-1009, ours and random;
    under the latency cap also one finalist on the same searches) are ``constraint_table`` of the committed
    rows; under the FLOPs and memory caps the searches are those of the one-finalist rows, and under the
    latency cap those of the other ``top_k`` (every proxy column equal, seed by seed); a row's finalists
    either all meet the caps or, where no student does, none does (``select_finalists``)."""
    se = _bench_module()
    results = SCRIPT.parents[1] / "benchmarks" / "results"
    every = [r for r in csv.DictReader((results / "compression_constraint_finalists.csv").open())
             if r["space"] == CONSTRAINT_SPACE and r["constraint"] == constraint]
    methods = [f"ours[kernel.sigma2_grid=null,final.top_k={top_k}]", f"random[final.top_k={top_k}]"]
    rows = [r for r in every if r["method"] in methods]
    assert len(rows) == 2 * 10 * 4 and {r["seed_set"] for r in rows} == {"held-out"}
    assert (SCRIPT.parents[1] / "README.md").read_text().count(se.constraint_table(rows, [8, 16, 24, 32], methods, full=True)) == 1
    for r in rows:
        assert int(r["finalists_feasible"]) in (0, int(r["finalists"])) and int(r["finalists"]) <= top_k
        assert (r["full_accuracy"] == "") == (r["finalists_feasible"] == "0")
    base = lambda r: (r["method"].split("[")[0], r["seed"], r["budget"])  # the method without its final.top_k
    if constraint.startswith("latency"):  # the other top_k's rows
        other = {base(r): r for r in every if r["method"] not in methods}
    else:  # the one-finalist rows
        other = {base(r): r for r in csv.DictReader((results / "compression_constraint_full.csv").open())
                 if r["space"] == CONSTRAINT_SPACE and r["constraint"] == constraint and r["method"] in (OURS, "random")}
    for r in rows:  # every row has its match (a KeyError otherwise)
        assert all(r[c] == other[base(r)][c] for c in ("best", "accuracy", "feasible"))


@pytest.mark.parametrize("constraint, short", [
    ("flops<=561824", {"grid": [1003], "fixed": [1001]}),
    (MEMORY_CAP, {"grid": [1001, 1004, 1006, 1007, 1008, 1009], "fixed": [1002, 1003, 1004, 1006, 1007]}),
])
def test_readme_finalist_tables_of_the_sigma2_grid(constraint, short):
    """The σ² grid default with four finalists under the FLOPs and the memory cap on this machine's teacher
    (``-213ed5c4``, seeds 1000-1009, README "The σ² grid default under the FLOPs and memory caps"): the README holds
    ``constraint_table`` of the rows; every finalist meets the cap; fully trained at 32, the seeds where the grid
    and σ² fixed are below random search's best finalist (FLOPs: 9 of 10 at least random's, each; memory: 4 and 5)."""
    se = _bench_module()
    results = SCRIPT.parents[1] / "benchmarks" / "results"
    methods = ["ours[final.top_k=4]", "ours[kernel.sigma2_grid=null,final.top_k=4]", "random[final.top_k=4]"]
    rows = [r for r in csv.DictReader((results / "compression_constraint_finalists.csv").open())
            if r["space"] == "compression:small_resnet-w0.5-p1-K4-tcf78a769-213ed5c4" and r["constraint"] == constraint
            and r["method"] in methods and r["seed_set"] == "held-out"]  # (tuning rows: the capped-space rule's)
    assert len(rows) == 3 * 10 * 4 and {r["method"] for r in rows} == set(methods)
    assert (SCRIPT.parents[1] / "README.md").read_text().count(se.constraint_table(rows, [8, 16, 24, 32], methods, full=True)) == 1
    assert all(r["finalists"] == r["finalists_feasible"] == "4" for r in rows)
    full = {m: {int(r["seed"]): float(r["full_accuracy"]) for r in rows if r["method"] == m and r["budget"] == "32"} for m in methods}
    below = {name: [s for s in range(1000, 1010) if full[m][s] < full[methods[2]][s]] for name, m in zip(("grid", "fixed"), methods)}
    assert below == short


def test_readme_pruning_tables_of_this_machines_teacher():
    """Pruning at equal parameters against the σ² grid default and σ² fixed on this machine's teacher (``-213ed5c4``,
    seeds 1000-1009, README "The σ² grid default against pruning"): the README holds ``pruning.table`` of each
    reference's rows; each reference's f is its search-efficiency best at 160, seed by seed, and its full f is one
    figure per seed over the three importance runs; l1 pruning minus the grid, full f, +0.0057 (7 of 10 seeds)."""
    pruning = _bench_module("pruning")
    results = SCRIPT.parents[1] / "benchmarks" / "results"
    space = "compression:small_resnet-w0.5-p1-K8-tcf78a769-213ed5c4"
    rows = [r for r in csv.DictReader((results / "pruning.csv").open()) if r["space"] == space]
    best = {(r["method"], int(r["seed"])): float(r["best"]) for r in csv.DictReader((results / "compression_search_efficiency.csv").open())
            if r["space"] == space and r["budget"] == "160"}
    readme = (SCRIPT.parents[1] / "README.md").read_text()
    for against in ("ours", "ours[kernel.sigma2_grid=null]"):
        mine = [r for r in rows if r["against"] == against]
        assert len(mine) == 60 and {r["method"] for r in mine} == {against, "prune[l1]", "prune[l2]", "prune[bn_scale]"}
        shown = pruning.table(mine, [against, "prune[l1]", "prune[l2]", "prune[bn_scale]"])
        assert readme.count(shown) == 1
        assert f"| {against} | 10 | " in shown  # one row a seed, though each of the 3 importance runs repeats it
        figures = {}
        for r in mine:
            if r["method"] == against:
                figures.setdefault(int(r["seed"]), set()).add((r["f"], r["full_f"]))
        assert sorted(figures) == list(range(1000, 1010)) and all(len(v) == 1 for v in figures.values())
        assert all(float(next(iter(v))[0]) == best[(against, s)] for s, v in figures.items())
    full = {(r["method"], int(r["seed"])): float(r["full_f"]) for r in rows if r["against"] == "ours"}
    d = [full[("prune[l1]", s)] - full[("ours", s)] for s in range(1000, 1010)]
    assert (round(sum(d) / 10, 4), sum(x > 0 for x in d)) == (0.0057, 7)


def test_readme_pruning_against_the_main_jobs_answer():
    """``--against "ours[final.top_k=4]"`` (README "The main job's answer against pruning"): the README holds its
    table with ``prune[best]``; the answer is one of the 4 best by proxy f of ours' stored search, so its proxy f is
    at most the proxy-best's and its full f at least the proxy-best's full training (one of the four, the same
    figure), and it differs from the proxy-best on 9 of 10 seeds; l1 pruning minus the answer, full f, +0.0087 (8 of 10)."""
    pruning = _bench_module("pruning")
    space = "compression:small_resnet-w0.5-p1-K8-tcf78a769-213ed5c4"
    rows = [r for r in csv.DictReader((SCRIPT.parents[1] / "benchmarks" / "results" / "pruning.csv").open()) if r["space"] == space]
    against, imps = "ours[final.top_k=4]", ["prune[l1]", "prune[l2]", "prune[bn_scale]"]
    mine = [r for r in rows if r["against"] == against and r["seed_set"] == "held-out"]
    assert len(mine) == 60 and len([r for r in rows if r["against"] == against]) == 80  # and the finalist rule's tuning rows
    best = pruning.best_pruned(mine, imps)
    assert [int(r["seed"]) for r in best] == list(range(1000, 1010))
    readme = (SCRIPT.parents[1] / "README.md").read_text()
    assert readme.count(pruning.table(mine + best, [against] + imps + ["prune[best]"])) == 1
    answer = {int(r["seed"]): r for r in mine if r["method"] == against}
    top1 = {int(r["seed"]): r for r in rows if r["against"] == "ours" and r["method"] == "ours"}
    assert all(float(answer[s]["f"]) <= float(top1[s]["f"]) and float(answer[s]["full_f"]) >= float(top1[s]["full_f"]) for s in answer)
    assert sum(answer[s]["num_params"] != top1[s]["num_params"] for s in answer) == 9
    assert sum(int(answer[s]["num_params"]) < int(top1[s]["num_params"]) for s in answer) == 9  # each a smaller one
    full = {(r["method"], int(r["seed"])): float(r["full_f"]) for r in mine}
    for m, want in (("prune[l1]", (0.0087, 8)), ("prune[best]", (0.0103, 8))):
        d = [(max(full[(i, s)] for i in imps) if m == "prune[best]" else full[(m, s)]) - full[(against, s)] for s in range(1000, 1010)]
        assert (round(sum(d) / 10, 4), sum(x > 0 for x in d)) == want
    # the same against the main job's default answer since the finalist rule (final.select=front)
    front = "ours[final.top_k=4,final.select=front]"
    mine = [r for r in rows if r["against"] == front and r["seed_set"] == "held-out"]
    assert len(mine) == 60 and {r["method"] for r in mine} == {front, *imps}
    best = pruning.best_pruned(mine, imps)
    assert readme.count(pruning.table(mine + best, [front] + imps + ["prune[best]"])) == 1
    full = {(r["method"], int(r["seed"])): float(r["full_f"]) for r in mine}
    d = [max(full[(i, s)] for i in imps) - full[(front, s)] for s in range(1000, 1010)]
    assert (round(sum(d) / 10, 4), sum(x > 0 for x in d)) == (0.0156, 8)


@pytest.mark.parametrize("spec, message", [
    ("flop=0.3x", "--constraint 'flop=0.3x': expected <cost>=<cap>"),
    ("flops=0.3y", "--constraint 'flops=0.3y': expected <cost>=<cap>"),
])
def test_bad_constraint_is_refused(spec, message):
    se = _bench_module()
    with pytest.raises(SystemExit, match=re.escape(message)):
        se.constraint_overrides(argparse.Namespace(constraint=spec))


def test_absolute_caps_become_constraint_overrides():
    se = _bench_module()
    args = argparse.Namespace(constraint="flops=120000.7,latency=2.5")
    assert se.constraint_overrides(args) == ["objective.constraint.flops=120000", "objective.constraint.latency_ms=2.5"]


@pytest.mark.slow
def test_compression_constraint_benchmark_cli(tmp_path):
    """``--constraint flops=0.3x``: the cap resolved against the teacher's FLOPs, the constraint columns,
    each row's best student as the main job chooses finalists (feasible when any student is)."""
    out = tmp_path / "c.csv"
    res = compression_cli(tmp_path, out, "--constraint", "flops=0.3x", "--methods", "ours,random", "--seed-offset", "1000", *TINY)
    with out.open() as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["method", "space", "dataset", "constraint", "seed", "seed_set", "budget", "best",
                                     "accuracy", "feasible", "train_s", "acq_s"]
        rows = list(reader)
    assert [(r["method"], int(r["budget"])) for r in rows] == [("ours", 2), ("ours", 4), ("random", 2), ("random", 4)]
    from nascomp import ArchGraph, teachers

    teacher_flops = ArchGraph.from_module(teachers.create("small_resnet", width=0.5), (1, 8, 8)).flops
    cap = int(rows[0]["constraint"].removeprefix("flops<="))
    assert cap == int(0.3 * teacher_flops)
    with sqlite3.connect(tmp_path / "store.sqlite") as db:  # every evaluated student: (accuracy, flops)
        students = db.execute("SELECT accuracy, flops FROM evaluations WHERE error IS NULL").fetchall()
    for r in rows:  # the reported student is an evaluated one, feasible exactly when within the cap
        assert r["seed_set"] == "held-out" and r["feasible"] in ("True", "False")
        assert any(abs(a - float(r["accuracy"])) < 1e-9 and (fl <= cap) == (r["feasible"] == "True") for a, fl in students)
    assert f"caps flops<={cap}" in res.stdout and "- ours vs random @4: ours >= random on" in res.stdout

    # --full: the same searches (replayed from the store) and the finalists (final.top_k 1) fully trained
    # as the main job trains them; their results are the store's full-training rows
    full = tmp_path / "full.csv"
    res = compression_cli(tmp_path, full, "--constraint", "flops=0.3x", "--methods", "ours,random", "--seed-offset",
                          "1000", "--full", *TINY)
    with full.open() as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames[-4:] == ["finalists", "finalists_feasible", "full_accuracy", "test_accuracy"]
        full_rows = list(reader)
    proxy_columns = ["method", "constraint", "seed", "budget", "best", "accuracy", "feasible"]
    assert [[r[c] for c in proxy_columns] for r in full_rows] == [[r[c] for c in proxy_columns] for r in rows]
    with sqlite3.connect(tmp_path / "store.sqlite") as db:
        finals = {json.loads(result)["accuracy"] for (result,) in db.execute("SELECT result FROM finals")}
    for r in full_rows:
        assert r["finalists"] == "1" and r["finalists_feasible"] == ("1" if r["feasible"] == "True" else "0")
        if r["feasible"] == "True":
            assert float(r["full_accuracy"]) in finals and 0.0 < float(r["test_accuracy"]) <= 1.0
        else:
            assert r["full_accuracy"] == r["test_accuracy"] == ""
    assert 1 <= len(finals) <= 4 and "the same, fully trained" in res.stdout
    assert re.search(r"- ours: [012]/2 finalists meet every cap", res.stdout), res.stdout[-2000:]  # 2 rows of 1

    # a method's own final.top_k: the same searches and evaluator (final is evaluator-free), more finalists
    two = tmp_path / "two.csv"
    res = compression_cli(tmp_path, two, "--constraint", "flops=0.3x", "--methods", "ours[final.top_k=2]", "--seed-offset",
                          "1000", "--full", *TINY)
    two_rows = list(csv.DictReader(two.open()))
    assert "of its own" not in res.stdout
    assert [[r[c] for c in proxy_columns[1:]] for r in two_rows] == [[r[c] for c in proxy_columns[1:]] for r in full_rows[:2]]
    for r, one in zip(two_rows, full_rows):
        assert r["method"] == "ours[final.top_k=2]" and int(one["finalists"]) <= int(r["finalists"]) <= 2
        assert r["full_accuracy"] == "" or float(r["full_accuracy"]) >= float(one["full_accuracy"] or 0)

    # benchmarks.costs retime: the store's fully trained students rebuilt over the teacher (their keys
    # checked) and timed again; a cap every stored figure meets
    with sqlite3.connect(tmp_path / "store.sqlite") as db:
        trained = db.execute("SELECT COUNT(DISTINCT key) FROM finals").fetchone()[0]
    timed = subprocess.run([sys.executable, "-m", "benchmarks.costs", "retime", "--store", str(tmp_path / "store.sqlite"),
                            "--width", "0.5", "--cap", "1000", "--trials", "2", "--warmup", "1", "--repeats", "3"],
                           cwd=SCRIPT.parents[1], capture_output=True, text=True, timeout=300)
    assert timed.returncode == 0, timed.stderr[-2000:]
    assert f"{trained} fully trained students" in timed.stdout and trained >= 1
    assert f"stored figure within 1000 ms: {trained}; timed again within it: {trained} (0 more" in timed.stdout
    wrong = subprocess.run([sys.executable, "-m", "benchmarks.costs", "retime", "--store", str(tmp_path / "store.sqlite"),
                            "--width", "0.25", "--trials", "1"], cwd=SCRIPT.parents[1], capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and "does not rebuild over small_resnet w0.25 (another teacher?)" in wrong.stderr
    missing = subprocess.run([sys.executable, "-m", "benchmarks.costs", "retime", "--store", str(tmp_path / "none.sqlite")],
                             cwd=SCRIPT.parents[1], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "none.sqlite: no such file" in missing.stderr and not (tmp_path / "none.sqlite").exists()
    (tmp_path / "junk.sqlite").write_text("not a database")
    junk = subprocess.run([sys.executable, "-m", "benchmarks.costs", "retime", "--store", str(tmp_path / "junk.sqlite")],
                          cwd=SCRIPT.parents[1], capture_output=True, text=True, timeout=300)
    assert junk.returncode == 2 and "junk.sqlite: not a run store" in junk.stderr
    assert (tmp_path / "junk.sqlite").read_text() == "not a database"


def test_a_rerun_with_a_larger_budget_adds_only_the_missing_rows(tmp_path):
    """The CSV records each (method, cell, seed) per budget: rerunning with ``--budgets 8,16,24`` after
    ``8,16`` runs the seed again and appends only its row at 24, which extends the same search (random
    search is seeded: the best at 24 is at least the best at 16); rerunning it again runs nothing."""
    out = tmp_path / "nb.csv"
    cmd = [sys.executable, str(SCRIPT), "--space", "nb201", "--dataset", "cifar10", "--methods", "random",
           "--seeds", "1", "--csv", str(out)]
    run = lambda budgets: subprocess.run(cmd + ["--budgets", budgets], cwd=tmp_path, capture_output=True, text=True,
                                         timeout=300, env={**os.environ, "WANDB_MODE": "disabled"})
    first = run("8,16")
    assert first.returncode == 0, first.stderr[-3000:]
    rows = list(csv.DictReader(out.open()))
    assert [int(r["budget"]) for r in rows] == [8, 16]
    second = run("8,16,24")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "[1/1 " in second.stdout and "| random | 1 |" in second.stdout
    again = list(csv.DictReader(out.open()))
    assert again[:2] == rows and [int(r["budget"]) for r in again] == [8, 16, 24]
    assert float(again[2]["best"]) >= float(again[1]["best"]) and float(again[2]["regret"]) <= float(again[1]["regret"])
    third = run("8,16,24")
    assert third.returncode == 0 and "[1/" not in third.stdout and len(list(csv.DictReader(out.open()))) == 3


def test_full_without_constraint_is_refused(tmp_path):
    """Exit 2 with the message; a CSV already there is left as it was, and none is created."""
    for csv_path in (tmp_path / "c.csv", tmp_path / "kept.csv"):
        recorded = ",".join(_bench_module().COLUMNS) + "\nours,compression:x,digits,compression,1000,held-out,8,0.5,,0,0\n"
        if csv_path.name == "kept.csv":
            csv_path.write_text(recorded)
        res = subprocess.run([sys.executable, str(SCRIPT), "--space", "compression", "--full", "--csv", str(csv_path)],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and "--full fully trains the finalists of the constraint form: it needs --space compression" in res.stderr
        assert (csv_path.read_text() == recorded) if csv_path.name == "kept.csv" else not csv_path.exists()


@pytest.mark.slow
def test_compression_transfer_benchmark_cli(tmp_path):
    """``--space compression --mode transfer --source small_resnet:0.25`` (paper 4.3 across real teachers):
    the source search's rows on its own teacher, the K zero-shot proposals on the target teacher (no
    kernel trained there), random search's first K on the target; a rerun finds every row done."""
    out = tmp_path / "t.csv"
    flags = ["--mode", "transfer", "--source", "small_resnet:0.25", "--methods", "ours", "--seed-offset", "1000", *TINY]
    res = compression_cli(tmp_path, out, *flags)
    rows = list(csv.DictReader(out.open()))
    zero = "ours zero_shot from small_resnet w0.25"
    width = lambda space: re.fullmatch(r"compression:small_resnet-w([0-9.]+)-p1-K2-t[0-9a-f]{8}-[0-9a-f]{8}", space).group(1)
    assert [(r["method"], width(r["space"]), int(r["budget"])) for r in rows] == [
        ("ours", "0.25", 2), ("ours", "0.25", 4), (zero, "0.5", 2), ("random", "0.5", 2)]
    assert float(rows[2]["train_s"]) == 0.0 and all(0.0 < float(r["best"]) <= 1.0 for r in rows)
    assert len(list((tmp_path / "teachers").glob("small_resnet-digits-w0.25-*.pt"))) == 1
    with sqlite3.connect(tmp_path / "store.sqlite") as db:  # two teachers, two store contexts
        assert db.execute("SELECT COUNT(DISTINCT context) FROM evaluations").fetchone()[0] == 2
    assert f"| {zero} | 1 |" in res.stdout and "| random | 1 |" in res.stdout
    again = compression_cli(tmp_path, out, *flags, timeout=120)
    assert "[1/" not in again.stdout and len(list(csv.DictReader(out.open()))) == 4
    recorded = out.read_text()  # a bad --source is refused before the CSV is touched
    bad = subprocess.run([sys.executable, str(SCRIPT), "--space", "compression", "--mode", "transfer", "--methods", "ours", "--source",
                          "cifar10", "--csv", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--source 'cifar10': expected <teacher>:<width>, e.g. small_resnet:0.25" in bad.stderr
    assert out.read_text() == recorded
