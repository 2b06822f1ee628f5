"""Typed schemas of the main config: ``validate(cfg)`` merges the composed config into them, so a
wrong type (``search.K=eight``), an unknown key or a value out of range fails at startup with a
message naming it. The schemas hold types and ranges only; every default value lives in ``conf/``.

The choice lists below are the only copy: the modules that also check a value for Python API users
who build objects without the config (``nascomp.kernel``, ``nascomp.compression_space``, ...) import
them from here, and the compression space calls ``check_space`` too. This module imports no torch,
so ``python -m nascomp.run`` rejects a bad config before loading it.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


DATASETS = ("cifar10", "cifar100", "digits", "imagefolder", "synthetic")
OPERATORS = ("remove", "shrink", "skip")  # the compression space's operators (paper 3.2)
SHRINK_ONLY = ("shrink",)  # space.ops: auto without latency (resolved_space; the skip-free rule, README)
SHRINK_GROUPS = ("auto", "width", "structural")  # auto: structural, width in a run with caps (resolved_space)
MAXIMIZERS = ("random", "evolution")
PARETO_MEANS = ("auto", "zero", "cost", "front")  # search.acquisition.pareto_mean (nascomp.pareto.cost_prior; auto: resolved_pareto_mean)
PARETO_PARENTS = ("accuracy", "spread")  # search.acquisition.pareto_parents (nascomp.pareto.ParetoProposer)
PARETO_BATCHES = ("believer", "independent")  # search.acquisition.pareto_batch (nascomp.pareto.ParetoProposer)
PARETO_UNITS = ("target", "accuracy")  # search.acquisition.pareto_units (nascomp.pareto.ParetoProposer)
FINAL_SELECT = ("top", "front")  # final.select (nascomp.pipeline.select_finalists)
EI_UNITS = ("target", "reward")  # search.acquisition.ei_units (nascomp.search.KernelProposer.acquire)
METHODS = ("ours", "paper", "random", "tpe", "rea", "local", "smac", "nsga2", "motpe")
KERNEL_METHODS = ("ours", "paper")  # the methods that train kernels (ours: conf kernel.*; paper: the reference settings)
TRANSFER_MODES = ("search", "zero_shot")  # kernel.transfer_mode (nascomp.transfer)
MODES = ("single", "pareto")  # search.mode: one reward f, or the front of (accuracy, cost) (nascomp.pareto)
PARETO_METHODS = ("ours", "paper", "random", "nsga2", "motpe")  # the methods of search.mode=pareto
PARETO_ONLY = ("nsga2", "motpe")  # multi-objective baselines: search.mode=pareto only
BEST_F = ("subset", "global")
TARGETS = ("f", "accuracy")
EMBEDDINGS = ("lstm", "flat")
POOLS = ("mean", "concat", "both")
NUMERIC = ("log", "raw", "relative")
SIGMA2_MODES = ("absolute", "relative")
WARPS = ("none", "power")
OBJECTIVES = ("posterior", "marginal", "euclidean")
LOSSES = ("mse_logits", "kl", "ce")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
# trainer.precision: auto (bf16-mixed on CUDA, 32-true elsewhere: nascomp.training.make_trainer) or one of
# Lightning's own (lightning.fabric.connector's precision inputs; tests/test_run.py checks the list against them)
PRECISIONS = ("auto", "transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true",
              "bf16-mixed", "32-true", "64-true", "64", "32", "16", "bf16")
INHERIT = ("first", "l1", "none")
PRUNING_IMPORTANCES = ("l2", "l1", "bn_scale")  # final.prune, benchmarks/pruning.py --importance (nascomp.pruning)
EVALUATORS = ("local", "ray")
DEPLOYMENT_OBJECTIVES = ("params", "flops", "latency", "memory")  # conf/objective (nascomp.reward.COST_OF)


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key."""


# ranges: (low, high, low inclusive, high inclusive); None = unbounded
def _range(low=None, high=None, low_ok=True, high_ok=True, choices=None):
    return field(default=MISSING, metadata={"range": (low, high, low_ok, high_ok), "choices": choices})


def _choice(*choices):
    return field(default=MISSING, metadata={"choices": choices})


@dataclass
class TeacherSchema:
    name: str = MISSING
    width: float = _range(0.0, None, low_ok=False)
    kwargs: dict = field(default_factory=dict)
    checkpoint: Optional[str] = MISSING


@dataclass
class AugmentSchema:
    padding: int = _range(0)
    flip: bool = MISSING


