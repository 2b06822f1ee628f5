"""Bring-your-own teacher end to end, ONNX export, and loading errors."""
import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from nascomp import ArchGraph, CompressionSpace, export_onnx, load_student
from nascomp.export import StudentFileError
from nascomp.schema import OPERATORS  # the paper's operators: students that remove layers and add skips


class ResidualCNN(nn.Module):
    """A residual CNN that exists only in this test."""

    def __init__(self, num_classes=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(12, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(), nn.Conv2d(12, 12, 3, padding=1))
        self.down = nn.Conv2d(12, 24, 3, stride=2, padding=1)
        self.b = nn.Sequential(nn.BatchNorm2d(24), nn.GELU(), nn.Conv2d(24, 24, 1))
        self.c = nn.Sequential(nn.BatchNorm2d(24), nn.ReLU(), nn.Conv2d(24, 24, 1))
        self.head = nn.Linear(24, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.a(x))
        x = self.down(x)
        x = x + self.b(x)
        x = x + self.c(x)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_own_teacher_trace_sample_build_forward_export(tmp_path):
    teacher = ResidualCNN().eval()
    graph = ArchGraph.from_module(teacher, (3, 16, 16))
    assert graph.num_params == sum(p.numel() for p in teacher.parameters())
    assert any(l.type == "add" for l in graph.layers)  # x + b(x) feeds c and the next sum: an add layer
    space = CompressionSpace(graph, ops=OPERATORS)
    rng = np.random.default_rng(0)
    for _ in range(10):
        child = space.sample(rng)
        student = child.build(teacher, inherit="l1").eval()
        x = torch.randn(2, 3, 16, 16)
        assert student(x).shape == (2, 4)
        assert sum(p.numel() for p in student.parameters()) == child.num_params < graph.num_params
    child.save(tmp_path / "s", student)
    path = export_onnx(load_student(tmp_path / "s"), tmp_path / "s.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert model.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 3


def test_onnx_matches_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    teacher = ResidualCNN().eval()
    space = CompressionSpace(ArchGraph.from_module(teacher, (3, 16, 16)), ops=OPERATORS)
    student = space.sample(np.random.default_rng(1)).build(teacher).eval()
    path = export_onnx(student, tmp_path / "s.onnx")
    x = torch.randn(5, 3, 16, 16)
    (y,) = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})
    assert np.allclose(y, student(x).detach().numpy(), atol=1e-5)


def test_shufflenet_student_exports_and_matches_torch(tmp_path):
    """aten::channel_shuffle has no TorchScript-exporter symbolic; the dynamo exporter handles it."""
    import onnxruntime as ort  # in the dev extras

    from nascomp import teachers

    teacher = teachers.create("shufflenet_g2", num_classes=10, width=0.125).eval()
    graph = ArchGraph.from_module(teacher, (3, 32, 32))
    student = CompressionSpace(graph, ops=OPERATORS).sample(seed=0).build(teacher).eval()
    assert any(isinstance(m, nn.ChannelShuffle) for m in student.modules())
    path = export_onnx(student, tmp_path / "s.onnx")
    onnx.checker.check_model(onnx.load(str(path)))
    x = torch.randn(3, 3, 32, 32)  # a batch other than the export's: the batch dimension is dynamic
    (y,) = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})
    assert np.allclose(y, student(x).detach().numpy(), atol=1e-5)


def test_export_falls_back_to_the_torchscript_exporter(tmp_path, monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    real = torch.onnx.export

    def no_dynamo(*args, dynamo=True, **kwargs):
        if dynamo:
            raise RuntimeError("dynamo exporter unavailable")
        return real(*args, dynamo=dynamo, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", no_dynamo)
    teacher = ResidualCNN().eval()
    student = CompressionSpace(ArchGraph.from_module(teacher, (3, 16, 16)), ops=OPERATORS).sample(np.random.default_rng(1)).build(teacher).eval()
    path = export_onnx(student, tmp_path / "s.onnx")
    x = torch.randn(5, 3, 16, 16)
    (y,) = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})
    assert np.allclose(y, student(x).detach().numpy(), atol=1e-5)


def test_loading_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="architecture.json is missing"):
        load_student(tmp_path)
    teacher = ResidualCNN()
    space = CompressionSpace(ArchGraph.from_module(teacher, (3, 16, 16)), ops=OPERATORS)
    a, b = space.sample(np.random.default_rng(0)), space.sample(np.random.default_rng(1))
    a.save(tmp_path / "a", a.build(teacher))
    torch.save(b.build(teacher).state_dict(), tmp_path / "a" / "weights.pt")
    with pytest.raises(ValueError, match="does not match architecture.json"):
        load_student(tmp_path / "a")


