"""Teacher registry: the paper's parameter counts (REFERENCE §6) and user teachers."""
import pytest
import torch

from nascomp import teachers
from nascomp.schema import OPERATORS  # the paper's operators: students that remove layers and add skips

PAPER_PARAMS_M = {  # (CIFAR-10, CIFAR-100) in millions, paper Table 1 / REFERENCE §6
    "vgg19": (20.04, 20.09),
    "resnet18": (11.17, 11.22),
    "resnet34": (21.28, 21.33),
    "shufflenet_g2": (0.99, 1.06),
}


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS_M))
@pytest.mark.parametrize("classes", [10, 100])
def test_parameter_counts_match_the_paper(name, classes):
    model = teachers.create(name, num_classes=classes)
    params = sum(p.numel() for p in model.parameters())
    assert round(params / 1e6, 2) == PAPER_PARAMS_M[name][classes == 100]


@pytest.mark.parametrize("name", teachers.names())
def test_width_multiplier_shrinks_and_runs(name):
    shape = (1, 8, 8) if name == "small_resnet" else (3, 32, 32)
    full = teachers.create(name)
    small = teachers.create(name, width=0.25)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in full.parameters()) / 4
    assert small(torch.randn(2, *shape)).shape == (2, 10)


def test_class_path_teacher_and_checkpoint(tmp_path):
    model = teachers.create("torchvision.models:resnet18", num_classes=7)
    assert model.fc.out_features == 7
    torch.save(model.state_dict(), tmp_path / "t.pt")
    again = teachers.create("torchvision.models:resnet18", num_classes=7, checkpoint=tmp_path / "t.pt")
    assert torch.equal(again.fc.weight, model.fc.weight)


def test_checkpoint_mismatch_names_the_problem(tmp_path):
    torch.save(teachers.create("resnet18", num_classes=10, width=0.125).state_dict(), tmp_path / "r.pt")
    with pytest.raises(ValueError, match=r"linear\.weight: checkpoint \(10, 64\) vs model \(100, 64\)"):
        teachers.create("resnet18", num_classes=100, width=0.125, checkpoint=tmp_path / "r.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        teachers.create("resnet18", checkpoint=tmp_path / "missing.pt")


def test_a_checkpoint_without_batchnorm_counters_loads_as_torch_loads_it(tmp_path):
    """Old files (torchvision's own resnet18) have no num_batches_tracked buffers; torch's strict load
    accepts them, nascomp refused them as missing keys."""
    torch.manual_seed(0)
    model = teachers.create("resnet18", num_classes=10, width=0.125)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(state) < len(model.state_dict())
    torch.save(state, tmp_path / "old.pt")
    again = teachers.create("resnet18", num_classes=10, width=0.125, checkpoint=tmp_path / "old.pt")
    assert all(torch.equal(again.state_dict()[k], v) for k, v in state.items())
    current = model.state_dict()  # the counters deleted from a state_dict whose metadata says it has them
    for k in [k for k in current if k.endswith("num_batches_tracked")]:
        del current[k]
    torch.save(current, tmp_path / "deleted.pt")
    again = teachers.create("resnet18", num_classes=10, width=0.125, checkpoint=tmp_path / "deleted.pt")
    assert all(torch.equal(again.state_dict()[k], v) for k, v in state.items())
    del state["bn1.weight"]  # a tensor that is really missing is still refused
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"missing keys \['bn1.weight'\]"):
        teachers.create("resnet18", num_classes=10, width=0.125, checkpoint=tmp_path / "missing.pt")


def test_checkpoints_saved_by_training_scripts_load(tmp_path):
    """Weights under "model" / "model_state_dict" / "state_dict" next to an optimizer's state (and timm
    train.py's argparse.Namespace of arguments), with every name prefixed by nn.DataParallel ("module."), torch.compile ("_orig_mod.") or both, load as the plain
    state_dict does; a prefix on only some names is still refused, naming them."""
    torch.manual_seed(0)
    model = teachers.create("resnet18", num_classes=10, width=0.125)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    plain = {k: v.clone() for k, v in model.state_dict().items()}
    wrapped = torch.nn.DataParallel(torch.compile(model))
    assert all(k.startswith("module._orig_mod.") for k in wrapped.state_dict())
    for i, ckpt in enumerate([{"model": wrapped.state_dict(), "optimizer": opt.state_dict(), "epoch": 3},
                              {"model_state_dict": torch.nn.DataParallel(model).state_dict()},
                              {"state_dict": torch.compile(model).state_dict()}]):
        torch.save(ckpt, tmp_path / f"{i}.pt")
        again = teachers.create("resnet18", num_classes=10, width=0.125, checkpoint=tmp_path / f"{i}.pt")
        assert again.state_dict().keys() == plain.keys() and all(torch.equal(again.state_dict()[k], v) for k, v in plain.items())
    import argparse  # timm's train.py: the weights beside its arguments (an argparse.Namespace), epoch and metric

    torch.save({"epoch": 3, "arch": "resnet18", "state_dict": plain, "optimizer": opt.state_dict(),
                "args": argparse.Namespace(lr=0.1, model="resnet18"), "metric": 71.5}, tmp_path / "timm.pt")
    again = teachers.create("resnet18", num_classes=10, width=0.125, checkpoint=tmp_path / "timm.pt")
    assert all(torch.equal(again.state_dict()[k], v) for k, v in plain.items())
    partly = {("module." + k if k.startswith("bn1") else k): v for k, v in plain.items()}
    torch.save(partly, tmp_path / "partly.pt")
    with pytest.raises(ValueError, match=r"missing keys \['bn1.bias'"):
        teachers.create("resnet18", num_classes=10, width=0.125, checkpoint=tmp_path / "partly.pt")


