"""Search efficiency on NAS-Bench-201: best reward found after a budget of table look-ups.

Measured results (benchmarks/results/*.csv) and what they show, on tuning seeds (0-19, which chose
the defaults) and held-out seeds (1000 on, which chose nothing), are in the README, "Search
efficiency"; rows of earlier defaults carry the overrides that reproduce them in their method label.

Every method runs Algorithm 1's loop (nascomp.search) with the same evaluator, the same seeds and
the same first K random architectures per seed. Methods: ``ours`` (conf defaults; on ``--space nb201``
with ``kernel=nb201``, the kernel settings NAS-Bench-201's tuning seeds chose), ``flat``
(kernel=flat), ``paper`` (kernel=paper), ``random``, ``rea``, ``tpe`` (constant liar, multivariate,
startup = the first K; the TPE of earlier tables is
``tpe[search.tpe.multivariate=false,search.tpe.constant_liar=false,search.tpe.n_startup_trials=10]``),
``local`` (local search, White et al. 2021) and ``smac`` (SMAC3's random-forest BO, ``pip install
'nascomp[peer]'``); nascomp.baselines says how each is set. Any of them may carry Hydra overrides in
brackets, e.g. ``ours[search.K=1]`` or ``ours[kernel.objective=marginal,kernel.layers=2]``.

    python benchmarks/search_efficiency.py --space nb201 --dataset cifar10,cifar100,imagenet \
        --objective accuracy,compression --methods ours,flat,random,tpe,rea --seeds 20 \
        --budgets 50,100,160 --csv results.csv

The CSV gets one row per method x seed x budget (columns method, space, dataset, objective, seed,
budget, best, regret, train_s, acq_s; the last two are seconds per step of kernel training and
acquisition), appended as runs finish; a run whose budgets are all in it is not rerun, and a rerun
with more budgets appends only the missing ones' rows (class ResultCSV). The markdown table
(mean ± sd of the best found, mean regret ± standard error, seconds per step) is printed from the
whole CSV. Measured results and hardware: README, "Search efficiency".

``--mode pareto`` (NAS-Bench-201) searches the front of (validation accuracy up, cost down) with
``search.mode=pareto`` (nascomp.pareto: ours and paper by expected hypervolume improvement; random,
``nsga2`` and ``motpe`` from Optuna), for each cost of ``--cost`` (latency, params: the table's
``latency`` and ``model_size`` of every cell, known to the acquisition before a cell is looked up):

    python benchmarks/search_efficiency.py --space nb201 --mode pareto --cost latency,params \
        --dataset cifar10,cifar100,imagenet --methods ours,random,nsga2,motpe --seeds 20 \
        --budgets 50,100,160 --csv F

Its CSV has the columns method, space, dataset, cost, seed, seed_set, budget, hypervolume, hv_regret:
the hypervolume of the first ``budget`` evaluations, both objectives normalised by the lowest and
highest accuracy and cost of the whole table, against the reference point (u, v) = (-0.1, 1.1) (10 %
beyond the worst accuracy and cost; nascomp.pareto states it once), and its regret against the
hypervolume of the whole table's front, which the table gives exactly.

``--space compression`` runs the real compression search: students of a trained teacher, each scored
by proxy distillation (``experiment=cpu``: teacher small_resnet at --width 0.5, trained once and cached
under teachers/; --proxy-epochs 1, --K 8, --samples 200 acquisition samples per kernel; --override
adds any Hydra override for every method). Every method and seed shares one teacher, search space,
proxy evaluator and run store (--store): the proxy training is seeded by the config's ``seed`` (0),
not the search seed, so f(x) is one function and an architecture evaluated by any method or seed is
never trained twice (the K first random students of a seed, the same for every method, come from
the store after the first method).

    python benchmarks/search_efficiency.py --space compression --dataset digits --teacher small_resnet \
        --methods ours,flat,random,tpe --seeds 5 --budgets 40,80,160 \
        --csv benchmarks/results/compression_search_efficiency.csv

Same CSV columns; ``space`` is ``compression:<teacher>-w<width>-p<proxy epochs>-K<K>-t<teacher key>`` and
``objective`` is ``compression`` (f of Eq. 6). The optimum is unknown, so ``regret`` is left empty in
the CSV; the table's "gap" column is the gap to the best f found by any method and seed in the CSV
(at any budget), recomputed from the whole CSV each time it is printed.

Measured 2026-12-04 on the shared 2-core CPU (held-out seeds 1000-1019; benchmarks/results/nb201_pareto.csv;
``experiments/aggregate.py fronts`` prints the table), σ² fixed (rows ``ours[kernel.sigma2_grid=null]``, ours
before the σ² grid became the default; the grid's own rows are ``ours``): at 160 evaluations ours (``pareto_parents=spread``) has the
highest mean hypervolume in 5 of 6 cells (cifar100/params: MOTPE, by 0.00004), and by 80 it reaches random's
160-evaluation mean in 4 of 6 (every latency cell and imagenet/params); the previous default (``accuracy``
parents, 2026-12-01) did the same, with its miss on cifar10/params. With the σ² grid, the default since
2026-12-05 (rows ``ours``): highest in 5 of 6 (cifar10/params: MOTPE and σ² fixed, by 0.0003) and reaching
random's 160 by 80 in 5 of 6 (not cifar10/params).

``--mode transfer`` (NAS-Bench-201) is paper Table 3 by the paper's protocol (4.3): per seed and
objective, a method with kernels (``ours``, ``paper``, with overrides) searches ``--source`` for the
largest budget, and the K kernels of its last step (with the data their GPs were conditioned on) go to
each ``--dataset``. There, ``kernel.transfer_mode=zero_shot``: no target data and no kernel training,
each kernel proposes its expected-improvement maximiser, and the row ``<method> zero_shot from
<source>`` (budget K) is the best of those K. Beside it, the same kernels under
``kernel.transfer_mode=search`` (a whole target search that conditions them on the target's data each
step, never trains them; ``<method> search from <source>``, every budget) and ``random`` (every
budget and K; at K it is also every method's first step, so the zero-shot row's counterpart), e.g.

    python benchmarks/search_efficiency.py --space nb201 --mode transfer --source cifar10 \
        --dataset cifar100,imagenet --objective accuracy,compression --methods "ours[kernel.sigma2_grid=null]" --seeds 10 \
        --seed-offset 1000 --budgets 50,100,160 --csv benchmarks/results/nb201_transfer.csv

Same columns as the single-objective CSV (``dataset`` is the target). Measured 2026-12-01, σ² fixed
(benchmarks/results/nb201_transfer.csv, held-out seeds 1000-1005): the 8 zero-shot proposals beat 8
random architectures in all 4 cells and random search's 160 evaluations in 3 of 4 (README, Table 3).

``--space compression --mode transfer --source <teacher>:<width>`` is the same protocol across real
teachers on one dataset: the source search uses that teacher (e.g. ``small_resnet:0.25``) for the
largest budget (rows at each budget, its own ``space``), its last K kernels propose K students of
``--teacher`` at ``--width`` zero-shot (row ``<method> zero_shot from <teacher> w<width>``, budget K),
and ``random`` gives the target's first K (every method's first step there). Both teachers share the
store (their contexts differ). The whole-search arm is not run here (a target search of real students
costs a full benchmark run; the held-out table has ours from scratch on the same seeds). Measured:
README, Table 3.

``--constraint`` (``--space compression``) runs the constraint form: caps such as ``flops=0.3x`` (a
fraction of the teacher's cost) or ``flops=120000`` (absolute; costs params, flops, latency, memory) set
``objective.constraint.<cost>`` for every method, and each row reports the best student of the first
``budget`` evaluations as the main job chooses its finalists (``nascomp.pipeline.select_finalists``: the
best f among those that meet every cap, else the least over them): its proxy accuracy and whether it is
feasible, e.g.

    python benchmarks/search_efficiency.py --space compression --constraint flops=0.3x --methods ours,random \
        --seeds 10 --seed-offset 1000 --K 4 --budgets 16,32 --csv F

Its CSV has the columns method, space, dataset, constraint (the caps, resolved: ``flops<=N``), seed,
seed_set, budget, best (f), accuracy, feasible, train_s, acq_s; the table gives the mean accuracy of
the best feasible student and, per budget, on how many seeds the first method's is at least the
others' (a seed with no feasible student counts accuracy 0). ``--full`` also trains each row's finalists
(``final.top_k`` of the feasible ones, as the main job: ``pipeline.final_training``) and adds the columns
finalists, finalists_feasible, full_accuracy and test_accuracy (the best feasible finalist's), in a CSV of
its own. Measured (benchmarks/results/compression_constraint.csv, ``flops=0.5x``, K 4, held-out seeds 1000-1019,
the seeded teacher, σ² fixed): ours' best feasible proxy accuracy is at least random's on 16/20 seeds at 32 evaluations,
+0.113 ± 0.035 (s.e.); every reported student meets the cap. Fully trained: README.

``--space compression --mode pareto`` is the real-student Pareto benchmark: the same shared teacher,
space, proxy evaluator and store, the main job's Pareto problem (``nascomp.pipeline.pareto_problem``:
accuracy and the cost of ``objective=<--cost>``, params | flops | latency | memory, normalised by the
teacher's, reference point (u, v) = (-0.1, 1.1); latency is measured for every evaluated student on the
CPU), one Setup per cost (``objective=<cost>``: its own store context), e.g.

    python benchmarks/search_efficiency.py --space compression --mode pareto --cost params \
        --methods ours,random,nsga2,motpe --seeds 10 --seed-offset 1000 --budgets 40,80,160 --csv F

The CSV has the Pareto columns above; real students have no known true front, so ``hv_regret`` is
left empty (read as NaN; the table shows "–").
"""
from __future__ import annotations

