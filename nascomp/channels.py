"""Channel symbols: which layers must shrink together (paper 6.5, layer shrinkage).

Every tensor's channel count is a symbolic expression: an ordered tuple of terms (symbol,
multiplier), its value sum(multiplier * width(symbol)). Each conv or linear layer creates a symbol
(named by its layer index) for its output channels; the network input is the fixed symbol -1.

    pass-through layers (BN, activations, pools, ...)  out = in
    depthwise conv (groups == channels)                 out = in
    concat                                              out = in_1 ++ in_2 ++ ...
    flatten of (C, H, W)                                out = in with multipliers * H*W
    several inputs summed (residual, added skip)        in_1 = in_2 = ...   (solved by substitution)
    opaque layer (kept whole, ``nascomp.graph``)        every symbol of its inputs fixed; out = its own
                                                        symbol, fixed; but out = in for a channelwise one
                                                        (one input, each channel computed alone)
    slice (channels a..b of in: split, chunk, x[:, a:b]) out = the terms of in between teacher
                                                        positions a and b; a term that a or b cuts is
                                                        split into two new symbols (s := s' ++ s'')
                                                        first. Where it cannot be (a fixed or flattened
                                                        term, or in went through a shuffle, so its terms
                                                        are not in teacher order): every symbol of in
                                                        fixed, out = a new fixed symbol
    the network output                                  fixed (the number of classes)

An equation ``a = e`` with ``a`` a free single symbol not in ``e`` substitutes ``a := e``; two single
symbols keep the lower index. Two expressions of as many terms, pairwise of equal multiplier and
teacher width, are equated term by term (the same channels lie at the same offsets). An equation
that cannot be solved either way fixes every symbol in it (their teacher totals already agree). Grouped convs and channel shuffles require divisibility by
their group count: the symbol's ``divisor``. What is left free are the shrinkable channel symbols,
each one set of channels that every layer producing or reading it shares. (The compression space draws one shrink ratio per *shrink group*
of these symbols, ``space.shrink_groups``; "group" alone is a conv's ``groups``.)
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from nascomp.graph import Layer

INPUT = -1
Expr = tuple[tuple[int, int], ...]  # ((symbol, multiplier), ...)


@dataclass
class ChannelSolution:
    """Resolved channel expressions of a layer list."""

    out_exprs: list[Expr]  # per layer: its output channels
    in_exprs: list[Expr]  # per layer: its (first) input's channels
    teacher_width: dict[int, int]  # per symbol: the width it had when created
    fixed: set[int]  # symbols that keep their teacher width
    divisor: dict[int, int]  # per symbol: widths must be a multiple of this
    depthwise: set[int]  # layer indices of depthwise convs
    free: list[int] = field(default_factory=list)  # the shrinkable symbols (sorted)
    # per slice layer: what lies before its first channel, (expression, constant): start = value + constant
    slices: dict[int, tuple[Expr, int]] = field(default_factory=dict)

    def value(self, expr: Expr, width: dict[int, int]) -> int:
        """Channel count of ``expr`` given widths of the free symbols (others: teacher width)."""
        return sum(m * width.get(s, self.teacher_width[s]) for s, m in expr)


def solve(layers: Sequence[Layer], input_channels: int, output: int, fixed: set[int] = frozenset()) -> ChannelSolution:
    """Solve the channel equations of ``layers`` (teacher widths come from the layers' shapes).
    ``fixed`` symbols are never shrunk (e.g. those fixed in the teacher, when solving a child)."""
    subst: dict[int, Expr] = {}
    teacher_width = {INPUT: input_channels}
    fixed_set = set(fixed) | {INPUT}
    divisor: dict[int, int] = {}
    depthwise: set[int] = set()

    def resolve(expr: Expr) -> Expr:
        out: list[tuple[int, int]] = []
        for s, m in expr:
            if s in subst:
                out.extend((t, m * k) for t, k in resolve(subst[s]))
            else:
                out.append((s, m))
        return tuple(out)

    def require(expr: Expr, d: int) -> None:
        for s, _ in resolve(expr):
            divisor[s] = math.lcm(divisor.get(s, 1), d)

    def substitute(s: int, expr: Expr) -> None:
        subst[s] = expr
        if divisor.get(s, 1) > 1:
            require(expr, divisor[s])

    def unify(e1: Expr, e2: Expr) -> None:
        r1, r2 = resolve(e1), resolve(e2)
        if _counts(r1) == _counts(r2):
            return
        singles = [(a[0][0], b) for a, b in ((r1, r2), (r2, r1))
                   if len(a) == 1 and a[0][1] == 1 and a[0][0] not in fixed_set and a[0][0] not in {s for s, _ in b}]
        if len(singles) == 2 and len(r2) == 1 and r2[0][1] == 1:
            a, b = r1[0][0], r2[0][0]
            substitute(max(a, b), ((min(a, b), 1),))
        elif singles:
            substitute(*singles[0])
        elif len(r1) == len(r2) > 1 and all(m1 == m2 and teacher_width[s1] == teacher_width[s2]
                                        for (s1, m1), (s2, m2) in zip(r1, r2)):
            for (s1, _), (s2, _) in zip(r1, r2):  # term by term: each pair spans the same channels
                unify(((s1, 1),), ((s2, 1),))
        else:
            fixed_set.update(s for s, _ in r1 + r2)

    def cut(expr: Expr, at: int, fresh: int) -> bool:
        """Make teacher position ``at`` of ``expr`` a term boundary, splitting the free term it falls in
        into symbols ``fresh`` and ``fresh + 1``; False where that term cannot be split."""
        pos = 0
        for s, m in resolve(expr):
            w = teacher_width[s] * m
            if pos < at < pos + w:
                d = divisor.get(s, 1)
                if m != 1 or s in fixed_set or (at - pos) % d:
                    return False
                teacher_width[fresh], teacher_width[fresh + 1] = at - pos, pos + w - at
                substitute(s, ((fresh, 1), (fresh + 1, 1)))
                divisor[fresh] = divisor[fresh + 1] = d
                return True
            pos += w
        return True

    out_exprs: list[Expr] = []
    in_exprs: list[Expr] = []
    scrambled: list[bool] = []  # a layer's output channels are not in its expression's term order (a shuffle)
    slices: dict[int, tuple[Expr, int]] = {}
    n = len(layers)
    for j, layer in enumerate(layers):
        ins = [out_exprs[i] if i >= 0 else ((INPUT, 1),) for i in layer.inputs]
        mixed = layer.type == "shuffle" or any(scrambled[i] for i in layer.inputs if i >= 0)
        if layer.type == "opaque" and layer.attrs.get("channelwise"):  # kept whole, each channel alone: out = in
            in_expr = out = resolve(ins[0])
        elif layer.type == "opaque":  # kept whole: it pins every symbol it reads, and its output is its own
            for e in ins:
                fixed_set.update(s for s, _ in resolve(e))
            in_expr = resolve(ins[0])
            teacher_width[j] = layer.out_channels
            fixed_set.add(j)
            out = ((j, 1),)
        elif layer.type == "concat":
            in_expr = resolve(ins[0])
            out: Expr = tuple(t for e in ins for t in resolve(e))
        elif layer.type == "slice":  # new symbols n + 4j .. n + 4j + 3: the same in every child of the graph
            for e in ins[1:]:
                unify(ins[0], e)
            a, b = layer.attrs["start"], layer.attrs["stop"]
            if not mixed and cut(ins[0], a, n + 4 * j) and cut(ins[0], b, n + 4 * j + 2):
                in_expr, pos, before, out = resolve(ins[0]), 0, [], []
                for t in in_expr:
                    (before if pos < a else out if pos < b else []).append(t)
                    pos += teacher_width[t[0]] * t[1]
                slices[j], out = (tuple(before), 0), tuple(out)
            else:
                in_expr = resolve(ins[0])
                fixed_set.update(s for s, _ in in_expr)
                teacher_width[n + 4 * j] = b - a
                fixed_set.add(n + 4 * j)
                slices[j], out = ((), a), ((n + 4 * j, 1),)
            mixed = False
        else:
            for e in ins[1:]:
                unify(ins[0], e)
            in_expr = resolve(ins[0])
            out = in_expr
            if layer.type == "conv":
                g = layer.attrs["groups"]
                if g > 1 and g == layer.in_channels == layer.out_channels:
                    depthwise.add(j)
                else:
                    teacher_width[j] = layer.out_channels
                    out = ((j, 1),)
                    if g > 1:
                        require(in_expr, g)
                        require(out, g)
            elif layer.type == "linear":
                teacher_width[j] = layer.out_channels
                out = ((j, 1),)
            elif layer.type == "flatten" and len(layer.in_shape) > 1:
                hw = math.prod(layer.in_shape[1:])
                out = tuple((s, m * hw) for s, m in in_expr)
            elif layer.type == "shuffle":
                require(in_expr, layer.attrs["groups"])
        in_exprs.append(in_expr)
        out_exprs.append(out)
        scrambled.append(mixed and not (layer.type in ("conv", "linear", "opaque") and j not in depthwise
                                        and not layer.attrs.get("channelwise")))
    fixed_set.update(s for s, _ in resolve(out_exprs[output]))
    # a term of a concatenation that a grouped conv reads can be narrower than its divisor (DPN: 16
    # channels of a 32-group conv's input): it cannot shrink and stay a multiple, so it keeps its width
    fixed_set.update(s for s, d in divisor.items() if teacher_width.get(s, 0) % d)
    sol = ChannelSolution(
        out_exprs=[resolve(e) for e in out_exprs],
        in_exprs=[resolve(e) for e in in_exprs],
        teacher_width=teacher_width,
        fixed=fixed_set,
        divisor={s: divisor.get(s, 1) for s in teacher_width},
        depthwise=depthwise,
        slices={j: (resolve(e), c) for j, (e, c) in slices.items()},
    )
    live = {s for e in sol.out_exprs for s, _ in e}
    sol.free = sorted(s for s in live if s not in fixed_set and s not in subst)
    return sol


def _counts(expr: Expr) -> Counter:
    c: Counter = Counter()
    for s, m in expr:
        c[s] += m
    return c


def shrunk_width(teacher_width: int, ratio: float, divisor: int = 1) -> int:
    """max(d, floor((1 - r) F / d) d): the reference code's rule, kept a multiple of the divisor d."""
    return max(divisor, int(math.floor((1.0 - ratio) * teacher_width / divisor)) * divisor)
