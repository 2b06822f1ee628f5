"""Experiment tracking for a search: W&B, a CSV file, or nothing (config group ``logger``).

Per step: ``search/step`` is the x-axis of ``search/best_f`` (best f so far), ``search/f`` (each
proposal's f) and, when the step trained kernels, ``search/kernel_loss``. At the end: every
evaluated architecture as a table, the final students as artifacts. Nothing depends on W&B: the run
directory's history.csv and plots carry the same information, so a tracker that fails (W&B down, a
full disk, a bad value) warns once and stops tracking; the run goes on (``make_tracker`` wraps every
tracker in ``GuardedTracker``).
"""
from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)

# W&B types each table column once, from the first row; so every history column has one type here
# (``nascomp.report.HISTORY_COLUMNS``). A missing value (``proposer`` of a random student, written ""
# to history.csv) is a typed null. A column not listed is logged as text.
HISTORY_TYPES: dict[str, type] = {"index": int, "step": int, "proposer": int, "key": str, "num_params": int,
                                  "ratio": float, "times": float, "accuracy": float, "f": float,
                                  "seconds": float, "error": str, "flops": int, "latency_ms": float, "memory_mb": float}


def typed(value: Any, kind: type) -> Any:
    """``value`` as ``kind``; None and "" in a numeric column are null."""
    if kind is str:
        return "" if value is None else str(value)
    return None if value is None or value == "" else kind(value)


class Tracker:
    """Does nothing (``logger=none``); the base of the others."""

    def __init__(self, run_dir: Path | None = None, config: dict | None = None):
        pass

    def log_step(self, step: int, records: Sequence, best_f: float, extra: dict[str, float] | None = None) -> None:
        pass

    def log_history(self, rows: list[dict]) -> None:
        pass

    def log_students(self, paths: dict[str, Path]) -> None:
        pass

    def log_summary(self, summary: dict) -> None:
        pass

    def finish(self) -> None:
        pass


