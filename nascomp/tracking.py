"""Experiment tracking for a search: W&B, a CSV file, or nothing (config group ``logger``).

Per step: ``search/step`` is the x-axis of ``search/best_f`` (best f so far), ``search/f`` (each
proposal's f) and, when the step trained kernels, ``search/kernel_loss``. At the end: every
evaluated architecture as a table, the final students as artifacts. Nothing depends on W&B: the run
directory's history.csv and plots carry the same information.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Sequence


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
    """``metrics.csv``: one row per step (step, evaluations, best_f, mean_f, extra metrics)."""

    def __init__(self, run_dir: Path, config: dict | None = None):
        self.path = Path(run_dir) / "metrics.csv"
        self.evaluations = 0
        self.fields: list[str] | None = None

    def log_step(self, step, records, best_f, extra=None):
        self.evaluations += len(records)
        row = {"step": step, "evaluations": self.evaluations, "best_f": best_f,
               "mean_f": sum(r.f for r in records) / max(len(records), 1), **(extra or {})}
        new = self.fields is None
        if new:
            self.fields = list(row)
        with open(self.path, "a", newline="") as fh:
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
            self.run.log({"search/step": step, "search/f": r.f})
        self.run.log({"search/step": step, "search/best_f": best_f, **{f"search/{k}": v for k, v in (extra or {}).items()}})

    def log_history(self, rows):
        if rows:
            columns = list(rows[0])
            self.run.log({"evaluated": self.wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])})

    def log_students(self, paths):
        for name, path in paths.items():
            artifact = self.wandb.Artifact(name=f"{self.run.id}-{name}", type="student")
            artifact.add_dir(str(path))
            self.run.log_artifact(artifact)

    def log_summary(self, summary):
        for key in ("accuracy", "num_params", "ratio", "times", "f"):
            self.run.summary[f"best/{key}"] = summary["best"][key]

    def finish(self):
        self.run.finish()


def make_tracker(cfg: Any, run_dir: Path, config: dict) -> Tracker:
    """The tracker of ``logger`` config ``cfg``: its ``_target_`` class (``conf/logger/*.yaml``) with
    the node's other keys that are set (the schema gives every logger key, null when a file leaves it
    out), given the run directory and the resolved run config."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    options = {k: v for k, v in OmegaConf.to_container(OmegaConf.create(cfg), resolve=True).items() if v is not None}
    return instantiate(options, _partial_=True)(run_dir, config)
