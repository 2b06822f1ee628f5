"""The main job: teacher (load or train) -> search (Algorithm 1 or a baseline, students scored by
proxy training) -> full training of the finalists (``select_finalists``) -> the final report. With ``search.mode=pareto`` the
search is for the front of (accuracy, the objective's cost) (``pareto_problem``), the top k are spread
along the front, and summary.json, the report and two plots carry the front and its hypervolume.

``run(cfg, run_dir)`` is what ``python -m nascomp.run`` calls with the composed Hydra config.
"""
from __future__ import annotations

import copy
import functools
import json
import logging
import math
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nascomp import data, teachers
from nascomp.compression_space import Candidate, CompressionSpace
from nascomp.config import group
from nascomp.cost import COSTS, Meter, check_device
from nascomp.ddp_worker import check_strategy
from nascomp.evaluator import Evaluation, StoredEvaluator
from nascomp.export import save_student
from nascomp.graph import ArchGraph, GraphError
from nascomp.pareto import REFERENCE, ParetoProblem, Scale
from nascomp.proxy_evaluator import ProxyEvaluator
from nascomp.report import history_rows, plot, plot_pareto, table, write_history, write_report, write_summary
from nascomp.reward import Objective, RewardRow
from nascomp.schema import KERNEL_METHODS, has_caps, resolved_pareto_mean, resolved_space
from nascomp.search import Record, SearchResult, run_search
from nascomp.signals import check_interrupted
from nascomp.store import RunStore, StoreError, config_diff, digest, hold_run, tensor_digest
from nascomp.tracking import Tracker, make_tracker
from nascomp.transfer import SourceKernels
from nascomp.training import PROXY_PLACEMENT, full_train, load_or_train_teacher, make_trainer, resolve_device

log = logging.getLogger("nascomp")


def teacher_checkpoint(cfg: DictConfig) -> Path:
    """The configured checkpoint, else the cache ``teacher_dir/<name>-<dataset>-w<width>-<hash>.pt``
    with the hash of :func:`teacher_key`: a teacher is reused only for the data and recipe it was trained with."""
    if cfg.teacher.checkpoint:
        return Path(cfg.teacher.checkpoint).expanduser()
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", cfg.teacher.name)
    return Path(cfg.teacher_dir) / f"{safe}-{cfg.dataset.name}-w{cfg.teacher.width:g}-{digest(teacher_key(cfg))[:12]}.pt"


def teacher_key(cfg: DictConfig) -> dict:
    """Everything a trained teacher depends on: the data (the ``dataset`` node with its folders as
    absolute paths, without ``download``; for ``imagefolder`` also :func:`folder_digest` of each), the
    teacher (name, width, kwargs) and its recipe (``teacher_training`` without its ``trainer`` node, which
    says where it runs, not what it learns)."""
    dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
    dataset.pop("download", None)
    for k in ("root", "test_root"):
        if dataset.get(k):
            dataset[k] = str(Path(dataset[k]).expanduser().resolve())
    if dataset.get("name") == "imagefolder":  # its contents too: images or classes added to the folder retrain
        dataset["contents"] = {k: folder_digest(Path(dataset[k])) for k in ("root", "test_root") if dataset.get(k)}
    teacher_recipe = OmegaConf.to_container(cfg.teacher_training, resolve=True)
    teacher_recipe.pop("trainer", None)
    teacher = {k: OmegaConf.to_container(cfg.teacher, resolve=True)[k] for k in ("name", "width", "kwargs")}
    return {"dataset": dataset, "teacher": teacher, "recipe": teacher_recipe}


