"""The architecture graph: tracing, layer counts, exact execution, unsupported ops, encoding."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nascomp import ArchGraph, CompressionSpace, teachers
from nascomp.encoding import LAYER_TYPES, NUM_ATTRIBUTES, LayerSpec, encode, encoding_width
from nascomp.schema import OPERATORS  # the paper's operators: students that remove layers and add skips

# layer counts of the reference code (REFERENCE §3): a residual sum is two incoming edges, not a layer
REFERENCE_LAYERS = {"vgg19": 55, "resnet18": 60, "resnet34": 108, "shufflenet_g2": 159}


def _shape(name):
    return (1, 8, 8) if name == "small_resnet" else (3, 32, 32)


def _randomise_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
            m.bias.data.normal_()
    return model


@pytest.mark.parametrize("name", sorted(REFERENCE_LAYERS))
def test_layer_counts_and_params(name):
    model = teachers.create(name)
    graph = ArchGraph.from_module(model, (3, 32, 32))
    assert len(graph) == REFERENCE_LAYERS[name]
    assert graph.num_params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", teachers.names())
def test_graph_module_computes_what_the_teacher_computes(name):
    torch.manual_seed(0)
    model = _randomise_bn(teachers.create(name, width=0.25)).eval()
    graph = ArchGraph.from_module(model, _shape(name))
    student = CompressionSpace(graph).reference.build(model, inherit="first", bn_stats="copy").eval()
    x = torch.randn(4, *_shape(name))
    with torch.no_grad():
        assert torch.equal(student(x), model(x))


def test_shapes_and_edges_of_a_residual_block():
    graph = ArchGraph.from_module(teachers.create("resnet18"), (3, 32, 32))
    stem_relu, conv1 = graph.layers[2], graph.layers[3]
    assert (stem_relu.type, stem_relu.out_shape) == ("relu", (64, 32, 32))
    assert (conv1.type, conv1.inputs, conv1.num_params) == ("conv", (2,), 64 * 64 * 9)
    block_out = graph.layers[8]  # relu2 of layer1.0 sums bn2 (7) and the identity shortcut (2)
    assert (block_out.type, block_out.inputs) == ("relu", (7, 2))
    down = [l for l in graph.layers if l.target == "layer2.0.shortcut.0"][0]
    assert (down.in_shape, down.out_shape, down.attrs["stride"]) == ((64, 32, 32), (128, 16, 16), (2, 2))


class _Functional(nn.Module):
    """Functional calls and x.view(N, -1) are represented too."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 5)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        x = torch.cat([x, F.avg_pool2d(x, 3, 1, 1)], 1)
        return self.fc(x.view(x.size(0), -1))


def test_functional_calls_and_view_are_traced():
    model = _Functional().eval()
    graph = ArchGraph.from_module(model, (3, 8, 8))
    assert [l.type for l in graph.layers] == ["conv", "relu", "maxpool", "avgpool", "concat", "flatten", "linear"]
    net = CompressionSpace(graph).reference.build(model, bn_stats="copy").eval()
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(net(x), model(x))


class _SqueezeHead(nn.Module):
    """A head that squeezes the pooled (N, C, 1, 1) to (N, C) instead of flattening it."""

    def __init__(self, how):
        super().__init__()
        self.how = how
        self.conv, self.pool, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Linear(8, 5)

    def forward(self, x):
        x = self.pool(F.relu(self.conv(x)))
        x = {"x.squeeze()": lambda: x.squeeze(), "torch.squeeze(x)": lambda: torch.squeeze(x),
             "torch.squeeze(x, (2, 3))": lambda: torch.squeeze(x, (2, 3)),
             "x.squeeze(-1).squeeze(-1)": lambda: x.squeeze(-1).squeeze(-1)}[self.how]()
        return self.fc(x)


