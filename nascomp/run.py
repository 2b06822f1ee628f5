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
import os
import shlex
import signal
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from nascomp.schema import ConfigError, validate

log = logging.getLogger("nascomp")


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. A BaseException, so that no ``except Exception`` on the way up (and
    not Lightning, which turns KeyboardInterrupt into exit 1 and its own SIGTERM handling into exit 0)
    swallows it; SQLite transactions in flight roll back, evaluations in flight are redone on resume."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def resume_hint(run_dir: str) -> str:
    """The one line that says how to resume: the same command, which finds the run's store."""
    command = " ".join(["python -m nascomp.run", *map(shlex.quote, sys.argv[1:])])
    return f"the run resumes from its store in {run_dir}: {command}"


def on_signals(run_dir: str) -> None:
    """SIGINT and SIGTERM raise :class:`Interrupted` (Lightning's Trainer composes its own SIGTERM
    handler with this one while it fits, then puts this one back); a second signal exits at once."""

    def handler(signum, frame):
        global _received
        if _received is not None:
            print(f"error: {signal.Signals(signum).name} again: stopped; {resume_hint(run_dir)}", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        _received = signum
        raise Interrupted(signum)

    global _received
    _received = None
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)


_received: int | None = None  # the signal on_signals' handler took, if any


def check_interrupted() -> None:
    """Raise :class:`Interrupted` again for a signal already taken. Its first raise is lost when the signal
    lands while a finaliser (``__del__``, run by the garbage collector) runs: Python prints "Exception
    ignored" and goes on. The main job calls this at safe points (after each search step, before the run
    is marked finished, after ``run`` returns), so such a signal still stops the run with 130 / 143."""
    if _received is not None:
        raise Interrupted(_received)


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

        threads.apply(cfg.trainer.threads)

        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # per-Trainer banners, many per search
        warnings.filterwarnings("ignore", message=r".*(LeafSpec|modules? in eval mode|does not have many workers).*")
        try:
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