def folder_digest(root: Path) -> str:
    """A digest of the files under ``root`` (followed links included, as ImageFolder reads them): each one's
    path relative to ``root`` and its size, sorted; a folder that is not a class (a name starting with '.')
    and the files of ``root`` itself are left out. Names and sizes, not times: a copied folder keeps its digest."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        if Path(dirpath) == root:  # class folders only: ImageFolder reads no file of root itself
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            continue
        for f in filenames:
            path = Path(dirpath) / f
            files.append((path.relative_to(root).as_posix(), path.stat().st_size if path.exists() else -1))
    return digest(sorted(files))


def load_teacher(cfg: DictConfig) -> tuple[data.Dataset, torch.nn.Module, float]:
    """The dataset, the teacher and its validation accuracy: ``teacher.checkpoint``, else the cached
    teacher (:func:`teacher_checkpoint`), trained with ``teacher_training`` and saved there first when
    the cache has none. A configured checkpoint that does not exist is a ``StartupError``."""
    dataset = data.load(cfg.dataset)
    check_teacher(cfg, dataset)
    checkpoint = teacher_checkpoint(cfg)
    if cfg.teacher.checkpoint and not checkpoint.is_file():
        raise StartupError(f"teacher.checkpoint {str(checkpoint)!r} does not exist")
    log.info("teacher %s: %s", cfg.teacher.name, f"loading {checkpoint}" if checkpoint.is_file() else f"training, then saving to {checkpoint}")
    teacher, teacher_acc = load_or_train_teacher(cfg.teacher.name, dataset, checkpoint, recipe(cfg, "teacher_training"),
                                                 cfg.teacher.width, cached=not cfg.teacher.checkpoint, **cfg.teacher.kwargs)
    return dataset, teacher, teacher_acc


def check_teacher(cfg: DictConfig, dataset: data.Dataset) -> None:
    """Build the configured teacher for this dataset and run one batch of it, before any work."""
    try:
        model = teachers.create(cfg.teacher.name, num_classes=dataset.num_classes, width=cfg.teacher.width,
                                in_channels=dataset.in_channels, **cfg.teacher.kwargs)
    except TypeError as exc:  # a keyword its constructor does not take, or a value of the wrong type
        raise StartupError(f"teacher {cfg.teacher.name} with teacher.kwargs={OmegaConf.to_container(cfg.teacher.kwargs)}: "
                           f"{exc}") from exc
    teachers.check_input(model, dataset.train.images[:8], dataset.num_classes, cfg.teacher.name)


def recipe(cfg: DictConfig, name: str) -> DictConfig:
    """A training recipe with the ``trainer`` group (where it trains) added to its own Trainer flags, and
    ``cfg.seed`` (the teacher keeps its recipe's own seed: one cached teacher serves every search seed).
    ``trainer.threads`` is not a Trainer argument: it is set once per process (``nascomp.threads``)."""
    r = cfg[name].copy()
    OmegaConf.set_struct(r, False)  # the recipe's trainer node gains the group's keys
    trainer = {k: v for k, v in OmegaConf.to_container(cfg.trainer).items() if k != "threads"}
    return OmegaConf.merge(r, {"trainer": trainer, **({} if name == "teacher_training" else {"seed": cfg.seed})})


def proxy_context(cfg: DictConfig, teacher: torch.nn.Module) -> str:
    """The store context of proxy evaluations: the teacher's weights, the dataset, the proxy recipe
    (with ``cfg.seed``, on one device as ``proxy_train`` runs it), the inheritance and the objective
    unless it is the default (:func:`stored_config`: the stored f and costs depend on it). Runs with
    equal contexts share their evaluations."""
    proxy = OmegaConf.merge(recipe(cfg, "proxy"), {"trainer": PROXY_PLACEMENT})
    objective = stored_config({"objective": OmegaConf.to_container(cfg.objective, resolve=True)})
    return digest({"teacher": tensor_digest(teacher.state_dict()), "dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
                   "proxy": OmegaConf.to_container(proxy, resolve=True), "inherit": cfg.inherit, **objective})


def describe_opaque(opaque: dict) -> str:
    """``ArchGraph.opaque`` in words: how many of the teacher's parameters are frozen, in which constructs."""
    if not opaque["constructs"]:
        return "every layer understood, no parameter frozen in opaque layers"
    return (f"{opaque['params']} params ({100 * opaque['share']:.1f}%) frozen in opaque layers: "
            + ", ".join(f"{name} x{n}" for name, n in opaque["constructs"].items()))


LATE_DEFAULTS = {("search", "acquisition", "ei_units"): "target", ("search", "paper", "acquisition", "ei_units"): "target",
                 ("search", "acquisition", "pareto_mean"): "zero", ("search", "paper", "acquisition", "pareto_mean"): "zero",
                 ("kernel", "sigma2_grid"): None, ("final", "select"): "top", ("final", "pool"): 16}
"""Keys added after runs were stored, at the value that behaves as those runs did: left out of the stored config
(with the ``objective`` node at ``conf/objective/params.yaml``: :func:`late_defaults`)."""


@functools.cache
def late_defaults() -> dict[tuple[str, ...], object]:
    """``LATE_DEFAULTS`` and the whole ``objective`` node at its default (the paper's Eq. 6, ``objective=params``)."""
    return {("objective",): OmegaConf.to_container(group("objective", "params"), resolve=True), **LATE_DEFAULTS}


def stored_config(config: dict) -> dict:
    """``config`` less what later versions added, where it holds the value that behaves as before
    (:func:`late_defaults`: the ``objective`` node when it is the paper's Eq. 6, each of ``LATE_DEFAULTS``;
    ``kernel.sigma2_grid`` also for every method but ``ours``, which alone reads it; ``final.select`` and
    ``final.pool`` also where ``select_finalists`` reads neither: one finalist, caps, Pareto mode), and
    ``final.prune`` always (it adds a row beside the answer, from the store on a rerun), ``search.acquisition.pareto_mean``
    but in ours' Pareto runs (only they read it; there ``auto`` is recorded as it resolves, ``schema.resolved_pareto_mean``:
    a params run before the front-prior rule resumes with ``pareto_mean=zero`` added); ``space.ops: auto`` is
    recorded as the operators it resolves to (``schema.resolved_space``; ``shrink_groups: auto`` stays, so no run id moves).
    Runs and stores made before those keys existed keep their run ids, contexts and recorded configs,
    so they resume and share evaluations as before."""
    out = copy.deepcopy(config)
    search = out.get("search")
    acquisition = search.get("acquisition") if isinstance(search, dict) else None
    if isinstance(acquisition, dict) and acquisition.get("pareto_mean") == "auto":  # recorded as it resolves; zero is then a late default
        objective = out.get("objective")
        acquisition["pareto_mean"] = resolved_pareto_mean("auto", objective if isinstance(objective, dict) else {})
    for (*path, key), default in late_defaults().items():
        node = functools.reduce(lambda d, k: d.get(k) if isinstance(d, dict) else None, path, out)
        if isinstance(node, dict) and key in node and node[key] == default:
            del node[key]
    search, kernel = out.get("search"), out.get("kernel")
    if isinstance(search, dict) and isinstance(kernel, dict) and search.get("method") != "ours":
        kernel.pop("sigma2_grid", None)  # read by ours alone (paper: search.paper.kernel's file): whatever its default, no other run's id moves
    final, objective = out.get("final"), out.get("objective")
    capped = isinstance(objective, dict) and has_caps(objective)
    pareto = isinstance(search, dict) and search.get("mode") == "pareto"
    if isinstance(final, dict) and not spreads_finalists("front", final.get("top_k", 1), capped, pareto):
        final.pop("select", None), final.pop("pool", None)  # select_finalists reads neither there: no run id moves
    if isinstance(acquisition, dict) and not (pareto and search.get("method") == "ours"):
        acquisition.pop("pareto_mean", None)  # read by ours in Pareto mode alone: its default moving moves no other run id
    if isinstance(final, dict):
        final.pop("prune", None)  # the pruning baseline changes neither the search nor the finalists: adding it resumes a run
    space = out.get("space")
    if isinstance(space, dict) and space.get("ops") == "auto":  # the operators searched: a latency run started before auto resumes
        space["ops"] = resolved_space(space, objective if isinstance(objective, dict) else {})["ops"]
    return out


class StartupError(RuntimeError):
    """A problem found before any work: missing data, a broken teacher checkpoint, an impossible setup."""


RESULT_FREE = ("logger", "store")  # config groups that do not change a run's results: where it logs, where its store is


def run_id_of(config: dict) -> str:
    """A run's id in the store: its resolved config, less what does not change its results
    (``RESULT_FREE``; and less the default objective: :func:`stored_config`)."""
    return digest({k: v for k, v in stored_config(config).items() if k not in RESULT_FREE})


@dataclass
class Setup:
    """Everything before the search, built once by ``Setup.build`` for the run (``run``) and for every
    benchmark: the data, the teacher and its validation accuracy, the teacher's graph and the search
    space over it, the run store, the store context of proxy evaluations, the proxy evaluator (local
    or Ray), the kernels transferred from another run (or None) and the reward (``objective``, which
    measures every student's costs)."""

    cfg: DictConfig
    config: dict  # cfg resolved to plain data (what the store and summary.json record)
    dataset: data.Dataset
    teacher: torch.nn.Module
    teacher_accuracy: float
    graph: ArchGraph
    space: CompressionSpace
    store: RunStore
    context: str
    proxy: ProxyEvaluator
    transfer: SourceKernels | None
    objective: Objective

    @classmethod
    def build(cls, cfg: DictConfig, run_dir: Path) -> "Setup":
        """Any problem raises ``StartupError`` naming it; the only work done is training a teacher that
        is not cached. The store is ``cfg.store.path``, else ``run_dir/store.sqlite``."""
        try:
            resolve_device(cfg.trainer.accelerator)
            for name in ("teacher_training", "full"):  # several devices: a strategy the DDP worker can run
                check_strategy(make_trainer(r := recipe(cfg, name)), r)
            check_device(cfg.objective.device)
            dataset, teacher, teacher_acc = load_teacher(cfg)
            graph = ArchGraph.from_module(teacher, tuple(dataset.train.images.shape[1:]))
            space = CompressionSpace(graph, **space_options(cfg))
            space.check_searchable()
            log.info("teacher: %d layers, %d params, val accuracy %.4f; %d removable layers, %d shrink groups, %d legal skips",
                     len(graph), graph.num_params, teacher_acc, len(space.removable), space.num_shrink_groups, len(space.skip_pairs))
            log.info("teacher: %s", describe_opaque(graph.opaque))
            config = OmegaConf.to_container(cfg, resolve=True)
            config["space"]["ops"] = list(space.ops)  # auto resolved: summary.json, W&B and the store say what was searched
            store = RunStore(cfg.store.path or Path(run_dir) / "store.sqlite")
            context = proxy_context(cfg, teacher)
            objective = Objective(cfg.objective, Meter(cfg.objective, store), graph, teacher_acc)
            log.info("objective %s%s; teacher costs: %s", cfg.objective.name,
                     f", constraint {objective.caps} (penalty p = {objective.penalty:g})" if objective.caps else "",
                     ", ".join(f"{k} {v:.4g}" for k, v in objective.teacher_costs.as_dict().items()))
            proxy = make_evaluator(cfg, config, teacher, teacher_acc, dataset, graph, objective,
                                   on_weights=lambda key, f, state: store.save_weights(context, key, f, state, kept_weights(cfg.final)))
            transfer = transferred_kernels(cfg, space)
        except StartupError:
            raise
        except (FileNotFoundError, ValueError, ImportError, GraphError, StoreError) as exc:
            raise StartupError(str(exc)) from exc
        return cls(cfg, config, dataset, teacher, teacher_acc, graph, space, store, context, proxy, transfer, objective)

    def pareto_problem(self) -> ParetoProblem:
        """The Pareto problem of ``search.mode=pareto`` (``pareto_problem``) for this run's objective;
        a teacher that cannot scale it is a ``StartupError``."""
        try:
            return pareto_problem(self.objective)
        except ValueError as exc:
            raise StartupError(f"search.mode=pareto: {exc}") from exc

    def proxy_weights(self, arch: Candidate, f: float) -> dict:
        """The proxy-trained weights of ``arch`` (proxy f ``f``): from the store, else proxy-trained
        again. The store keeps the weights of the best ``kept_weights(final)`` students of a context, and runs
        sharing a store share the context, so another run's better students can push a finalist's
        weights out (or a row can be unreadable); proxy training is seeded, so training it again gives
        the same weights. A finalist never starts from weights other than its own."""
        state = self.store.weights(self.context, arch.key)
        if state is not None:
            return state
        log.info("proxy weights of %s are not in the store (kept for the best %d students of every run sharing "
                 "it): proxy-training it again", arch.key[:12], kept_weights(self.cfg.final))
        (result,) = self.proxy.train([arch])
        if isinstance(result, Exception) or result.diverged:
            raise RuntimeError(f"proxy-training finalist {arch.key} again failed ({result!r}), although its "
                               f"recorded proxy training succeeded (f {f:.4f})")
        again = self.objective.reward(result.val_accuracy, self.objective.costs(arch.graph))
        if not math.isclose(again, f, rel_tol=1e-6, abs_tol=1e-9):
            log.warning("finalist %s: proxy training again gave f %.6f, the search recorded %.6f (non-deterministic "
                        "kernels on this device?); full training starts from the weights just trained",
                        arch.key[:12], again, f)
        return result.state_dict

    def open_run(self, run_id: str, resume: bool, config: dict | None = None) -> StoredEvaluator:
        """Register (or resume) ``run_id`` with ``config`` (default: this setup's) in the store; returns
        the proxy evaluator behind the store's cache."""
        try:
            resumed = self.store.open_run(run_id, stored_config(self.config if config is None else config), resume,
                                          ignore=RESULT_FREE)
        except StoreError as exc:
            raise StartupError(str(exc)) from exc
        if resumed:
            log.info("resuming run %s from %s: %d evaluations stored, %d were in flight", run_id, self.store.path,
                     self.store.count(self.context, run=run_id), len(self.store.inflight(run_id)))
        return StoredEvaluator(self.proxy, self.store, run_id, self.context)


def pareto_problem(objective: Objective) -> ParetoProblem:
    """``search.mode=pareto`` on real students: the front of (validation accuracy up, the objective's
    cost down; ``objective.name`` params | flops | latency | memory), normalised by the teacher
    (``nascomp.pareto.Scale``: accuracy over [0, teacher accuracy], cost over [0, teacher cost]), with
    the teacher's (accuracy, cost) as the reference architecture every kernel holds.

    The cost of an unevaluated candidate (``ParetoProblem.cost_of``, what the acquisition scores with) is
    ``Objective.predicted``: exact for params, FLOPs and memory, latency predicted by a per-layer table
    calibrated on the teacher. An evaluated student's cost is always its recorded one
    (``Record.latency_ms``: measured, as the objective measures it), so the front and its hypervolume hold
    measured figures only."""
    cost = objective.cost
    teacher_cost = float(getattr(objective.teacher_costs, cost))
    scale = Scale(0.0, objective.teacher_accuracy, 0.0, teacher_cost)  # ValueError: a teacher of accuracy 0
    cost_of = lambda arch: objective.predicted(arch.graph, cost)  # noqa: E731
    return ParetoProblem(cost, cost_of, scale, reference=(objective.teacher_accuracy, teacher_cost))


def pareto_summary(problem: ParetoProblem, history: Sequence[Record], finalists: Sequence[Record], name: str) -> dict:
    """``summary.json``'s ``pareto``: the objective ``name`` and its cost, the scale, the reference
    point, the teacher, the hypervolume after each evaluation (``curve``) and at the end, and the front
    of the evaluated students (cost ascending; proxy accuracy) with each one's history index,
    normalised (u, v), every cost and whether it is a finalist, and the ``finalists`` (``final.top_k``, in
    the order chosen), each with its history index, proxy accuracy, cost and whether it is on the front:
    ``ParetoProblem.spread`` takes points off the front when final.top_k exceeds the front's size."""
    index = {id(r): i for i, r in enumerate(history)}
    chosen = {r.arch.key for r in finalists}
    front = []
    for r in problem.front(history):
        v, u = problem.points([r])
        front.append({"index": index[id(r)], "key": r.arch.key, "accuracy": r.accuracy, "cost": getattr(r, problem.cost),
                      "f": r.f, "u": float(u[0]), "v": float(v[0]), **{c: getattr(r, c) for c in COSTS},
                      "finalist": r.arch.key in chosen})
    curve, on_front = problem.curve(history), {p["key"] for p in front}
    return {"objective": name, "cost": problem.cost, "hypervolume": problem.hypervolume(history),
            "curve": [float(h) for h in curve], "scale": asdict(problem.scale),
            "reference_point": {"u": REFERENCE[0], "v": REFERENCE[1]},
            "teacher": {"accuracy": problem.reference[0], "cost": problem.reference[1]}, "front": front,
            "finalists": [{"index": index[id(r)], "key": r.arch.key, "accuracy": r.accuracy, "cost": getattr(r, problem.cost),
                           "on_front": r.arch.key in on_front} for r in finalists]}


def transferred_kernels(cfg: DictConfig, space: CompressionSpace) -> SourceKernels | None:
    """The last kernels of the run stored at ``kernel.transfer_from`` (a run directory or a store file),
    with the data their GPs were conditioned on (``kernel.transfer_mode=zero_shot`` needs it)."""
    source = cfg.kernel.transfer_from
    if not source:
        return None
    if cfg.search.method not in KERNEL_METHODS:
        raise StartupError(f"kernel.transfer_from is set but search.method={cfg.search.method} trains no kernels; "
                           f"kernel transfer needs search.method={' or '.join(KERNEL_METHODS)}")
    path = Path(source).expanduser()
    path = path / "store.sqlite" if path.is_dir() else path
    if not path.is_file():
        raise StartupError(f"kernel.transfer_from: no run store at {str(path)!r}")
    store = RunStore(path)
    found = store.latest_kernels()
    count = lambda state: len(state.get("log_sigma_scale", ()))  # kernels in a state (0: not a kernel module's)
    if found is not None and 0 < count(found[2]) < cfg.search.K:
        # a store written before a short last step (budget no multiple of K) stopped storing its k < K
        # kernels: the run's last step with K of them
        run, step = found[:2]
        for earlier in (store.kernels(run, s) for s in range(step - 1, 0, -1)):
            if earlier is not None and count(earlier[1]) == cfg.search.K:
                found = (run, *earlier)
                break
    data = None if found is None else store.kernel_data(*found[:2])
    store.close()
    if found is None:
        raise StartupError(f"kernel.transfer_from: {str(path)!r} holds no kernels (was it a search with "
                           f"search.method={' or '.join(KERNEL_METHODS)}?)")
    run, step, state = found
    kernels = SourceKernels(state, data, f"run {run} (step {step}) in {path}")
    if cfg.kernel.transfer_mode == "zero_shot":
        kernels.zero_shot_data()  # its ValueError is a StartupError in Setup (exit 2)
    from nascomp.kernel import EmbeddingKernelModule, Featurizer
    from nascomp.search import kernel_settings

    kernel = kernel_settings(cfg)[0]
    try:
        EmbeddingKernelModule(kernel, cfg.search.K, Featurizer(space, kernel).input_size).load_state_dict(state)
    except RuntimeError as exc:
        raise StartupError(f"kernel.transfer_from: the stored kernels do not fit search.K={cfg.search.K} and this "
                           f"kernel config (use the source run's K, kernel.hidden, kernel.layers, space.max_offset; kernel=flat: space.shrink_groups and space.ops too): {str(exc).splitlines()[0]}") from exc
    log.info("kernel transfer (%s): the kernels of step %d of run %s in %s, %s", cfg.kernel.transfer_mode, step, run, path,
             "conditioned here but not trained" if cfg.kernel.transfer_mode == "search"
             else "on the source's data: their K proposals are the search")
    return kernels


def run(cfg: DictConfig, run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    run_id = run_id_of(OmegaConf.to_container(cfg, resolve=True))
    try:  # before any work: one process per run
        hold_run(cfg.store.path or run_dir / "store.sqlite", run_id)
    except StoreError as exc:
        raise StartupError(str(exc)) from exc
    setup = Setup.build(cfg, run_dir)
    teacher_acc, graph, store = setup.teacher_accuracy, setup.graph, setup.store
    problem = setup.pareto_problem() if cfg.search.mode == "pareto" else None
    warn_new_run(setup, run_id, run_dir)
    evaluator = setup.open_run(run_id, cfg.store.resume)
    tracker = make_tracker(cfg.logger, run_dir, setup.config)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      transient=False) as progress:
            budget = cfg.search.budget or cfg.search.K * (cfg.search.T + 1)
            budget = cfg.search.K if cfg.kernel.transfer_mode == "zero_shot" else budget
            steps = StepLog(tracker, progress, -(-budget // cfg.search.K), problem)
            kernel_options = {"transfer": setup.transfer,
                              "on_fit": lambda step, state, data: store.save_kernels(run_id, step, state, data)} if cfg.search.method in KERNEL_METHODS else {}
            result = run_search(setup.space, evaluator, cfg, seed=cfg.seed,
                                before_step=lambda step, state: record_or_check_rng(store, run_id, step, state),
                                after_step=steps, problem=problem, **kernel_options)
        store.append_history(run_id, [(i, r.step, r.proposer, r.arch.key) for i, r in enumerate(result.history)])
        log.info("search done: %d evaluations, %d from the store's cache", len(result.history), evaluator.hits)
        search_seconds = time.perf_counter() - started
        rows = history_rows(result.history, graph.num_params)
        objective = setup.objective
        write_history(rows, run_dir / "history.csv")
        tracker.log_history(rows)

        final_start = time.perf_counter()
        # Pareto mode: the finalists spread along the front (nascomp.pareto.spread), else the best by f
        # (with caps: the best that meet them, ``select_finalists``)
        top = problem.spread(result.history, cfg.final.top_k) if problem is not None else select_finalists(result.history, objective, cfg.final.top_k, cfg.final.select, cfg.final.pool)
        finalists = final_training(setup, top, run_dir)
        teacher_row = {**RewardRow.scored(teacher_acc, graph.num_params, objective.reference_f, graph.num_params).as_dict(),
                       **objective.teacher_costs.as_dict()}
        best = max(finalists, key=lambda r: r["f"]) if finalists else _search_best(select_finalists(result.history, objective, 1), graph.num_params)
        pruning = pruning_baseline(setup, best, run_dir) if finalists and cfg.final.prune else []
        summary = {
            "name": cfg.name, "experiment_group": cfg.experiment_group, "run_dir": str(run_dir),
            "teacher": {"name": cfg.teacher.name, **teacher_row},
            "opaque": graph.opaque,  # the teacher's parameters the space keeps whole, and the constructs holding them
            "best": best, "finalists": finalists, "objective": objective.describe(),
            "search": {"method": cfg.search.method, "K": cfg.search.K, "T": cfg.search.T,
                       **({"transfer_mode": cfg.kernel.transfer_mode} if cfg.kernel.transfer_from else {}),
                       "best_f": result.best_after(len(result.history)), **{f"seconds_{k}": v for k, v in result.seconds.items()}},
            "evaluations": len(result.history), "steps": result.steps + 1,
            "seconds": {"search": search_seconds, "final": time.perf_counter() - final_start,
                        "total": time.perf_counter() - started},
            "config": setup.config,
        }
        if pruning:
            summary["pruning"] = pruning
        if problem is not None:
            summary["pareto"] = pareto_summary(problem, result.history, top, objective.name)
        write_summary(summary, run_dir)
        plots = plot(rows, teacher_row, run_dir)
        if problem is not None:
            plots |= plot_pareto(summary["pareto"], rows, run_dir)
        write_report(summary, plots, run_dir)
        tracker.log_summary(summary)
        tracker.log_students({"best": run_dir / "best_student"} if (run_dir / "best_student").is_dir() else {})
        check_interrupted()  # a signal whose first raise a finaliser swallowed: the run is not finished
        store.finish_run(run_id)
    finally:
        tracker.finish()
        store.close()
    print(table([{"name": "teacher", **teacher_row}, {"name": "best student", **best},
                 *({"name": f"pruned ({r['importance']})", **r} for r in pruning if "error" not in r)]))
    print(f"outputs in {run_dir}")
    return summary


def warn_new_run(setup: Setup, run_id: str, run_dir: Path) -> None:
    """A run directory rerun with another config: its own store (``store.path`` unset) already holds a run,
    and this config's run id is not that one. A new run starts in the same store (the evaluations are
    shared) and its outputs replace the earlier run's in the directory; a WARNING says so, with the keys
    that differ from the run registered last. (A shared ``store.path`` holds many runs by design: no warning.)"""
    if setup.cfg.store.path or setup.store.status(run_id) is not None:
        return
    earlier = setup.store.latest_run(exclude=run_id)
    if earlier is None:
        return
    other, config, status = earlier
    diff = config_diff(config, stored_config(setup.config), ignore=RESULT_FREE)
    log.warning("%s already holds run %s (%s) with another config (%s%s): starting a new run %s in the same store "
                "(stored evaluations are reused); its history.csv, summary.json, report.md and plots replace that "
                "run's in %s. Rerun with the earlier config to resume that run, or give each config its own "
                "hydra.run.dir", setup.store.path, other, status, "; ".join(diff[:8]) or "no key differs",
                f"; {len(diff) - 8} more" if len(diff) > 8 else "", run_id, run_dir)


class StepLog:
    """``after_step`` of the search: logs each step (one line), advances the progress bar and tells
    the tracker the step's records and the best f so far; in Pareto mode (``problem``) also the
    hypervolume of every student so far (``search/hypervolume``)."""

    def __init__(self, tracker: Tracker, progress: Progress | None, total_steps: int, problem: ParetoProblem | None = None):
        self.tracker, self.progress, self.problem = tracker, progress, problem
        self.best, self.count = float("-inf"), 0
        self.records: list[Record] = []
        self.task = progress.add_task("search", total=total_steps) if progress else None

    def __call__(self, step: int, records: list[Record]) -> None:
        check_interrupted()  # the step is recorded; a signal a finaliser swallowed stops here
        ok = [r.f for r in records if not r.failed]
        self.count += len(records)
        self.best = max([self.best, *ok])
        self.records += records
        extra = {"hypervolume": self.problem.hypervolume(self.records)} if self.problem else {}
        log.info("step %d: %d evaluated (%d failed), best f in step %.4f, best f so far %.4f%s",
                 step, self.count, len(records) - len(ok), max(ok, default=float("nan")), self.best,
                 f", hypervolume {extra['hypervolume']:.4f}" if extra else "")
        self.tracker.log_step(step, records, self.best, extra or None)
        if self.progress:
            what = f"hypervolume {extra['hypervolume']:.4f}" if extra else f"best f {self.best:.4f}"
            self.progress.update(self.task, advance=1, description=f"search  {what}")


def record_or_check_rng(store: RunStore, run_id: str, step: int, state: dict) -> None:
    """Record the search's random-number state before each step; on a resumed run, check that the
    replay is at the state the interrupted run recorded."""
    stored = store.rng_state(run_id, step)
    if stored is None:
        store.save_rng_state(run_id, step, state)
    elif stored != json.loads(json.dumps(state)):
        log.warning("step %d: the replayed search's random-number state differs from the recorded run's; "
                    "the resumed history may differ from an uninterrupted one", step)


def space_options(cfg: DictConfig) -> dict:
    """The compression space's options of a run (``cfg.space``), ``auto`` resolved by its objective
    (``schema.resolved_space``)."""
    return resolved_space(OmegaConf.to_container(cfg.space, resolve=True), cfg.objective)


def make_evaluator(cfg, config: dict, teacher, teacher_acc: float, dataset, graph: ArchGraph, objective: Objective,
                   on_weights) -> ProxyEvaluator:
    """``evaluator=local`` (this process) or ``evaluator=ray`` (one Ray task per student). A ``kind``
    rather than a ``_target_``: both are built from runtime objects (the teacher module, the dataset,
    the store callback) and Ray's from what rebuilds them remotely, which a config node cannot hold."""
    args = (teacher, teacher_acc, dataset, recipe(cfg, "proxy"), cfg.inherit, cfg.cohort, on_weights)
    if cfg.evaluator.kind == "local":
        return ProxyEvaluator(*args, objective=objective)
    from nascomp.ray_evaluator import RayEvaluator

    spec = {"name": cfg.teacher.name, "num_classes": dataset.num_classes, "width": cfg.teacher.width,
            "kwargs": config["teacher"]["kwargs"]}
    return RayEvaluator(*args, objective=objective, ray_cfg=cfg.evaluator, teacher_spec=spec, dataset_cfg=config["dataset"],
                        graph_json=graph.to_json(), space_options=space_options(cfg))


def spreads_finalists(select: str, k: int, capped: bool, pareto: bool = False) -> bool:
    """Whether ``final.select`` chooses the finalists (``select_finalists``): ``front`` with more than one
    finalist, no caps, single mode; everywhere else they are the best by f (Pareto mode: its own spread)."""
    return select == "front" and k > 1 and not capped and not pareto


def kept_weights(final) -> int:
    """How many proxy-trained weights the store keeps per context: the students ``select_finalists`` may
    pick (``final.top_k``; ``final.pool`` with ``final.select=front`` and more than one finalist)."""
    return max(final.top_k, final.pool) if spreads_finalists(final.select, final.top_k, capped=False) else final.top_k


def select_finalists(history: Sequence[Record], objective: Objective, k: int, select: str = "top", pool: int = 16) -> list[Record]:
    """The ``k`` students to train fully (``final.top_k``, ``final.select``, ``final.pool``).
    ``select="top"`` (the default): the best by f (failed evaluations left out); with caps (the constraint
    form) the best by f among those that meet every cap, fewer than ``k`` when fewer meet them (with a
    warning), so every finalist, and the answer picked among them, meets the caps. Only when no evaluated
    student meets them are the finalists the ``k`` least over them (``Objective.violation`` ascending, then
    f), with a warning. (A penalised f can rank a student over its cap above one within it, so a list
    filled up with such students could end in an answer over the cap.)
    ``select="front"`` (``final.select``'s default): the ``k`` spread along the front of (proxy accuracy,
    the objective's cost) (``pareto.spread``, as Pareto mode's finalists) among the ``pool`` that
    ``select="top"`` picks (at least ``k``): the proxy's order of the near-best students is a hedge, not a ranking,
    and it may leave out the best by f (spread's first pick maximises hypervolume, not Eq. 6); the
    answer is the best by full f (README "The finalist rule"). One finalist (``k`` = 1) hedges nothing,
    and with caps f is the accuracy ratio, with no cost in it to trade against (the rule measured Eq. 6):
    either way the finalists are the best by f."""
    if spreads_finalists(select, k, bool(objective.caps)):
        return pareto_problem(objective).spread(select_finalists(history, objective, max(pool, k)), k)
    ranked = SearchResult(list(history)).top(len(history))
    if not objective.caps:
        return ranked[:k]
    over = {id(r): objective.violation(record_costs(r, objective)) for r in ranked}
    feasible = [r for r in ranked if over[id(r)] <= 1.0]
    if len(feasible) >= k:
        return feasible[:k]
    if feasible:
        log.warning("only %d of %d evaluated students meet the caps %s: %d finalists instead of %d",
                    len(feasible), len(ranked), objective.caps, len(feasible), k)
        return feasible
    least = sorted(ranked, key=lambda r: (over[id(r)], -r.f))[:k]
    log.warning("none of %d evaluated students meets the caps %s: the %d finalists are the least over them (%s)",
                len(ranked), objective.caps, len(least), ", ".join(f"{r.arch.key[:12]} x{over[id(r)]:.3g}" for r in least))
    return least


def record_costs(r: Record, objective: Objective) -> dict[str, float]:
    """The costs of ``r`` that ``objective`` caps: as recorded, else (a record stored before that cost
    was) measured by the objective's meter."""
    measured = None
    out = {}
    for c in objective.caps:
        value = getattr(r, c)
        if value is None:
            measured = measured or objective.costs(r.arch.graph).as_dict()
            value = measured[c]
        out[c] = float(value)
    return out


def _search_best(top: Sequence[Record], teacher_params: int) -> dict:
    r = top[0]  # a search without one success ends in SearchFailed
    return {"key": r.arch.key, **RewardRow.scored(r.accuracy, r.num_params, r.f, teacher_params).as_dict(),
            **{c: getattr(r, c) for c in COSTS}, "test_accuracy": None, "fully_trained": False}


def full_context(setup: Setup) -> str:
    """The store context of full-training results: the proxy context and the full recipe."""
    return digest({"proxy": setup.context, "full": OmegaConf.to_container(recipe(setup.cfg, "full"), resolve=True)})


def full_row(setup: Setup, graph: ArchGraph, res) -> dict:
    """A fully trained student's row: its validation accuracy, parameters, ratio, times and f by the run's
    objective (caps too), every cost (``COSTS``) and its test accuracy (``res``: ``training.full_train``'s)."""
    costs = setup.objective.costs(graph)
    f = setup.objective.reward(res.val_accuracy, costs)
    return {**RewardRow.scored(res.val_accuracy, graph.num_params, f, setup.graph.num_params).as_dict(), **costs.as_dict(),
            "test_accuracy": res.test_accuracy, "fully_trained": True}


def final_training(setup: Setup, top: Sequence[Record], run_dir: Path) -> list[dict]:
    """Fully train the finalists ``top`` (``select_finalists``: ``final.top_k`` of the best by f that meet
    any caps, by ``final.select``; in Pareto mode the ``final.top_k`` spread along the front, ``ParetoProblem.spread``), each from its own proxy
    weights (``Setup.proxy_weights``; each result kept in the store, so a resumed run does not train a
    finalist twice); export the best by f. Each finalist's row carries its costs (``COSTS``)."""
    cfg, store, dataset, teacher = setup.cfg, setup.store, setup.dataset, setup.teacher
    if not cfg.final.enabled:
        return []
    full_cfg = recipe(cfg, "full")
    final_context = full_context(setup)
    out, modules = [], {}
    for r in top:
        student = r.arch.build(teacher, inherit=cfg.inherit)
        stored = store.final(final_context, r.arch.key)
        if stored is not None:
            row, state = stored
            log.info("full training of %s: from the store", r.arch.key[:12])
        else:
            student.load_state_dict(setup.proxy_weights(r.arch, r.f))
            log.info("full training of %s (%d params, proxy f %.4f)", r.arch.key[:12], r.num_params, r.f)
            res = full_train(student, dataset, full_cfg)
            state = res.state_dict
            row = {"key": r.arch.key, **full_row(setup, r.arch.graph, res), "proxy_f": r.f}
            store.save_final(final_context, r.arch.key, row, state)
        student.load_state_dict(state)
        out.append(row)
        modules[r.arch.key] = (r.arch, student)
    if out:
        best = max(out, key=lambda row: row["f"])
        arch, student = modules[best["key"]]
        save_student(run_dir / "best_student", arch.graph, student)
    return out


def pruned_teacher(setup: Setup, target_params: int, importance: str) -> tuple[Candidate, torch.nn.Module]:
    """The teacher channel-pruned by Torch-Pruning (``nascomp.pruning.prune``, global ranking by
    ``importance``) to at most ``target_params`` parameters, as a student of the search space over its own
    graph (``nascomp.pruning.as_student``: the same function; it trains, is stored and exported as every
    student is). A target it cannot reach is a ``PruningError``."""
    from nascomp.pruning import as_student, prune

    example = setup.dataset.train.images[:2]
    return as_student(prune(setup.teacher, example, target_params, importance), tuple(example.shape[1:]))


def pruned_student(setup: Setup, target_params: int, importance: str, full: bool = True) -> tuple[Candidate, torch.nn.Module, Evaluation, dict | None]:
    """"Why not just prune it?": ``pruned_teacher``, proxy-distilled as every searched student is
    (``ProxyEvaluator.evaluate_modules``: the proxy recipe, its Trainer, epochs, loss and data) and, with
    ``full``, fully trained from those weights by the full recipe (``training.full_train``), f by the run's
    objective (its caps too) from the full training's validation accuracy (``full_row``). Returns the
    candidate, the module (holding the best epoch's weights of its last training), the proxy evaluation
    and the full-training row (None without ``full``). A ``PruningError`` (no such target) and a failed
    proxy training (``RuntimeError``) propagate."""
    candidate, student = pruned_teacher(setup, target_params, importance)
    (evaluation, _), = setup.proxy.evaluate_modules([student])
    if evaluation.failed:
        raise RuntimeError(f"proxy training of the teacher pruned with {importance} importance failed: {evaluation.error}")
    if not full:
        return candidate, student, evaluation, None
    res = full_train(student, setup.dataset, recipe(setup.cfg, "full"))
    row = {"importance": importance, "key": candidate.key, **full_row(setup, candidate.graph, res),
           "proxy_f": evaluation.f, "proxy_accuracy": evaluation.accuracy}
    return candidate, student, evaluation, row


def pruning_baseline(setup: Setup, answer: dict, run_dir: Path) -> list[dict]:
    """``final.prune``: for each importance, the teacher pruned to the answer's parameter count
    (``pruned_student``), fully trained, beside the answer: its row (``f_minus_answer``: its full f less
    the answer's, > 0 where pruning is ahead), kept in the store (a resumed run does not train it twice;
    a stored row whose network pruning no longer gives, another Torch-Pruning say, is trained again)
    and exported to ``run_dir/pruned_<importance>`` (``nascomp.load_student`` reads it as it reads
    ``best_student``). The answer stays the search's. An importance that fails (a target it cannot
    reach, a failed training) is a row with ``error`` and a warning: the run's outputs are still written."""
    out, context = [], full_context(setup)
    for importance in setup.cfg.final.prune:
        key = f"prune:{importance}:{answer['num_params']}"
        try:
            stored, row = setup.store.final(context, key), None
            if stored is not None:
                candidate, student = pruned_teacher(setup, answer["num_params"], importance)
                row, state = stored
                if row.get("key") == candidate.key:
                    student.load_state_dict(state)
                    log.info("pruning baseline (%s): from the store", importance)
                else:
                    log.warning("pruning baseline (%s): the stored row is of another network than pruning gives now: "
                                "training it again", importance)
                    row = None
            if row is None:
                log.info("pruning baseline: the teacher pruned with %s importance to the answer's %d parameters",
                         importance, answer["num_params"])
                candidate, student, _, row = pruned_student(setup, answer["num_params"], importance)
                setup.store.save_final(context, key, row, {k: v.detach().cpu() for k, v in student.state_dict().items()})
        except Exception as exc:  # the run's own outputs come first (Interrupted is no Exception: it still stops the run)
            log.warning("pruning baseline (%s) failed: %s: %s", importance, type(exc).__name__, exc)
            out.append({"importance": importance, "error": f"{type(exc).__name__}: {exc}"})
            continue
        row = {**row, "f_minus_answer": row["f"] - answer["f"]}
        candidate.save(run_dir / f"pruned_{importance}", student)
        log.info("pruning baseline (%s): %d parameters, validation accuracy %.4f, f %.4f (%+.4f against the answer)",
                 importance, row["num_params"], row["accuracy"], row["f"], row["f_minus_answer"])
        out.append(row)
    return out