class CSVTracker(Tracker):
    """``metrics.csv``: one row per step (step, evaluations, best_f, mean_f over the step's students that
    did not fail (nan when all did), extra metrics). A tracker
    writes the file anew: a resumed run replays every step from step 0 (the store's cache), so the
    file is rewritten whole, as ``history.csv`` is, never appended to a killed run's rows."""

    def __init__(self, run_dir: Path, config: dict | None = None):
        self.path = Path(run_dir) / "metrics.csv"
        self.evaluations = 0
        self.fields: list[str] | None = None

    def log_step(self, step, records, best_f, extra=None):
        self.evaluations += len(records)
        ok = [r.f for r in records if not r.failed]  # a failed student has no f
        row = {"step": step, "evaluations": self.evaluations, "best_f": best_f,
               "mean_f": sum(ok) / len(ok) if ok else float("nan"), **(extra or {})}
        new = self.fields is None
        if new:
            self.fields = list(row)
        with open(self.path, "w" if new else "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)


class WandbTracker(Tracker):
    """One W&B run per search, in the W&B group ``experiment_group`` (the experiment / ablation)."""

    def __init__(self, run_dir: Path, config: dict, project: str, entity: str | None = None, mode: str = "auto"):
        import wandb

        if os.environ.get("WANDB_MODE"):
            mode = os.environ["WANDB_MODE"]
        elif mode == "auto":
            mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
        self.wandb = wandb
        self.run = wandb.init(project=project, entity=entity, group=config.get("experiment_group"), name=config.get("name"),
                              config=config, dir=str(run_dir), mode=mode, reinit="finish_previous")
        self.run.define_metric("search/step")
        self.run.define_metric("search/*", step_metric="search/step")

    def log_step(self, step, records, best_f, extra=None):
        for r in records:
            if not r.failed:  # a failed student has no f
                self.run.log({"search/step": step, "search/f": r.f})
        self.run.log({"search/step": step, "search/best_f": best_f, **{f"search/{k}": v for k, v in (extra or {}).items()}})

    def log_history(self, rows):
        """The ``evaluated`` table: one row per history row, every column of one type (``HISTORY_TYPES``)."""
        if rows:
            columns = list(rows[0])
            kinds = [HISTORY_TYPES.get(c, str) for c in columns]
            data = [[typed(r.get(c), k) for c, k in zip(columns, kinds)] for r in rows]
            self.run.log({"evaluated": self.wandb.Table(columns=columns, data=data, dtype=kinds, optional=True)})

    def log_students(self, paths):
        for name, path in paths.items():
            artifact = self.wandb.Artifact(name=f"{self.run.id}-{name}", type="student")
            artifact.add_dir(str(path))
            self.run.log_artifact(artifact)

    def log_summary(self, summary):
        for key in ("accuracy", "num_params", "ratio", "times", "f", "flops", "latency_ms", "memory_mb"):
            if summary["best"].get(key) is not None:
                self.run.summary[f"best/{key}"] = summary["best"][key]
        for row in summary.get("pruning", []):  # final.prune
            for key in ("accuracy", "test_accuracy", "num_params", "f", "f_minus_answer"):
                if row.get(key) is not None:
                    self.run.summary[f"pruned_{row['importance']}/{key}"] = row[key]

    def finish(self):
        self.run.finish()


class GuardedTracker(Tracker):
    """Runs ``inner``'s calls so that none can end the run: the first exception is logged as one
    warning, then tracking stops (later calls are skipped; ``finish`` is still tried, quietly)."""

    def __init__(self, inner: Tracker, name: str):
        self.inner, self.name, self.failed = inner, name, False

    def _call(self, method: str, *args) -> None:
        if self.failed:
            return
        try:
            getattr(self.inner, method)(*args)
        except Exception as exc:  # noqa: BLE001: any tracker failure, by design
            self.fail(method, exc)

    def fail(self, what: str, exc: BaseException) -> None:
        self.failed = True
        log.warning("logger %s failed in %s (%s: %s); tracking stops for this run, which goes on: history.csv "
                    "in the run directory holds the same data", self.name, what, type(exc).__name__, exc)

    def log_step(self, step, records, best_f, extra=None):
        self._call("log_step", step, records, best_f, extra)

    def log_history(self, rows):
        self._call("log_history", rows)

    def log_students(self, paths):
        self._call("log_students", paths)

    def log_summary(self, summary):
        self._call("log_summary", summary)

    def finish(self):
        if not self.failed:
            self._call("finish")
        else:
            try:
                self.inner.finish()
            except Exception as exc:  # noqa: BLE001: already warned once
                log.debug("logger %s: finish after a failure: %s", self.name, exc)


def make_tracker(cfg: Any, run_dir: Path, config: dict) -> Tracker:
    """The tracker of ``logger`` config ``cfg``: its ``_target_`` class (``conf/logger/*.yaml``) with
    the node's other keys that are set (the schema gives every logger key, null when a file leaves it
    out), given the run directory and the resolved run config; guarded so that a failure, even while
    starting it, warns once and never ends the run. A ``_target_`` that names no class is a ValueError."""
    from hydra.utils import get_class, instantiate
    from omegaconf import OmegaConf

    options = {k: v for k, v in OmegaConf.to_container(OmegaConf.create(cfg), resolve=True).items() if v is not None}
    target = options.get("_target_")
    try:
        cls = get_class(target)
    except Exception as exc:  # noqa: BLE001: hydra raises several kinds for a bad path
        raise ValueError(f"logger._target_={target!r} is not a tracker class (conf/logger/*.yaml name "
                         f"nascomp.tracking.WandbTracker, CSVTracker or Tracker): {exc}") from exc
    guarded = GuardedTracker(Tracker(), cls.__name__)
    try:
        guarded.inner = instantiate(options, _partial_=True)(run_dir, config)
    except Exception as exc:  # noqa: BLE001: any tracker failure, by design
        guarded.fail("start", exc)
    return guarded
