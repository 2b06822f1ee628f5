"""The abstract search space that Algorithm 1, the kernels and every baseline work over.

Two spaces implement it: the compression space of paper 3.2 (``nascomp.compression_space.CompressionSpace``,
architectures derived from a teacher) and NAS-Bench-201 (``nascomp.nb201``). Every search method
only uses what is declared here.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from nascomp.encoding import LayerSpec, encode


class Architecture(ABC):
    """One point of a search space."""

    @property
    @abstractmethod
    def key(self) -> str:
        """Canonical key: a stable hex hash, equal across processes and runs for equal architectures."""

    @abstractmethod
    def layers(self) -> list[LayerSpec]:
        """The topologically sorted layers (paper 6.2)."""

    @property
    @abstractmethod
    def num_params(self) -> int:
        """Number of parameters of the network this architecture describes."""

    def encode(self, n: int = 128, numeric: str = "raw", reference: "Sequence[LayerSpec] | None" = None) -> torch.Tensor:
        """The layer-encoding matrix, shape (L, m + 6 + 2n); n is the space's ``max_offset`` (128 by
        default, ``conf/space/default.yaml``'s; the kernel passes its space's);
        ``reference`` (the layers of the space's reference, for ``numeric="relative"``) is what channels
        are relative to."""
        return encode(self.layers(), n=n, numeric=numeric, reference=reference)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Architecture) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)


@dataclass(frozen=True)
class FlatDim:
    """One dimension of the flat hyper-parameter view (paper 6.4): ``bool`` (keep a layer, add a skip),
    ``float`` in [low, high) (a shrink ratio) or ``choice`` among ``choices``."""

    name: str
    kind: str  # "bool" | "float" | "choice"
    low: float = 0.0
    high: float = 1.0
    choices: tuple[Any, ...] = ()


class Space(ABC):
    """A search space: sampling, mutation and the flat view used by TPE and the flat kernel."""

    # n of the layer encoding (paper 6.2): no architecture of the space has an edge i -> j with
    # j - i > max_offset. The space owns this number, not the kernel: the space decides which edges
    # exist (the compression space proposes no longer skip, ``space.max_offset``), and an encoding
    # shorter than its longest edge could not encode it. The kernel's featurizer reads it from here.
    max_offset: int

    @property
    @abstractmethod
    def reference(self) -> Architecture:
        """The reference architecture: the teacher in the compression space (f = 0 by definition)."""

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> Architecture:
        """A random architecture, drawn with the space's sampling distribution."""

    @abstractmethod
    def mutate(self, arch: Architecture, rng: np.random.Generator) -> Architecture:
        """A random neighbour of ``arch`` made with the same operators."""

    def neighbours(self, arch: Architecture, rng: np.random.Generator, n: int) -> list[Architecture]:
        """The one-step neighbours of ``arch`` (local search's neighbourhood). This default, for spaces
        that cannot list them (continuous shrink ratios): the distinct results of ``n`` draws of
        ``mutate``. A space with a finite neighbourhood lists it exactly and ignores ``rng`` and ``n``."""
        out: dict[str, Architecture] = {}
        for _ in range(n):
            child = self.mutate(arch, rng)
            out.setdefault(child.key, child)
        return list(out.values())

    @abstractmethod
    def flat_dims(self) -> Sequence[FlatDim]:
        """The flat hyper-parameter view: one entry per dimension."""

    @abstractmethod
    def to_flat(self, arch: Architecture) -> np.ndarray:
        """The flat view of ``arch`` as a float vector of shape (len(flat_dims()),): bools as 0/1,
        floats as they are, choices as the index of the choice."""

    @abstractmethod
    def from_flat(self, values: dict[str, Any]) -> Architecture:
        """The architecture a full assignment of the flat dimensions (by name) describes."""
