"""Teacher registry: the paper's parameter counts (REFERENCE §6) and user teachers."""
import pytest
import torch

from nascomp import teachers

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
    student = CompressionSpace(graph).sample(seed=0).build(vgg)
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