@dataclass
class DatasetSchema:
    name: str = _choice(*DATASETS)
    num_classes: Optional[int] = None
    root: Optional[str] = None
    test_root: Optional[str] = None
    download: Optional[bool] = None
    val_size: Optional[int] = None
    image_size: Optional[int] = None
    split: Optional[dict] = None
    shape: Optional[list] = None  # synthetic only: (C, H, W)
    signal: Optional[float] = None  # synthetic only
    mean: list = MISSING
    std: list = MISSING
    augment: AugmentSchema = field(default_factory=AugmentSchema)


@dataclass
class SpaceSchema:
    ops: Any = MISSING  # auto, or a list of OPERATORS
    remove_p: list = MISSING
    skip_p: list = MISSING
    shrink_low: float = _range(0.0, 1.0)
    shrink_high: float = _range(0.0, 1.0, low_ok=False)
    shrink_groups: str = _choice(*SHRINK_GROUPS)
    max_offset: int = _range(1)
    max_tries: int = _range(1)


@dataclass
class AcquisitionSchema:
    maximizer: str = _choice(*MAXIMIZERS)
    samples: int = _range(1)
    log_ei: bool = MISSING
    parents: int = _range(1)
    generations: int = _range(1)
    random_share: float = _range(0.0, 1.0)
    local_kernels: int = _range(0)
    within_caps: bool = MISSING
    pareto_parents: str = _choice(*PARETO_PARENTS)
    pareto_batch: str = _choice(*PARETO_BATCHES)
    pareto_units: str = _choice(*PARETO_UNITS)
    pareto_mean: str = _choice(*PARETO_MEANS)
    ei_units: str = _choice(*EI_UNITS)


@dataclass
class TPESchema:
    n_startup_trials: Optional[int] = _range(0)  # None: the first K that succeeded (nascomp.baselines)
    multivariate: bool = MISSING
    constant_liar: bool = MISSING


@dataclass
class ReaSchema:
    population: int = _range(1)
    tournament: int = _range(1)


@dataclass
class LocalSchema:
    neighbours: int = _range(1)


@dataclass
class NSGA2Schema:
    population_size: Optional[int] = _range(2)  # None: search.K


@dataclass
class SearchSchema:
    method: str = _choice(*METHODS)
    mode: str = _choice(*MODES)
    K: int = _range(1)
    T: int = _range(0)
    budget: Optional[int] = None
    subset_prob: float = _range(0.0, 1.0, low_ok=False)
    max_failed_steps: int = _range(1)
    best_f: str = _choice(*BEST_F)
    target: str = _choice(*TARGETS)
    acquisition: AcquisitionSchema = field(default_factory=AcquisitionSchema)
    paper: dict = field(default_factory=dict)
    tpe: TPESchema = field(default_factory=TPESchema)
    rea: ReaSchema = field(default_factory=ReaSchema)
    local: LocalSchema = field(default_factory=LocalSchema)
    nsga2: NSGA2Schema = field(default_factory=NSGA2Schema)


@dataclass
class KernelSchema:
    embedding: str = _choice(*EMBEDDINGS)
    hidden: int = _range(1)
    layers: int = _range(1)
    pool: str = _choice(*POOLS)
    feature_cache_mb: float = _range(0)
    numeric: str = _choice(*NUMERIC)
    sigma2: float = _range(0.0, None, low_ok=False)
    sigma2_mode: str = _choice(*SIGMA2_MODES)
    sigma2_grid: Optional[list] = None  # positive numbers (validate)
    learn_sigma: bool = MISSING
    noise: float = _range(0.0, None, low_ok=False)
    standardize: bool = MISSING
    warp: str = _choice(*WARPS)
    transfer_from: Optional[str] = None
    transfer_mode: str = _choice(*TRANSFER_MODES)
    objective: str = _choice(*OBJECTIVES)
    optimizer: dict = field(default_factory=dict)
    max_steps: int = _range(1)
    ema: dict = field(default_factory=dict)


@dataclass
class RecipeSchema:
    epochs: int = _range(1)
    batch_size: int = _range(1)
    loss: str = _choice(*LOSSES)
    temperature: Optional[float] = None
    alpha: Optional[float] = None
    optimizer: dict = field(default_factory=dict)
    scheduler: Optional[dict] = None
    seed: int = MISSING
    channels_last: bool = MISSING
    compile: Optional[bool] = None
    release_host_heap: Optional[bool] = None  # proxy recipe only
    trainer: dict = field(default_factory=dict)


