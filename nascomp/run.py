"""``python -m nascomp.run [overrides]``: the whole method from one command (see ``conf/config.yaml``).

    python -m nascomp.run experiment=quickstart
    python -m nascomp.run teacher=resnet18 dataset=cifar10 search.K=8
    python -m nascomp.run -m experiment=table4          # a paper table: a multirun over its sweep

Exit status: 0 done; 2 a bad configuration or input, a search in which every student failed, a
run store that failed mid-run, or an output that could not be written (disk full; one line on stderr says what to change); 130 / 143 interrupted by SIGINT / SIGTERM, with one line
on stderr giving the command that resumes the run from its store.
"""
from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from nascomp.schema import ConfigError, validate
from nascomp.signals import Interrupted, check_interrupted, on_signals, resume_hint

log = logging.getLogger("nascomp")


@hydra.main(version_base="1.3", config_path="pkg://nascomp.conf", config_name="config")
def main(cfg: DictConfig) -> float:
    try:
        cfg = validate(cfg)
    except ConfigError as exc:
        log.error("bad configuration: %s", exc)
        print(f"error: bad configuration: {exc}", file=sys.stderr)
        sys.exit(2)
    run_dir = HydraConfig.get().runtime.output_dir
    on_signals(run_dir)
    try:
        from nascomp import threads
        from nascomp.files import OutputError
        from nascomp.pipeline import StartupError, run  # after validation: a bad config fails before heavy imports
        from nascomp.search import SearchFailed
        from nascomp.store import StoreError
        from nascomp.training import signals_kept

        threads.apply(cfg.trainer.threads)

        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # per-Trainer banners, many per search
        warnings.filterwarnings("ignore", message=r".*(LeafSpec|modules? in eval mode|does not have many workers).*")
        try:
            with signals_kept():
                summary = run(cfg, Path(run_dir))
            check_interrupted()
        except StartupError as exc:
            log.error("cannot start: %s", exc)
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except SearchFailed as exc:
            log.error("search failed: %s", exc)
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except StoreError as exc:  # the store failed mid-run (disk full, I/O error, locked too long): it names itself
            log.error("run store: %s", exc)
            print(f"error: {exc}; {resume_hint(run_dir)} once the store is usable again", file=sys.stderr)
            sys.exit(2)
        except OutputError as exc:  # an output (summary.json, history.csv, report, teacher) could not be written: it names itself
            log.error("output: %s", exc)
            print(f"error: {exc}; {resume_hint(run_dir)} once there is room", file=sys.stderr)
            sys.exit(2)
    except Interrupted as exc:
        log.error("interrupted by %s", exc)
        print(f"error: interrupted by {exc}; {resume_hint(run_dir)}", file=sys.stderr, flush=True)
        sys.exit(128 + exc.signum)
    return summary["best"]["f"]


if __name__ == "__main__":
    main()
