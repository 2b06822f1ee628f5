"""Training entry points: proxy (search-time) distillation of a cohort, full training, teachers.

Every number comes from a recipe in ``conf/training/`` (proxy, full, teacher) and a dataset node
in ``conf/dataset/``; :func:`nascomp.config.group` loads one. All three paths build a Lightning ``Trainer`` from
the recipe's ``trainer`` node (:func:`make_trainer`) around one :class:`StudentModule`.

- :func:`proxy_train` — K students of one search step in lockstep on one device, sharing one
  teacher forward pass per batch; the search-time fast path (no logger, checkpoints, progress bar,
  model summary or sanity check; bf16 autocast and channels_last on CUDA; no torch.compile); the
  data stays on the device; memory is released afterwards. Result per student: best validation
  accuracy over the epochs and the weights of that epoch.
- :func:`full_train` — cross-entropy from the given (proxy) weights on 1..N devices (DDP when N > 1,
  in a worker process, ``nascomp.ddp_worker``, with plain DataLoaders and Lightning's distributed
  sampler); weights chosen on validation, then tested once.
- :func:`train_teacher` / :func:`load_or_train_teacher` — the teacher recipe on the train split;
  the checkpoint holds the state_dict with its validation and test accuracy (and a JSON beside it).
  A teacher whose validation accuracy is at chance (1 / classes) or below is never saved.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import lightning as L
import torch
from omegaconf import OmegaConf
from torch import nn

from nascomp import teachers
from nascomp.config import group
from nascomp.data import Dataset
from nascomp.signals import check_interrupted
from nascomp.files import atomic_write, make_folder, write_text
from nascomp.student_module import StudentModule


@dataclass
class Result:
    val_accuracy: float  # best over the epochs (fraction)
    epoch: int  # the epoch it came from (0-based)
    state_dict: dict  # that epoch's weights, on the CPU
    test_accuracy: float | None = None  # measured once, on the weights chosen on validation
    diverged: bool = False  # the training loss was non-finite at some step


class TeacherTrainingError(ValueError):
    """Teacher training ended no better than chance on the validation split; nothing was cached."""


PROXY_PLACEMENT = {"devices": 1, "strategy": "auto"}  # a cohort trains in lockstep in one process: one device


def resolve_device(accelerator: str) -> torch.device:
    """The device ``trainer.accelerator`` names: CUDA for auto when present, else the CPU. The one CUDA
    check: ``Setup.build`` calls it at startup, every Trainer when it is built."""
    if accelerator in ("auto", "cuda", "gpu") and torch.cuda.is_available():
        return torch.device("cuda")
    if accelerator in ("cuda", "gpu"):
        raise ValueError(f"trainer.accelerator={accelerator} but no CUDA device is available; use trainer=auto or trainer=cpu")
    return torch.device("cpu")


def make_trainer(cfg, **overrides) -> L.Trainer:
    """A Trainer for recipe ``cfg``: ``conf/trainer/auto.yaml`` (where to train, when the recipe does
    not come with the run's ``trainer`` group, as from the Python API), the recipe's ``trainer`` node
    (``precision: auto`` = bf16-mixed on CUDA, 32-true elsewhere), ``max_epochs = cfg.epochs``, then
    ``overrides``."""
    placement = OmegaConf.merge(group("trainer", "auto"), cfg.trainer)
    kwargs = {**OmegaConf.to_container(placement, resolve=True), **overrides}
    kwargs.pop("threads", None)  # torch threads are set once per process (nascomp.threads), not per Trainer
    device = resolve_device(kwargs["accelerator"])
    kwargs["accelerator"] = device.type
    if kwargs.get("precision") == "auto":
        kwargs["precision"] = "bf16-mixed" if device.type == "cuda" else "32-true"
    return L.Trainer(max_epochs=cfg.epochs, **kwargs)


@contextlib.contextmanager
def signals_kept():
    """Re-raise a signal that arrived inside a Trainer call as itself. Lightning tears the Trainer down
    when a BaseException (our ``Interrupted``, KeyboardInterrupt) crosses ``fit``/``test``, and that
    teardown can itself fail (``Please call iter(combined_loader) first`` when the signal came before
    the first batch), replacing the signal with a RuntimeError that ``except Exception`` would then
    treat as a failed student. Wrap every Trainer call in this. Any error after the main job's handler took a
    signal is that signal too (``nascomp.signals.check_interrupted``): one that lands inside a library's own set-up
    (a Trainer built half-way, its profiler without ``_stage``) can come out as an error whose chain has lost it;
    ``nascomp.run`` wraps the whole run in this, so the run still ends with the one line and 130 / 143."""
    try:
        yield
    except Exception as exc:
        check_interrupted()
        seen, cause = set(), exc
        while cause is not None and id(cause) not in seen:
            if not isinstance(cause, Exception):  # the BaseException the teardown error replaced
                raise cause from None
            seen.add(id(cause))
            cause = cause.__context__
        raise


@contextlib.contextmanager
def _quiet():
    """Silence Lightning's per-Trainer banners (GPU available, ...) while a search trains many."""
    log = logging.getLogger("lightning.pytorch")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (macOS, musl, Windows)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


def _release(device: torch.device, trim_heap: bool) -> None:
    """Free the finished cohort's device memory (optimiser state, cached blocks). Trainer and module
    hold each other, so only a collection frees them; on the host that is left to the automatic
    collector (a forced one costs ~0.3 s, as much as a small candidate's training on the CPU).

    Then hand the host heap's free pages back to the system (glibc malloc_trim, ~4 ms): every student
    has different tensor shapes, and without it the freed blocks stay mapped, so resident memory
    creeps up by ~0.15 MB per evaluation although nothing is alive (benchmarks/memory.py shows both;
    ``trim_heap`` is the proxy recipe's ``release_host_heap``)."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
    trim = _malloc_trim() if trim_heap else None
    if trim is not None:
        trim(0)


def _cpu(state: dict | None) -> dict:
    return {k: v.detach().cpu() for k, v in (state or {}).items()}


def proxy_train(students: nn.Module | Sequence[nn.Module], teacher: nn.Module, dataset: Dataset,
                cfg=None) -> list[Result]:
    """Distil ``students`` (one module or a cohort of K) from ``teacher`` with recipe ``cfg``
    (default ``conf/training/proxy.yaml``) on one device, whatever ``trainer.devices`` says
    (``PROXY_PLACEMENT``: the cohort is one module in one process). Returns one :class:`Result` per
    student, in order; the students come back on the CPU holding their best-epoch weights. Every
    random draw of the training (dropout; the loader and the augmentation have their own generators)
    follows the recipe's ``seed``, not what ran before in the process, and the caller's random state
    is left as it was."""
    cfg = cfg if cfg is not None else group("training", "proxy")
    module = StudentModule(students, cfg, dataset.num_classes, teacher=teacher, augment=dataset.augment)
    with _quiet(), signals_kept(), seeded(cfg.seed):
        trainer = make_trainer(cfg, **PROXY_PLACEMENT)
        device = trainer.strategy.root_device
        train = dataset.loader("train", cfg.batch_size, shuffle=True, seed=cfg.seed, device=device)
        val = dataset.loader("val", cfg.batch_size, device=device)
        trainer.fit(module, train, val)
    results = [Result(a, e, _cpu(s), diverged=d)
               for a, e, s, d in zip(module.best_accuracy, module.best_epoch, module.best_state, module.diverged)]
    for s in module.students:
        s.cpu()
    del module, trainer
    _release(device, cfg.release_host_heap)
    return results


def fit_and_test(model: nn.Module, dataset: Dataset, cfg, teacher: nn.Module | None = None) -> Result:
    """Train one model with recipe ``cfg`` on the train split, keep the best-validation epoch's
    weights, then measure them once on the test split; ``model`` ends holding those weights. On more
    than one device (DDP) the training runs in a worker process (``nascomp.ddp_worker``: Lightning's
    launcher re-runs the command of the process that fits, which must not be the caller's)."""
    trainer = make_trainer(cfg)
    if trainer.world_size > 1:
        from nascomp.ddp_worker import fit_in_worker  # it imports this module

        return fit_in_worker(trainer, model, dataset, cfg, teacher)
    return fit_here(trainer, model, dataset, cfg, teacher)


def fit_here(trainer: L.Trainer, model: nn.Module, dataset: Dataset, cfg, teacher: nn.Module | None = None) -> Result:
    """:func:`fit_and_test` with ``trainer`` in this process; under DDP every rank of the worker runs it."""
    module = StudentModule(model, cfg, dataset.num_classes, teacher=teacher, augment=dataset.augment)
    if cfg.get("compile"):
        module.students[0].compile()
    device = trainer.strategy.root_device
    resident = None if trainer.world_size == 1 else False  # DDP: DataLoaders, Lightning adds the distributed sampler
    loader = lambda split, shuffle=False: dataset.loader(split, cfg.batch_size, shuffle=shuffle, seed=cfg.seed,
                                                         device=device, resident=resident)
    with signals_kept():
        trainer.fit(module, loader("train", shuffle=True), loader("val"))
        trainer.test(module, loader("test"), verbose=False)
    return Result(module.best_accuracy[0], module.best_epoch[0], _cpu(module.best_state[0]), module.test_accuracy[0])


def full_train(student: nn.Module, dataset: Dataset, cfg=None) -> Result:
    """Cross-entropy training of ``student`` from its current (proxy) weights with recipe ``cfg``
    (default ``conf/training/full.yaml``; ``trainer.devices: N`` trains on N GPUs with DDP). Every random
    draw of the training (dropout) follows the recipe's ``seed`` (:func:`seeded`), not what ran before in
    the process: a run resumed during final training trains its finalists as an uninterrupted one did."""
    cfg = cfg if cfg is not None else group("training", "full")
    with seeded(cfg.seed):
        return fit_and_test(student, dataset, cfg)


@contextlib.contextmanager
def seeded(seed: int):
    """Torch's random state seeded with ``seed`` inside, on the CPU and every CUDA device, and the
    caller's state restored after (``torch.random.fork_rng``)."""
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        torch.manual_seed(seed)
        yield


def train_teacher(name: str, dataset: Dataset, checkpoint: str | Path, cfg=None, width: float = 1.0,
                  **kwargs) -> tuple[nn.Module, Result]:
    """Train teacher ``name`` (a registered name or class path; ``kwargs`` to its constructor) from
    scratch with recipe ``cfg`` (default ``conf/training/teacher.yaml``) and save ``checkpoint``:
    ``{"state_dict", "teacher", "width", "num_classes", "dataset", "val_accuracy", "test_accuracy"}``
    (readable by ``teachers.create(..., checkpoint=)``) plus the same numbers in a ``.json`` beside it.
    The initial weights and every random draw of the training come from the recipe's ``seed``: one
    cache key (:func:`nascomp.pipeline.teacher_key`) is one teacher, whatever ran before in the process."""
    cfg = cfg if cfg is not None else group("training", "teacher")
    with seeded(cfg.seed):  # the initial weights follow the recipe's seed, not whatever ran before
        model = teachers.create(name, num_classes=dataset.num_classes, width=width, in_channels=dataset.in_channels, **kwargs)
        result = fit_and_test(model, dataset, cfg)
    chance = 1.0 / dataset.num_classes
    if not result.val_accuracy > chance:  # a teacher at chance would score every student f ~ 1
        raise TeacherTrainingError(
            f"teacher {name} reached validation accuracy {result.val_accuracy:.4f} after {cfg.epochs} epochs, "
            f"no better than chance (1/{dataset.num_classes} = {chance:.4f}), so it was not saved to "
            f"{str(checkpoint)!r}; train longer (teacher_training.epochs), check teacher_training.optimizer.lr, "
            f"or give it more data ({len(dataset.train)} training images)")
    info = {"teacher": name, "width": width, "num_classes": dataset.num_classes, "dataset": dataset.name,
            "val_accuracy": result.val_accuracy, "test_accuracy": result.test_accuracy, "epoch": result.epoch}
    path = Path(checkpoint)
    make_folder(path)
    # through a temporary file (nascomp.files): a kill or a full disk never leaves a truncated checkpoint
    # in the cache, which every later run would load; serialised in memory first, so that a failed write
    # is an OSError (OutputError naming the file), not torch's RuntimeError
    buffer = io.BytesIO()
    torch.save({"state_dict": result.state_dict, **info}, buffer)
    atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()))
    write_text(path.with_suffix(".json"), json.dumps(info, indent=2) + "\n")
    return model.cpu(), result