@dataclass
class TrainerSchema:
    accelerator: str = _choice(*ACCELERATORS)
    devices: int = MISSING  # -1 (every device) or >= 1 (checked in validate)
    strategy: str = MISSING
    precision: str = _choice(*PRECISIONS)
    threads: Any = MISSING  # auto | an int >= 1 (checked in validate)


@dataclass
class LoggerSchema:
    _target_: str = MISSING  # the Tracker class: nascomp.tracking.WandbTracker | CSVTracker | Tracker (nothing)
    project: Optional[str] = None
    entity: Optional[str] = None
    mode: Optional[str] = None


@dataclass
class FinalSchema:
    top_k: int = _range(1)
    enabled: bool = MISSING
    select: str = _choice(*FINAL_SELECT)
    pool: int = _range(1)
    prune: Any = MISSING  # a list of PRUNING_IMPORTANCES (validate)


@dataclass
class EvaluatorSchema:
    kind: str = _choice(*EVALUATORS)
    address: Optional[str] = None
    local_cpus: Optional[int] = None
    num_gpus: Optional[Any] = None
    num_cpus: Optional[float] = None
    max_retries: Optional[int] = None
    timeout_s: Optional[float] = None


@dataclass
class StoreSchema:
    path: Optional[str] = MISSING
    resume: bool = MISSING


@dataclass
class ConstraintSchema:
    num_params: Optional[float] = _range(0.0, None, low_ok=False)
    flops: Optional[float] = _range(0.0, None, low_ok=False)
    latency_ms: Optional[float] = _range(0.0, None, low_ok=False)
    memory_mb: Optional[float] = _range(0.0, None, low_ok=False)


@dataclass
class ObjectiveSchema:
    name: str = _choice(*DEPLOYMENT_OBJECTIVES)
    device: str = MISSING
    batch_size: int = _range(1)
    warmup: int = _range(0)
    repeats: int = _range(1)
    latency_table: bool = MISSING
    penalty: float = _range(0.0, None, low_ok=False)
    constraint: ConstraintSchema = field(default_factory=ConstraintSchema)


@dataclass
class ConfigSchema:
    seed: int = MISSING
    name: str = MISSING
    experiment_group: str = MISSING
    inherit: str = _choice(*INHERIT)
    cohort: bool = MISSING
    teacher_dir: str = MISSING
    teacher: TeacherSchema = field(default_factory=TeacherSchema)
    dataset: DatasetSchema = field(default_factory=DatasetSchema)
    space: SpaceSchema = field(default_factory=SpaceSchema)
    search: SearchSchema = field(default_factory=SearchSchema)
    kernel: KernelSchema = field(default_factory=KernelSchema)
    proxy: RecipeSchema = field(default_factory=RecipeSchema)
    full: RecipeSchema = field(default_factory=RecipeSchema)
    teacher_training: RecipeSchema = field(default_factory=RecipeSchema)
    trainer: TrainerSchema = field(default_factory=TrainerSchema)
    logger: LoggerSchema = field(default_factory=LoggerSchema)
    final: FinalSchema = field(default_factory=FinalSchema)
    store: StoreSchema = field(default_factory=StoreSchema)
    evaluator: EvaluatorSchema = field(default_factory=EvaluatorSchema)
    objective: ObjectiveSchema = field(default_factory=ObjectiveSchema)
    extra: dict = field(default_factory=dict)  # free-form keys of plugins and experiments


# what to set for the keys that a config group leaves mandatory (???)
_NEEDED = {
    "dataset.root": "dataset=imagefolder needs dataset.root=/path/to/images, a folder with one sub-folder of images per class",
    "teacher.name": ("teacher=custom needs teacher.name=my_package.models:MyNet, an importable teacher class; "
                     "teacher=torchvision and teacher=timm a model name there, e.g. teacher.name=efficientnet_b0"),
    "teacher.checkpoint": "teacher=custom needs its trained weights: teacher.checkpoint=/path/to/teacher.pt (a state_dict)",
}


