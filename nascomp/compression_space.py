"""The compression search space of paper 3.2 / 6.5: architectures obtained from a teacher by layer
removal, layer shrinkage and skip-connection addition.

    removal  only layers whose input shape equals their output shape (C, H, W); a removed layer
             becomes an identity and keeps its edges (an opaque layer only when it has one input)
    shrink   one ratio r per shrink group of channel symbols (``nascomp.channels``); width
             max(d, floor((1 - r) F / d) d)
    skip     an edge i -> j where out-shape(i) == in-shape(j), j is not removed, not a concat, gate
             or opaque layer; j sums its inputs

Operators (``ops``): any of the three; the default ``auto`` is shrinkage only here (the skip-free rule; a
run resolves it by its objective, ``nascomp.schema.resolved_space``), the reference code's are all three.
Sampling distribution (defaults = the reference code, REFERENCE §2): one removal probability drawn
per candidate from ``remove_p``, each removable layer removed with it; r ~ U[shrink_low, shrink_high)
per shrink group; one skip probability drawn from ``skip_p``, each legal pair added with it.
``shrink_groups="width"`` shares one ratio among all channel symbols of equal teacher width (the
reference code: 4 shrink groups for VGG/ResNet); ``"structural"`` gives every channel symbol its own.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Sequence

import numpy as np
from torch import nn

from nascomp.channels import ChannelSolution, shrunk_width, solve
from nascomp.encoding import LayerSpec
from nascomp.graph import ACTIVATIONS, SEPARATE_INPUTS, ArchGraph, GraphNet, Layer
from nascomp.schema import INHERIT, check_space, resolved_space
from nascomp.search_space import Architecture, FlatDim, Space

SQUASHING = ("sigmoid", "hardsigmoid", "tanh")  # bounded activations: feeding a gate, never removed
REMOVABLE = ("conv", "linear", "batchnorm", "maxpool", "avgpool", "adaptive_avgpool", "adaptive_maxpool",
             "shuffle", "dropout", "droppath", "opaque", "channel_norm") + ACTIVATIONS


class CompressionSpace(Space):
    """All students of one teacher graph reachable by the enabled operators."""

    def __init__(self, graph: ArchGraph, **options: Any):
        """``options`` override ``conf/space/default.yaml`` (ops, remove_p, skip_p, shrink_low,
        shrink_high, shrink_groups, max_offset, max_tries); an unknown option is an error. ``ops`` and
        ``shrink_groups`` at ``auto`` are ``[shrink]`` and ``structural`` (a run without latency or caps)."""
        from nascomp.config import group

        cfg = group("space", "default")
        unknown_options = set(options) - set(cfg)
        if unknown_options:
            raise ValueError(f"unknown search-space options {sorted(unknown_options)}; known: {sorted(cfg)}")
        cfg = {**cfg, **options}
        check_space(cfg)
        cfg = resolved_space(cfg)  # no objective here: auto as in a run without latency or caps (schema.resolved_space)
        ops, remove_p, skip_p = tuple(cfg["ops"]), tuple(cfg["remove_p"]), tuple(cfg["skip_p"])
        shrink_low, shrink_high, shrink_groups = float(cfg["shrink_low"]), float(cfg["shrink_high"]), cfg["shrink_groups"]
        max_offset, max_tries = int(cfg["max_offset"]), int(cfg["max_tries"])
        self.graph = graph
        self.ops = tuple(ops)
        self.remove_p, self.skip_p = tuple(remove_p), tuple(skip_p)
        self.shrink_low, self.shrink_high = shrink_low, shrink_high
        self.max_offset = max_offset
        self.max_tries = max_tries
        layers = graph.layers
        self.solution = solve(layers, graph.input_shape[0], graph.output)
        sol = self.solution
        # one ratio per shrink group of free channel symbols
        group_key = (lambda s: sol.teacher_width[s]) if shrink_groups == "width" else (lambda s: s)
        keys = sorted({group_key(s) for s in sol.free})
        self.shrink_group_of = {s: keys.index(group_key(s)) for s in sol.free}
        self.shrink_groups = shrink_groups
        self.num_shrink_groups = len(keys)
        gates = {i for l in layers if l.type == "gate" for i in l.inputs}
        self.removable = [j for j, l in enumerate(layers)
                          if l.type in REMOVABLE and l.in_shape == l.out_shape and j != graph.output and l.inputs
                          and not (l.opaque and len(l.inputs) > 1)
                          and not (j in gates and l.type in SQUASHING)]
        # (a gate's squashing activation, e.g. squeeze-excitation's sigmoid, stays: without it the gate is
        # unbounded and a student's activations can grow without limit; it holds no parameters to save)
        self.skip_pairs = [(i, j) for j, lj in enumerate(layers) if lj.type != "concat" and lj.type not in SEPARATE_INPUTS
                           for i in range(max(0, j - max_offset), j)
                           if i not in lj.inputs and layers[i].out_shape == lj.in_shape]
        self._legal = frozenset(self.removable), frozenset(self.skip_pairs)  # from_dict's check

    def check_searchable(self) -> None:
        """Raise ``ValueError`` when no enabled operator can make the teacher smaller (a search would find
        nothing to propose; the reference student needs none): the main job calls it at startup."""
        if not ("remove" in self.ops and self.removable) and not ("shrink" in self.ops and self.num_shrink_groups):
            raise ValueError(f"space.ops={list(self.ops)} cannot make this teacher smaller: it has {len(self.removable)} "
                             f"removable layers and {self.num_shrink_groups} shrink groups; search with "
                             f"space.ops=[remove,shrink,skip]")

    # ------------------------------------------------------------------ Space interface
    @cached_property
    def reference(self) -> "Candidate":
        return Candidate(self, frozenset(), frozenset(), (0.0,) * self.num_shrink_groups)

    def sample(self, rng: np.random.Generator | None = None, *, seed: int | None = None) -> "Candidate":
        """A random candidate smaller than the teacher, from ``rng`` (or a generator seeded with ``seed``)."""
        rng = rng if rng is not None else np.random.default_rng(seed)
        for _ in range(self.max_tries):
            removed: frozenset[int] = frozenset()
            if "remove" in self.ops and self.removable:
                p = rng.choice(self.remove_p)
                removed = frozenset(j for j, u in zip(self.removable, rng.random(len(self.removable))) if u < p)
            ratios = (0.0,) * self.num_shrink_groups
            if "shrink" in self.ops:
                ratios = tuple(float(r) for r in rng.uniform(self.shrink_low, self.shrink_high, self.num_shrink_groups))
            skips: frozenset[tuple[int, int]] = frozenset()
            if "skip" in self.ops and self.skip_pairs:
                p = rng.choice(self.skip_p)
                skips = frozenset(pair for pair, u in zip(self.skip_pairs, rng.random(len(self.skip_pairs)))
                                  if u < p and pair[1] not in removed)
            cand = Candidate(self, removed, skips, ratios)
            if cand.num_params < self.graph.num_params:
                return cand
        raise RuntimeError(f"no candidate smaller than the teacher in {self.max_tries} draws with space.ops={list(self.ops)} "
                           f"({len(self.removable)} removable layers, {self.num_shrink_groups} shrink groups)")

    def mutate(self, arch: "Candidate", rng: np.random.Generator) -> "Candidate":
        """Change one thing with one enabled operator: toggle a removable layer, redraw one shrink
        group's ratio, or toggle one legal skip."""
        ops = [op for op in self.ops if (op != "remove" or self.removable) and (op != "skip" or self.skip_pairs)
               and (op != "shrink" or self.num_shrink_groups)]
        for _ in range(self.max_tries):
            op = ops[rng.integers(len(ops))]
            removed, skips, ratios = set(arch.removed), set(arch.skips), list(arch.ratios)
            if op == "remove":
                j = self.removable[rng.integers(len(self.removable))]
                removed ^= {j}
                skips = {(a, b) for a, b in skips if b not in removed}
            elif op == "shrink":
                g = rng.integers(self.num_shrink_groups)
                ratios[g] = float(rng.uniform(self.shrink_low, self.shrink_high))
            else:
                pair = self.skip_pairs[rng.integers(len(self.skip_pairs))]
                if pair[1] in removed:
                    continue
                skips ^= {pair}
            cand = Candidate(self, frozenset(removed), frozenset(skips), tuple(ratios))
            if cand.key != arch.key and cand.num_params < self.graph.num_params:
                return cand
        raise RuntimeError(f"no smaller neighbour of {arch.key} found in {self.max_tries} tries")

    def from_dict(self, d: dict) -> "Candidate":
        """The candidate ``Candidate.to_dict`` described. A description this space cannot hold (another
        number of shrink groups, a layer it cannot remove, a skip it cannot add: another ``shrink_groups``
        or ``max_offset``) is a ``ValueError``: read here it would be another network. (A space with fewer
        ``ops`` holds every description of the same teacher: the operators choose what is sampled.)"""
        removed, skips, ratios = frozenset(d["removed"]), frozenset(tuple(p) for p in d["skips"]), tuple(d["ratios"])
        if len(ratios) != self.num_shrink_groups:
            raise ValueError(f"a candidate with {len(ratios)} shrink ratios is not of this space ({self.num_shrink_groups} "
                             f"shrink groups: shrink_groups={self.shrink_groups!r})")
        removable, skip_pairs = self._legal
        if not removed <= removable or not skips <= skip_pairs:
            raise ValueError("a candidate that removes layers or adds skips this space cannot is not of this space "
                             f"(layers {sorted(removed - removable)}, skips {sorted(skips - skip_pairs)})")
        return Candidate(self, removed, skips, ratios)

    def flat_dims(self) -> list[FlatDim]:
        dims = [FlatDim(f"keep_{j}", "bool") for j in self.removable] if "remove" in self.ops else []
        if "shrink" in self.ops:
            dims += [FlatDim(f"shrink_{g}", "float", self.shrink_low, self.shrink_high) for g in range(self.num_shrink_groups)]
        if "skip" in self.ops:
            dims += [FlatDim(f"skip_{i}_{j}", "bool") for i, j in self.skip_pairs]
        return dims

    def to_flat(self, arch: "Candidate") -> np.ndarray:
        values = []
        if "remove" in self.ops:
            values += [0.0 if j in arch.removed else 1.0 for j in self.removable]
        if "shrink" in self.ops:
            values += list(arch.ratios)
        if "skip" in self.ops:
            values += [1.0 if pair in arch.skips else 0.0 for pair in self.skip_pairs]
        return np.asarray(values, dtype=np.float64)

    def from_flat(self, values: dict[str, Any]) -> "Candidate":
        removed = frozenset(j for j in self.removable if "remove" in self.ops and not values[f"keep_{j}"])
        ratios = tuple(float(values[f"shrink_{g}"]) if "shrink" in self.ops else 0.0 for g in range(self.num_shrink_groups))
        skips = frozenset((i, j) for i, j in self.skip_pairs
                          if "skip" in self.ops and values[f"skip_{i}_{j}"] and j not in removed)
        return Candidate(self, removed, skips, ratios)


