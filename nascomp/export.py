"""Saving, loading and exporting students: ``architecture.json`` (the student's ``ArchGraph``) and
``weights.pt`` (a plain state_dict, loadable with ``torch.load(..., weights_only=True)``).

``load_student`` trusts neither file: the graph is validated (``ArchGraph.validate``) and its key
recomputed and compared with the one ``save_student`` wrote, so an edited architecture (a layer's
type, an input index, a shape) is refused with ``StudentFileError`` instead of loading into a
network that computes something else.

An opaque layer (``nascomp.graph``: a construct the space keeps whole) computes with the teacher's
own code, which JSON cannot hold: a student with opaque layers loads with its teacher,
``load_student(path, teacher=model)``, which is traced again for those layers' computations (the
weights still come from ``weights.pt``)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from nascomp.graph import ArchGraph, GraphError, GraphNet

ARCHITECTURE_FILE = "architecture.json"
WEIGHTS_FILE = "weights.pt"
FORMAT = "nascomp-student/1"


class StudentFileError(ValueError):
    """A saved student whose files are inconsistent or were edited: which file, what is wrong, what to do."""


def save_student(path: str | Path, graph: ArchGraph, module: nn.Module) -> Path:
    """Write ``path/architecture.json`` and ``path/weights.pt``; returns ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, "key": graph.key, "num_params": graph.num_params, **graph.to_json()}
    (path / ARCHITECTURE_FILE).write_text(json.dumps(doc, indent=1))
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    torch.save(state, path / WEIGHTS_FILE)
    return path


def load_student(path: str | Path, teacher: nn.Module | None = None) -> GraphNet:
    """Rebuild a saved student (architecture + weights) in one call. ``teacher``: the network the
    student was searched from, needed only when the student has opaque layers (module docstring)."""
    path = Path(path)
    arch_file, weights_file = path / ARCHITECTURE_FILE, path / WEIGHTS_FILE
    for f in (arch_file, weights_file):
        if not f.is_file():
            raise FileNotFoundError(f"{str(path)!r} is not a saved student: {f.name} is missing")
    resave = "restore the file as save_student wrote it, or save the student again (nascomp.export.save_student)"
    try:
        doc = json.loads(arch_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StudentFileError(f"{str(arch_file)!r} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise StudentFileError(f"{str(arch_file)!r} is not a {FORMAT} file (format {found!r}); {resave}")
    try:
        graph = ArchGraph.from_json(doc)
    except GraphError as exc:
        raise StudentFileError(f"{str(arch_file)!r} is not a valid architecture: {exc}; the file was edited or "
                               f"damaged: {resave}") from exc
    except ValueError as exc:
        raise StudentFileError(f"{str(arch_file)!r}: {exc}; {resave}") from exc
    if doc.get("key") != graph.key:
        raise StudentFileError(f"{str(arch_file)!r} records key {doc.get('key')!r} but its layers hash to "
                               f"{graph.key!r}: the architecture was edited after saving (a layer's type, inputs, "
                               f"shapes or attrs) and no longer matches {WEIGHTS_FILE}; {resave}")
    graph = _with_opaque_modules(graph, teacher, arch_file)
    net = graph.build()
    try:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise StudentFileError(f"{str(weights_file)!r} does not match {ARCHITECTURE_FILE}: {exc}") from exc
    except Exception as exc:
        raise StudentFileError(f"{str(weights_file)!r} cannot be read as a weights-only state_dict: {exc}") from exc
    return net


def _with_opaque_modules(graph: ArchGraph, teacher: nn.Module | None, arch_file: Path) -> ArchGraph:
    """``graph`` whose opaque layers compute what the same-named opaque layers of ``teacher``'s graph do."""
    opaque = [layer for layer in graph.layers if layer.opaque]
    if not opaque:
        return graph
    names = ", ".join(sorted({layer.attrs.get("construct", "?") for layer in opaque}))
    if teacher is None:
        raise StudentFileError(f"{str(arch_file)!r} has {len(opaque)} opaque layer(s) ({names}) that compute with the "
                               "teacher's own code: pass the teacher it was searched from, load_student(path, teacher=model)")
    traced = {layer.name: layer for layer in ArchGraph.from_module(teacher, graph.input_shape).layers if layer.opaque}
    missing = [layer.name for layer in opaque if layer.name not in traced
               or traced[layer.name].attrs.get("construct") != layer.attrs.get("construct")]
    if missing:
        raise StudentFileError(f"the teacher given has no opaque layer {missing[0]!r} "
                               f"({next(l.attrs.get('construct') for l in opaque if l.name == missing[0])}) as "
                               f"{str(arch_file)!r} records: pass the teacher the student was searched from")
    layers = [dataclasses.replace(layer, module=traced[layer.name].module) if layer.opaque else layer for layer in graph.layers]
    return ArchGraph(layers, graph.input_shape, graph.output)


def export_onnx(module: GraphNet, path: str | Path, opset: int = 18) -> Path:
    """Export a student to ONNX (batch dimension dynamic), as one file.

    The dynamo exporter (``torch.onnx.export(..., dynamo=True)``, with ``onnxscript``, a dependency)
    is tried first: it exports what the TorchScript exporter refuses (``aten::channel_shuffle`` in
    ShuffleNets; an ``adaptive_avg_pool2d`` whose output size does not divide its input, as in
    torchvision's VGG at 32x32 or AlexNet at 64x64). Should it fail, the TorchScript exporter is tried."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    shape = module.graph.input_shape
    try:
        # batch 2, not 1: torch.export specialises a dimension of size 1 and would refuse it as dynamic
        torch.onnx.export(module, (torch.zeros(2, *shape),), str(path), input_names=["input"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=opset, dynamo=True,
                          external_data=False, verbose=False)
    except Exception as dynamo:
        try:
            torch.onnx.export(module, (torch.zeros(1, *shape),), str(path), input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                              dynamo=False)
        except Exception as legacy:
            first = (str(legacy).splitlines() or [""])[0]
            raise RuntimeError(f"ONNX export failed with both exporters: dynamo ({type(dynamo).__name__}: {dynamo}); "
                               f"TorchScript ({type(legacy).__name__}: {first})") from legacy
    return path
