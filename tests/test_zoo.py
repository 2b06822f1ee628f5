"""Models people use: opaque layers for what the space does not understand, and the torchvision zoo.

Every CNN classifier of ``torchvision.models`` (the library's own list, without the transformers
ViT, Swin and MaxViT) traced at a small input: the graph computes what the teacher computes, sampled
candidates build, run, are smaller and count their parameters exactly, ``l1`` inheritance is finite.
"""
import math
import re

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from nascomp import ArchGraph, CompressionSpace, GraphError, load_student
from nascomp.schema import OPERATORS  # the paper's operators: students that remove layers and add skips


class _Clip(torch.autograd.Function):
    """A construct nothing understands."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp(-1.0, 1.0)

    @staticmethod
    def backward(ctx, g):
        return g


def _clip(x):
    return _Clip.apply(x)


torch.fx.wrap("_clip")  # fx would trace into the Function's forward; wrapped, it is one opaque call


class _Branchy(nn.Module):
    """A submodule fx cannot trace (control flow on a tensor value), with parameters."""

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        if x.sum() > 0:
            return self.conv(x)
        return -self.conv(x)


class _Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.mid = nn.Conv2d(8, 8, 3, padding=1)
        self.branchy = _Branchy(8)
        self.tail = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = _clip(torch.relu(self.stem(x)))
        x = self.branchy(torch.relu(self.mid(x)))
        x = torch.relu(self.tail(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_a_construct_nothing_understands_is_kept_whole_and_the_rest_searches():
    torch.manual_seed(0)
    model = _Custom().eval()
    graph = ArchGraph.from_module(model, (3, 8, 8))
    opaque = [l for l in graph.layers if l.type == "opaque"]
    assert [l.attrs["construct"] for l in opaque] == ["_clip", "_Branchy"]
    assert graph.opaque["params"] == 8 * 8 * 9 + 8 and graph.opaque["constructs"] == {"_Branchy": 1, "_clip": 1}
    assert graph.num_params == sum(p.numel() for p in model.parameters())
    space = CompressionSpace(graph, shrink_groups="structural", ops=OPERATORS)
    # stem and mid feed opaque layers (pinned); tail is free
    tail = [j for j, l in enumerate(graph.layers) if l.target == "tail"][0]
    assert space.solution.free == [tail]
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(space.reference.build(model).eval()(x), model(x))
    for seed in range(10):
        cand = space.sample(seed=seed)
        net = cand.build(model, inherit="l1").eval()
        assert sum(p.numel() for p in net.parameters()) == cand.num_params < graph.num_params
        assert net(x).shape == (2, 5)
    # the kept submodule is the teacher's, copied: training the student leaves the teacher alone
    net = space.reference.build(model)
    kept = [m for m in net.modules() if isinstance(m, _Branchy)][0]
    assert torch.equal(kept.conv.weight, model.branchy.conv.weight)
    assert kept.conv.weight.data_ptr() != model.branchy.conv.weight.data_ptr()


def test_a_student_with_opaque_layers_saves_and_loads_with_its_teacher(tmp_path):
    from nascomp.export import StudentFileError

    torch.manual_seed(0)
    model = _Custom().eval()
    space = CompressionSpace(ArchGraph.from_module(model, (3, 8, 8)), shrink_groups="structural", ops=OPERATORS)
    cand = next(c for c in map(lambda seed: space.sample(seed=seed), range(50)) if len(c.graph.opaque["constructs"]) == 2)
    net = cand.build(model, inherit="l1").eval()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1.5)  # trained away from the teacher
    cand.save(tmp_path / "s", net)
    with pytest.raises(StudentFileError, match=r"2 opaque layer\(s\) \(_Branchy, _clip\).*load_student\(path, teacher=model\)"):
        load_student(tmp_path / "s")
    with pytest.raises(StudentFileError, match="the teacher given has no opaque layer"):
        load_student(tmp_path / "s", teacher=nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()))
    loaded = load_student(tmp_path / "s", teacher=model).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))  # the student's weights (not the teacher's), the teacher's code
        assert not torch.equal(loaded(x), space.reference.build(model).eval()(x))


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.conv(x) if x.mean() > 0 else self.conv(-x)


def test_a_model_whose_own_forward_cannot_be_traced_is_a_named_error():
    with pytest.raises(GraphError, match=r"cannot trace _Untraceable.forward.*move control flow .* into a submodule"):
        ArchGraph.from_module(_Untraceable(), (3, 4, 4))


class _SEBlock(nn.Module):
    """conv -> hardswish -> squeeze-excitation (mean, 1x1 convs, hard-sigmoid) -> x * gate ->
    stochastic depth -> layer scale -> mean over H, W -> linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.Hardswish()
        self.fc1, self.fc2 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
        self.drop = torchvision.ops.StochasticDepth(0.2, "row")
        self.gamma = nn.Parameter(torch.rand(8, 1, 1))
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = self.act(self.conv(x))
        gate = nn.functional.hardsigmoid(self.fc2(nn.functional.mish(self.fc1(x.mean((2, 3), keepdim=True)))))
        x = self.gamma * self.drop(x * gate)
        return self.head(x.mean([-1, -2]))


