"""timm, the most used CNN library: its layers read as the space's own, and its families trace and search.

timm's BatchNormAct2d (batch norm, dropout and activation in one module, calling F.batch_norm on its
own parameters) is a batchnorm layer and an activation; its Linear is a linear layer; a subclass that
computes something else (Conv2dSame's padding) is kept whole. The slow tier runs the torchvision zoo's
checks (``test_zoo.check``) on one small member of each timm CNN family.
"""
import pytest
import torch
from torch import nn

from nascomp import ArchGraph, CompressionSpace
from nascomp.compression_space import Candidate
from nascomp.schema import OPERATORS  # the paper's operators: students that remove layers and add skips
from test_zoo import check

timm = pytest.importorskip("timm")
from timm.layers import BatchNormAct2d, Conv2dSame, Linear  # noqa: E402


class _NormActNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = BatchNormAct2d(8, act_layer=nn.SiLU)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = BatchNormAct2d(8, act_layer=nn.ReLU)
        self.same = Conv2dSame(8, 8, 3, stride=2)  # TF "same" padding, computed in forward: not a Conv2d
        self.head = Linear(8, 5)

    def forward(self, x):
        x = self.same(self.bn2(self.conv2(self.bn(self.conv(x)))))
        return self.head(x.mean((2, 3)))


def test_timm_batchnormact_is_a_batchnorm_and_an_activation_and_compresses():
    torch.manual_seed(0)
    model = _NormActNet().eval()
    for bn in (model.bn, model.bn2):
        bn.weight.data.uniform_(0.5, 1.5), bn.bias.data.normal_(0, 0.1)
        bn.running_mean.normal_(0, 0.1), bn.running_var.uniform_(0.5, 2.0)
    graph = ArchGraph.from_module(model, (3, 8, 8))
    assert [(l.type, l.target) for l in graph.layers] == [
        ("conv", "conv"), ("batchnorm", "bn"), ("silu", ""), ("conv", "conv2"), ("batchnorm", "bn2"), ("relu", ""),
        ("opaque", ""), ("mean", ""), ("linear", "head")]
    assert graph.layers[1].attrs == {"eps": 1e-5, "momentum": 0.1, "affine": True, "track_running_stats": True}
    assert graph.opaque == {"params": 8 * 8 * 9 + 8, "share": pytest.approx(584 / graph.num_params),
                            "constructs": {"Conv2dSame": 1}}
    assert graph.num_params == sum(p.numel() for p in model.parameters())
    x = torch.randn(4, 3, 8, 8)
    space = CompressionSpace(graph, shrink_groups="structural", ops=OPERATORS)
    # values: the graph with the teacher's weights and statistics computes the timm modules', in eval
    # mode and in train mode (batch statistics)
    net = space.reference.build(model, bn_stats="copy")
    assert torch.allclose(net.eval()(x), model(x), atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(net.train()(x), model.train()(x), atol=1e-5)
    model.eval()
    # the conv's output channels, which bn reads, are free; conv2's, which Conv2dSame reads, are pinned
    assert space.solution.free == [0]
    half = Candidate(space, frozenset(), frozenset(), (0.5,))
    assert [l.out_channels for l in half.graph.layers] == [4, 4, 4, 8, 8, 8, 8, 8, 5]
    assert half.num_params == 3 * 4 * 9 + 2 * 4 + 4 * 8 * 9 + 2 * 8 + 584 + 8 * 5 + 5
    for mode in ("first", "l1"):
        student = half.build(model, inherit=mode, bn_stats="copy").eval()
        assert sum(p.numel() for p in student.parameters()) == half.num_params
        assert torch.isfinite(student(x)).all()
    # l1 keeps the 4 filters of largest L1 norm, and the batch norm's parameters and statistics of those channels
    idx = model.conv.weight.abs().flatten(1).sum(1).topk(4).indices.sort().values
    bn = half.build(model, inherit="l1", bn_stats="copy").layers[1]
    assert isinstance(bn, nn.BatchNorm2d) and torch.equal(bn.weight, model.bn.weight[idx])
    assert torch.equal(bn.bias, model.bn.bias[idx]) and torch.equal(bn.running_var, model.bn.running_var[idx])


class _NotNormAct(BatchNormAct2d):
    """A BatchNorm2d subclass that computes something else: kept whole."""

    def forward(self, x):
        return super().forward(x) * 2


def test_a_batchnorm_subclass_computing_something_else_is_kept_whole():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), _NotNormAct(4), nn.Flatten(), nn.Linear(64, 2)).eval()
    graph = ArchGraph.from_module(model, (3, 4, 4))
    assert [l.type for l in graph.layers] == ["conv", "opaque", "flatten", "linear"]
    assert graph.opaque["constructs"] == {"_NotNormAct": 1}
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(CompressionSpace(graph).reference.build(model, bn_stats="copy").eval()(x), model(x))


