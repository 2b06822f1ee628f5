"""Bring-your-own teacher end to end, ONNX export, and loading errors."""
import numpy as np
import onnx
import pytest
import torch
from torch import nn

from nascomp import ArchGraph, CompressionSpace, export_onnx, load_student


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
    space = CompressionSpace(graph)
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
    space = CompressionSpace(ArchGraph.from_module(teacher, (3, 16, 16)))
    student = space.sample(np.random.default_rng(1)).build(teacher).eval()
    path = export_onnx(student, tmp_path / "s.onnx")
    x = torch.randn(5, 3, 16, 16)
    (y,) = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})
    assert np.allclose(y, student(x).detach().numpy(), atol=1e-5)


def test_loading_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="architecture.json is missing"):
        load_student(tmp_path)
    teacher = ResidualCNN()
    space = CompressionSpace(ArchGraph.from_module(teacher, (3, 16, 16)))
    a, b = space.sample(np.random.default_rng(0)), space.sample(np.random.default_rng(1))
    a.save(tmp_path / "a", a.build(teacher))
    torch.save(b.build(teacher).state_dict(), tmp_path / "a" / "weights.pt")
    with pytest.raises(ValueError, match="does not match architecture.json"):
        load_student(tmp_path / "a")