@pytest.fixture
def saved(tmp_path):
    """A real student saved to disk, with the module it was saved from and a sample input."""
    teacher = ResidualCNN().eval()
    child = CompressionSpace(ArchGraph.from_module(teacher, (3, 16, 16)), ops=OPERATORS).sample(np.random.default_rng(2))
    student = child.build(teacher).eval()
    child.save(tmp_path / "s", student)
    return tmp_path / "s", student, torch.randn(3, 3, 16, 16)


def _tamper(path, edit, rekey=False):
    """Apply ``edit`` to the saved architecture.json; ``rekey`` also rewrites its key as a careful editor would."""
    doc = json.loads((path / "architecture.json").read_text())
    edit(doc)
    if rekey:
        from nascomp.graph import Layer

        graph = ArchGraph([Layer.from_json(x) for x in doc["layers"]], tuple(doc["input_shape"]), doc["output"])
        doc["key"] = graph.key
    (path / "architecture.json").write_text(json.dumps(doc))


def _first(doc, kind):
    return next(i for i, l in enumerate(doc["layers"]) if l["type"] == kind)


def test_untampered_student_loads_with_the_same_outputs(saved):
    path, student, x = saved
    loaded = load_student(path).eval()
    assert torch.equal(loaded(x), student(x))
    assert loaded.graph.key == json.loads((path / "architecture.json").read_text())["key"]


def test_a_student_saved_before_the_kernel_size_rename_loads(saved):
    """architecture.json files written when the conv attribute was ``kernel`` keep loading, same key."""
    path, student, x = saved

    def old_names(doc):
        for layer in doc["layers"]:
            if "kernel_size" in layer["attrs"]:
                layer["attrs"]["kernel"] = layer["attrs"].pop("kernel_size")

    _tamper(path, old_names)
    doc = json.loads((path / "architecture.json").read_text())
    assert any("kernel" in l["attrs"] for l in doc["layers"])
    loaded = load_student(path).eval()
    assert loaded.graph.key == doc["key"] and torch.equal(loaded(x), student(x))


def _set_input(layer, value):
    def edit(doc):
        doc["layers"][layer]["inputs"] = [value]
    return edit


def _negative_channels(doc):
    j = _first(doc, "conv")
    doc["layers"][j]["out_shape"][0] = -doc["layers"][j]["out_shape"][0]


def _relu_to_tanh(doc):
    doc["layers"][_first(doc, "relu")]["type"] = "tanh"


def _bigger_input(doc):
    doc["input_shape"] = [3, 32, 32]


def _stride_two(doc):
    doc["layers"][_first(doc, "conv")]["attrs"]["stride"] = [2, 2]


@pytest.mark.parametrize("edit, rekey, message", [
    (_set_input(3, 999), False, r"layer 3 \(.*\): input 999 is not a layer index"),
    (_set_input(2, 5), False, r"layer 2 \(.*\): input 5 is not an earlier layer"),
    (lambda d: d.update(output=len(d["layers"])), False, r"output \d+ is not a layer index"),
    (_bigger_input, False, r"layer 0 \(.*\) records in_shape \(3, 16, 16\) but its inputs \(-1,\) give \(3, 32, 32\)"),
    (_negative_channels, False, r"out_shape \(-\d+, 16, 16\) is not a shape"),
    (_relu_to_tanh, False, r"records key '[0-9a-f]{32}' but its layers hash to '[0-9a-f]{32}': the architecture was edited"),
    (lambda d: d.update(output=d["output"] - 1), False, r"layers hash to .* was edited after saving"),
    (_stride_two, True, r"layer 0 \(.*conv\) computes shape \(\d+, 8, 8\) from in_shape \(3, 16, 16\), but records out_shape \(\d+, 16, 16\)"),
    (lambda d: d.update(format="nascomp-student/0"), False, r"is not a nascomp-student/1 file"),
], ids=["dangling-input", "forward-reference", "output-out-of-range", "changed-input-shape", "negative-channels",
        "relu-to-tanh-old-key", "output-moved-old-key", "stride-changed-key-rewritten", "format"])
def test_tampered_architecture_is_refused(saved, edit, rekey, message):
    path, _, _ = saved
    _tamper(path, edit, rekey)
    with pytest.raises(StudentFileError, match=message) as info:
        load_student(path)
    assert str(path / "architecture.json") in str(info.value) and "save the student again" in str(info.value)


def test_every_registered_teacher_and_its_candidates_validate():
    """No false alarms: traced teachers and the students CompressionSpace realises from them are valid."""
    from nascomp import teachers

    rng = np.random.default_rng(0)
    for name in teachers.names():
        shape = (1, 8, 8) if name == "small_resnet" else (3, 32, 32)
        graph = ArchGraph.from_module(teachers.create(name, width=0.25), shape)
        assert graph.validate() is graph
        space = CompressionSpace(graph, ops=OPERATORS)
        for _ in range(3):
            child = space.sample(rng)
            assert ArchGraph.from_json(child.graph.to_json()).key == child.key  # from_json validates