@pytest.mark.parametrize("how", ["x.squeeze()", "torch.squeeze(x)", "torch.squeeze(x, (2, 3))", "x.squeeze(-1).squeeze(-1)"])
def test_a_squeeze_to_n_c_is_a_flatten(how):
    """A squeeze that gives (N, C) is a flatten, so the head is understood and the conv's channels stay free; two
    squeezes in a row are an opaque (N, C, 1) step (0 parameters) and a flatten. The rebuilt reference computes the
    teacher's function either way."""
    model = _SqueezeHead(how).eval()
    graph = ArchGraph.from_module(model, (3, 8, 8))
    chained = how.count("squeeze") == 2
    assert [l.type for l in graph.layers] == ["conv", "relu", "adaptive_avgpool", *(["opaque"] if chained else []),
                                             "flatten", "linear"]
    assert graph.opaque == {"params": 0, "share": 0.0, "constructs": {".squeeze()": 1} if chained else {}}
    net = CompressionSpace(graph).reference.build(model, bn_stats="copy").eval()
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(net(x), model(x))


class _Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x) * 2.0


class _Upsampling(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.ZeroPad2d(4)  # (upsampling is understood since; padding is not)

    def forward(self, x):
        return self.up(x)


def test_unsupported_ops_are_named_as_opaque_layers():
    # what the space does not understand is kept whole (an opaque layer), named, and still computes
    gated = ArchGraph.from_module(_Gated(), (3, 8, 8))
    assert [(l.type, l.attrs.get("construct")) for l in gated.layers] == [("conv", None), ("opaque", "mul")]
    assert gated.opaque == {"params": 0, "share": 0.0, "constructs": {"mul": 1}}
    up = ArchGraph.from_module(_Upsampling(), (3, 8, 8))
    assert [(l.type, l.attrs["construct"], l.out_shape) for l in up.layers] == [("opaque", "ZeroPad2d", (3, 16, 16))]
    x = torch.randn(2, 3, 8, 8)
    for model, graph in ((_Gated(), None), (_Upsampling(), up)):
        graph = graph or ArchGraph.from_module(model, (3, 8, 8))
        assert torch.equal(CompressionSpace(graph).reference.build(model).eval()(x), model(x))


def test_json_round_trip_keeps_the_key():
    graph = ArchGraph.from_module(teachers.create("shufflenet_g2", width=0.25), (3, 32, 32))
    again = ArchGraph.from_json(graph.to_json())
    assert again.key == graph.key and again.num_params == graph.num_params and len(again) == len(graph)


def test_encoding_by_hand():
    # conv(3->8, k3 s1 p1) -> relu -> conv(8->8) with a skip relu -> 2nd conv's successor
    layers = [
        LayerSpec("conv", 3, 1, 1, 1, 3, 8, (-1,)),
        LayerSpec("relu", in_channels=8, out_channels=8, inputs=(0,)),
        LayerSpec("conv", 3, 1, 1, 1, 8, 8, (1,)),
        LayerSpec("relu", in_channels=8, out_channels=8, inputs=(2, 0)),
    ]
    n, m = 4, len(LAYER_TYPES)
    raw = encode(layers, n=n, numeric="raw")
    assert raw.shape == (4, encoding_width(n)) == (4, m + 6 + 8)
    assert raw[0, LAYER_TYPES.index("conv")] == 1 and raw[1, LAYER_TYPES.index("relu")] == 1
    assert raw[0, m:m + NUM_ATTRIBUTES].tolist() == [3, 1, 1, 1, 3, 8]
    incoming, outgoing = slice(m + 6, m + 6 + n), slice(m + 6 + n, m + 6 + 2 * n)
    assert raw[3, incoming].tolist() == [1, 0, 1, 0]  # from layer 2 (offset 1) and layer 0 (offset 3)
    assert raw[0, outgoing].tolist() == [1, 0, 1, 0]  # to layer 1 (offset 1) and layer 3 (offset 3)
    assert raw[0, incoming].sum() == 0  # the network input is not a layer
    logged = encode(layers, n=n, numeric="log")
    assert torch.equal(encode(layers, n=n), raw)  # raw is the default (the paper's, kernel.numeric)
    assert logged[0, m + 5].item() == pytest.approx(math.log2(9))  # log2(1 + 8 channels)


def test_offsets_beyond_n_only_fail_when_used():
    chain = [LayerSpec("relu", inputs=(i - 1,)) for i in range(10)]
    assert encode(chain, n=2).shape == (10, encoding_width(2))
    with pytest.raises(ValueError, match="offset 3 > n = 2"):
        encode(chain + [LayerSpec("relu", inputs=(9, 7))], n=2)


@pytest.mark.parametrize("name, shape, teacher_key, sample_key", [
    ("small_resnet", (1, 8, 8), "4cbd87c2ea381daccfb5ac2db7848a1e", "48fa5a1ae04c958d80a47a60626339e0"),
    ("resnet18", (3, 32, 32), "2eb62df27ee45a6d69f0a4df8e1127d1", "64cea7fae5f691a01b72bd174e0ccf35"),
    ("shufflenet_g2", (3, 32, 32), "037caf11b0a7b41eea45ce0f4c22d0ac", "26537b28cb65d250873b62d9e3d43d73"),
])
def test_keys_are_stable_across_renames(name, shape, teacher_key, sample_key):
    """The keys that stores and saved students recorded before the conv attribute became ``kernel_size``
    (computed at commit c13b4ad, in the reference space): a rename in code must never change a key."""
    import numpy as np

    from nascomp import CompressionSpace

    graph = ArchGraph.from_module(teachers.create(name, width=0.25), shape)
    assert graph.key == teacher_key
    assert CompressionSpace(graph, shrink_groups="width", ops=["remove", "shrink", "skip"]).sample(
        np.random.default_rng(0)).key == sample_key


def test_relative_encoding_gives_channels_as_fractions_of_the_reference():
    """numeric='relative': groups, in and out channels over the reference layer's (0 where it has
    none), kernel size, stride and padding as log2(1 + x); a wrong reference is refused."""
    ref = [LayerSpec("conv", 3, 1, 1, 1, 3, 16, (-1,)), LayerSpec("relu", in_channels=16, out_channels=16, inputs=(0,))]
    half = [LayerSpec("conv", 3, 1, 1, 1, 3, 8, (-1,)), LayerSpec("relu", in_channels=8, out_channels=8, inputs=(0,))]
    m = len(LAYER_TYPES)
    x = encode(half, n=2, numeric="relative", reference=ref)
    assert x[0, m:m + NUM_ATTRIBUTES].tolist() == pytest.approx([2.0, 1.0, 1.0, 1.0, 1.0, 0.5])
    assert x[1, m:m + NUM_ATTRIBUTES].tolist() == [0.0, 0.0, 0.0, 0.0, 0.5, 0.5]
    assert torch.equal(x[:, :m], encode(half, n=2)[:, :m]) and torch.equal(x[:, m + 6:], encode(half, n=2)[:, m + 6:])
    with pytest.raises(ValueError, match="needs the reference layers"):
        encode(half, n=2, numeric="relative")
    with pytest.raises(ValueError, match="2 layers against a reference of 1"):
        encode(half, n=2, numeric="relative", reference=ref[:1])


def test_relative_encoding_matches_students_of_teachers_of_another_width():
    """The same student (operators and ratios) of small_resnet at width 0.5 and at 0.25 encodes alike
    with numeric='relative' (up to each width's channel rounding), and not with 'log'."""
    spaces = [CompressionSpace(ArchGraph.from_module(teachers.create("small_resnet", width=w), (1, 8, 8)), ops=OPERATORS)
              for w in (0.5, 0.25)]
    wide, narrow = spaces
    assert len(wide.graph) == len(narrow.graph) and wide.num_shrink_groups == narrow.num_shrink_groups
    for space in spaces:  # the teacher is all ones
        enc = space.reference.encode(n=space.max_offset, numeric="relative", reference=space.reference.layers())
        channels = enc[:, len(LAYER_TYPES) + 4:len(LAYER_TYPES) + 6]
        assert set(channels.unique().tolist()) <= {0.0, 1.0} and channels.max() == 1.0
    student = wide.sample(seed=3).to_dict()
    a, b = (s.from_dict(student) for s in spaces)
    rel = [s.from_dict(student).encode(n=s.max_offset, numeric="relative", reference=s.reference.layers()) for s in spaces]
    log = [s.from_dict(student).encode(n=s.max_offset, numeric="log") for s in spaces]
    assert a.num_params > b.num_params
    assert (rel[0] - rel[1]).abs().max() < 0.3 < (log[0] - log[1]).abs().max()
    assert (rel[0] - rel[1]).abs().mean() < 0.02


def _computes_the_module(model, shape=(3, 8, 8)):
    """The traced graph with the module's weights, and its output next to the module's (eval mode)."""
    torch.manual_seed(0)
    model = model.eval()
    graph = ArchGraph.from_module(model, shape)
    net = CompressionSpace(graph).reference.build(model, bn_stats="copy").eval()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        return graph, net(x), model(x)


class _CatRepeat(nn.Module):
    """torch.cat with a repeated term, out of order: channels a ++ b ++ a."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 2, 3, padding=1)
        self.fc = nn.Linear(10, 5)

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(torch.cat([a, b, a], 1), 1), 1))


def test_a_concat_keeps_every_term_in_order():
    graph, y, expected = _computes_the_module(_CatRepeat())
    concat = next(l for l in graph.layers if l.type == "concat")
    assert (concat.inputs, concat.in_shape) == ((0, 1, 0), (10, 8, 8))
    assert torch.equal(y, expected)


class _PoolArgs(nn.Module):
    """A functional call with an argument the layer types do not hold: kept whole (opaque), exact."""

    def __init__(self, call):
        super().__init__()
        self.call = call
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return torch.flatten(self.call(self.a(x), self.b(x)), 1)


@pytest.mark.parametrize("call, construct", [
    (lambda a, b: F.avg_pool2d(a, 2, divisor_override=1), "avg_pool2d"),
    (lambda a, b: F.max_pool2d(a, 3, 1, 1, 2), "max_pool2d"),  # dilation 2: 8x8 -> 6x6
    (lambda a, b: a.add(b, alpha=3.0), ".add()"),
    (lambda a, b: torch.add(a, b, alpha=3.0), "add"),
])
def test_pool_and_add_arguments_are_not_dropped(call, construct):
    graph, y, expected = _computes_the_module(_PoolArgs(call))
    assert graph.opaque["constructs"] == {construct: 1}
    assert torch.equal(y, expected)


class _TrainOnly(nn.Module):
    """A branch taken in train mode only (timm's DropPath): random there, the identity in eval mode."""

    def forward(self, x):
        if not self.training:
            return x
        return x * (torch.rand(x.shape[0], 1, 1, 1) > 0.5) * 2.0


def test_a_model_in_train_mode_is_traced_as_in_eval_mode_and_keeps_its_modes():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), _TrainOnly(), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 5))
    model[2].eval()  # a mixed-mode model: each submodule's mode comes back as it was
    modes = [m.training for m in model.modules()]
    graph = ArchGraph.from_module(model, (3, 8, 8))
    assert [m.training for m in model.modules()] == modes == [True, True, True, False, True, True]
    assert [l.type for l in graph.layers] == ["conv", "batchnorm", "flatten", "linear"]
    _, y, expected = _computes_the_module(model)
    assert torch.equal(y, expected)