import argparse
import csv
import functools
import logging
import math
import os
import re
import sys
import time
from collections import defaultdict
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from nascomp.config import split_label, split_top

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
BASE_METHODS = {
    "ours": [],
    "flat": ["kernel=flat"],
    "paper": ["search.method=paper"],  # the reference method: kernel=paper, random maximiser, 1000 samples
    "random": ["search.method=random"],
    "tpe": ["search.method=tpe"],
    "rea": ["search.method=rea"],
    "local": ["search.method=local"],
    "smac": ["search.method=smac"],
    "nsga2": ["search.method=nsga2"],  # --mode pareto only (Optuna's NSGAIISampler)
    "motpe": ["search.method=motpe"],  # --mode pareto only (Optuna's multi-objective TPE)
}
NB201_OURS = ["kernel=nb201"]  # --space nb201: ours with the kernel settings NAS-Bench-201's tuning seeds chose
COLUMNS = ["method", "space", "dataset", "objective", "seed", "seed_set", "budget", "best", "regret", "train_s", "acq_s"]
CONSTRAINT_COLUMNS = ["method", "space", "dataset", "constraint", "seed", "seed_set", "budget", "best", "accuracy", "feasible",
                      "train_s", "acq_s"]
# --constraint --full: the finalists fully trained too (another CSV: ResultCSV refuses a mixed header)
CONSTRAINT_FULL_COLUMNS = CONSTRAINT_COLUMNS + ["finalists", "finalists_feasible", "full_accuracy", "test_accuracy"]
PARETO_COLUMNS = ["method", "space", "dataset", "cost", "seed", "seed_set", "budget", "hypervolume", "hv_regret"]
HELD_OUT = 1000  # seeds from here on are held out: they choose nothing (--seed-offset 1000); below are tuning seeds


def seed_set(seed: int) -> str:
    return "held-out" if int(seed) >= HELD_OUT else "tuning"


def parse_methods(spec: str, space: str) -> list[tuple[str, list[str]]]:
    """``"ours,ours[search.K=1,space.ops=[remove,shrink]],tpe"`` -> [(label, overrides), ...]; an
    override's value may be a bracketed list. On ``space`` nb201, ``ours`` starts from ``kernel=nb201``."""
    out = []
    try:
        labels = split_top(spec)
    except ValueError as exc:
        raise SystemExit(f"--methods: {exc}") from None
    for label in labels:  # each balanced, as split_top checked
        name, extra, suffix = split_label(label)
        if suffix:
            raise SystemExit(f"method {label!r}: expected name or name[override,...]")
        if name not in BASE_METHODS:
            raise SystemExit(f"unknown method {name!r}; choose from {', '.join(BASE_METHODS)}, optionally with [overrides]")
        base = NB201_OURS if (space == "nb201" and name == "ours") else BASE_METHODS[name]
        out.append((label, base + extra))
    return out


# NAS-Bench-201's Pareto runs keep the zero-mean GP they were measured and tuned with; ours' cost prior with a FLOPs,
# memory or latency cost and front prior with params (search.acquisition.pareto_mean: auto) are the real-student
# cost-prior and front-prior rules' (README). A method's own overrides come after.
NB201_PARETO = ["search.acquisition.pareto_mean=zero"]


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return hydra_compose(config_name="config", overrides=overrides)


@functools.lru_cache(maxsize=None)
def nb201_space(dataset: str):
    from nascomp.nb201 import NB201Space

    return NB201Space(dataset)


def run_one(job: tuple) -> list[dict]:
    """One method on one seed: a row per budget."""
    import torch

    from nascomp.nb201 import TableEvaluator
    from nascomp.search import run_search

    torch.set_num_threads(1)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    label, overrides, dataset, objective, seed, budgets = job
    cfg = compose(overrides)
    cfg.search.T = math.ceil(max(budgets) / cfg.search.K) - 1
    space = nb201_space(dataset)
    evaluator = TableEvaluator(space.accuracy, space.params, space.reference, objective)
    result = run_search(space, evaluator, cfg, seed, budget=max(budgets))
    return nb201_rows(label, dataset, objective, seed, result, evaluator.optimum, budgets)