def test_gating_layer_scale_and_stochastic_depth_are_understood():
    torch.manual_seed(0)
    model = _SEBlock().eval()
    graph = ArchGraph.from_module(model, (3, 6, 6))
    assert [l.type for l in graph.layers] == ["conv", "hardswish", "mean", "conv", "mish", "conv", "hardsigmoid",
                                              "gate", "droppath", "scale", "mean", "linear"]
    assert graph.opaque["params"] == 0 and graph.num_params == sum(p.numel() for p in model.parameters())
    gate = graph.layers[7]
    assert gate.inputs == (1, 6) and gate.in_shape == (8, 6, 6)  # x first, then its (8, 1, 1) gate
    space = CompressionSpace(graph, shrink_groups="structural", ops=OPERATORS)
    # the gate's producer (fc2, layer 5) is tied to the gated tensor's (conv, layer 0): one symbol
    assert space.solution.free == [0, 3] and space.solution.out_exprs[5] == ((0, 1),)
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(space.reference.build(model).eval()(x), model(x))
    from nascomp.compression_space import Candidate

    half = Candidate(space, frozenset(), frozenset(), (0.5, 0.5))  # conv 8 -> 4, fc1 4 -> 2
    assert [l.out_channels for l in half.graph.layers] == [4, 4, 4, 2, 2, 4, 4, 4, 4, 4, 4, 5]
    # params: conv 3*4*9+4, fc1 4*2+2, fc2 2*4+4, gamma 4, head 4*5+5
    assert half.num_params == 112 + 10 + 12 + 4 + 25
    for mode in ("first", "l1"):
        net = half.build(model, inherit=mode).eval()
        assert sum(p.numel() for p in net.parameters()) == half.num_params
        assert torch.isfinite(net(x)).all()
    # l1 keeps the 4 conv filters of largest L1 norm, and the layer scale's entries of those channels
    kept = model.conv.weight.abs().flatten(1).sum(1) + model.fc2.weight.abs().flatten(1).sum(1)
    idx = kept.topk(4).indices.sort().values
    net = half.build(model, inherit="l1")
    assert torch.equal(net.layers[0].weight, model.conv.weight[idx]) and torch.equal(net.layers[9].weight, model.gamma[idx])


