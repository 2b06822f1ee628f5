"""Saving, loading and exporting students: ``architecture.json`` (the student's ``ArchGraph``) and
``weights.pt`` (a plain state_dict, loadable with ``torch.load(..., weights_only=True)``)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from nascomp.graph import ArchGraph, GraphNet

ARCHITECTURE_FILE = "architecture.json"
WEIGHTS_FILE = "weights.pt"


def save_student(path: str | Path, graph: ArchGraph, module: nn.Module) -> Path:
    """Write ``path/architecture.json`` and ``path/weights.pt``; returns ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    doc = {"format": "nascomp-student/1", "key": graph.key, "num_params": graph.num_params, **graph.to_json()}
    (path / ARCHITECTURE_FILE).write_text(json.dumps(doc, indent=1))
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    torch.save(state, path / WEIGHTS_FILE)
    return path


def load_student(path: str | Path) -> GraphNet:
    """Rebuild a saved student (architecture + weights) in one call."""
    path = Path(path)
    arch_file, weights_file = path / ARCHITECTURE_FILE, path / WEIGHTS_FILE
    for f in (arch_file, weights_file):
        if not f.is_file():
            raise FileNotFoundError(f"{str(path)!r} is not a saved student: {f.name} is missing")
    try:
        graph = ArchGraph.from_json(json.loads(arch_file.read_text()))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{str(arch_file)!r} is not valid JSON: {exc}") from exc
    net = graph.build()
    try:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{str(weights_file)!r} does not match {ARCHITECTURE_FILE}: {exc}") from exc
    except Exception as exc:
        raise ValueError(f"{str(weights_file)!r} cannot be read as a weights-only state_dict: {exc}") from exc
    return net


def export_onnx(module: GraphNet, path: str | Path, opset: int = 18) -> Path:
    """Export a student to ONNX (batch dimension dynamic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    x = torch.zeros(1, *module.graph.input_shape)
    torch.onnx.export(module, (x,), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset, dynamo=False)
    return path