def nb201_rows(label: str, dataset: str, objective: str, seed: int, result, optimum: float, budgets: list[int]) -> list[dict]:
    """The CSV rows (``COLUMNS``) of one NAS-Bench-201 search: the best found and its regret at each
    budget, and the search's seconds per step of kernel training and acquisition."""
    steps = max(result.steps, 1)
    return [dict(method=label, space="nb201", dataset=dataset, objective=objective, seed=seed, seed_set=seed_set(seed), budget=b,
                 best=result.best_after(b), regret=optimum - result.best_after(b),
                 train_s=result.seconds.get("train", 0.0) / steps, acq_s=result.seconds.get("acquisition", 0.0) / steps)
            for b in budgets]


def run_transfer(job: tuple) -> list[dict]:
    """One kernel method on one seed and objective, paper 4.3: a source search on ``source`` for the
    largest budget, then its last kernels on each target, zero-shot (K proposals) and as a whole search,
    and (``with_random``) random search on the target; a row per arm, target and budget."""
    import torch

    from nascomp.nb201 import TableEvaluator
    from nascomp.search import run_search
    from nascomp.transfer import SourceKernels

    torch.set_num_threads(1)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    label, overrides, source, targets, objective, seed, budgets, with_random = job
    cfg = compose(overrides)
    cfg.search.T = math.ceil(max(budgets) / cfg.search.K) - 1
    space = nb201_space(source)
    fits = []
    run_search(space, TableEvaluator(space.accuracy, space.params, space.reference, objective), cfg, seed,
               budget=max(budgets), on_fit=lambda step, state, data: fits.append((state, data)))
    kernels = SourceKernels(*fits[-1], where=f"the {source} search of seed {seed}")
    K = cfg.search.K
    arms = [(f"{label} zero_shot from {source}", overrides + ["kernel.transfer_mode=zero_shot"], [K]),
            (f"{label} search from {source}", overrides + ["kernel.transfer_mode=search"], budgets),
            ("random", ["search.method=random"], sorted({K, *budgets}))][:3 if with_random else 2]
    rows = []
    for dataset in targets:
        target = nb201_space(dataset)
        evaluator = TableEvaluator(target.accuracy, target.params, target.reference, objective)
        for arm, arm_overrides, arm_budgets in arms:
            arm_cfg = compose(arm_overrides)
            arm_cfg.search.T = math.ceil(max(arm_budgets) / arm_cfg.search.K) - 1
            result = run_search(target, evaluator, arm_cfg, seed, budget=max(arm_budgets),
                                transfer=None if arm == "random" else kernels)
            rows += nb201_rows(arm, dataset, objective, seed, result, evaluator.optimum, arm_budgets)
    return rows


def run_pareto(job: tuple) -> list[dict]:
    """One method on one seed in Pareto mode: a row per budget with the hypervolume of the first
    ``budget`` evaluations and its regret against the whole table's front."""
    import torch

    from nascomp.nb201 import TableEvaluator
    from nascomp.reward import COST_OF
    from nascomp.search import run_search

    torch.set_num_threads(1)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    label, overrides, dataset, cost, seed, budgets = job
    cfg = compose(NB201_PARETO + overrides + ["search.mode=pareto"])
    cfg.search.T = math.ceil(max(budgets) / cfg.search.K) - 1
    space = nb201_space(dataset)
    problem = space.pareto(COST_OF[cost])
    evaluator = TableEvaluator(space.accuracy, space.params, space.reference, "accuracy", space.latency)
    result = run_search(space, evaluator, cfg, seed, budget=max(budgets), problem=problem)
    curve, best = problem.curve(result.history), true_hypervolume(dataset, COST_OF[cost])
    return [dict(method=label, space="nb201", dataset=dataset, cost=cost, seed=seed, seed_set=seed_set(seed), budget=b,
                 hypervolume=float(curve[b - 1]), hv_regret=best - float(curve[b - 1])) for b in budgets]


@functools.lru_cache(maxsize=None)
def true_hypervolume(dataset: str, cost: str) -> float:
    return nb201_space(dataset).true_hypervolume(cost)