def test_a_torchvision_teacher_by_name_from_the_config_and_the_local_pretrained_cache(tmp_path):
    from nascomp import teachers
    from nascomp.config import compose
    from nascomp.pipeline import teacher_key

    cfg = compose(["teacher=torchvision", "teacher.name=mobilenet_v3_small", "dataset=cifar10"])
    assert cfg.teacher.kwargs.library == "torchvision" and cfg.teacher.checkpoint is None
    assert teacher_key(cfg)["teacher"]["kwargs"] == {"library": "torchvision"}  # not the CIFAR registry's name
    # no local file: torchvision's random init, 10 classes
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        torch.manual_seed(0)
        fresh = teachers.create(cfg.teacher.name, num_classes=10, width=cfg.teacher.width, **cfg.teacher.kwargs)
        assert fresh.classifier[-1].out_features == 10
        # a pretrained file in the cache (ImageNet's 1000 classes): every tensor but the head is loaded
        imagenet = torchvision.models.mobilenet_v3_small()
        weights = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT
        (tmp_path / "checkpoints").mkdir()
        torch.save(imagenet.state_dict(), tmp_path / "checkpoints" / weights.url.rsplit("/", 1)[1])
        model = teachers.create("mobilenet_v3_small", num_classes=10, library="torchvision")
    finally:
        torch.hub.set_dir(old)
    assert torch.equal(model.features[0][0].weight, imagenet.features[0][0].weight)
    assert not torch.equal(model.features[0][0].weight, fresh.features[0][0].weight)
    assert model.classifier[-1].weight.shape == (10, 1024)
    with pytest.raises(ValueError, match="torchvision has no classifier 'efficientnet_b9'"):
        teachers.create("efficientnet_b9", library="torchvision")
    with pytest.raises(ValueError, match=r"teacher=timm needs timm.*pip install 'nascomp\[timm\]'|timm has no model"):
        teachers.create("no_such_net", library="timm")



def test_a_pretrained_file_of_another_width_is_not_used(tmp_path):
    """mobilenet_v2 width_mult=0.5 with the full-width file in the hub cache: once 4 of its 262 tensors
    (those whose shapes happen to fit) were loaded, silently. A file whose tensors other than the head
    have other shapes is not used, with a warning saying how many."""
    from nascomp import teachers

    (tmp_path / "checkpoints").mkdir()
    file = tmp_path / "checkpoints" / torchvision.models.MobileNet_V2_Weights.DEFAULT.url.rsplit("/", 1)[1]
    full = {k: torch.randn(v.shape) if v.is_floating_point() else v
            for k, v in torchvision.models.mobilenet_v2().state_dict().items()}
    torch.save(full, file)  # random values: features.18.1 (BN of 1280 channels at either width) is not all ones
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        torch.manual_seed(0)
        with pytest.warns(UserWarning, match=r"mobilenet_v2: the pretrained file .* does not fit this model: 256 of "
                                             r"its tensors have another shape .*it is not used"):
            half = teachers.create("mobilenet_v2", num_classes=10, library="torchvision", width_mult=0.5)
    finally:
        torch.hub.set_dir(old)
    torch.manual_seed(0)
    fresh = torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.5)
    own, ref = half.state_dict(), fresh.state_dict()
    assert own["features.18.1.weight"].shape == full["features.18.1.weight"].shape  # it would fit
    assert all(torch.equal(own[k], ref[k]) for k in own)  # random init throughout (features.18.1 too)


def test_a_torchvision_densenet_pretrained_file_with_the_old_key_names_loads_whole(tmp_path):
    """torchvision's DenseNet files name a dense layer's tensors 'norm.1', 'conv.2', ... and torchvision
    renames them on load; the cache is loaded with the same renaming (once 4 of 120 conv weights loaded,
    silently). A file whose names do not match the model is loaded as far as it fits, with a warning."""
    import warnings

    from nascomp import teachers

    torch.manual_seed(1)
    imagenet = torchvision.models.densenet121()
    old_names = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))(\d)\.", r"\1.\2.", k): v
                 for k, v in imagenet.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert "features.denseblock1.denselayer1.norm.1.weight" in old_names  # the published format
    (tmp_path / "checkpoints").mkdir()
    file = tmp_path / "checkpoints" / torchvision.models.DenseNet121_Weights.DEFAULT.url.rsplit("/", 1)[1]
    torch.save(old_names, file)
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # every tensor is named in the file: no warning
            model = teachers.create("densenet121", num_classes=10, library="torchvision")
        torch.save({"module." + k: v for k, v in imagenet.state_dict().items()}, file)  # a DataParallel save
        with pytest.warns(UserWarning, match=r"densenet121: the pretrained file .* has no tensor named like 606 of "
                                             r"the model's 606 .*loaded 0, the rest keep their random init"):
            teachers.create("densenet121", num_classes=10, library="torchvision")
    finally:
        torch.hub.set_dir(old)
    own, ref = model.state_dict(), imagenet.state_dict()
    convs = [k for k in own if own[k].dim() == 4]
    assert len(convs) == 120 and all(torch.equal(own[k], ref[k]) for k in convs)
    loaded = [k for k in own if own[k].is_floating_point() and torch.equal(own[k], ref[k])]
    assert len(loaded) == len([k for k in own if own[k].is_floating_point()]) - 2  # all but the 10-class head
    assert model.classifier.weight.shape == (10, 1024)


