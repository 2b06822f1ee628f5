"""The layer encoding of paper Appendix 6.2: one vector per layer, length m + 6 + 2n.

For layer i of a topologically sorted architecture the vector is

    [ one-hot type (m) | kernel size, stride, padding, groups, in channels, out channels (6) |
      incoming edges (n) | outgoing edges (n) ]

For an edge i -> j (i < j) element (j - i - 1) of i's outgoing vector and of j's incoming vector is
1 (offset 1 is the first element). An edge from the network input is not a layer-to-layer edge and
is not encoded. A network may have more than n layers: only an edge whose offset exceeds n is an
error. n is the search space's ``max_offset`` (``Space.max_offset``): the space decides which edges
exist, so it states how long they can be, and the kernel encodes with that n.

Numeric attributes are ``log`` scaled by default, log2(1 + x): channel counts span 3..2048 while
the one-hot and edge entries are 0/1, and raw counts would dominate the LSTM's input (and saturate
its gates) so that two architectures differing only in topology would look alike. ``raw`` keeps
the paper's unnormalised numbers (the `paper` kernel preset uses it). ``relative`` gives groups, in
and out channels as fractions of the same layer's in a reference network of the same length (the
space's reference: in the compression space the teacher; 0 where the reference has none) and the
other attributes as ``log``: a student at half the teacher's width encodes alike whatever the
teacher's width, so kernels learned on one teacher can rank the students of a wider or narrower one
(Table 3 across teachers).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from nascomp.schema import NUMERIC

LAYER_TYPES: tuple[str, ...] = (
    "identity", "conv", "linear", "batchnorm",
    "relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish", "leaky_relu",
    "maxpool", "avgpool", "adaptive_avgpool", "adaptive_maxpool",
    "flatten", "shuffle", "concat", "add", "dropout", "zero",
)
NUM_ATTRIBUTES = 6  # kernel size, stride, padding, groups, in channels, out channels


@dataclass(frozen=True)
class LayerSpec:
    """One layer as the encoding sees it. ``inputs`` are indices of earlier layers; -1 is the
    network input. Attributes a type lacks are 0."""

    type: str
    kernel_size: int = 0
    stride: int = 0
    padding: int = 0
    groups: int = 0
    in_channels: int = 0
    out_channels: int = 0
    inputs: tuple[int, ...] = field(default=())

    def attributes(self) -> tuple[int, int, int, int, int, int]:
        return (self.kernel_size, self.stride, self.padding, self.groups, self.in_channels, self.out_channels)


def encoding_width(n: int) -> int:
    """m + 6 + 2n."""
    return len(LAYER_TYPES) + NUM_ATTRIBUTES + 2 * n


def encode(layers: Sequence[LayerSpec], n: int, numeric: str = "raw",
           reference: Sequence[LayerSpec] | None = None) -> torch.Tensor:
    """Encode a topologically sorted list of layers (``reference``: the layers channels are relative
    to, with ``numeric="relative"``).

    Returns a float32 tensor of shape (L, m + 6 + 2n).
    """
    if numeric not in NUMERIC:
        raise ValueError(f"numeric must be one of {', '.join(NUMERIC)}, got {numeric!r}")
    if (numeric == "relative") != (reference is not None):
        raise ValueError("numeric='relative' needs the reference layers (and only it takes them)")
    if reference is not None and len(reference) != len(layers):
        raise ValueError(f"numeric='relative': {len(layers)} layers against a reference of {len(reference)}; "
                         "the reference must have one layer per layer (removed layers kept as identity)")
    m = len(LAYER_TYPES)
    out = np.zeros((len(layers), m + NUM_ATTRIBUTES + 2 * n), dtype=np.float32)
    type_index = {t: i for i, t in enumerate(LAYER_TYPES)}
    for j, layer in enumerate(layers):
        if layer.type not in type_index:
            raise ValueError(f"layer {j} has unknown type {layer.type!r}; known types: {', '.join(LAYER_TYPES)}")
        out[j, type_index[layer.type]] = 1.0
        attrs = layer.attributes()
        if numeric == "relative":
            ref = reference[j].attributes()
            attrs = tuple(math.log2(1.0 + a) for a in attrs[:3]) + tuple(a / r if r else 0.0 for a, r in zip(attrs[3:], ref[3:]))
        elif numeric == "log":
            attrs = tuple(math.log2(1.0 + a) for a in attrs)
        out[j, m : m + NUM_ATTRIBUTES] = attrs
        for i in layer.inputs:
            if i < 0:
                continue
            offset = j - i
            if offset <= 0:
                raise ValueError(f"layer {j} has input {i}: layers must be topologically sorted")
            if offset > n:
                raise ValueError(
                    f"edge {i} -> {j} has offset {offset} > n = {n}; raise the encoding's max offset (n)"
                )
            out[j, m + NUM_ATTRIBUTES + offset - 1] = 1.0  # incoming vector of j
            out[i, m + NUM_ATTRIBUTES + n + offset - 1] = 1.0  # outgoing vector of i
    return torch.from_numpy(out)