def pareto_table(rows: list[dict], budgets: list[int], methods: list[str]) -> str:
    """Markdown: per dataset and cost, one row per method: hypervolume (mean ± sd) and its regret
    (mean ± standard error) at each budget."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["cost"])].append(r)
    lines = []
    for (dataset, cost), rs in sorted(groups.items()):
        head = ["method", "seeds"] + [f"HV @{b}" for b in budgets] + [f"HV regret @{b}" for b in budgets]
        lines += [f"\n**{dataset}, accuracy and {cost}**\n", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for method in methods:
            mr = [r for r in rs if r["method"] == method]
            if not mr:
                continue
            cells = [method, str(len({r["seed"] for r in mr}))]
            for key, spread in (("hypervolume", "sd"), ("hv_regret", "se")):
                for b in budgets:
                    v = np.array([float(r[key]) for r in mr if int(r["budget"]) == b and r[key] not in ("", None)])
                    v = v[~np.isnan(v)]  # real students: no true front, no regret
                    if len(v) == 0:
                        cells.append("–")
                        continue
                    sd = v.std(ddof=1) if len(v) > 1 else 0.0
                    cells.append(f"{v.mean():.4f} ± {sd if spread == 'sd' else sd / math.sqrt(len(v)):.4f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main_pareto(args) -> None:
    from nascomp.reward import COST_OF
    from nascomp.schema import PARETO_METHODS

    methods = parse_methods(args.methods, args.space)
    for label, _ in methods:
        if label.split("[")[0] not in PARETO_METHODS:
            raise SystemExit(f"--mode pareto: method {label!r} has no Pareto mode; choose from {', '.join(PARETO_METHODS)}")
    costs = args.cost.split(",")
    if args.space == "compression":
        for cost in costs:
            if cost not in COST_OF:
                raise SystemExit(f"--cost {cost!r}: real students have the costs {', '.join(COST_OF)}")
        return main_compression_pareto(args, methods, costs)
    for cost in costs:
        if cost not in ("latency", "params"):
            raise SystemExit(f"--cost {cost!r}: NAS-Bench-201's table holds latency and params")
    budgets = sorted(int(b) for b in args.budgets.split(","))
    datasets = args.dataset.split(",")
    path = Path(args.csv)
    results = ResultCSV(path, PARETO_COLUMNS, key=("method", "dataset", "cost", "seed"))
    jobs = [(label, ov, d, c, s, budgets)
            for s in range(args.seed_offset, args.seed_offset + args.seeds) for d in datasets for c in costs
            for label, ov in methods if results.missing(budgets, method=label, dataset=d, cost=c, seed=s)]
    start = time.time()
    with Pool(args.workers) as pool:
        for i, rows in enumerate(pool.imap_unordered(run_pareto, jobs)):
            results.write(rows)
            print(f"[{i + 1}/{len(jobs)} {time.time() - start:.0f}s] {rows[0]['method']} {rows[0]['dataset']} "
                  f"{rows[0]['cost']} seed {rows[0]['seed']}: HV regret " + " ".join(f"{r['hv_regret']:.4f}" for r in rows), flush=True)
    rows = [r for r in results.rows() if r["dataset"] in datasets and r["cost"] in costs
            and r["seed_set"] == seed_set(args.seed_offset)]
    print(f"\n{seed_set(args.seed_offset)} seeds; hypervolume of normalised (accuracy, cost), reference point "
          f"{reference_point()} (nascomp.pareto)")
    print(pareto_table(rows, budgets, [label for label, _ in methods]))


def reference_point() -> str:
    from nascomp.pareto import REFERENCE

    return f"(u, v) = {REFERENCE}"


def compression_space_label(args) -> str:
    """The ``space`` of a real-student row: ``compression:<teacher>-w<width>-p<proxy epochs>-K<K>-t<hash>-<weights>``,
    ``<hash>`` the first 8 digits of the teacher's cache key (``nascomp.pipeline.teacher_key``: data,
    teacher, recipe with its seed) and ``<weights>`` the first 8 of its trained weights' digest
    (``nascomp.store.tensor_digest``, as the store's context has it). The teacher is loaded, or trained
    and cached first. One cache key is one teacher on one machine, but another machine's CPU kernels sum
    in another order and train other weights from the same seed (the seeded width-0.5 teacher: validation
    accuracy 0.980 where the committed rows were measured, 0.973 on a later machine), so the weights name
    it: rows of different teachers never mix in a table or in resuming. Rows written before
    that have no ``-<weights>`` part, and rows written before teachers were seeded by their recipe
    (commit 973263c) no ``-t`` part; new runs start new rows beside them."""
    from nascomp.pipeline import load_teacher, teacher_key
    from nascomp.store import digest, tensor_digest

    cfg = compression_config(args, [])
    _, teacher, _ = load_teacher(cfg)
    return (f"compression:{args.teacher}-w{args.width:g}-p{args.proxy_epochs}-K{args.K}-t{digest(teacher_key(cfg))[:8]}"
            f"-{tensor_digest(teacher.state_dict())[:8]}")


def compression_config(args, overrides: list[str]):
    """The main config (``experiment=cpu``) with the benchmark's flags, then a method's overrides.
    ``seed`` stays 0: it seeds the proxy training, so f(x) is one function for every method and seed
    (the search seed is run_search's); that keeps the store context, and its cache, shared."""
    from nascomp.config import compose as nascomp_compose

    return nascomp_compose(["experiment=cpu", f"teacher={args.teacher}", f"teacher.width={args.width}",
                            f"dataset={args.dataset}", f"proxy.epochs={args.proxy_epochs}", f"search.K={args.K}",
                            f"search.acquisition.samples={args.samples}", f"store.path={args.store}", "logger=none",
                            *args.override, *overrides])


EVALUATOR_FREE = ("search", "kernel", "space", "logger", "name", "final")  # what a method's overrides may change and still share the bench's evaluator (name: the run name, <teacher>-<dataset>-<search.method>; final: which students are fully trained, read from the method's config by ``feasible_best``)


class CompressionBench:
    """The real compression search: one teacher, space, proxy evaluator and store for every method
    and seed; the store's cache means an architecture is proxy-trained once for the whole benchmark.
    A method whose overrides change what scores a student (anything outside ``EVALUATOR_FREE``:
    ``inherit``, ``proxy.*``, ``objective.*``, the teacher...) gets an evaluator of its own
    (:meth:`setup_of`): its f is another function, as its label says."""

    def __init__(self, args, overrides: list[str] = (), full: bool = False):
        """``overrides``: for every method's config too (Pareto mode: ``objective=<cost>``). ``full``: with
        caps, fully train each row's finalists too (``--constraint --full``, ``feasible_best``)."""
        import torch

        from nascomp.pipeline import Setup

        torch.set_num_threads(args.threads)
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
        self.args, self.overrides, self.spaces, self.full, self.setups, self.by_overrides = args, list(overrides), {}, full, {}, {}
        self.setup = Setup.build(compression_config(args, self.overrides), Path(args.store).parent)
        s = self.setup
        print(f"teacher {s.cfg.teacher.name} w{s.cfg.teacher.width:g}: {s.graph.num_params} params, val accuracy "
              f"{s.teacher_accuracy:.4f}; {len(s.space.removable)} removable layers, {s.space.num_shrink_groups} shrink groups, "
              f"{len(s.space.skip_pairs)} legal skips; store {s.store.path}: {s.store.count(s.context)} "
              "evaluations cached", flush=True)

    def setup_of(self, overrides: list[str]):
        """The ``Setup`` that scores a method's students: the bench's, unless the method's ``overrides``
        change the config outside ``EVALUATOR_FREE``; then one of its own (built once, same store, its
        own store context), announced on stdout. Looked up once per list of overrides."""
        from nascomp.pipeline import Setup
        from omegaconf import OmegaConf

        if tuple(overrides) in self.by_overrides:
            return self.by_overrides[tuple(overrides)]
        cfg = compression_config(self.args, self.overrides + overrides)
        scoring = lambda c: {k: v for k, v in OmegaConf.to_container(c, resolve=True).items() if k not in EVALUATOR_FREE}
        mine, shared = scoring(cfg), scoring(self.setup.cfg)
        key = repr(mine)
        if mine != shared and key not in self.setups:
            self.setups[key] = Setup.build(cfg, Path(self.args.store).parent)
            changed = ", ".join(o for o in overrides if o.split("=")[0].split(".")[0] not in EVALUATOR_FREE)
            print(f"{changed}: an evaluator of its own (another f); store {self.setups[key].store.path}: "
                  f"{self.setups[key].store.count(self.setups[key].context)} evaluations cached", flush=True)
        self.by_overrides[tuple(overrides)] = self.setup if mine == shared else self.setups[key]
        return self.by_overrides[tuple(overrides)]

    def run_config(self, overrides: list[str], seed: int, budget: int, tag: dict | None = None) -> tuple:
        """A method's config for one search seed and budget, resolved, and its run id in the store
        (the history of the run is stored under it: ``benchmarks/pruning.py`` reads its best student);
        ``tag`` joins the run id (a zero-shot run: where its kernels came from)."""
        from nascomp.pipeline import RESULT_FREE, stored_config
        from nascomp.store import digest
        from omegaconf import OmegaConf

        cfg = compression_config(self.args, self.overrides + overrides)
        cfg.search.T = math.ceil(budget / cfg.search.K) - 1
        config = OmegaConf.to_container(cfg, resolve=True)
        # the evaluator's store context joins the id: equal configs scored by other teacher weights (a
        # teacher trained again to other weights) are other runs, never one history read against the other
        run_id = digest({"benchmark": "search_efficiency", "search_seed": seed, "budget": budget, **(tag or {}),
                         "context": self.setup_of(overrides).context,
                         **{k: v for k, v in stored_config(config).items() if k not in RESULT_FREE}})  # as the main job's run ids
        return cfg, config, run_id

    def search(self, overrides: list[str], seed: int, budget: int, tag: dict | None = None, **options):
        """One search of this bench (a method's ``overrides``, the search seed, its budget), recorded in
        the store under its run id and resumed from it; ``options`` go to ``run_search``."""
        from nascomp.search import run_search

        cfg, config, run_id = self.run_config(overrides, seed, budget, tag)
        setup = self.setup_of(overrides)
        evaluator = setup.open_run(run_id, resume=True, config=config)
        result = run_search(self.space(cfg), evaluator, cfg, seed, budget=budget, **options)
        setup.store.append_history(run_id, [(i, r.step, r.proposer, r.arch.key) for i, r in enumerate(result.history)])
        setup.store.finish_run(run_id)
        return result, evaluator.hits

    def space(self, cfg):
        """The search space of a method's config: the shared one, or, when the method's overrides change
        ``space.*`` (Tables 5 and 7: ``space.ops=[remove,shrink]``), that space over the same teacher."""
        from nascomp.compression_space import CompressionSpace
        from nascomp.pipeline import space_options

        options, shared = space_options(cfg), space_options(self.setup.cfg)
        if options == shared:
            return self.setup.space
        key = repr(sorted(options.items()))
        if key not in self.spaces:
            space = self.spaces[key] = CompressionSpace(self.setup.graph, **options)
            changed = ", ".join(f"space.{k}={v}" for k, v in options.items() if shared[k] != v)  # both resolved (auto)
            print(f"{changed}: a space of its own over the same teacher, operators {', '.join(space.ops)}", flush=True)
        return self.spaces[key]

    def run_one(self, label: str, overrides: list[str], seed: int, budgets: list[int]) -> list[dict]:
        """One method on one seed: a row per budget (``rows``; with caps, ``feasible_best`` joined)."""
        result, cached = self.search(overrides, seed, max(budgets))
        setup = self.setup_of(overrides)
        final = compression_config(self.args, self.overrides + overrides).final  # the method's own (final is evaluator-free)
        return [dict(row, **self.feasible_best(result.history[:row["budget"]], f"{label}-seed{seed}-b{row['budget']}", setup, final))
                for row in self.rows(label, seed, result, budgets, cached)]

    def rows(self, label: str, seed: int, result, budgets: list[int], cached: int) -> list[dict]:
        """The CSV rows (``COLUMNS``) of one search on this bench: its best f at each budget (no regret:
        the optimum is unknown) and seconds per step of kernel training and acquisition."""
        steps = max(result.steps, 1)
        return [dict(method=label, space=self.args.space_label, dataset=self.args.dataset, objective="compression", seed=seed,
                     seed_set=seed_set(seed), budget=b, best=result.best_after(b), regret="",
                     train_s=result.seconds.get("train", 0.0) / steps, acq_s=result.seconds.get("acquisition", 0.0) / steps,
                     cached=cached)
                for b in budgets]

    def feasible_best(self, history: list, run: str, setup, final) -> dict:
        """With caps: the best student of ``history`` as the main job picks its finalists
        (``select_finalists``): its proxy accuracy, whether it meets every cap, and the caps. With
        ``--full``, also the finalists (the method's ``final`` node: ``select_finalists``) fully trained as the main job trains them
        (``pipeline.final_training``: from their own proxy weights, each trained once, kept in the store;
        ``run`` names the folder of the exported best): how many meet every cap, and the best feasible
        finalist's full-training validation and test accuracy (empty when none is feasible). ``setup``: the
        method's own (``setup_of``)."""
        from nascomp.pipeline import final_training, record_costs, select_finalists

        objective = setup.objective
        if not objective.caps:
            return {}
        feasible = lambda r: objective.violation(record_costs(r, objective)) <= 1.0
        best = select_finalists(history, objective, 1)
        out = dict(constraint=self.args.constraint_label, accuracy=float("nan"), feasible=False)
        if best:  # else every evaluation failed
            out.update(accuracy=best[0].accuracy, feasible=feasible(best[0]))
        if self.full:
            finalists = select_finalists(history, objective, final.top_k, final.select, final.pool)
            ok = [r for r in finalists if feasible(r)]
            trained = final_training(setup, ok, Path(self.args.store).parent / "constraint" / run) if ok else []
            top = max(trained, key=lambda row: row["accuracy"], default=None)
            out.update(finalists=len(finalists), finalists_feasible=len(ok),
                       full_accuracy=top["accuracy"] if top else "", test_accuracy=top["test_accuracy"] if top else "")
        return out


    @functools.cached_property
    def problem(self):
        """The Pareto problem of this bench's objective (built once: a latency table times each layer once)."""
        return self.setup.pareto_problem()

    def run_pareto(self, label: str, overrides: list[str], seed: int, budgets: list[int], cost: str) -> list[dict]:
        """One method on one seed in Pareto mode (this bench's ``objective=<cost>``): a row per budget with
        the hypervolume of the first ``budget`` evaluations (the main job's ``pareto_problem``);
        ``hv_regret`` empty (no true front)."""
        problem = self.problem
        result, cached = self.search(overrides + ["search.mode=pareto"], seed, max(budgets), problem=problem)
        curve = problem.curve(result.history)
        return [dict(method=label, space=self.args.space_label, dataset=self.args.dataset, cost=cost, seed=seed, seed_set=seed_set(seed),
                     budget=b, hypervolume=float(curve[min(b, len(curve)) - 1]), hv_regret="", cached=cached)
                for b in budgets]


def main_compression_pareto(args, methods: list[tuple[str, list[str]]], costs: list[str]) -> None:
    """``--space compression --mode pareto``: every method and seed for each cost, on one ``CompressionBench``
    per cost (``objective=<cost>``); runs whose budgets are all in the CSV are not rerun."""
    budgets = sorted(int(b) for b in args.budgets.split(","))
    path = Path(args.csv)
    results = ResultCSV(path, PARETO_COLUMNS, key=("method", "space", "dataset", "cost", "seed"))
    args.space_label = compression_space_label(args)  # after the CSV's checks: it may train the teacher
    start = time.time()
    for cost in costs:
        jobs = [(label, ov, s) for s in range(args.seed_offset, args.seed_offset + args.seeds) for label, ov in methods
                if results.missing(budgets, method=label, space=args.space_label, dataset=args.dataset, cost=cost, seed=s)]
        bench = CompressionBench(args, [f"objective={cost}"]) if jobs else None
        for i, (label, overrides, seed) in enumerate(jobs):
            rows = bench.run_pareto(label, overrides, seed, budgets, cost)
            results.write(rows)
            print(f"[{cost} {i + 1}/{len(jobs)} {time.time() - start:.0f}s] {label} seed {seed}: "
                  "hypervolume " + " ".join(f"{r['hypervolume']:.4f}" for r in rows)
                  + f" ({rows[0]['cached']} from the store)", flush=True)
    rows = [r for r in results.rows() if r["space"] == args.space_label and r["dataset"] == args.dataset
            and r["cost"] in costs and r["seed_set"] == seed_set(args.seed_offset)]
    print(f"\n{seed_set(args.seed_offset)} seeds; {args.space_label}; hypervolume of (accuracy, cost) normalised by the "
          f"teacher's, reference point {reference_point()} (nascomp.pareto); no true front: no regret")
    print(pareto_table(rows, budgets, [label for label, _ in methods]))


def with_gap(rows: list[dict]) -> list[dict]:
    """Rows without a regret (compression: the optimum is unknown) get the gap to the best f found by
    any method and seed in ``rows`` (at any budget)."""
    best = defaultdict(lambda: float("-inf"))
    for r in rows:
        best[(r["space"], r["dataset"], r["objective"])] = max(best[(r["space"], r["dataset"], r["objective"])], float(r["best"]))
    return [r if r["regret"] not in ("", None) else {**r, "regret": best[(r["space"], r["dataset"], r["objective"])] - float(r["best"])}
            for r in rows]


class ResultCSV:
    """A result CSV with the header ``columns``, appended to as runs finish (each ``write`` is flushed,
    so a killed run keeps what it finished).

    A job is named by the fields of ``key`` (e.g. method, dataset, objective, seed) and holds a row per
    budget. ``missing`` says whether a job still lacks a row for one of its budgets (a rerun with a
    larger ``--budgets`` extends the table), and ``write`` appends only the rows not yet held, so no
    (job, budget) is written twice. Without a ``key`` every row is appended (``benchmarks/pruning.py``,
    where a seed redone with ``--full`` supersedes its earlier rows)."""

    def __init__(self, path: Path, columns: list[str], key: tuple[str, ...] = ()):
        self.path, self.columns, self.key = Path(path), columns, tuple(key)
        rows = self.rows()  # another header is refused here, before any work
        self.have = {self._id(r) for r in rows} if key else set()

    def _id(self, fields: dict, budget=None) -> tuple:
        return tuple(str(fields[k]) for k in self.key) + (int(fields["budget"] if budget is None else budget),)

    def rows(self) -> list[dict]:
        """Every row; a file with another header is refused (write to a new --csv)."""
        if not self.path.exists():
            return []
        with self.path.open() as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames != self.columns:
                raise SystemExit(f"{self.path}: columns {reader.fieldnames}, expected {self.columns}; write to a new --csv")
            return list(reader)

    def missing(self, budgets, **job) -> bool:
        """Whether the job named by ``job`` (exactly the fields of ``key``) lacks a row at any of ``budgets``."""
        if set(job) != set(self.key):
            raise TypeError(f"a job of {self.path} is named by {', '.join(self.key)}; got {', '.join(job)}")
        return any(self._id(job, b) not in self.have for b in budgets)

    def write(self, rows: list[dict]) -> list[dict]:
        """Append the rows not yet held (the header first when the file is new); returns them."""
        if self.key:
            rows = [r for r in rows if self._id(r) not in self.have]
            self.have |= {self._id(r) for r in rows}
        new_file = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerows(rows)
        return rows


def table(rows: list[dict], budgets: list[int], methods: list[str], regret: str = "regret") -> str:
    """Markdown: per space/dataset/objective, one row per method. ``regret`` names the regret column
    (compression: "gap", to the best found by any method, see ``with_gap``)."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["space"], r["dataset"], r["objective"])].append(r)
    lines = []
    for (space, dataset, objective), rs in sorted(groups.items()):
        head = ["method", "seeds"] + [f"best @{b}" for b in budgets] + [f"{regret} @{b}" for b in budgets] + ["train s/step", "acq s/step"]
        title = f"{dataset}, {objective}" if space == "nb201" else f"{space}, {dataset}, {objective}"
        lines += [f"\n**{title}**\n", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for method in methods:
            mr = [r for r in rs if r["method"] == method]
            if not mr:
                continue
            cells = [method, str(len({r["seed"] for r in mr}))]
            fmt = "{:.3f}" if objective == "accuracy" else "{:.4f}"
            for key in ("best", "regret"):
                for b in budgets:
                    v = np.array([float(r[key]) for r in mr if int(r["budget"]) == b])
                    if len(v) == 0:
                        cells.append("–")
                    elif key == "best":
                        cells.append(f"{fmt.format(v.mean())} ± {fmt.format(v.std(ddof=1) if len(v) > 1 else 0.0)}")
                    else:
                        cells.append(f"{fmt.format(v.mean())} ± {fmt.format(v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else 0.0)}")
            for key in ("train_s", "acq_s"):
                v = np.array([float(r[key]) for r in mr])
                cells.append(f"{v.mean():.2f}" if v.mean() > 0 else "–")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main_transfer(args) -> None:
    """``--mode transfer``: ``run_transfer`` for every kernel method x objective x seed not yet in the CSV."""
    from nascomp.schema import KERNEL_METHODS

    methods = parse_methods(args.methods, args.space)
    for label, _ in methods:
        if label.split("[")[0] not in KERNEL_METHODS:
            raise SystemExit(f"--mode transfer: method {label!r} has no learned kernels to transfer; choose from "
                             f"{', '.join(KERNEL_METHODS)}")
    budgets = sorted(int(b) for b in args.budgets.split(","))
    if args.space == "compression":
        return main_compression_transfer(args, methods, budgets)
    targets = [d for d in args.dataset.split(",") if d != args.source]
    if not targets:
        raise SystemExit(f"--mode transfer: --dataset names no target other than the source {args.source!r}")
    path = Path(args.csv)
    results = ResultCSV(path, COLUMNS, key=("method", "dataset", "objective", "seed"))
    K = compose(methods[0][1]).search.K
    jobs = []
    for s in range(args.seed_offset, args.seed_offset + args.seeds):
        for o in args.objective.split(","):
            # random search once per seed and objective
            with_random = any(results.missing(sorted({K, *budgets}), method="random", dataset=d, objective=o, seed=s)
                              for d in targets)
            for label, ov in methods:
                if any(results.missing([K], method=f"{label} zero_shot from {args.source}", dataset=d, objective=o, seed=s)
                       or results.missing(budgets, method=f"{label} search from {args.source}", dataset=d, objective=o, seed=s)
                       for d in targets):
                    jobs.append((label, ov, args.source, targets, o, s, budgets, with_random))
                    with_random = False
    start = time.time()
    with Pool(args.workers) as pool:
        for i, rows in enumerate(pool.imap_unordered(run_transfer, jobs)):
            results.write(rows)
            print(f"[{i + 1}/{len(jobs)} {time.time() - start:.0f}s] {rows[0]['method']} {rows[0]['objective']} seed "
                  f"{rows[0]['seed']}: " + "; ".join(f"{r['dataset']} regret {r['regret']:.4f}" for r in rows
                                                       if "zero_shot" in r["method"]), flush=True)
    rows = [r for r in results.rows() if r["dataset"] in targets and r["objective"] in args.objective.split(",")
            and r["seed_set"] == seed_set(args.seed_offset)]
    arms = [f"{label} {mode} from {args.source}" for label, _ in methods for mode in ("zero_shot", "search")]
    print(f"\n{seed_set(args.seed_offset)} seeds; kernels from {args.source}")
    print(table(rows, sorted({K, *budgets}), arms + ["random"]))


def main_compression_transfer(args, methods: list[tuple[str, list[str]]], budgets: list[int]) -> None:
    """``--space compression --mode transfer --source <teacher>:<width>``, paper 4.3 across real teachers:
    per seed and method, a search with the source teacher (same dataset, proxy recipe and K) for the
    largest budget, rows at each budget; then the K kernels of its last step propose K students of
    ``--teacher`` at ``--width`` with no data of that teacher and no kernel training
    (``kernel.transfer_mode=zero_shot``), a row at budget K; and random search's first K there, once per
    seed. Every search is kept in the one store; rows already in the CSV are not rerun."""
    from nascomp.transfer import SourceKernels

    teacher, _, width = args.source.partition(":")
    try:
        width = float(width)
    except ValueError:
        raise SystemExit(f"--space compression --mode transfer: --source {args.source!r}: expected <teacher>:<width>, "
                         "e.g. small_resnet:0.25 (the source teacher config and its width)") from None
    source_args = argparse.Namespace(**{**vars(args), "teacher": teacher, "width": width})
    path = Path(args.csv)
    results = ResultCSV(path, COLUMNS, key=("method", "space", "seed"))
    source_args.space_label = compression_space_label(source_args)  # after the CSV's checks: they may train teachers
    args.space_label = compression_space_label(args)
    if source_args.space_label == args.space_label:
        raise SystemExit(f"--mode transfer: the source {args.source!r} is the target teacher itself")
    origin = f"from {teacher} w{width:g}"
    jobs = [(label, ov, s) for s in range(args.seed_offset, args.seed_offset + args.seeds) for label, ov in methods
            if results.missing([args.K], method=f"{label} zero_shot {origin}", space=args.space_label, seed=s)
            or results.missing(budgets, method=label, space=source_args.space_label, seed=s)]
    source = target = None
    start = time.time()
    for i, (label, overrides, seed) in enumerate(jobs):
        source = source or CompressionBench(source_args)
        fits = []
        result, cached = source.search(overrides, seed, max(budgets),
                                       on_fit=lambda step, state, data: fits.append((state, data)))
        rows = source.rows(label, seed, result, budgets, cached)
        kernels = SourceKernels(*fits[-1], where=f"the {origin.removeprefix('from ')} search of seed {seed}")
        target = target or CompressionBench(args)
        result, cached = target.search(overrides + ["kernel.transfer_mode=zero_shot"], seed, args.K,
                                       tag={"transfer_from": source_args.space_label}, transfer=kernels)
        rows += target.rows(f"{label} zero_shot {origin}", seed, result, [args.K], cached)
        if results.missing([args.K], method="random", space=args.space_label, seed=seed):
            result, cached = target.search(["search.method=random"], seed, args.K)
            rows += target.rows("random", seed, result, [args.K], cached)
        results.write(rows)
        print(f"[{i + 1}/{len(jobs)} {time.time() - start:.0f}s] seed {seed}: {label} on the source, best "
              + " ".join(f"{r['best']:.4f}" for r in rows if r["space"] == source_args.space_label) + "; target @K: "
              + "; ".join(f"{r['method']} {r['best']:.4f}" for r in rows if r["space"] == args.space_label), flush=True)
    rows = [r for r in results.rows() if r["space"] in (args.space_label, source_args.space_label)
            and r["seed_set"] == seed_set(args.seed_offset)]
    print(f"\n{seed_set(args.seed_offset)} seeds; source {source_args.space_label}, target {args.space_label}")
    print(table(with_gap(rows), sorted({args.K, *budgets}), [label for label, _ in methods]
                + [f"{label} zero_shot {origin}" for label, _ in methods] + ["random"], regret="gap"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--space", default="nb201", choices=["nb201", "compression"])
    p.add_argument("--dataset", default="cifar10", help="nb201: comma list of cifar10, cifar100, imagenet; "
                   "compression: one dataset config (digits)")
    p.add_argument("--objective", default="accuracy", help="nb201: comma list of accuracy, compression "
                   "(compression space: always f of Eq. 6)")
    p.add_argument("--methods", default="ours,flat,random,tpe,rea")
    p.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1 (plus --seed-offset)")
    p.add_argument("--seed-offset", type=int, default=0, help=f"{HELD_OUT}: the held-out seeds, which chose nothing "
                   "(the rows are labelled held-out; below it, tuning); the table shows the rows of this seed set")
    p.add_argument("--budgets", default="50,100,160")
    p.add_argument("--csv", default="search_efficiency.csv")
    p.add_argument("--workers", type=int, default=1, help="nb201: parallel processes, one thread each")
    c = p.add_argument_group("compression space (experiment=cpu plus these)")
    c.add_argument("--teacher", default="small_resnet", help="teacher config (trained once, cached under teachers/)")
    c.add_argument("--width", type=float, default=0.5, help="teacher.width")
    c.add_argument("--proxy-epochs", type=int, default=1, help="proxy.epochs")
    c.add_argument("--K", type=int, default=8, help="search.K: architectures per step (and the first random ones)")
    c.add_argument("--samples", type=int, default=200, help="search.acquisition.samples per kernel")
    c.add_argument("--store", default="benchmarks/results/compression_store.sqlite",
                   help="one run store for the whole benchmark: nothing is proxy-trained twice")
    c.add_argument("--threads", type=int, default=1, help="torch threads (more than 1 thrashes on a shared 2-core CPU: 100x slower)")
    c.add_argument("--override", action="append", default=[], help="a further Hydra override for every method (repeatable)")
    c.add_argument("--full", action="store_true", help="with --constraint: also fully train each row's finalists "
                   "(final.top_k, as the main job) and report their accuracy; its own --csv (more columns)")
    c.add_argument("--constraint", default="", help="the constraint form for every method: comma list of <cost>=<cap> "
                   "(params, flops, latency, memory; a cap <r>x is r times the teacher's cost), e.g. flops=0.3x")
    p.add_argument("--mode", default="single", choices=["single", "pareto", "transfer"],
                   help="pareto: the front of (accuracy, --cost); methods ours, paper, random, nsga2, motpe. "
                   "transfer (nb201): paper Table 3, kernels of a --source search on each --dataset")
    p.add_argument("--source", default="cifar10", help="--mode transfer: whose search's kernels transfer: nb201, a dataset; "
                   "compression, <teacher>:<width> (e.g. small_resnet:0.25; the target is --teacher at --width)")
    p.add_argument("--cost", default="latency,params", help="--mode pareto: comma list of latency, params (NAS-Bench-201's "
                   "table); compression: of params, flops, latency, memory")
    args = p.parse_args()
    if args.full and not (args.constraint and args.space == "compression" and args.mode == "single"):
        raise SystemExit("--full fully trains the finalists of the constraint form: it needs --space compression "
                         "--constraint <caps> (and --mode single)")
    if args.mode == "pareto":
        return main_pareto(args)
    if args.mode == "transfer":
        return main_transfer(args)
    if args.space == "compression":
        return main_compression(args)

    methods = parse_methods(args.methods, args.space)
    budgets = sorted(int(b) for b in args.budgets.split(","))
    path = Path(args.csv)
    results = ResultCSV(path, COLUMNS, key=("method", "dataset", "objective", "seed"))
    jobs = [(label, ov, d, o, s, budgets)
            for s in range(args.seed_offset, args.seed_offset + args.seeds)
            for d in args.dataset.split(",") for o in args.objective.split(",")
            for label, ov in methods if results.missing(budgets, method=label, dataset=d, objective=o, seed=s)]
    start = time.time()
    with Pool(args.workers) as pool:
        for i, rows in enumerate(pool.imap_unordered(run_one, jobs)):
            results.write(rows)
            print(f"[{i + 1}/{len(jobs)} {time.time() - start:.0f}s] {rows[0]['method']} {rows[0]['dataset']} "
                  f"{rows[0]['objective']} seed {rows[0]['seed']}: regret " + " ".join(f"{r['regret']:.4f}" for r in rows), flush=True)
    rows = [r for r in results.rows() if r["dataset"] in args.dataset.split(",") and r["objective"] in args.objective.split(",")
            and r["seed_set"] == seed_set(args.seed_offset)]
    print(f"\n{seed_set(args.seed_offset)} seeds")
    print(table(rows, budgets, [label for label, _ in methods]))


def main_compression(args) -> None:
    methods = parse_methods(args.methods, args.space)
    budgets = sorted(int(b) for b in args.budgets.split(","))
    caps = constraint_overrides(args) if args.constraint else []
    args.constraint_label = ",".join(o.removeprefix("objective.constraint.").replace("=", "<=") for o in caps)
    columns = (CONSTRAINT_FULL_COLUMNS if args.full else CONSTRAINT_COLUMNS) if caps else COLUMNS
    path = Path(args.csv)
    results = ResultCSV(path, columns, key=("method", "seed", "space", "dataset", *(("constraint",) if caps else ())))
    args.space_label = compression_space_label(args)  # after the input checks: it may train the teacher
    job = dict(space=args.space_label, dataset=args.dataset, **(dict(constraint=args.constraint_label) if caps else {}))
    jobs = [(label, ov, s) for s in range(args.seed_offset, args.seed_offset + args.seeds) for label, ov in methods
            if results.missing(budgets, method=label, seed=s, **job)]
    start = time.time()
    bench = CompressionBench(args, caps, full=args.full) if jobs else None
    for i, (label, overrides, seed) in enumerate(jobs):
        rows = bench.run_one(label, overrides, seed, budgets)
        results.write(rows)
        print(f"[{i + 1}/{len(jobs)} {time.time() - start:.0f}s] {label} seed {seed}: best "
              + " ".join(f"{r['best']:.4f}" for r in rows) + f" ({rows[0]['cached']} from the store)"
              + ("; best feasible accuracy " + " ".join(f"{r['accuracy']:.4f}{'' if r['feasible'] else ' (over the caps)'}"
                                                     for r in rows) if caps else ""), flush=True)
    rows = [r for r in results.rows() if r["space"] == args.space_label and r["dataset"] == args.dataset
            and r["seed_set"] == seed_set(args.seed_offset) and r.get("constraint", "") == args.constraint_label]
    print(f"\n{seed_set(args.seed_offset)} seeds")
    if caps:
        print(f"{args.space_label}, caps {args.constraint_label}: proxy accuracy of the best feasible student")
        print(constraint_table(rows, budgets, [label for label, _ in methods]))
        if args.full:
            print(f"\nthe same, fully trained: validation accuracy of the best feasible finalist (final.top_k "
                  f"{compression_config(args, []).final.top_k} unless a method's [final.top_k=...] says otherwise)")
            print(constraint_table(rows, budgets, [label for label, _ in methods], full=True))
    else:
        print(table(with_gap(rows), budgets, [label for label, _ in methods], regret="gap"))


def constraint_overrides(args) -> list[str]:
    """``--constraint`` as ``objective.constraint.<cost>=<cap>`` overrides; a cap ``<r>x`` is r times the
    teacher's cost (the teacher's costs as the main job measures them: one ``Setup`` without caps)."""
    from nascomp.pipeline import Setup
    from nascomp.reward import COST_OF

    caps = {}
    for item in args.constraint.split(","):
        name, _, value = item.partition("=")
        if name not in COST_OF or not re.fullmatch(r"[0-9.eE+-]+x?", value):
            raise SystemExit(f"--constraint {item!r}: expected <cost>=<cap> or <cost>=<fraction>x (of the teacher's cost), "
                             f"cost one of {', '.join(COST_OF)}, e.g. flops=0.3x")
        caps[COST_OF[name]] = value
    teacher = None
    if any(v.endswith("x") for v in caps.values()):
        teacher = Setup.build(compression_config(args, []), Path(args.store).parent).objective.teacher_costs
    out = []
    for cost, value in caps.items():
        cap = float(value[:-1]) * getattr(teacher, cost) if value.endswith("x") else float(value)
        out.append(f"objective.constraint.{cost}={int(cap) if cost in ('num_params', 'flops') else cap}")
    return out


def constraint_table(rows: list[dict], budgets: list[int], methods: list[str], full: bool = False) -> str:
    """Markdown: per method the best feasible student's proxy accuracy (mean ± sd over seeds with one) and
    the seeds with one; then each other method against the first, paired by seed: on how many seeds the
    first method's accuracy is at least the other's, and the mean difference ± standard error (a seed
    without a feasible student counts accuracy 0). ``full``: the best feasible finalist's full-training
    accuracy instead, and a last line per method: how many of all its finalists meet the caps."""
    if full:
        finalists = {m: [sum(int(r[k] or 0) for r in rows if r["method"] == m) for k in ("finalists_feasible", "finalists")]
                     for m in methods}
        rows = [dict(r, accuracy=r["full_accuracy"] or "nan", feasible=str(r["full_accuracy"] != "")) for r in rows]

    def acc(r):
        return float(r["accuracy"]) if r["feasible"] == "True" else 0.0

    head = ["method", "seeds"] + [f"accuracy @{b}" for b in budgets] + [f"feasible @{b}" for b in budgets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by = {(r["method"], int(r["budget"]), int(r["seed"])): r for r in rows}
    for method in methods:
        mr = [r for r in rows if r["method"] == method]
        if not mr:
            continue
        cells = [method, str(len({r["seed"] for r in mr}))]
        for b in budgets:
            v = np.array([float(r["accuracy"]) for r in mr if int(r["budget"]) == b and r["feasible"] == "True"])
            cells.append(f"{v.mean():.4f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.4f}" if len(v) else "–")
        for b in budgets:
            bs = [r for r in mr if int(r["budget"]) == b]
            cells.append(f"{sum(r['feasible'] == 'True' for r in bs)}/{len(bs)}")
        lines.append("| " + " | ".join(cells) + " |")
    first, lines = methods[0], lines + [""]
    for other in methods[1:]:
        for b in budgets:
            seeds = sorted(s for (m, bb, s) in by if m == first and bb == b and (other, b, s) in by)
            if not seeds:
                continue
            d = np.array([acc(by[first, b, s]) - acc(by[other, b, s]) for s in seeds])
            se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else 0.0
            lines.append(f"- {first} vs {other} @{b}: {first} >= {other} on {int((d >= 0).sum())}/{len(d)} seeds, "
                         f"mean difference {d.mean():+.4f} ± {se:.4f} (s.e.)")
    if full:
        lines += [f"- {m}: {ok}/{n} finalists meet every cap (all rows)" for m, (ok, n) in finalists.items() if n]
    return "\n".join(lines)


def cli(main) -> None:
    """Run a benchmark's ``main`` with one thread per process: a run stopped with a message (a refused
    flag, CSV header or method) prints it and exits 2, as argparse and the main job do."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        main()
    except SystemExit as exc:
        if not isinstance(exc.code, str):
            raise
        print(exc.code, file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    cli(main)