# --------------------------------------------------------------------------- the torchvision zoo
TRANSFORMERS = ("vit_", "swin_", "maxvit_")  # attention models: not CNNs, not this space's subject
CNNS = [n for n in torchvision.models.list_models(module=torchvision.models) if not n.startswith(TRANSFORMERS)]


def _family(name: str) -> str:
    """resnet18 -> resnet, vgg11_bn -> vgg_bn, regnet_y_1_6gf -> regnet_y, efficientnet_v2_s -> efficientnet_v2."""
    name = re.sub(r"_(x\d+_\d+|(\d+_)?\d+[gm]f|[sml]|tiny|small|base|large|b\d)$", "", name)
    return re.sub(r"(?<=[a-uw-z])\d+(_\d+)?(x\d+d)?", "", name).rstrip("_")


def _size(name: str) -> int:
    return torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"]


FAMILIES: dict[str, str] = {}  # family -> its smallest member
for _name in sorted(CNNS, key=_size):
    FAMILIES.setdefault(_family(_name), _name)
FAST = ("mobilenet_v3_small", "squeezenet1_1")


def test_the_zoo_is_every_torchvision_cnn_family():
    assert len(CNNS) == 68 if len(torchvision.models.list_models(module=torchvision.models)) == 80 else len(CNNS) > 40
    assert {"resnet", "resnext", "wide_resnet", "vgg", "vgg_bn", "alexnet", "squeezenet", "densenet", "googlenet",
            "inception_v3", "mobilenet_v2", "mobilenet_v3", "mnasnet", "shufflenet_v2", "efficientnet", "efficientnet_v2",
            "regnet_x", "regnet_y", "convnext"} <= set(FAMILIES)
    assert set(FAST) <= set(FAMILIES.values())


def _check_model(name: str, candidates: int = 20) -> None:
    size = 80 if name in ("googlenet", "inception_v3") else 64  # inception_v3 needs 75x75 at least
    kwargs = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, num_classes=10, **kwargs)
    if sum(p.numel() for p in model.parameters()) > 50_000_000:  # VGG's 4096-wide classifier: each build copies ~100M weights
        candidates = 6
    check(model, size, candidates, name)


def check(model: nn.Module, size: int, candidates: int = 20, name: str = "") -> ArchGraph:
    """The zoo's checks on a 10-class ``model`` at input (3, size, size): the traced graph with the
    teacher's weights computes the teacher (eval mode, max abs difference <= 1e-4); ``candidates``
    samples build (``l1``; the first 3 also ``first``), run in train mode with finite outputs, are
    smaller than the teacher and count their parameters exactly. Returns the graph."""
    model.eval()
    for m in model.modules():  # BN statistics that are not 0 / 1, so copying them is checked
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    graph = ArchGraph.from_module(model, (3, size, size))
    assert graph.num_params == sum(p.numel() for p in model.parameters())
    space = CompressionSpace(graph, ops=OPERATORS)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        same = space.reference.build(model, bn_stats="copy").eval()(x)
        assert (same - model(x)).abs().max().item() <= 1e-4
        rng = np.random.default_rng(0)
        for i in range(candidates):
            cand = space.sample(rng)
            for mode in ("l1", "first") if i < 3 else ("l1",):
                net = cand.build(model, inherit=mode).train()  # BN on batch statistics, as training starts
                assert sum(p.numel() for p in net.parameters()) == cand.num_params < graph.num_params
                out = net(x)
                assert out.shape == (2, 10) and torch.isfinite(out).all(), (name, i, mode)
    return graph