def _res2net():  # timm's res2net50_14w_8s block (Bottle2neck: split into 8 scales, each added to the next, concat), one per stage
    from timm.models.res2net import Bottle2neck
    from timm.models.resnet import ResNet

    return ResNet(block=Bottle2neck, layers=(1, 1, 1, 1), base_width=14, block_args={"scale": 8}, num_classes=10)


def _dpn():  # timm's dpn48b (dual paths: a residual slice added, a dense slice concatenated), one block per stage
    from timm.models.dpn import DPN

    return DPN(k_sec=(1, 1, 1, 1), inc_sec=(16, 32, 32, 64), k_r=128, groups=32, small=True, num_init_features=10,
               b=True, act_layer="silu", num_classes=10)


# family -> (a small member or a shortened one, input size, share of its parameters frozen in opaque layers)
FAMILIES = {
    "resnet": ("resnet18", 32, 0.0),
    "resnet_d": ("resnet26d", 32, 0.0),  # deep stem, avg-pool shortcut
    "mobilenetv3": ("mobilenetv3_small_050", 32, 0.0),  # BatchNormAct2d, SE with hard-sigmoid, timm's Linear head
    "efficientnet": ("efficientnet_b0", 32, 0.0),
    "regnet": ("regnety_002", 32, 0.0),  # with squeeze-excitation
    "cspnet": ("cs3darknet_focus_s", 32, 0.0),  # cross-stage halves: split/chunk and concat
    "ghostnet": ("ghostnet_050", 32, 0.0),  # ghost modules: concat then x[:, :c]
    "res2net": (_res2net, 32, 0.0),
    "dpn": (_dpn, 32, 0.0),
    "convnext": ("convnext_atto", 32, 0.0),  # channels-last LayerNorm and Linear, layer scale of a reshaped gamma
    "hrnet": ("hrnet_w18_small", 64, 0.0),  # parallel resolutions fused with upsample
}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_timm_families_trace_compute_the_teacher_and_search(family):
    make, size, frozen = FAMILIES[family]
    torch.manual_seed(0)
    model = timm.create_model(make, pretrained=False, num_classes=10) if isinstance(make, str) else make()
    graph = check(model, size, name=family)
    assert graph.opaque["share"] == pytest.approx(frozen, abs=1e-3), graph.opaque


def test_a_timm_teacher_by_name_from_the_config_and_the_local_pretrained_cache(tmp_path):
    import huggingface_hub.constants
    from safetensors.torch import save_file

    from nascomp import teachers
    from nascomp.config import compose

    cfg = compose(["teacher=timm", "teacher.name=mobilenetv3_small_050", "dataset=cifar10"])
    assert cfg.teacher.kwargs.library == "timm" and cfg.teacher.checkpoint is None
    old = huggingface_hub.constants.HF_HUB_CACHE
    huggingface_hub.constants.HF_HUB_CACHE = str(tmp_path)
    try:
        torch.manual_seed(0)
        fresh = teachers.create(cfg.teacher.name, num_classes=10, **cfg.teacher.kwargs)  # nothing cached: random init
        # timm's pretrained file as timm.create_model(pretrained=True) leaves it in the cache (ImageNet's 1000 classes)
        imagenet = timm.create_model("mobilenetv3_small_050")
        repo = tmp_path / ("models--" + imagenet.pretrained_cfg["hf_hub_id"].replace("/", "--"))
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text("0123abc")
        (repo / "snapshots" / "0123abc").mkdir(parents=True)
        save_file(imagenet.state_dict(), repo / "snapshots" / "0123abc" / "model.safetensors")
        model = teachers.create("mobilenetv3_small_050", num_classes=10, library="timm")
    finally:
        huggingface_hub.constants.HF_HUB_CACHE = old
    assert fresh.classifier.out_features == model.classifier.out_features == 10
    assert torch.equal(model.conv_stem.weight, imagenet.conv_stem.weight)
    assert not torch.equal(model.conv_stem.weight, fresh.conv_stem.weight)
    assert torch.equal(model.blocks[1][0].bn1.running_var, imagenet.blocks[1][0].bn1.running_var)
    with pytest.raises(ValueError, match="timm has no model 'no_such_net'"):
        teachers.create("no_such_net", library="timm")


