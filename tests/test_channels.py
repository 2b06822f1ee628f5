"""Channel groups (``nascomp.channels.solve``) on hand-built networks: concat, grouped-conv
divisibility, flatten multipliers, residual sums. Every number is worked out by hand in a comment."""
import torch
from torch import nn

from nascomp import ArchGraph, CompressionSpace
from nascomp.channels import INPUT, shrunk_width, solve
from nascomp.compression_space import Candidate


def solved(model, input_shape):
    graph = ArchGraph.from_module(model, input_shape)
    return graph, solve(graph.layers, input_shape[0], graph.output)


def student(graph, ratios):
    """The student with nothing removed or added and one shrink ratio per free channel symbol."""
    space = CompressionSpace(graph, shrink_groups="structural")  # one group per free symbol, in symbol order
    return Candidate(space, frozenset(), frozenset(), tuple(ratios))


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 6, 1), nn.Conv2d(10, 5, 1)

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], 1))


def test_concat_width_is_the_sum_of_its_branches():
    teacher = Concat()
    graph, sol = solved(teacher, (3, 4, 4))
    assert [layer.type for layer in graph.layers] == ["conv", "conv", "concat", "conv"]
    assert sol.out_exprs[2] == ((0, 1), (1, 1)) and sol.in_exprs[3] == ((0, 1), (1, 1))
    assert sol.free == [0, 1] and sol.fixed == {INPUT, 3}  # the head is the network output
    assert sol.value(sol.out_exprs[2], {}) == 10  # 4 + 6 at teacher width
    assert sol.value(sol.out_exprs[2], {0: 2}) == 8  # branch a shrunk to 2: 2 + 6
    assert sol.value(sol.out_exprs[2], {0: 2, 1: 3}) == 5
    # ratio 0.5 on each branch: a 4 -> 2, b 6 -> 3; the head then reads 5 channels
    # (a concat's in_channels is its first input's: 2)
    s = student(graph, (0.5, 0.5))
    assert [(layer.in_channels, layer.out_channels) for layer in s.graph.layers] == [(3, 2), (3, 3), (2, 5), (5, 5)]
    assert s.num_params == (2 * 3 + 2) + (3 * 3 + 3) + (5 * 5 + 5)  # 1x1 convs with bias: 50
    assert s.build(teacher).eval()(torch.zeros(1, 3, 4, 4)).shape == (1, 5, 4, 4)


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.grouped = nn.Conv2d(8, 6, 3, padding=1, groups=2)
        self.head = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        return self.head(self.grouped(self.stem(x)))