@pytest.mark.parametrize("name", FAST)
def test_a_few_families_trace_compute_the_teacher_and_search(name):
    _check_model(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(FAMILIES.values()) - set(FAST)))
def test_every_family_traces_computes_the_teacher_and_searches(name):
    _check_model(name)


class _ViewShuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 12, 1), nn.Conv2d(12, 4, 1)

    def forward(self, x):
        x = self.a(x)
        n, c, h, w = x.size()
        x = torch.transpose(x.view(n, 3, c // 3, h, w), 1, 2).contiguous()
        return self.b(x.view(n, -1, h, w))


def test_a_channel_shuffle_written_with_view_and_transpose_is_a_shuffle():
    torch.manual_seed(0)
    model = _ViewShuffle().eval()
    graph = ArchGraph.from_module(model, (3, 4, 4))
    assert [(l.type, l.attrs["groups"]) for l in graph.layers] == [("conv", 1), ("shuffle", 3), ("conv", 1)]
    space = CompressionSpace(graph, ops=OPERATORS)
    assert space.solution.free == [0] and space.solution.divisor[0] == 3
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(space.reference.build(model).eval()(x), model(x))
    from nascomp.compression_space import Candidate

    half = Candidate(space, frozenset(), frozenset(), (0.5,))  # 12 -> 6 channels, 2 per shuffle group
    assert half.graph.layers[0].out_channels == 6
    # first: teacher channels 0, 1 | 4, 5 | 8, 9 kept; the student shuffles its 6 as the teacher did its 12
    net = half.build(model, inherit="first").eval()
    kept = torch.tensor([0, 1, 4, 5, 8, 9])
    assert torch.equal(net.layers[0].weight, model.a.weight[kept])
    # the student's shuffle of its 6 puts teacher channels 0 4 8 1 5 9 in a row, which the teacher's
    # shuffle of 12 (0 4 8 1 5 9 2 6 10 3 7 11) has at positions 0..5: b reads its first 6 inputs
    assert torch.equal(net.layers[2].weight, model.b.weight[:, :6])
    assert torch.isfinite(half.build(model, inherit="l1").eval()(x)).all()


class _ConvNeXtBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.norm = nn.LayerNorm(8)
        self.up, self.act, self.down = nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8)
        self.gamma = nn.Parameter(torch.rand(8, 1, 1))
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = self.stem(x)
        y = self.down(self.act(self.up(self.norm(self.dw(x).permute(0, 2, 3, 1))))).permute(0, 3, 1, 2)
        return self.head((x + self.gamma * y).mean((2, 3)))


def test_layernorm_and_linears_channels_last_are_a_channel_norm_and_1x1_convs():
    torch.manual_seed(0)
    model = _ConvNeXtBlock().eval()
    graph = ArchGraph.from_module(model, (3, 4, 4))
    # the residual x + gamma * y is folded into the mean, which sums its two inputs
    assert [(l.type, l.inputs) for l in graph.layers] == [
        ("conv", (-1,)), ("conv", (0,)), ("channel_norm", (1,)), ("conv", (2,)), ("gelu", (3,)), ("conv", (4,)),
        ("scale", (5,)), ("mean", (0, 6)), ("linear", (7,))]
    up = graph.layers[3]
    assert (up.target, up.attrs["kernel_size"], up.in_shape, up.out_shape) == ("up", (1, 1), (8, 4, 4), (16, 4, 4))
    assert graph.opaque["params"] == 0 and graph.num_params == sum(p.numel() for p in model.parameters())
    space = CompressionSpace(graph, shrink_groups="structural", ops=OPERATORS)
    assert space.solution.free == [0, 3]  # the stem's 8 (tied to down's by the residual) and the hidden 16
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        assert (space.reference.build(model).eval()(x) - model(x)).abs().max() < 1e-5
    from nascomp.compression_space import Candidate

    half = Candidate(space, frozenset(), frozenset(), (0.5, 0.5))  # 8 -> 4, 16 -> 8
    net = half.build(model, inherit="l1").eval()
    assert sum(p.numel() for p in net.parameters()) == half.num_params < graph.num_params
    hidden = model.up.weight.abs().sum(1).topk(8).indices.sort().values
    kept = (model.stem.weight.abs().flatten(1).sum(1) + model.down.weight.abs().sum(1)).topk(4).indices.sort().values
    assert torch.equal(net.layers[3].weight[:, :, 0, 0], model.up.weight[hidden][:, kept])
    assert torch.equal(net.layers[2].weight, model.norm.weight[kept]) and torch.isfinite(net(x)).all()


class DigitsWithClip(nn.Module):
    """A digits teacher (1x8x8) with a construct nothing understands (``_clip``) and a submodule fx
    cannot trace (``_Branchy``): the run's log line and summary.json name both."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.branchy = _Branchy(8)
        self.tail = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.branchy(_clip(torch.relu(self.stem(x))))
        x = torch.relu(self.tail(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.mark.slow
def test_the_run_says_which_teacher_parameters_are_frozen_in_opaque_layers(tmp_path, caplog):
    import json
    import logging

    from nascomp.config import compose
    from nascomp.pipeline import run
    from nascomp.schema import validate
    from test_run import TINY

    torch.manual_seed(0)
    checkpoint = tmp_path / "teacher.pt"
    torch.save(DigitsWithClip().state_dict(), checkpoint)
    cfg = validate(compose(TINY + ["teacher=custom", "teacher.name=test_zoo:DigitsWithClip", f"teacher.checkpoint={checkpoint}",
                                   "search.T=0", "final.enabled=false", "logger=none", f"teacher_dir={tmp_path / 'teachers'}"]))
    with caplog.at_level(logging.INFO, logger="nascomp"):
        run(cfg, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    total = 8 * 9 + 8 + 8 * 8 * 9 + 8 + 16 * 8 * 9 + 16 + 16 * 10 + 10
    assert summary["teacher"]["num_params"] == total
    # _Branchy's conv (8 * 8 * 9 + 8) is frozen; _clip has no parameters
    assert summary["opaque"] == {"params": 584, "share": pytest.approx(584 / total), "constructs": {"_Branchy": 1, "_clip": 1}}
    assert f"584 params ({100 * 584 / total:.1f}%) frozen in opaque layers: _Branchy x1, _clip x1" in caplog.text


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "shufflenet_v2_x0_5"])
def test_a_proxy_distillation_step_on_a_zoo_model(name, one_thread):
    """The search's own evaluation path (ProxyEvaluator: build with l1 inheritance, distil from the
    teacher, score by Eq. 6) on two sampled students of a torchvision model, one short epoch."""
    from nascomp import data
    from nascomp.config import group
    from nascomp.proxy_evaluator import ProxyEvaluator

    dataset = data.load(group("dataset", "synthetic", ["shape=[3,32,32]", "split.train=32", "split.val=16", "split.test=16"]))
    torch.manual_seed(0)
    teacher = torchvision.models.get_model(name, num_classes=10).eval()
    cfg = group("training", "proxy", ["epochs=1", "batch_size=16", "trainer.accelerator=cpu"])
    proxy = ProxyEvaluator(teacher, 0.5, dataset, cfg, inherit="l1")
    space = CompressionSpace(ArchGraph.from_module(teacher, (3, 32, 32)), ops=OPERATORS)
    candidates = [space.sample(seed=seed) for seed in range(2)]
    for cand in candidates:
        net = cand.build(teacher, inherit="l1")
        assert sum(p.numel() for p in net.parameters()) == cand.num_params < space.graph.num_params
    before = [c.build(teacher, inherit="l1").state_dict() for c in candidates]
    results = proxy.train(candidates)
    evaluations = [proxy.score(r, proxy.objective.costs(c.graph), 0.0) for r, c in zip(results, candidates)]
    for cand, result, evaluation, start in zip(candidates, results, evaluations, before):
        assert not result.diverged and not evaluation.failed, evaluation.error
        assert 0.0 <= result.val_accuracy <= 1.0 and math.isfinite(evaluation.f)
        assert evaluation.num_params == cand.num_params and evaluation.flops == cand.flops > 0
        # search.target=accuracy's split of Eq. 6: the known cost factor times the accuracy ratio is f
        assert proxy.factor(cand) * result.val_accuracy / proxy.reference_accuracy == pytest.approx(evaluation.f, rel=1e-9)
        trained = result.state_dict
        assert trained.keys() == start.keys() and all(torch.isfinite(v.float()).all() for v in trained.values())
        assert any(not torch.equal(trained[k], start[k]) for k in start if start[k].is_floating_point())  # it trained


class _SplitBlock(nn.Module):
    """chunk, split and x[:, a:b] with concats (ShuffleNetV2's stride-1 block, GhostNet's cut, CSP's halves)."""

    def __init__(self):
        super().__init__()
        self.stem, self.branch = nn.Conv2d(3, 8, 1), nn.Conv2d(4, 6, 3, padding=1)
        self.mix, self.head = nn.Conv2d(10, 5, 1), nn.Linear(12, 3)

    def forward(self, x):
        x1, x2 = self.stem(x).chunk(2, dim=1)  # 4 + 4
        z = torch.cat([x1, torch.relu(self.branch(x2))], 1)  # 4 + 6
        left, _ = z.split([7, 3], 1)
        return self.head(torch.cat([self.mix(z), z[:, 2:7], left[:, :2]], 1).mean((2, 3)))


def test_split_chunk_and_slices_of_channels_cut_the_channel_symbols_they_divide():
    from nascomp.compression_space import Candidate

    torch.manual_seed(0)
    model = _SplitBlock().eval()
    graph = ArchGraph.from_module(model, (3, 4, 4))
    assert [(l.type, l.inputs, l.attrs.get("start"), l.attrs.get("stop")) for l in graph.layers] == [
        ("conv", (-1,), None, None), ("slice", (0,), 0, 4), ("slice", (0,), 4, 8), ("conv", (2,), None, None),
        ("relu", (3,), None, None), ("concat", (1, 4), None, None), ("slice", (5,), 0, 7), ("slice", (5,), 7, 10),
        ("conv", (5,), None, None), ("slice", (5,), 2, 7), ("slice", (6,), 0, 2), ("concat", (8, 9, 10), None, None),
        ("mean", (11,), None, None), ("linear", (12,), None, None)]
    assert graph.opaque["params"] == 0
    space = CompressionSpace(graph, shrink_groups="structural", ops=OPERATORS)
    sol = space.solution
    # the stem's 8 channels are cut at 2 and 4 (symbols 50, 51, 21), the branch's 6 at 3 (40, 41); mix is 8
    assert sol.free == [8, 21, 40, 41, 50, 51] and [sol.teacher_width[s] for s in sol.free] == [5, 4, 3, 3, 2, 2]
    assert sol.out_exprs[0] == ((50, 1), (51, 1), (21, 1)) and sol.out_exprs[9] == ((51, 1), (40, 1))
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        assert torch.equal(space.reference.build(model).eval()(x), model(x))
    # widths: mix 5 -> 3, 21: 4 -> 2, 40: 3, 41: 3 -> 1, 50: 2 -> 1, 51: 2
    cand = Candidate(space, frozenset(), frozenset(), (0.4, 0.5, 0.0, 0.5, 0.5, 0.0))
    assert [(l.attrs["start"], l.attrs["stop"]) for l in cand.graph.layers if l.type == "slice"] == [
        (0, 3), (3, 5), (0, 6), (6, 7), (1, 6), (0, 1)]
    net = cand.build(model, inherit="first").eval()
    assert sum(p.numel() for p in net.parameters()) == cand.num_params < graph.num_params
    stem_rows = [0, 2, 3, 4, 5]  # 50 keeps teacher channel 0, 51 channels 2, 3, 21 channels 4, 5
    assert torch.equal(net.layers[0].weight, model.stem.weight[stem_rows])
    assert torch.equal(net.layers[3].weight, model.branch.weight[:4][:, [0, 1]])  # 40 whole, 41 its first; x2's 0, 1
    assert torch.equal(net.layers[8].weight, model.mix.weight[:3][:, [0, 2, 3, 4, 5, 6, 7]])
    # head reads mix's 0..2, z[:, 2:7]'s 51 (0, 1) and 40 (2, 3, 4), left[:, :2]'s 50 (0): offsets 0, 5, 10
    assert torch.equal(net.layers[13].weight, model.head.weight[:, [0, 1, 2, 5, 6, 7, 8, 9, 10]])
    assert torch.isfinite(net(x)).all() and net(x).shape == (2, 3)
    # l1: symbol 21 keeps the 2 of the stem's filters 4..7 of largest L1 norm
    top = model.stem.weight[4:].abs().flatten(1).sum(1).topk(2).indices.sort().values + 4
    net = cand.build(model, inherit="l1").eval()
    assert torch.equal(net.layers[0].weight[3:], model.stem.weight[top]) and torch.isfinite(net(x)).all()


class _ShuffleThenChunk(nn.Module):
    """A chunk of a shuffled tensor: its halves are not the concat's terms, so the channels it reads stay whole."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = nn.functional.channel_shuffle(torch.cat([self.a(x), self.b(x)], 1), 2)
        y1, y2 = y.chunk(2, 1)
        return torch.cat([y1, self.c(y2)], 1)


def test_a_chunk_of_a_shuffled_tensor_fixes_the_channels_it_reads():
    torch.manual_seed(0)
    model = _ShuffleThenChunk().eval()
    graph = ArchGraph.from_module(model, (3, 4, 4))
    space = CompressionSpace(graph, ops=OPERATORS)
    assert [l.type for l in graph.layers] == ["conv", "conv", "concat", "shuffle", "slice", "slice", "conv", "concat"]
    assert space.solution.free == []  # a and b pinned by the slices, c by the output
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(space.reference.build(model).eval()(x), model(x))


class _HRFuse(nn.Module):
    """HRNet's fuse: a low-resolution branch upsampled (nn.Upsample, F.interpolate) and added."""

    def __init__(self):
        super().__init__()
        self.high, self.low, self.up = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.Upsample(scale_factor=2)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        low = self.low(x)
        y = self.high(x) + self.up(low) + nn.functional.interpolate(low, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.head(y.mean((2, 3)))


def test_upsample_and_interpolate_preserve_channels():
    from nascomp.compression_space import Candidate

    torch.manual_seed(0)
    model = _HRFuse().eval()
    graph = ArchGraph.from_module(model, (3, 8, 8))
    ups = [l for l in graph.layers if l.type == "upsample"]
    assert [(l.attrs["mode"], l.in_shape, l.out_shape) for l in ups] == [("nearest", (6, 4, 4), (6, 8, 8)),
                                                                         ("bilinear", (6, 4, 4), (6, 8, 8))]
    assert graph.opaque["params"] == 0
    space = CompressionSpace(graph, shrink_groups="structural", ops=OPERATORS)
    assert len(space.solution.free) == 1  # high and low tied by the sum through the upsamples
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert (space.reference.build(model).eval()(x) - model(x)).abs().max() < 1e-6
        half = Candidate(space, frozenset(), frozenset(), (0.5,))
        net = half.build(model, inherit="first").eval()
        assert [l.out_channels for l in half.graph.layers if l.type == "upsample"] == [3, 3]
        assert torch.equal(net.layers[0].weight, model.low.weight[:3]) and torch.isfinite(net(x)).all()
        assert sum(p.numel() for p in net.parameters()) == half.num_params


def test_an_opaque_layer_counts_the_convs_inside_it_as_fvcore_does():
    from benchmarks.costs import fvcore_ops

    torch.manual_seed(0)
    model = _Custom().eval()
    graph = ArchGraph.from_module(model, (3, 8, 8))
    (branchy,) = [l for l in graph.layers if l.attrs.get("construct") == "_Branchy"]
    assert branchy.flops == 8 * 8 * 9 * 8 * 8  # its 3x3 conv, 8 -> 8 channels, at 8x8
    ops = fvcore_ops(model, (3, 8, 8))
    assert graph.flops == ops["conv"] + ops["linear"]
