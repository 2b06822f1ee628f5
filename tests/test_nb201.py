"""The NAS-Bench-201 space, its encoding, the table evaluator, and the benchmark's method parser."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from nascomp.encoding import LAYER_TYPES, encoding_width
from nascomp.nb201 import EDGES, OPS, NB201Space, TableEvaluator


@pytest.fixture(scope="module")
def space():
    return NB201Space("cifar10")


def test_table_size_reference_and_optimum(space):
    assert len(space.accuracy) == 5**6 == len(space.all())
    assert space.reference.code == "333333"  # every edge a 3x3 conv is the largest cell
    assert space.reference.num_params == max(space.params.values())
    acc = TableEvaluator(space.accuracy, space.params, space.reference, "accuracy")
    assert acc.optimum == pytest.approx(91.61, abs=0.005)  # REFERENCE §7
    comp = TableEvaluator(space.accuracy, space.params, space.reference, "compression")
    assert comp.reference_f == 0.0 and comp.evaluate([space.reference])[0].f == 0.0
    assert acc.reference_f is None


def test_cell_encoding(space):
    cell = space.cell([3, 0, 1, 2, 4, 3])  # 0->1 conv3, 0->2 none, 1->2 skip, 0->3 conv1, 1->3 pool, 2->3 conv3
    layers = cell.layers()
    assert [l.type for l in layers] == ["conv", "add", "zero", "identity", "add", "conv", "avgpool", "conv", "add"]
    assert layers[3].inputs == (1,) and layers[4].inputs == (2, 3) and layers[8].inputs == (5, 6, 7)
    x = cell.encode(n=8)
    assert x.shape == (9, encoding_width(8))
    m = len(LAYER_TYPES)
    assert x[4, m + 6 + 0] == 1 and x[4, m + 6 + 1] == 1  # add2 reads layers 3 and 2 (offsets 1, 2)
    assert x[1, m + 6 + 8 + 4] == 1  # add1 -> e(1->3) at layer 6: offset 5, outgoing


def test_sample_mutate_flat_roundtrip(space):
    rng = np.random.default_rng(0)
    cells = [space.sample(rng) for _ in range(50)]
    for c in cells:
        child = space.mutate(c, rng)
        assert sum(a != b for a, b in zip(c.ops, child.ops)) == 1
        assert space.from_flat({d.name: v for d, v in zip(space.flat_dims(), space.to_flat(c))}) == c
        assert space.from_flat({f"Op{e}": OPS[o] for e, o in enumerate(c.ops)}).key == c.key
    assert len(space.flat_dims()) == len(EDGES) and len({c.key for c in cells}) == 50
    assert space.cell([1] * 6).key == NB201Space("cifar10").cell([1] * 6).key  # stable across instances


def test_benchmark_method_parser():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "search_efficiency.py"
    spec = importlib.util.spec_from_file_location("search_efficiency", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parsed = module.parse_methods("ours,ours[search.K=1,kernel.objective=marginal],flat,tpe", "compression")
    assert parsed == [("ours", []), ("ours[search.K=1,kernel.objective=marginal]", ["search.K=1", "kernel.objective=marginal"]),
                      ("flat", ["kernel=flat"]), ("tpe", ["search.method=tpe"])]
    # an override's value may be a list (Tables 5 and 7: space.ops)
    parsed = module.parse_methods("tpe[space.ops=[remove,shrink]],ours[search.K=4,space.ops=[remove]],random", "compression")
    assert parsed == [("tpe[space.ops=[remove,shrink]]", ["search.method=tpe", "space.ops=[remove,shrink]"]),
                      ("ours[search.K=4,space.ops=[remove]]", ["search.K=4", "space.ops=[remove]"]),
                      ("random", ["search.method=random"])]
    for bad in ("ours[search.K=1", "ours]", "nsga3", "ours[a][b]", "[search.K=1]", "ours x", "ours[search.K=1]x"):
        with pytest.raises(SystemExit):
            module.parse_methods(bad, "compression")
    # on NAS-Bench-201, ours runs the kernel its tuning seeds chose (kernel=nb201: pool both, log attributes)
    parsed = module.parse_methods("ours,ours[kernel.pool=mean],flat", "nb201")
    assert parsed == [("ours", ["kernel=nb201"]), ("ours[kernel.pool=mean]", ["kernel=nb201", "kernel.pool=mean"]),
                      ("flat", ["kernel=flat"])]
    cfg = module.compose(parsed[0][1])
    assert (cfg.kernel.pool, cfg.kernel.numeric) == ("both", "log")
    assert (module.compose([]).kernel.pool, module.compose([]).kernel.numeric) == ("mean", "raw")
    assert module.compose(parsed[1][1]).kernel.pool == "mean"


@pytest.mark.parametrize("objective", ["accuracy", "compression"])
def test_factor_times_accuracy_ratio_is_f_on_every_cell(space, objective):
    """``TableEvaluator.factor``: f = g A / reference_accuracy on all 15,625 cells (compression: g = C(2 - C)
    from the table's parameter count; accuracy: g = 1, A / 100 on the kernels' [0, 1] scale)."""
    ev = TableEvaluator(space.accuracy, space.params, space.reference, objective)
    cells = space.all()
    got = np.array([ev.factor(c) * space.accuracy[c.code] / ev.reference_accuracy for c in cells])
    want = np.array([ev.f(c.code) * ev.reward_scale for c in cells])
    assert np.allclose(got, want, rtol=1e-12, atol=1e-15)
    if objective == "compression":
        assert ev.factor(space.reference) == 0.0 and min(ev.factor(c) for c in cells) >= 0.0