def test_grouped_conv_widths_stay_divisible_by_its_groups():
    teacher = Grouped()
    graph, sol = solved(teacher, (3, 4, 4))
    assert sol.free == [0, 1]
    assert sol.divisor == {INPUT: 1, 0: 2, 1: 2, 2: 1}  # both sides of the groups=2 conv; not the head
    assert 1 not in sol.depthwise  # groups 2 < 8 channels: a grouped conv, not a depthwise one
    # stem 8 at ratio 0.3: floor(0.7 * 8 / 2) * 2 = 4 (5 without the divisor);
    # grouped 6 at ratio 0.5: floor(0.5 * 6 / 2) * 2 = 2 (3 without)
    assert shrunk_width(8, 0.3, 2) == 4 and shrunk_width(8, 0.3) == 5
    assert shrunk_width(6, 0.5, 2) == 2 and shrunk_width(6, 0.5) == 3
    assert shrunk_width(6, 0.9, 2) == 2  # never below the divisor
    s = student(graph, (0.3, 0.5))
    assert [(layer.in_channels, layer.out_channels) for layer in s.graph.layers] == [(3, 4), (4, 2), (2, 4)]
    assert s.graph.layers[1].attrs["groups"] == 2
    assert s.num_params == (4 * 3 + 4) + (2 * (4 // 2) * 9 + 2) + (4 * 2 + 4)  # 16 + 38 + 12
    assert s.build(teacher).eval()(torch.zeros(1, 3, 4, 4)).shape == (1, 4, 4, 4)


class Flat(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.flatten, self.fc = nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(self.flatten(self.conv(x)))


def test_flatten_multiplies_channels_by_height_times_width():
    teacher = Flat()
    graph, sol = solved(teacher, (1, 4, 4))  # conv 3x3 without padding: (4, 2, 2) -> flatten 16
    assert sol.out_exprs[1] == ((0, 4),) and sol.in_exprs[2] == ((0, 4),)  # 2 x 2 = 4 per channel
    assert sol.free == [0]
    assert sol.value(sol.in_exprs[2], {0: 3}) == 12
    s = student(graph, (0.5,))  # conv 4 -> 2 channels: the linear reads 2 x 2 x 2 = 8 features
    assert [(layer.in_channels, layer.out_channels) for layer in s.graph.layers] == [(1, 2), (2, 8), (8, 3)]
    assert s.num_params == (2 * 1 * 9 + 2) + (3 * 8 + 3)  # 20 + 27
    assert s.build(teacher).eval()(torch.zeros(1, 1, 4, 4)).shape == (1, 3)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.grouped, self.head = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1, groups=4), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        x = self.stem(x)
        return self.head(torch.relu(x + self.grouped(x)))


def test_summed_widths_share_one_symbol_and_its_divisor():
    graph, sol = solved(Residual(), (3, 4, 4))
    relu = next(j for j, layer in enumerate(graph.layers) if layer.type == "relu")
    assert graph.layers[relu].inputs == (0, 1)  # the sum folded into the ReLU
    assert sol.out_exprs[1] == ((0, 1),)  # the grouped conv's output is the stem's symbol
    assert sol.free == [0] and sol.divisor[0] == 4  # and inherits its groups=4 divisibility
    s = student(graph, (0.6,))  # floor(0.4 * 8 / 4) * 4 = 0 -> at least the divisor, 4
    assert [layer.out_channels for layer in s.graph.layers] == [4, 4, 4, 2]


class CrossedConcats(nn.Module):
    """cat(a: 4, b: 6) + cat(c: 6, d: 4): equal totals (10), but the terms are not pairwise equal."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.d = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 6, 1), nn.Conv2d(3, 6, 1), nn.Conv2d(3, 4, 1)
        self.head = nn.Conv2d(10, 5, 1)

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], 1) + torch.cat([self.c(x), self.d(x)], 1))


def test_a_sum_of_concats_with_unequal_terms_fixes_them():
    # googlenet's crash: unifying a 4+6 concat with a 6+4 one term by term tied symbols of different
    # widths (the l1 scores of 160 and 128 filters were then added). Such a sum fixes all four.
    graph, sol = solved(CrossedConcats(), (3, 4, 4))
    convs = [j for j, layer in enumerate(graph.layers) if layer.type == "conv"][:4]
    assert [graph.layers[j].out_channels for j in convs] == [4, 6, 6, 4]
    assert sol.free == [] and set(convs) <= sol.fixed


class TiedConcats(nn.Module):
    """cat(a: 4, b: 6) + cat(c: 4, d: 6): the terms pair up, a = c and b = d."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.d = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 6, 1), nn.Conv2d(3, 4, 1), nn.Conv2d(3, 6, 1)
        self.head = nn.Conv2d(10, 5, 1)

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], 1) + torch.cat([self.c(x), self.d(x)], 1))


def test_a_sum_of_concats_with_equal_terms_ties_them_pairwise():
    teacher = TiedConcats()
    graph, sol = solved(teacher, (3, 4, 4))
    convs = [j for j, layer in enumerate(graph.layers) if layer.type == "conv"][:4]
    a, b = convs[:2]
    assert sol.free == [a, b] and sol.in_exprs[-1] == ((a, 1), (b, 1))
    s = student(graph, (0.5, 0.5))  # a, c: 4 -> 2; b, d: 6 -> 3
    assert [s.graph.layers[j].out_channels for j in convs] == [2, 3, 2, 3]
    for mode in ("first", "l1"):
        assert torch.isfinite(s.build(teacher, inherit=mode).eval()(torch.randn(1, 3, 4, 4))).all()
