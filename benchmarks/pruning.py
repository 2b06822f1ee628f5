"""Pruning against search at equal parameters: "why not just prune the teacher?"

Measured against the earlier kernel (``--against "ours[kernel.sigma2_grid=null,kernel.pool=both,kernel.numeric=log]"``; 3
search seeds, 0-2, of the tuning seeds; a shared 2-core CPU, one torch thread): the
``experiment=cpu`` setting of ``search_efficiency.py --space compression`` (digits, small_resnet at
width 0.5: 42,938 parameters, validation accuracy 0.977; 1 proxy epoch; K = 8; budget 160; full
training = that preset's 2 epochs). Ours' best students keep 23-39% of the parameters; the pruned
teacher lands 0.6-3.4% below each. After proxy distillation ours is far ahead in f on every seed
with every importance (by 0.13 with l1, 0.31 with l2, 0.33 with BN scale); after the same full
training the difference is within noise (l2 -0.010 ± 0.013, BN scale -0.001 ± 0.006) or in
pruning's favour (l1 +0.031 ± 0.010, higher on 3 of 3 seeds). Ours' proxy f is the best of 160
noisy proxy scores, the pruned teacher's is one draw, so the proxy column flatters ours; the full
columns are the fair comparison. On held-out seeds 1000-1009 against the defaults before the σ² grid (``--against
"ours[kernel.sigma2_grid=null]"``) l1 pruning stays ahead after full training (+0.016 ± 0.004, 8 of 10). README, "Pruning at equal
parameters".

For each search seed, ours' answer after ``--budget`` proxy evaluations sets the target (its best
student by proxy f; with ``--full``, the main job's answer: the reference method's finalists
(``pipeline.select_finalists``: ``final.top_k``, ``final.select``, ``final.pool``), each fully trained,
the best of them by full f; the ``experiment=cpu`` setting has ``final.top_k: 1`` and ``final.select:
top``, the main job 4 and ``front``, so ``--against "ours[final.top_k=4,final.select=front]"`` compares
pruning with what the main job hands back and ``"ours[final.top_k=4]"`` with what it handed back before
the finalist rule, both reading the search of ``ours``: ``final.*`` does not change the search). The
teacher is channel-pruned with Torch-Pruning (``nascomp.pruning``, ``--importance``, global ranking)
to at most that student's parameter count (``pipeline.pruned_student``, which the main job's
``final.prune`` runs too), then distilled by the same proxy training (the proxy
evaluator's ``evaluate_modules``: the same recipe, Trainer, epochs, loss and data as every searched
student) and scored by Eq. 6 with its own count. With ``--full`` both are then fully trained from
their proxy weights by the same full recipe (ours through ``pipeline.final_training``, the pruned
one through ``training.full_train``), and f is recomputed from the full training's validation accuracy
(``--full`` with ``final.enabled=false`` is refused: that setting turns ours' full training off).

Ours' best comes from the run store: ``search_efficiency.py --space compression`` stores each run's
history under its run id (``CompressionBench.run_config``), and this script reads it back for the
same flags; a seed whose run is not in the store is searched here first, under that same run id,
so it counts for both scripts. Use the search-efficiency script's flags (teacher, width, proxy
epochs, K, samples, store, overrides) and its largest budget as ``--budget``.

    python benchmarks/pruning.py --dataset digits --teacher small_resnet --seeds 10 --budget 160 \\
        --store /tmp/compression_store.sqlite --csv benchmarks/results/pruning.csv

Why a script of its own and not a ``prune`` method of ``search_efficiency.py``: that script's rows
are best-f-after-budget curves of searches; pruning has no budget, no search and no curve, and the
comparison is paired, per seed at equal parameters, with columns the curves lack (accuracy, params,
full-training accuracy). It reuses that script's ``CompressionBench``: one teacher, search space,
proxy evaluator, store and run ids for both.

The CSV has one row per method and seed (columns ``COLUMNS``; ``method`` is the reference method's
label, e.g. ``ours``, or ``prune[l2]``; ``against`` is the reference's label on both rows, since the
pruning target is that method's best), appended as seeds finish; rows already in it (same ``against``)
are not redone.
The table (mean ± sd per method, the paired difference prune - ours as mean ± s.e., and how many
seeds prune wins) is printed from the CSV's rows against this ``--against``; once two or more
importances have run with ``--full``, a ``prune[best]`` row too: per seed the importance whose pruned
teacher has the highest full f (``best_pruned``), pruning at its best with one full training per importance.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from nascomp.pruning import IMPORTANCES, importance
from search_efficiency import (CompressionBench, ResultCSV, cli, compression_config, compression_space_label, parse_methods,
                               seed_set)

COLUMNS = ["method", "against", "space", "dataset", "seed", "seed_set", "budget", "f", "accuracy", "num_params", "ratio",
           "full_f", "full_accuracy", "test_accuracy"]


def search_overrides(overrides: list[str]) -> list[str]:
    """A method's overrides less ``final.*``: those choose which of the search's students are fully
    trained, not the search, so ``ours[final.top_k=4]`` reads (or runs) the search of ``ours``."""
    return [o for o in overrides if not o.lstrip("+~").startswith("final.")]


def reference_records(bench: CompressionBench, label: str, overrides: list[str], seed: int, budget: int) -> list:
    """The successful records among the first ``budget`` evaluations of the reference method's run for
    ``seed``, in evaluation order, read from the store (the run is searched first when the store does not
    hold it); ``overrides`` without ``final.*`` (``search_overrides``)."""
    from nascomp.search import Record

    setup = bench.setup_of(overrides)
    space = bench.space(compression_config(bench.args, bench.overrides + overrides))  # the method's own (space.* overrides)
    _, _, run_id = bench.run_config(overrides, seed, budget)
    if len(setup.store.history(run_id)) < budget:
        print(f"{label} seed {seed}: no stored history of run {run_id}, searching it", flush=True)
        bench.run_one(label, overrides, seed, [budget])
    keys = [key for _, _, _, key in setup.store.history(run_id)[:budget]]
    found = setup.store.cached(setup.context, keys, run=run_id)  # as that run saw them (its transient failures)
    ok = [(k, found[k]) for k in dict.fromkeys(keys) if k in found and found[k]["error"] is None]
    if not ok:
        raise SystemExit(f"{label} seed {seed}: no successful evaluation in run {run_id} of {setup.store.path}")
    return [Record(stored_candidate(bench, space, setup, key), row["f"], row["accuracy"], row["num_params"],
                   step=-1, proposer=None, seconds=row["seconds"], flops=row["flops"], latency_ms=row["latency_ms"],
                   memory_mb=row["memory_mb"])
            for key, row in ok]


def stored_candidate(bench: CompressionBench, space, setup, key: str):
    """The student of ``key`` in the store, as a candidate that realises it (``compression_space.realising``):
    of the method's ``space``, else of another space of the bench."""
    from nascomp.compression_space import realising

    others = [s for s in (bench.setup.space, *bench.spaces.values()) if s is not space]
    candidate = realising(key, setup.store.arch(setup.context, key), [space, *others])
    if candidate is None:
        raise SystemExit(f"{setup.store.path}: no search space of this benchmark realises the stored student {key}")
    return candidate


