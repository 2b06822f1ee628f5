"""nascomp: neural architecture compression with a learnable embedding-space kernel
(Cao, Wang, Kitani, ICLR 2019).

The top-level names are imported on first use (PEP 562), so ``import nascomp.config`` (the results
tools, ``experiments/aggregate.py``) does not import torch."""
from __future__ import annotations

import importlib

_NAMES = {"teachers": "nascomp.teachers", "load_student": "nascomp.export", "export_onnx": "nascomp.export",
          "ArchGraph": "nascomp.graph", "GraphError": "nascomp.graph", "GraphNet": "nascomp.graph",
          "CompressionSpace": "nascomp.compression_space", "Candidate": "nascomp.compression_space"}

__all__ = list(_NAMES)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'nascomp' has no attribute {name!r}")
    module = importlib.import_module(_NAMES[name])
    value = module if name == "teachers" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_NAMES))