class _GlobalContext(nn.Module):
    """GCNet's channel-add: x (C, H, W) plus a context (C, 1, 1), broadcast over H and W."""

    def __init__(self):
        super().__init__()
        self.stem, self.ctx, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1), nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = x + self.ctx(F.adaptive_avg_pool2d(x, 1))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def test_a_broadcast_add_validates_and_its_students_save_and_load(tmp_path):
    import numpy as np

    from nascomp import load_student

    graph, y, expected = _computes_the_module(_GlobalContext())
    assert torch.equal(y, expected)
    assert graph.layers[4].inputs == (1, 3) and graph.layers[4].in_shape == (8, 8, 8)  # pools x + context
    assert ArchGraph.from_json(graph.to_json()).key == graph.key  # validates
    space, teacher = CompressionSpace(graph, ops=OPERATORS), _GlobalContext().eval()
    for k, child in enumerate([space.reference, space.sample(np.random.default_rng(0))]):
        student = child.build(teacher).eval()
        child.save(tmp_path / str(k), student)
        x = torch.randn(3, 3, 8, 8)
        with torch.no_grad():
            assert torch.equal(load_student(tmp_path / str(k)).eval()(x), student(x))


class _TwoBranchMix(nn.Module):
    """Per-channel weights of two branches: a (2, C) parameter, whose first dimension is the sample batch's."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 5, padding=2)
        self.mix = nn.Parameter(torch.randn(2, 8))
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        w = self.mix.softmax(0)  # (2, C)
        y = self.a(x) * w[0].view(1, -1, 1, 1) + self.b(x) * w[1].view(1, -1, 1, 1)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


def test_a_tensor_with_two_rows_is_not_taken_for_a_batch():
    graph, y, expected = _computes_the_module(_TwoBranchMix())
    assert graph.opaque["constructs"] == {"mul": 2}  # each branch times its weights, the softmax inside
    assert torch.allclose(y, expected, rtol=1e-5, atol=1e-6)


class _PoolBySize(nn.Module):
    """The CIFAR idiom F.avg_pool2d(out, out.size()[3]): a kernel size read from the traced tensor."""

    def __init__(self, sizes):
        super().__init__()
        self.c, self.fc, self.sizes = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 10), sizes

    def forward(self, x):
        out = F.relu(self.c(x))
        out = F.avg_pool2d(out, self.sizes(out))
        return self.fc(out.view(out.size(0), -1))


@pytest.mark.parametrize("sizes", [lambda t: t.size()[3], lambda t: t.size()[2:], lambda t: (t.size(2), t.size(3))])
def test_a_pool_size_read_from_the_tensor_is_an_opaque_layer_not_a_crash(sizes):
    """It crashed the trace with TypeError: int() argument must be ... not 'Node'."""
    model = _PoolBySize(sizes).eval()
    graph = ArchGraph.from_module(model, (3, 16, 16))
    assert graph.opaque["constructs"] == {"avg_pool2d": 1}
    assert [l.type for l in graph.layers] == ["conv", "relu", "opaque", "flatten", "linear"]
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(CompressionSpace(graph).reference.build(model).eval()(x), model(x))


class _Act(nn.Module):
    def __init__(self, act):
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), act(),
                               nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), act(),
                               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x):
        return self.f(x)


@pytest.mark.parametrize("act, construct", [(nn.ELU, "ELU"), (nn.Softplus, "Softplus"),
                                             (lambda: nn.Dropout2d(0.25), None)])
def test_parameter_free_torch_modules_are_channelwise_like_their_functions(act, construct):
    """nn.ELU pinned every channel while F.elu let them shrink; nn.Dropout2d is an eval-time identity."""
    model = _Act(act).eval()
    graph = ArchGraph.from_module(model, (3, 16, 16))
    assert graph.opaque["constructs"] == ({construct: 2} if construct else {})
    if construct:
        assert all(l.attrs["channelwise"] for l in graph.layers if l.type == "opaque")
    else:
        assert [l.attrs for l in graph.layers if l.type == "dropout"] == [{"p": 0.25, "channels": 2}] * 2
        net = graph.build()
        assert [type(m) for m in net.modules() if isinstance(m, nn.modules.dropout._DropoutNd)] == [nn.Dropout2d] * 2
    space = CompressionSpace(graph, ops=("shrink",))
    assert len(space.solution.free) == 2  # both convs' widths are free, as with nn.ReLU
    student = space.sample(seed=0)
    widths = [l.out_shape[0] for l in student.graph.layers if l.type == "conv"]
    assert widths != [32, 64] and all(w <= c for w, c in zip(widths, [32, 64]))
    x = torch.randn(2, 3, 16, 16)
    assert student.build(model).eval()(x).shape == (2, 10)
    assert torch.allclose(space.reference.build(model).eval()(x), model(x), atol=1e-6)