def load_or_train_teacher(name: str, dataset: Dataset, checkpoint: str | Path, cfg=None, width: float = 1.0,
                          cached: bool = False, **kwargs) -> tuple[nn.Module, float]:
    """The teacher for a search and its validation accuracy A(teacher): loaded from ``checkpoint``
    when the file exists (strictly: a mismatch names the offending keys), else trained and saved
    there first. A checkpoint without a stored accuracy is measured on the validation split.
    ``cached``: ``checkpoint`` is nascomp's teacher cache, not the user's file, so a file that cannot
    be loaded is named as a cache file to delete (the next run trains the teacher again)."""
    path = Path(checkpoint)
    if not path.is_file():
        model, result = train_teacher(name, dataset, path, cfg, width, **kwargs)
        return model.eval(), result.val_accuracy
    try:
        model = teachers.create(name, num_classes=dataset.num_classes, width=width, checkpoint=path,
                                in_channels=dataset.in_channels, **kwargs)
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if not cached:
            raise
        raise ValueError(f"the cached teacher {str(path)!r} cannot be loaded ({exc}); it is a cache file "
                         f"(teacher_dir), not an input: delete it (rm {str(path)!r}) and rerun to train the "
                         f"teacher again") from exc
    if isinstance(stored, dict) and isinstance(stored.get("val_accuracy"), float):
        return model.eval(), stored["val_accuracy"]
    return model.eval(), accuracy(model, dataset, "val", cfg)


def accuracy(model: nn.Module, dataset: Dataset, split: str = "val", cfg=None) -> float:
    """Accuracy of ``model`` (eval mode) on one split, with recipe ``cfg``'s trainer and batch size."""
    cfg = cfg if cfg is not None else group("training", "teacher")
    module = StudentModule(model, OmegaConf.merge(cfg, {"loss": "ce"}), dataset.num_classes)
    with _quiet(), signals_kept():
        trainer = make_trainer(cfg, enable_progress_bar=False)
        trainer.test(module, dataset.loader(split, cfg.batch_size, device=trainer.strategy.root_device), verbose=False)
    model.cpu()
    return module.test_accuracy[0]