def test_unknown_teacher_is_explained():
    with pytest.raises(ValueError, match="neither a registered name"):
        teachers.create("resnet19")


@pytest.mark.parametrize("name", teachers.names())
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (3, 8, 8)])
def test_every_teacher_takes_the_datasets_channels_and_small_images(name, shape):
    """Registered teachers take in_channels from the dataset; 8x8 images stay >= 1x1 through every stem and pool."""
    model = teachers.create(name, num_classes=7, width=0.125, in_channels=shape[0])
    teachers.check_input(model, torch.randn(3, *shape), 7, name)
    assert model(torch.randn(2, *shape)).shape == (2, 7)


def test_vgg_on_8x8_keeps_a_1x1_map_and_its_graph_builds_students():
    from nascomp import ArchGraph, CompressionSpace

    vgg = teachers.create("vgg19", width=0.125, in_channels=1).eval()
    assert vgg.features(torch.randn(1, 1, 8, 8)).shape == (1, 64, 1, 1)  # 8 -> 4 -> 2 -> 1 -> 1 -> 1
    assert vgg.features(torch.randn(1, 1, 32, 32)).shape == (1, 64, 1, 1)  # CIFAR: 32 -> 1, as in the paper
    graph = ArchGraph.from_module(vgg, (1, 8, 8))
    student = CompressionSpace(graph, ops=OPERATORS).sample(seed=0).build(vgg)
    assert student(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_a_teacher_that_cannot_take_the_input_says_what_it_expects():
    model = teachers.create("torchvision.models:resnet18", num_classes=10, in_channels=1)  # takes no in_channels
    with pytest.raises(ValueError) as info:
        teachers.check_input(model, torch.randn(4, 1, 8, 8), 10, "torchvision.models:resnet18")
    message = str(info.value)
    assert message.startswith("teacher torchvision.models:resnet18 cannot take this dataset's input (1, 8, 8): ")
    assert "expected input[4, 1, 8, 8] to have 3 channels" in message
    assert "the teacher expects 3 input channels" in message and "\n" not in message
    assert model.training  # its mode is left as it was


def test_a_teacher_with_the_wrong_number_of_outputs_is_refused():
    model = teachers.create("small_resnet", num_classes=100, width=0.25)
    with pytest.raises(ValueError, match=r"gives outputs of shape \(4, 100\) .* the dataset has 10 classes, so it must give \(4, 10\)"):
        teachers.check_input(model, torch.randn(4, 1, 8, 8), 10, "small_resnet")


@pytest.mark.parametrize("width", [0.125, 0.25, 0.5, 1.0])
def test_shufflenet_groups_every_unit_but_the_one_on_the_papers_24_channel_stem(width):
    """Only the first unit's 1x1 convs (conv1, the stride-2 shortcut) and its shuffle are ungrouped, and
    only on the paper's 24-channel stem; at width 0.125 stage 1 has 24 channels too, and the units taking
    24 channels (1-4) were once built ungrouped, with unit 0 grouped. The other widths are unchanged."""
    from nascomp import ArchGraph

    model = teachers.create("shufflenet_g2", width=width)
    stem = model.conv1.out_channels
    assert stem == {0.125: 8, 0.25: 8, 0.5: 16, 1.0: 24}[width]
    first = 1 if width == 1.0 else 2
    assert [u.conv1.groups for u in model.units] == [first] + [2] * 15
    assert [u.shuffle.groups for u in model.units] == [first] + [2] * 15
    assert [u.shortcut_conv.groups for u in model.units if u.stride == 2] == [first, 2, 2]
    assert [u.conv1.in_channels for u in model.units[:5]] == [stem] + [{0.125: 24, 0.25: 48, 0.5: 96, 1.0: 200}[width]] * 4
    keys = {0.25: "037caf11b0a7b41eea45ce0f4c22d0ac", 0.5: "ddc3bfe23b9c6ff96b78b0381776d39c",
            1.0: "e2128763e41b62dacc546e8901a4fdfa"}  # the graph keys before the fix
    if width in keys:
        assert ArchGraph.from_module(model, (3, 32, 32)).key == keys[width]
    else:  # ungrouped, units 1-4 had 4 x 72 more in conv1 (24 -> 6) and 288 in unit 4's shortcut (24 -> 24)
        assert sum(p.numel() for p in model.parameters()) == 19318 - 4 * 72 - 288