def test_a_timm_name_with_a_pretrained_tag(tmp_path):
    """``teacher.name=resnet18.a1_in1k`` picks that tag's pretrained weights (its hub file, when cached), as
    timm.create_model does; an unknown tag is refused like an unknown model."""
    import huggingface_hub.constants

    from nascomp import teachers

    old = huggingface_hub.constants.HF_HUB_CACHE
    huggingface_hub.constants.HF_HUB_CACHE = str(tmp_path)  # nothing cached: random init, nothing downloaded
    try:
        model = teachers.create("resnet18.a1_in1k", num_classes=10, library="timm")
    finally:
        huggingface_hub.constants.HF_HUB_CACHE = old
    assert model.fc.out_features == 10 and model.pretrained_cfg["hf_hub_id"] == "timm/resnet18.a1_in1k"
    with pytest.raises(ValueError, match="timm has no model 'resnet18.no_such_tag'"):
        teachers.create("resnet18.no_such_tag", library="timm")


@pytest.mark.slow
def test_the_run_compresses_a_timm_teacher_from_a_local_checkpoint(tmp_path):
    import json

    from nascomp.config import compose
    from nascomp.pipeline import run
    from nascomp.schema import validate
    from test_run import TINY

    torch.manual_seed(0)
    teacher = timm.create_model("mobilenetv3_small_050", num_classes=10)
    checkpoint = tmp_path / "teacher.pt"
    torch.save(teacher.state_dict(), checkpoint)
    cfg = validate(compose(TINY + [
        "teacher=timm", "teacher.name=mobilenetv3_small_050", f"teacher.checkpoint={checkpoint}",
        "dataset=synthetic", "dataset.shape=[3,32,32]", "dataset.split.train=32", "dataset.split.val=16",
        "dataset.split.test=16", "search.T=0", "final.enabled=false", "logger=none", f"teacher_dir={tmp_path / 'teachers'}"]))
    run(cfg, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["teacher"]["num_params"] == sum(p.numel() for p in teacher.parameters())
    assert summary["opaque"] == {"params": 0, "share": 0.0, "constructs": {}}


class _Affine(nn.Module):
    """timm's LearnableAffineBlock (HGNetV2): scale * x + bias with scalar parameters, after two convs;
    then x * x.amax(1), which mixes the channels."""

    def __init__(self):
        super().__init__()
        from timm.models.hgnet import LearnableAffineBlock

        self.conv, self.lab = nn.Conv2d(3, 8, 3, padding=1), LearnableAffineBlock(1.5, 0.25)
        self.conv2, self.lab2 = nn.Conv2d(8, 6, 1), LearnableAffineBlock(0.5, -0.1)
        self.conv3 = nn.Conv2d(6, 6, 1)
        self.head = nn.Linear(6, 5)

    def forward(self, x):
        x = self.lab2(self.conv2(torch.relu(self.lab(self.conv(x)))))
        x = self.conv3(x * x.amax(1, keepdim=True))
        return self.head(x.mean((2, 3)))


def test_an_opaque_layer_that_treats_each_channel_alone_lets_its_channels_shrink():
    torch.manual_seed(0)
    model = _Affine().eval()
    graph = ArchGraph.from_module(model, (3, 6, 6))
    assert [(l.type, l.attrs.get("construct"), l.attrs.get("channelwise", False)) for l in graph.layers] == [
        ("conv", None, False), ("opaque", "mul", True), ("opaque", "add", True), ("relu", None, False),
        ("conv", None, False), ("opaque", "mul", True), ("opaque", "add", True),
        ("opaque", ".amax()", False), ("opaque", "mul", False), ("conv", None, False), ("mean", None, False),
        ("linear", None, False)]
    assert graph.opaque["params"] == 4 and graph.num_params == sum(p.numel() for p in model.parameters())
    space = CompressionSpace(graph, shrink_groups="structural", ops=OPERATORS)
    # conv's channels pass through the affine blocks; conv2's feed x * x.amax(1), which pins them
    assert space.solution.free == [0, 9]
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(space.reference.build(model).eval()(x), model(x))
    half = Candidate(space, frozenset(), frozenset(), (0.5, 0.5))
    assert [l.out_channels for l in half.graph.layers] == [4, 4, 4, 4, 6, 6, 6, 1, 6, 3, 3, 5]
    assert half.num_params == 3 * 4 * 9 + 4 + 2 + 4 * 6 + 6 + 2 + 6 * 3 + 3 + 3 * 5 + 5
    for mode in ("first", "l1"):
        net = half.build(model, inherit=mode).eval()
        assert sum(p.numel() for p in net.parameters()) == half.num_params
        assert net.layers[1].state_dict()["lab.scale"] == 1.5 and net.layers[2].state_dict()["lab.bias"] == 0.25
        # the student's first block is the teacher's on the kept filters: l1 keeps the 4 of largest L1 norm
        idx = model.conv.weight.abs().flatten(1).sum(1).topk(4).indices.sort().values if mode == "l1" else torch.arange(4)
        with torch.no_grad():
            assert torch.allclose(net.layers[2](net.layers[1](net.layers[0](x))), model.lab(model.conv(x))[:, idx])
