"""Configuration: the ``conf/`` tree (shipped inside the package as ``nascomp.conf``) is the single
source of truth for every number. ``group("space", "default")`` loads one group file;
``compose([...])`` composes the main config in-process, as ``python -m nascomp.run`` would."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf


def config_dir() -> Path:
    """``conf/``: the installed ``nascomp.conf`` package, else the source checkout's top-level folder."""
    spec = importlib.util.find_spec("nascomp.conf")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(__file__).resolve().parents[1] / "conf"


def group(name: str, option: str, overrides: Sequence[str] = ()) -> DictConfig:
    """``conf/<name>/<option>.yaml`` (following its ``defaults`` list) with dot-list ``overrides``."""
    path = config_dir() / name / f"{option}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise FileNotFoundError(f"no config {name}={option} (looked for {path}); known: {known}")
    cfg = OmegaConf.load(path)
    parents = [group(name, d) for d in cfg.pop("defaults", []) if isinstance(d, str) and d != "_self_"]
    return OmegaConf.merge(*parents, cfg, OmegaConf.from_dotlist(list(overrides)))


def compose(overrides: Sequence[str] = (), config_name: str = "config") -> DictConfig:
    """The main config composed with Hydra's compose API (overrides as on the command line)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        return hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=False)


def split_top(text: str) -> list[str]:
    """``text`` split at the commas outside brackets: ``"a,b[c,d],e=[f,g]"`` -> ["a", "b[c,d]", "e=[f,g]"]
    (a comma list of methods with overrides, as the benchmarks and ``experiments/aggregate.py`` take it)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "[") - (ch == "]")
        if depth < 0:
            raise ValueError(f"unbalanced brackets in {text!r}")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise ValueError(f"unbalanced brackets in {text!r}")
    return [p.strip() for p in parts + [text[start:]] if p.strip()]


def split_label(label: str) -> tuple[str, list[str], str]:
    """A result label ``name[override,...] suffix`` -> (name, overrides, suffix): ``"ours[search.K=1,space.ops=[a,b]]
    zero_shot from x"`` -> ("ours", ["search.K=1", "space.ops=[a,b]"], " zero_shot from x"); no brackets: no
    overrides, the suffix from the first space or parenthesis."""
    name = re.match(r"[^\[\s(]*", label).group()
    rest = label[len(name):]
    if not rest.startswith("["):
        return name, [], rest
    depth = 0
    for i, ch in enumerate(rest):
        depth += (ch == "[") - (ch == "]")
        if depth == 0:
            return name, split_top(rest[1:i]), rest[i + 1:]
    raise ValueError(f"unbalanced brackets in {label!r}")


def join_label(name: str, overrides: Sequence[str], suffix: str = "") -> str:
    """The inverse of :func:`split_label`."""
    return name + (f"[{','.join(overrides)}]" if overrides else "") + suffix
