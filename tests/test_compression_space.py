"""The compression search space: property tests over random candidates of every registered teacher."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nascomp import ArchGraph, CompressionSpace, load_student, teachers
from nascomp.channels import shrunk_width
from nascomp.encoding import encoding_width
from nascomp.schema import OPERATORS  # the paper's operators: students that remove layers and add skips

WIDTH = {"vgg19": 0.125, "resnet18": 0.125, "resnet34": 0.125, "shufflenet_g2": 0.25, "small_resnet": 0.5}
_CACHE: dict = {}


def setup(name, **space_kwargs):
    space_kwargs = {"ops": OPERATORS, **space_kwargs}  # the paper's operators unless a test says otherwise
    key = (name, tuple(sorted(space_kwargs.items())))
    if key not in _CACHE:
        shape = (1, 8, 8) if name == "small_resnet" else (3, 32, 32)
        torch.manual_seed(0)
        teacher = teachers.create(name, width=WIDTH[name]).eval()
        graph = ArchGraph.from_module(teacher, shape)
        _CACHE[key] = teacher, graph, CompressionSpace(graph, **space_kwargs), shape
    return _CACHE[key]


def check_valid(name, seed):
    teacher, graph, space, shape = setup(name)
    child = space.sample(np.random.default_rng(seed))
    assert child.num_params < graph.num_params
    student = child.build(teacher, inherit="first")
    assert sum(p.numel() for p in student.parameters()) == child.num_params
    with torch.no_grad():
        assert student.eval()(torch.randn(2, *shape)).shape == (2, 10)
    assert child.encode(n=space.max_offset).shape == (len(graph), encoding_width(space.max_offset))
    assert space.max_offset == 128 and torch.equal(child.encode(), child.encode(n=128))  # the README's n = 128 default
    again = space.sample(np.random.default_rng(seed))
    assert again.key == child.key and len(child.key) == 32
    assert space.from_flat(dict(zip([d.name for d in space.flat_dims()], space.to_flat(child)))).key == child.key


SEEDS = st.integers(0, 2**32 - 1)


@pytest.mark.parametrize("name", teachers.names())
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=SEEDS)
def test_candidates_are_valid(name, seed):
    check_valid(name, seed)


@pytest.mark.slow
@pytest.mark.parametrize("name", teachers.names())
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=SEEDS)
def test_hundreds_of_candidates_are_valid(name, seed):
    check_valid(name, seed)


@pytest.mark.slow
@pytest.mark.parametrize("name", teachers.names())
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=SEEDS, inherit=st.sampled_from(["first", "l1"]))
def test_save_load_round_trip(name, seed, inherit, tmp_path_factory):
    teacher, graph, space, shape = setup(name)
    child = space.sample(np.random.default_rng(seed))
    student = child.build(teacher, inherit=inherit).eval()
    path = tmp_path_factory.mktemp("student")
    child.save(path, student)
    loaded = load_student(path).eval()
    x = torch.randn(3, *shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), student(x))
    assert json.loads((path / "architecture.json").read_text())["key"] == child.key


def test_mutation_changes_one_thing():
    teacher, graph, space, _ = setup("resnet18")
    rng = np.random.default_rng(3)
    parent = space.sample(rng)
    for _ in range(20):
        child = space.mutate(parent, rng)
        assert child.key != parent.key and child.num_params < graph.num_params
        changes = len(parent.removed ^ child.removed) + len(parent.skips ^ child.skips) + sum(
            a != b for a, b in zip(parent.ratios, child.ratios))
        assert 1 <= changes <= 1 + len(parent.skips)  # removing a layer also drops the skips into it


def test_operators_can_be_switched_off():
    teacher, graph, remove_only, _ = setup("resnet18", ops=("remove",))
    rng = np.random.default_rng(0)
    for _ in range(10):
        child = remove_only.sample(rng)
        assert not child.skips and child.removed
        kept = [(a, b) for a, b, j in zip(child.graph.layers, graph.layers, range(len(graph))) if j not in child.removed]
        assert all(a.out_shape == b.out_shape for a, b in kept)  # nothing shrinks
    _, _, remove_shrink, _ = setup("resnet18", ops=("remove", "shrink"))
    assert all(not remove_shrink.sample(rng).skips for _ in range(10))
    assert {d.name.split("_")[0] for d in remove_shrink.flat_dims()} == {"keep", "shrink"}


def test_reference_sampling_distribution():
    """Reference code: removal p in {0.3..0.7}, r ~ U[0, 1), skip p in {0.003..0.05}."""
    _, graph, space, _ = setup("resnet34")
    rng = np.random.default_rng(0)
    children = [space.sample(rng) for _ in range(200)]
    removed = np.array([len(c.removed) / len(space.removable) for c in children])
    assert 0.45 < removed.mean() < 0.55 and removed.min() > 0.15 and removed.max() < 0.85
    ratios = np.concatenate([c.ratios for c in children])
    assert 0.45 < ratios.mean() < 0.55 and ratios.min() >= 0.0 and ratios.max() < 1.0
    skips = np.array([len(c.skips) for c in children])
    assert 0 < skips.mean() < 0.05 * len(space.skip_pairs)


def test_groups_of_equal_width_shrink_together():
    """With the reference grouping (4 groups for ResNet), every conv of teacher width F gets the same width."""
    teacher, graph, space, _ = setup("resnet18", shrink_groups="width")
    assert space.num_shrink_groups == 4
    child = type(space.reference)(space, frozenset(), frozenset(), (0.5, 0.25, 0.75, 0.1))
    widths = sorted({l.out_channels for l in graph.layers if l.type == "conv"})  # 8, 16, 32, 64 at width 1/8
    for l_t, l_s in zip(graph.layers, child.graph.layers):
        if l_t.type == "conv":
            ratio = child.ratios[widths.index(l_t.out_channels)]
            assert l_s.out_channels == shrunk_width(l_t.out_channels, ratio)


def test_a_description_from_another_space_is_refused():
    """``from_dict`` reads a candidate of its own space back to the same network, and refuses one of a space
    with other shrink groups or a shorter ``max_offset``, and a removed layer the space cannot remove (read as
    it stands it would be another network)."""
    _, _, width, _ = setup("small_resnet", shrink_groups="width")
    _, _, structural, _ = setup("small_resnet", shrink_groups="structural")
    _, _, no_skips, _ = setup("small_resnet", shrink_groups="width", max_offset=1)
    assert (width.num_shrink_groups, structural.num_shrink_groups) == (2, 6)
    child = structural.sample(seed=5)
    assert structural.from_dict(json.loads(json.dumps(child.to_dict()))).key == child.key
    with pytest.raises(ValueError, match=r"6 shrink ratios is not of this space \(2 shrink groups: shrink_groups='width'\)"):
        width.from_dict(child.to_dict())
    skipping = next(c for c in (width.sample(seed=s) for s in range(100)) if any(j - i > 1 for i, j in c.skips))
    with pytest.raises(ValueError, match="removes layers or adds skips this space cannot"):
        no_skips.from_dict(skipping.to_dict())
    fixed = next(j for j in range(len(width.graph)) if j not in width.removable)
    with pytest.raises(ValueError, match=rf"layers \[{fixed}\]"):
        width.from_dict({**width.reference.to_dict(), "removed": [fixed]})


def test_a_gates_squashing_activation_is_never_removed():
    """Squeeze-excitation: removing its sigmoid would leave the gate unbounded (a student of a random
    EfficientNetV2 grew to inf through 20 such gates); the other activations stay removable."""
    from torchvision.ops import SqueezeExcitation

    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), SqueezeExcitation(8, 4),
                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    graph = ArchGraph.from_module(model.eval(), (3, 8, 8))
    space = CompressionSpace(graph, ops=OPERATORS)
    types = {j: l.type for j, l in enumerate(graph.layers)}
    (sigmoid,) = [j for j, t in types.items() if t == "sigmoid"]
    assert any(l.type == "gate" and sigmoid in l.inputs for l in graph.layers)
    assert sigmoid not in space.removable
    assert {j for j, t in types.items() if t == "relu" and graph.layers[j].in_shape == graph.layers[j].out_shape} <= set(space.removable)
    assert all(sigmoid not in space.sample(seed=s).removed for s in range(20))


def test_skip_sums_into_its_target():
    teacher, graph, space, shape = setup("vgg19")
    i, j = space.skip_pairs[0]
    child = type(space.reference)(space, frozenset(), frozenset({(i, j)}), (0.0,) * space.num_shrink_groups)
    assert child.graph.layers[j].inputs == graph.layers[j].inputs + (i,)
    assert child.encode(space.max_offset)[j].sum() > space.reference.encode(space.max_offset)[j].sum()  # one more incoming edge


def test_inheritance_first_and_l1():
    teacher, graph, space, _ = setup("vgg19")
    child = type(space.reference)(space, frozenset(), frozenset(), (0.5,) * space.num_shrink_groups)
    first = child.build(teacher, inherit="first")
    conv_t, conv_s = teacher.features[3], first.layers[3]  # second conv: (8 -> 8) at width 1/8
    w = conv_s.out_channels
    assert torch.equal(conv_s.weight, conv_t.weight[:w, :conv_s.in_channels])
    l1 = child.build(teacher, inherit="l1")
    norms = conv_t.weight.abs().flatten(1).sum(1)
    top = torch.topk(norms, w).indices.sort().values
    first_conv_top = torch.topk(teacher.features[0].weight.abs().flatten(1).sum(1), l1.layers[0].out_channels).indices.sort().values
    assert torch.equal(l1.layers[3].weight, conv_t.weight[top][:, first_conv_top])
    fresh = child.build(teacher, inherit="none")
    assert not torch.equal(fresh.layers[3].weight, conv_s.weight)
    # a fresh init is seeded by the architecture's key, not by what ran before; the caller's state is kept
    torch.manual_seed(123)
    state = torch.get_rng_state()
    again = child.build(teacher, inherit="none")
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in again.state_dict().items())
    assert torch.equal(first.layers[1].running_var, torch.ones(w))  # BN statistics reset


def test_keys_are_equal_across_processes():
    code = ("import numpy as np; from nascomp import ArchGraph, CompressionSpace, teachers; from nascomp.schema import OPERATORS; "
            "t = teachers.create('resnet18', width=0.125); s = CompressionSpace(ArchGraph.from_module(t, (3, 32, 32)), ops=OPERATORS); "
            "print(' '.join(s.sample(np.random.default_rng(k)).key for k in range(5)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    _, _, space, _ = setup("resnet18")
    assert out == [space.sample(np.random.default_rng(k)).key for k in range(5)]


def test_the_default_space_shrinks_only():
    """``CompressionSpace(graph)`` (``space.ops: auto`` with no objective to read: the skip-free rule) keeps every
    layer and adds no skip, each channel symbol thinned by its own ratio; every student is smaller than the teacher."""
    _, graph, _, _ = setup("small_resnet")
    space = CompressionSpace(graph)
    assert space.ops == ("shrink",) and space.shrink_groups == "structural"
    children = [space.sample(seed=s) for s in range(30)]
    assert all(not c.removed and not c.skips and c.num_params < graph.num_params for c in children)
    assert len({c.ratios for c in children}) == 30 and all(len(c.ratios) == space.num_shrink_groups for c in children)
    assert [len(c.graph) for c in children] == [len(graph)] * 30


def test_operators_that_cannot_shrink_the_teacher_are_refused():
    """A teacher whose every channel is pinned (here by the input) has no shrink group: shrinkage only (the
    default) cannot make it smaller, and the space says so (the main job at startup) and names the operators that can;
    the reference student needs no operator and still builds."""
    model = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 10)).eval()
    graph = ArchGraph.from_module(model, (3, 8, 8))
    with pytest.raises(ValueError, match=r"space.ops=\['shrink'\] cannot make this teacher smaller: it has 1 removable "
                                         r"layers and 0 shrink groups; search with space.ops=\[remove,shrink,skip\]"):
        CompressionSpace(graph).check_searchable()
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(CompressionSpace(graph).reference.build(model).eval()(x), model(x))
    space = CompressionSpace(graph, ops=OPERATORS)
    space.check_searchable()
    assert space.removable == [0] and space.num_shrink_groups == 0
    with pytest.raises(RuntimeError, match=r"no candidate smaller than the teacher in 1000 draws with space.ops=\['remove', "
                                           r"'shrink', 'skip'\] \(1 removable layers, 0 shrink groups\)"):
        space.sample(seed=0)  # removing the ReLU saves no parameter


def test_bad_space_config_is_explained():
    _, graph, _, _ = setup("resnet18")
    with pytest.raises(ValueError, match="ops must be a non-empty subset"):
        CompressionSpace(graph, ops=("prune",))
    with pytest.raises(ValueError, match="shrink_groups"):
        CompressionSpace(graph, shrink_groups="layer", ops=OPERATORS)