def run_seed(bench: CompressionBench, args, label: str, overrides: list[str], seed: int) -> list[dict]:
    """Ours' answer and the teacher pruned to its parameter count, proxy-trained (and with --full fully
    trained). Without --full ours' answer is its best student by proxy f; with --full it is the main
    job's: the method's finalists (``pipeline.select_finalists``: ``final.top_k``, ``final.select``,
    ``final.pool``) fully trained (``pipeline.final_training``), the best of them by full f (validation),
    so ``--against "ours[final.top_k=4,final.select=front]"`` is the main job's default."""
    from nascomp.pipeline import final_training, pruned_student, select_finalists
    from nascomp.pruning import PruningError
    from nascomp.reward import RewardRow

    s = bench.setup_of(overrides)  # the reference method's evaluator scores the pruned teacher too
    teacher_acc, teacher_params = s.teacher_accuracy, s.graph.num_params
    records = reference_records(bench, label, search_overrides(overrides), seed, args.budget)
    final = compression_config(args, overrides).final
    finalists = (select_finalists(records, s.objective, final.top_k, final.select, final.pool) if args.full
                 else select_finalists(records, s.objective, 1))
    best, ours_full = finalists[0], None
    if args.full:
        trained = final_training(s, finalists, Path(args.store).parent / "pruning" / f"{label}-seed{seed}")
        ours_full = max(trained, key=lambda row: row["f"])  # the answer, as final_training exports it
        best = next(r for r in finalists if r.arch.key == ours_full["key"])
    try:  # the main job's final.prune does the same (pipeline.pruned_student)
        _, _, evaluation, pruned_full = pruned_student(s, best.num_params, args.importance, full=args.full)
    except PruningError as exc:
        raise SystemExit(f"seed {seed}: {label}'s best student has {best.num_params} parameters: {exc}") from exc
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from exc
    common = dict(against=label, space=args.space_label, dataset=args.dataset, seed=seed, seed_set=seed_set(seed), budget=args.budget)
    rows = []
    for method, acc, n in ((label, best.accuracy, best.num_params), (f"prune[{args.importance}]", evaluation.accuracy, evaluation.num_params)):
        row = RewardRow.of(acc, n, teacher_acc, teacher_params)
        rows.append(dict(method=method, **common, f=row.f, accuracy=acc, num_params=n, ratio=row.ratio,
                         full_f="", full_accuracy="", test_accuracy=""))
    if args.full:
        for row, full in zip(rows, (ours_full, pruned_full)):
            row.update(full_f=full["f"], full_accuracy=full["accuracy"], test_accuracy=full["test_accuracy"])
    return rows