def validate(cfg: DictConfig) -> DictConfig:
    """The config merged into ``ConfigSchema`` (types converted), with every range checked."""
    missing = _missing(OmegaConf.to_container(cfg, resolve=False))  # before the merge, which would hide them
    if missing:
        key = missing[0]
        raise ConfigError(f"{key}: no value given (???); {_NEEDED.get(key, f'set {key}=... on the command line')}")
    try:
        typed = OmegaConf.merge(OmegaConf.structured(ConfigSchema), cfg)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        msg = str(exc).splitlines()[0]
        raise ConfigError(f"{key}: {msg}" if key else msg) from None
    _check(typed, ConfigSchema, "")
    threads = typed.trainer.threads
    if threads != "auto" and (type(threads) is not int or threads < 1):
        raise ConfigError(f"trainer.threads: {threads!r} must be auto or an integer >= 1 (torch threads per process)")
    check_space(typed.space)
    for name in ("trainer", *(f"{r}.trainer" for r in RECIPES)):
        check_placement(name, OmegaConf.select(typed, name))
    for r in RECIPES:
        check_recipe(r, typed[r])
    check_logger(typed.logger)
    budget = typed.search.budget if typed.search.budget is not None else typed.search.K * (typed.search.T + 1)
    if typed.search.budget is not None and typed.search.budget < 1:
        raise ConfigError(f"search.budget: {typed.search.budget} is out of range (must be >= 1)")
    grid = typed.kernel.sigma2_grid
    if grid is not None and (not grid or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in grid)):
        raise ConfigError(f"kernel.sigma2_grid must be null or a non-empty list of positive numbers, got {list(grid)}")
    if typed.kernel.transfer_from and typed.search.method not in KERNEL_METHODS:
        raise ConfigError(f"kernel.transfer_from is set but search.method={typed.search.method} trains no kernels; "
                          f"kernel transfer needs search.method={' or '.join(KERNEL_METHODS)}")
    if typed.kernel.transfer_mode == "zero_shot":
        if not typed.kernel.transfer_from:
            raise ConfigError("kernel.transfer_mode=zero_shot needs kernel.transfer_from: the run directory (or store "
                              "file) of the source search whose kernels propose here")
        if typed.search.target != "f" and typed.search.method == "ours":
            raise ConfigError("kernel.transfer_mode=zero_shot proposes by EI on f with the source's kernels; "
                              "search.target=accuracy needs this run's data: use kernel.transfer_mode=search")
        budget = typed.search.K  # the K proposals of the source's kernels are the whole search
    elif typed.kernel.transfer_from and budget % typed.search.K:
        raise ConfigError(f"kernel.transfer_from: transferred kernels propose K = {typed.search.K} per step; "
                          f"the budget ({budget}) must be a multiple of K")
    if typed.search.method == "smac" and importlib.util.find_spec("smac") is None:
        raise ConfigError("search.method: smac needs SMAC3, an optional dependency: pip install 'nascomp[peer]'")
    check_mode(typed)
    if typed.search.target == "accuracy" and typed.search.method == "ours":
        from nascomp.reward import measured_costs

        unknown = measured_costs(typed.objective.name, [c for c, v in typed.objective.constraint.items() if v is not None])
        if unknown:
            raise ConfigError(f"search.target=accuracy needs f's cost known before training (num_params or flops); "
                              f"{', '.join(unknown)} is measured: use search.target=f")
    prune = typed.final.prune
    prune = list(prune) if OmegaConf.is_list(prune) else prune
    if not isinstance(prune, list) or any(p not in PRUNING_IMPORTANCES for p in prune) or len(set(prune)) < len(prune):
        raise ConfigError(f"final.prune must be a list of distinct pruning importances ({', '.join(PRUNING_IMPORTANCES)}), "
                          f"e.g. final.prune=[l1]; got {prune}")
    if prune and not typed.final.enabled:
        raise ConfigError("final.prune compares fully trained students: it needs final.enabled=true")
    if prune and importlib.util.find_spec("torch_pruning") is None:
        raise ConfigError("final.prune needs Torch-Pruning, an optional dependency: pip install 'nascomp[prune]'")
    if typed.final.enabled and typed.final.top_k > budget:
        raise ConfigError(f"final.top_k ({typed.final.top_k}) exceeds the search budget ({budget})")
    return typed


RECIPES = ("proxy", "full", "teacher_training")  # the training recipes of a run (conf/training)


def check_placement(name: str, node: Any) -> None:
    """A Trainer placement node (``trainer``, or a recipe's own ``trainer`` flags): ``devices`` -1 (every
    device) or a count >= 1, ``precision`` one of ``PRECISIONS``; keys it does not set are left to the
    ``trainer`` group."""
    node = {} if node is None else node
    devices = node.get("devices")
    if devices is not None and (type(devices) is not int or (devices != -1 and devices < 1)):
        raise ConfigError(f"{name}.devices: {devices!r} must be -1 (every device) or a count >= 1")
    precision = node.get("precision")
    if precision is not None and str(precision) not in PRECISIONS:
        raise ConfigError(f"{name}.precision: {precision!r} is not one of {', '.join(PRECISIONS)}")


