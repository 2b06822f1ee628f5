"""Training on more than one device: each DDP fit runs in a worker, ``python -m nascomp.ddp_worker SPEC``.

Lightning's ``ddp`` strategy starts ranks 1..N-1 by running the command of the process that calls
``fit`` again (its subprocess launcher re-runs ``python -m <module> <argv>``). Called from the main
job, that command is the whole job: a second ``python -m nascomp.run`` that would replay the search
and stop at the run's lock. So :func:`nascomp.training.fit_and_test` never fits on N > 1 devices in the calling
process. It writes the model, the dataset, the recipe and the teacher to a spec file in a temporary
folder and runs this module on it; the worker is rank 0, Lightning's re-runs of the worker's command
are ranks 1..N-1 and replay nothing but the fit. Rank 0 writes its :class:`~nascomp.training.Result`
beside the spec; the caller reads it back and loads the chosen weights into its model, as
:func:`nascomp.training.fit_and_test` leaves them on one device.

Why a worker process and not ``ddp_spawn`` (or ``ddp_fork``): a spawned rank's changes to the
LightningModule do not come back to the caller (Lightning's multiprocessing launcher returns only the
last weights and the callback metrics), while the result here is the module's best-validation weights
and accuracies; and a fork cannot follow a search that has used CUDA. The worker is run by Lightning's
default DDP launcher as that launcher is meant to be used: on a script that can be run again. So N > 1
devices need a strategy with that launcher (``ddp``, which ``strategy: auto`` picks, or
``ddp_find_unused_parameters_true``); :func:`check_strategy` refuses any other.

The worker runs with the caller's torch thread count (``OMP_NUM_THREADS``, which Lightning's launcher
then leaves alone) and in its own process group: an interrupt in the caller, or a worker that fails,
kills rank 0 and every rank it started.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
from omegaconf import OmegaConf
from torch import nn

from nascomp import training
from nascomp.data import Dataset

log = logging.getLogger("nascomp")


def check_strategy(trainer: L.Trainer, cfg) -> None:
    """Refuse ``trainer`` (built from recipe ``cfg``) on several devices when its strategy does not
    start its ranks by running a command again (``ddp_spawn``, ``ddp_fork``, ...): the worker could not
    return its result. ``Setup.build`` calls it for the full and teacher recipes before any work."""
    if trainer.world_size > 1 and not isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher):
        raise ValueError(f"trainer.strategy={cfg.trainer.strategy} on {trainer.world_size} devices starts its ranks with "
                         f"{type(trainer.strategy.launcher).__name__}, but nascomp trains on several devices in a worker "
                         f"process (nascomp.ddp_worker) that Lightning's ddp strategy runs again for each rank; "
                         f"use trainer.strategy=ddp (or trainer=ddp)")


def fit_in_worker(trainer: L.Trainer, model: nn.Module, dataset: Dataset, cfg,
                  teacher: nn.Module | None = None) -> training.Result:
    """:func:`nascomp.training.fit_and_test` on the devices of ``trainer`` (more than one; built by
    the caller from recipe ``cfg``, the worker builds its own) in a worker process (module docstring).
    ``model`` comes back on the CPU holding the chosen weights. A worker that fails raises
    ``RuntimeError`` with its exit status (its output, on this process's stdout and stderr, says why)."""
    check_strategy(trainer, cfg)
    with tempfile.TemporaryDirectory(prefix="nascomp-ddp-") as folder:
        spec, out = Path(folder) / "spec.pt", Path(folder) / "result.pt"
        torch.save({"model": model.cpu(), "dataset": dataset, "cfg": OmegaConf.to_container(cfg, resolve=True),
                    "teacher": teacher, "out": str(out)}, spec)
        env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
        worker = subprocess.Popen([sys.executable, "-m", __name__, str(spec)], env=env, start_new_session=True)
        try:
            code = worker.wait()
        finally:  # interrupted (nascomp.signals.Interrupted) or failed: no rank outlives it or waits in a collective
            if worker.returncode != 0:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
        if code != 0 or not out.is_file():
            raise RuntimeError(f"DDP training on {trainer.world_size} devices failed: the worker "
                               f"(python -m {__name__}) exited with status {code}; its output above says why")
        saved = torch.load(out, map_location="cpu", weights_only=True)
    log.info("DDP: trained on %d processes", saved.pop("processes"))
    model.load_state_dict(saved["state_dict"])
    return training.Result(**saved)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> bool:
    """On Linux, have the kernel SIGKILL this process when its parent dies (``prctl(PR_SET_PDEATHSIG)``):
    the worker runs in its own session, so a main job killed by SIGKILL (no ``finally`` runs) would
    otherwise leave rank 0, and the ranks it started, training on. Rank 0's parent is the main job,
    ranks 1..N-1's is rank 0, so the whole chain goes. Returns whether it was set (False elsewhere)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    return True


def main(argv: list[str] | None = None) -> None:
    """Every rank: load the spec, fit and test on this rank; rank 0 writes the result file and, every
    rank having loaded the spec by then, removes the spec (the model and the dataset)."""
    die_with_parent()
    (path,) = sys.argv[1:] if argv is None else argv
    spec = torch.load(path, map_location="cpu", weights_only=False)  # written a moment ago by fit_in_worker
    cfg = OmegaConf.create(spec["cfg"])
    L.seed_everything(cfg.seed, verbose=False)  # every rank's random draws follow the recipe's seed (PL_GLOBAL_SEED)
    trainer = training.make_trainer(cfg)
    result = training.fit_here(trainer, spec["model"], spec["dataset"], cfg, spec["teacher"])
    if trainer.global_rank == 0:
        with contextlib.suppress(OSError):
            os.unlink(path)
        torch.save({**vars(result), "processes": trainer.world_size}, spec["out"])


if __name__ == "__main__":
    main()