def best_pruned(rows: list[dict], importances: list[str]) -> list[dict]:
    """Pruning at its best: per seed where every one of ``importances`` (two or more ``prune[...]``
    methods) has fully trained rows, the one with the highest full f (validation, as the main job picks
    its answer among its finalists), as rows of method ``prune[best]``."""
    if len(importances) < 2:
        return []
    by = {(r["method"], r["seed"]): r for r in rows if r["full_f"] not in ("", None)}
    seeds = sorted({s for _, s in by}, key=int)
    return [dict(max((by[(m, s)] for m in importances), key=lambda r: float(r["full_f"])), method="prune[best]")
            for s in seeds if all((m, s) in by for m in importances)]


def table(rows: list[dict], methods: list[str]) -> str:
    """Markdown: mean ± sd per method (one row a seed), then each pruning method - the reference ``methods[0]`` per seed
    (mean ± s.e., and on how many seeds pruning is higher)."""
    def cell(v, fmt):
        v = np.asarray(v, float)
        return f"{fmt.format(v.mean())} ± {fmt.format(v.std(ddof=1) if len(v) > 1 else 0.0)}" if len(v) else "–"

    full = any(r["full_f"] not in ("", None) for r in rows)
    head = ["method", "seeds", "params", "proxy acc", "proxy f"] + (["full acc", "full f", "test acc"] if full else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        mr = list({r["seed"]: r for r in rows if r["method"] == m}.values())  # one row a seed: the reference repeats per importance run
        if not mr:
            continue
        cells = [m, str(len(mr)), cell([float(r["num_params"]) for r in mr], "{:.0f}"),
                 cell([float(r["accuracy"]) for r in mr], "{:.4f}"), cell([float(r["f"]) for r in mr], "{:.4f}")]
        if full:
            fr = [r for r in mr if r["full_f"] not in ("", None)]
            cells += [cell([float(r[k]) for r in fr], "{:.4f}") for k in ("full_accuracy", "full_f", "test_accuracy")]
        lines.append("| " + " | ".join(cells) + " |")
    reference, diffs = methods[0], []
    by = {(r["method"], r["seed"]): r for r in rows}
    for m in methods[1:]:
        for key, what in (("f", "proxy f"), ("full_f", "full f")):
            d = [float(by[(m, s)][key]) - float(by[(reference, s)][key]) for (mm, s) in by
                 if mm == m and (reference, s) in by and by[(m, s)][key] not in ("", None) and by[(reference, s)][key] not in ("", None)]
            if d:
                se = np.std(d, ddof=1) / math.sqrt(len(d)) if len(d) > 1 else 0.0
                diffs.append(f"- {m} - {reference}, {what}: {np.mean(d):+.4f} ± {se:.4f} (s.e., {len(d)} seeds); "
                             f"{m} higher in {sum(x > 0 for x in d)} of {len(d)}")
    return "\n".join(lines + ([""] + diffs if diffs else []))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="digits", help="one dataset config")
    p.add_argument("--against", default="ours", help="the searched method whose best sets the target (a "
                   "search_efficiency.py method label, with [overrides])")
    p.add_argument("--seeds", type=int, default=10, help="search seeds 0..N-1 (plus --seed-offset)")
    p.add_argument("--seed-offset", type=int, default=0)
    p.add_argument("--budget", type=int, default=160, help="the search's budget (search_efficiency.py's largest)")
    p.add_argument("--importance", default=IMPORTANCES[0], choices=IMPORTANCES, help="channel importance (nascomp.pruning)")
    p.add_argument("--full", action="store_true", help="also fully train both students (the full recipe)")
    p.add_argument("--csv", default="pruning.csv")
    c = p.add_argument_group("the search's setting (as search_efficiency.py --space compression)")
    c.add_argument("--teacher", default="small_resnet")
    c.add_argument("--width", type=float, default=0.5)
    c.add_argument("--proxy-epochs", type=int, default=1)
    c.add_argument("--K", type=int, default=8)
    c.add_argument("--samples", type=int, default=200)
    c.add_argument("--store", default="benchmarks/results/compression_store.sqlite")
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--override", action="append", default=[])
    args = p.parse_args()
    (label, overrides), = parse_methods(args.against, "compression")
    if args.full and not compression_config(args, overrides).final.enabled:  # before any training
        raise SystemExit(f"--full fully trains the best student of {label} (pipeline.final_training), which "
                         "final.enabled=false (in --against or --override) turns off: drop --full or final.enabled=false")
    methods = [label, f"prune[{args.importance}]"]
    results = ResultCSV(Path(args.csv), COLUMNS)  # no key: a seed redone with --full appends rows that supersede
    importance(args.importance)  # Torch-Pruning is installed, before any training (after the CSV: its import takes seconds)
    args.space_label = compression_space_label(args)  # after the CSV's checks: it may train the teacher
    mine = lambda r: (r["against"] == label and r["space"] == args.space_label and r["dataset"] == args.dataset
                      and int(r["budget"]) == args.budget)
    rows = [r for r in results.rows() if mine(r)]
    has = lambda m, s, full: any(r["method"] == m and int(r["seed"]) == s and (not full or r["full_f"] != "") for r in rows)
    seeds = [s for s in range(args.seed_offset, args.seed_offset + args.seeds) if not all(has(m, s, args.full) for m in methods)]
    start = time.time()
    bench = CompressionBench(args) if seeds else None
    for i, seed in enumerate(seeds):
        rows = results.write(run_seed(bench, args, label, overrides, seed))
        print(f"[{i + 1}/{len(seeds)} {time.time() - start:.0f}s] seed {seed}: "
              + "; ".join(f"{r['method']} {r['num_params']} params, acc {r['accuracy']:.4f}, f {r['f']:.4f}" for r in rows),
              flush=True)
    rows = [r for r in results.rows() if mine(r)]
    latest = {}
    for r in rows:  # a seed redone with --full replaces its proxy-only rows
        latest[(r["method"], r["seed"])] = r
    pruned = sorted({m for m, _ in latest if m.startswith("prune[")} - {methods[1]})  # other importances run before
    best = best_pruned(list(latest.values()), [methods[1]] + pruned)
    print(table(list(latest.values()) + best, methods + pruned + (["prune[best]"] if best else [])))


if __name__ == "__main__":
    cli(main)