def realising(key: str, description: dict, spaces: Sequence[CompressionSpace]) -> "Candidate | None":
    """The candidate of the first of ``spaces`` that reads ``description`` (``Candidate.to_dict``) as the
    network of ``key``, or None (also for a missing or malformed description). Spaces over one teacher
    (another ``shrink_groups`` or ``max_offset``, other operators) share a store context, and the store keeps
    the description of the space that first evaluated a network; the same network builds, inherits and is
    stored by key alike whichever space describes it."""
    for space in spaces:
        try:
            candidate = space.from_dict(description)
        except (ValueError, KeyError, TypeError):  # another space's description, or none
            continue
        if candidate.key == key:
            return candidate
    return None


@dataclass(frozen=True, eq=False)
class Candidate(Architecture):
    """A student: which layers are removed, which skips are added, one ratio per shrink group."""

    space: CompressionSpace
    removed: frozenset[int]
    skips: frozenset[tuple[int, int]]
    ratios: tuple[float, ...]

    @cached_property
    def _realized(self) -> tuple[ArchGraph, ChannelSolution, dict[int, int]]:
        space = self.space
        teacher = space.graph
        layers = []
        for j, layer in enumerate(teacher.layers):
            inputs = layer.inputs + tuple(sorted(i for i, k in self.skips if k == j))
            if j in self.removed:
                layer = Layer(layer.name, "identity", inputs, layer.in_shape, layer.in_shape, {}, "")
            else:
                layer = replace(layer, inputs=inputs)
            layers.append(layer)
        sol = solve(layers, teacher.input_shape[0], teacher.output, fixed=space.solution.fixed)
        width = {}
        for s in sol.free:
            g = space.shrink_group_of.get(s)
            ratio = self.ratios[g] if g is not None else 0.0
            width[s] = shrunk_width(sol.teacher_width[s], ratio, sol.divisor[s])
        out = []
        for j, layer in enumerate(layers):
            c_in, c_out = sol.value(sol.in_exprs[j], width), sol.value(sol.out_exprs[j], width)
            attrs = dict(layer.attrs)
            if j in sol.depthwise:
                attrs["groups"] = c_in
            if j in sol.slices:  # its channels in the student's input
                prefix, constant = sol.slices[j]
                attrs["start"] = sol.value(prefix, width) + constant
                attrs["stop"] = attrs["start"] + c_out
            out.append(Layer(layer.name, layer.type, layer.inputs, (c_in,) + layer.in_shape[1:],
                             (c_out,) + layer.out_shape[1:], attrs, layer.target, layer.module))
        return ArchGraph(out, teacher.input_shape, teacher.output), sol, width

    @property
    def graph(self) -> ArchGraph:
        """The student as an architecture graph (the one representation of a network)."""
        return self._realized[0]

    @cached_property
    def key(self) -> str:
        return self.graph.key

    @property
    def num_params(self) -> int:
        return self.graph.num_params

    @property
    def flops(self) -> int:
        """Multiply-accumulates of one forward of one sample (``nascomp.cost``)."""
        return self.graph.flops

    def layers(self) -> list[LayerSpec]:
        return self.graph.specs()

    def build(self, teacher: nn.Module | None = None, inherit: str = "first", bn_stats: str = "reset") -> GraphNet:
        """The student as an ``nn.Module``, inheriting the teacher's weights.

        inherit: ``first`` keeps the first channels of each channel symbol (reference code), ``l1``
        the channels whose producing filters have the largest L1 norm, ``none`` a fresh init. In a
        symbol that grouped convs or shuffles split into d blocks, the channels are kept per block.
        bn_stats: ``reset`` (default, as the reference code) starts BN running mean/var at 0/1,
        since removal and shrinkage change every BN's input distribution; ``copy`` slices the
        teacher's running statistics (with nothing removed or shrunk the student then computes
        exactly what the teacher does).
        """
        from nascomp.inherit import inherit_weights

        if inherit not in INHERIT:
            raise ValueError(f"inherit must be one of {', '.join(INHERIT)}, got {inherit!r}")
        if bn_stats not in ("reset", "copy"):
            raise ValueError(f"bn_stats must be 'reset' or 'copy', got {bn_stats!r}")
        net = self.graph.build()
        if inherit != "none":
            if teacher is None:
                raise ValueError(f"inherit={inherit!r} needs the teacher module")
            graph, sol, width = self._realized
            inherit_weights(net, teacher, graph, sol, width, inherit, bn_stats == "copy")
        return net

    def save(self, path, module: nn.Module) -> None:
        """Save as ``path/architecture.json`` + ``path/weights.pt`` (a plain state_dict)."""
        from nascomp.export import save_student

        save_student(path, self.graph, module)

    def to_dict(self) -> dict:
        """What the operators did, exactly: removed layers, added skips, shrink ratios (JSON-able)."""
        return {"removed": sorted(self.removed), "skips": sorted(list(p) for p in self.skips), "ratios": list(self.ratios)}

    def describe(self) -> dict:
        """What the operators did: counts of removed layers and added skips, the shrink ratios."""
        return {"removed": len(self.removed), "skips": len(self.skips), "ratios": [round(r, 4) for r in self.ratios]}

