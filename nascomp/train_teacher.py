"""Train a teacher with the REFERENCE recipe (``conf/training/teacher.yaml``) and save its checkpoint.

    python -m nascomp.train_teacher --teacher resnet18 --dataset cifar10 --out teachers/resnet18_cifar10.pt \
        dataset.root=/data dataset.download=true training.epochs=400 training.trainer.devices=1

Positional ``key=value`` overrides go to the ``dataset.`` or ``training.`` config nodes. The
checkpoint (a state_dict with the validation and test accuracy, plus a ``.json`` beside it) is what
a search's ``teacher.checkpoint`` points at.

The nodes are checked as ``python -m nascomp.run`` checks them (``nascomp.schema.validate``, with
``training`` as the run's ``teacher_training``), and one batch of the data goes through the teacher
(``nascomp.pipeline.check_teacher``) before training: a bad input ends with one ``error:`` line and exit 2.
The folder of ``--out`` is made before training too; a checkpoint that cannot be written (disk full, a
folder that cannot be made) is an ``OutputError`` naming the file: one ``error:`` line and exit 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from typing import Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

from nascomp import config, data, threads, training
from nascomp.files import OutputError, make_folder
from nascomp.schema import ConfigError, validate

with warnings.catch_warnings():  # linear_operator (under BoTorch, which the pipeline imports) calls torch.jit.script
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    from nascomp.pipeline import StartupError, check_teacher


def main(argv: Sequence[str] | None = None) -> training.Result:
    parser = argparse.ArgumentParser(prog="python -m nascomp.train_teacher", description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="registered name or class path pkg.module:Class")
    parser.add_argument("--dataset", required=True, help="a conf/dataset/*.yaml name: cifar10, cifar100, digits, imagefolder")
    parser.add_argument("--out", required=True, help="checkpoint path to write (.pt)")
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier (1.0 = the paper's teacher)")
    parser.add_argument("--threads", default=str(config.group("trainer", "auto").threads),
                        help="torch threads: auto or a count >= 1 (as trainer.threads of a run)")
    parser.add_argument("overrides", nargs="*", help="dataset.KEY=VALUE or training.KEY=VALUE")
    args = parser.parse_args(argv)
    if args.threads != "auto" and not (args.threads.isdigit() and int(args.threads) >= 1):
        parser.error(f"--threads {args.threads!r} must be auto or an integer >= 1")
    for o in args.overrides:
        if not o.startswith(("dataset.", "training.")):
            parser.error(f"override {o!r} must start with dataset. or training.")
    cfg = OmegaConf.merge(
        {"dataset": config.group("dataset", args.dataset), "training": config.group("training", "teacher")},
        OmegaConf.from_dotlist(args.overrides),
    )
    run_cfg = _validated(cfg, args.teacher, args.width)
    threads.apply(args.threads if args.threads == "auto" else int(args.threads))
    dataset = data.load(run_cfg.dataset)
    check_teacher(run_cfg, dataset)  # the teacher takes this data (channels, size, classes): before training
    make_folder(args.out)  # a folder that cannot be made fails now, not after the training
    _, result = training.train_teacher(args.teacher, dataset, args.out, run_cfg.teacher_training, args.width)
    print(json.dumps({"checkpoint": args.out, "val_accuracy": result.val_accuracy,
                      "test_accuracy": result.test_accuracy, "epoch": result.epoch}))
    return result


def _validated(cfg: DictConfig, teacher: str, width: float) -> DictConfig:
    """The main config with this command's teacher, ``dataset`` node and ``training`` node (as
    ``teacher_training``), validated as ``python -m nascomp.run`` validates it (types converted);
    a ``ConfigError`` names the keys as this command spells them (``training.``, ``--width``)."""
    run_cfg = config.compose()
    with open_dict(run_cfg):
        run_cfg.dataset = cfg.dataset
        run_cfg.teacher_training = cfg.training
        run_cfg.teacher = {"name": teacher, "width": width, "kwargs": {}, "checkpoint": None}
    try:
        return validate(run_cfg)
    except ConfigError as exc:
        raise ConfigError(f"bad configuration: {exc}".replace("teacher_training.", "training.")
                          .replace("teacher.width", "--width")) from None


if __name__ == "__main__":
    logging.getLogger("nascomp").addHandler(logging.StreamHandler())  # the "torch threads: ..." line, on stderr
    logging.getLogger("nascomp").setLevel(logging.INFO)
    try:
        main()
    except (FileNotFoundError, ValueError, StartupError) as exc:  # the message says what was wrong and what to do
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OutputError as exc:  # the checkpoint (or its folder) could not be written: it names itself
        print(f"error: {exc}; the teacher was not saved: make room or choose another --out, then rerun", file=sys.stderr)
        sys.exit(2)