def check_recipe(name: str, recipe: Any) -> None:
    """A training recipe's optimizer and scheduler, built on one dummy parameter as ``StudentModule``
    builds them: a bad class, argument or value (e.g. a negative learning rate) is a ``ConfigError``
    before any work rather than a failure at the first training, which for ``full`` comes after the
    whole search."""
    import torch
    from hydra.utils import instantiate

    for part in ("optimizer", "scheduler"):
        if recipe.get(part) is None:
            continue
        try:
            if part == "optimizer":
                optimizer = instantiate(recipe.optimizer)([torch.nn.Parameter(torch.zeros(1))])
            else:
                instantiate(recipe.scheduler)(optimizer)
        except Exception as exc:  # noqa: BLE001: whatever the class raises for its arguments
            what = str(exc).splitlines()[0] if str(exc) else repr(exc)
            raise ConfigError(f"{name}.{part}: {type(exc).__name__}: {what}") from None


def check_logger(logger: Any) -> None:
    """``logger._target_`` names a tracker class (``nascomp.tracking.Tracker`` or a subclass)."""
    from hydra.utils import get_class

    from nascomp.tracking import Tracker

    try:
        cls = get_class(logger._target_)
    except Exception as exc:  # noqa: BLE001: hydra raises several kinds for a bad path
        raise ConfigError(f"logger._target_: {logger._target_!r} names no class ({str(exc).splitlines()[0]}); "
                          f"conf/logger/*.yaml name nascomp.tracking.WandbTracker, CSVTracker or Tracker") from None
    if not (isinstance(cls, type) and issubclass(cls, Tracker)):
        raise ConfigError(f"logger._target_: {logger._target_!r} is not a nascomp.tracking.Tracker")


def check_mode(cfg: Any) -> None:
    """``search.mode`` against the method and the objective: Pareto mode runs ``PARETO_METHODS`` on the
    front of (accuracy, the objective's cost), without caps; ``nsga2`` and ``motpe`` are Pareto mode's."""
    mode, method = cfg.search.mode, cfg.search.method
    if mode == "pareto" and method not in PARETO_METHODS:
        raise ConfigError(f"search.method={method} has no Pareto mode; with search.mode=pareto choose one of "
                          f"{', '.join(PARETO_METHODS)}")
    if mode == "single" and method in PARETO_ONLY:
        raise ConfigError(f"search.method={method} is a multi-objective baseline: add search.mode=pareto "
                          f"(or choose a single-objective method)")
    if mode == "pareto" and method in KERNEL_METHODS and cfg.kernel.transfer_mode == "zero_shot":
        raise ConfigError("kernel.transfer_mode=zero_shot proposes the source kernels' maximisers of f, not points of a "
                          "front; with search.mode=pareto use kernel.transfer_mode=search")
    if mode == "pareto" and method == "ours" and cfg.search.acquisition.local_kernels:
        raise ConfigError("search.acquisition.local_kernels chooses among the incumbent's neighbours by EI on f; Pareto mode "
                          "has no single incumbent: set it to 0 with search.mode=pareto")
    if mode == "pareto" and method == "ours" and cfg.search.target != "f":
        raise ConfigError("search.target: Pareto mode's kernels model accuracy and the cost is known or modelled "
                          "apart; search.target=accuracy is for search.mode=single")
    caps = [k for k, v in cfg.objective.constraint.items() if v is not None]
    if mode == "pareto" and caps:
        raise ConfigError(f"search.mode=pareto searches the front of (accuracy, {cfg.objective.name}) and takes no caps; "
                          f"drop objective.constraint.{caps[0]} or use search.mode=single")


