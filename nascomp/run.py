"""``python -m nascomp.run [overrides]``: the whole method from one command (see ``conf/config.yaml``).

    python -m nascomp.run experiment=quickstart
    python -m nascomp.run teacher=resnet18 dataset=cifar10 search.K=8
    python -m nascomp.run -m experiment=table4          # a paper table: a multirun over its sweep
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

log = logging.getLogger("nascomp")


@hydra.main(version_base="1.3", config_path="pkg://nascomp.conf", config_name="config")
def main(cfg: DictConfig) -> float:
    try:
        cfg = validate(cfg)
    except ConfigError as exc:
        log.error("bad configuration: %s", exc)
        print(f"error: bad configuration: {exc}", file=sys.stderr)
        sys.exit(2)
    from nascomp import threads
    from nascomp.pipeline import StartupError, run  # after validation: a bad config fails before heavy imports

    threads.apply(cfg.trainer.threads)

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # per-Trainer banners, many per search
    warnings.filterwarnings("ignore", message=r".*(LeafSpec|modules? in eval mode|does not have many workers).*")
    try:
        summary = run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    return summary["best"]["f"]


if __name__ == "__main__":
    main()