def _missing(node: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose value is the mandatory marker ``???``, in order."""
    if isinstance(node, dict):
        return [k for key, v in node.items() for k in _missing(v, f"{prefix}{key}.")]
    return [prefix[:-1]] if node == "???" else []


def has_caps(objective) -> bool:
    """Whether an ``objective`` node (a config node or its plain dict) sets a cap (``objective.constraint.*``)."""
    return any(v is not None for v in (objective.get("constraint") or {}).values())


def resolved_space(space: Any, objective: Any = None) -> dict:
    """The compression space's options (``conf/space``, a mapping) with ``auto`` resolved for a run whose
    ``objective`` node (a config node or its plain dict; none: the paper's Eq. 6) is given (in either mode), the one
    place the rules live (README: the structural-shrink, capped-space, skip-free, latency and Pareto-space rules).
    ``shrink_groups``: ``width`` (one ratio per teacher width, the reference) in a run with caps, else
    ``structural`` (one ratio per channel symbol). ``ops``: all three operators in a run that rewards or caps
    latency (a small network's latency is paid per layer: only removal lowers it; in Pareto mode too), else
    shrinkage only, Pareto mode with a params, FLOPs or memory cost included (the Pareto-space rules)."""
    objective = objective if objective is not None else {}
    out = dict(space)
    if out.get("shrink_groups") == "auto":
        out["shrink_groups"] = "width" if has_caps(objective) else "structural"
    if out.get("ops") == "auto":
        cost = objective.get("name", "params")  # stored_config drops the default objective node: no node is params
        # with any cap the reward is the constraint form, which does not reward the named cost
        latency = (cost == "latency" and not has_caps(objective)) or (objective.get("constraint") or {}).get("latency_ms") is not None
        out["ops"] = list(OPERATORS if latency else SHRINK_ONLY)  # pareto: a latency cost is rewarded latency
    return out


def resolved_pareto_mean(value: str, objective: Any = None) -> str:
    """``search.acquisition.pareto_mean`` with ``auto`` resolved for a run whose ``objective`` node (a config node or
    its plain dict; none: the paper's Eq. 6, params) is given: ``front`` with a params cost (the front-prior rule with
    params, README; before it ``zero``, the cost prior's params check), ``cost`` with any other (the cost-prior rule:
    FLOPs measured, memory and latency not; the front-prior rule with FLOPs kept it)."""
    if value != "auto":
        return value
    objective = objective if objective is not None else {}
    return "front" if objective.get("name", "params") == "params" else "cost"


def check_space(space: Any) -> None:
    """The compression space's options (``conf/space``, a mapping): what types and ranges cannot say.
    ``validate`` calls it on the config and ``CompressionSpace`` on its options; ``auto`` is checked as
    it resolves without an objective (:func:`resolved_space`)."""
    space = resolved_space(space)
    if isinstance(space["ops"], (str, bytes)) or not isinstance(space["ops"], Sequence):
        raise ConfigError(f"space.ops must be auto or a list of {', '.join(OPERATORS)}, got {space['ops']!r}")
    ops = list(space["ops"])
    if len(set(ops)) != len(ops):
        raise ConfigError(f"space.ops names an operator twice: {ops}")
    if not ops or not set(ops) <= set(OPERATORS):
        raise ConfigError(f"space.ops must be a non-empty subset of {', '.join(OPERATORS)}, got {ops}")
    if not set(ops) & {"remove", "shrink"}:
        raise ConfigError("space.ops: skip addition alone cannot make a student smaller than the teacher; "
                          "add remove and/or shrink")
    if space["shrink_groups"] not in SHRINK_GROUPS:
        raise ConfigError(f"space.shrink_groups: {space['shrink_groups']!r} is not one of {', '.join(SHRINK_GROUPS)}")
    low, high = space["shrink_low"], space["shrink_high"]
    if not 0.0 <= low < high <= 1.0:
        raise ConfigError(f"space.shrink_low ({low}) must be below space.shrink_high ({high}), both in [0, 1]")
    for name in ("remove_p", "skip_p"):
        ps = list(space[name])
        if not ps or not all(isinstance(p, (int, float)) and 0.0 <= p <= 1.0 for p in ps):
            raise ConfigError(f"space.{name}: must be a non-empty list of probabilities, got {ps}")


def _check(node: Any, schema: type, prefix: str) -> None:
    for f in fields(schema):
        value = node[f.name]
        key = f"{prefix}{f.name}"
        if is_dataclass(f.default_factory) if f.default_factory is not MISSING else False:
            _check(value, f.default_factory, key + ".")
            continue
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")
        bounds = f.metadata.get("range")
        if bounds and value is not None:
            low, high, low_ok, high_ok = bounds
            if (low is not None and (value < low or (value == low and not low_ok))) or \
               (high is not None and (value > high or (value == high and not high_ok))):
                lo = "" if low is None else f"{'>=' if low_ok else '>'} {low}"
                hi = "" if high is None else f"{'<=' if high_ok else '<'} {high}"
                raise ConfigError(f"{key}: {value} is out of range (must be {' and '.join(p for p in (lo, hi) if p)})")
