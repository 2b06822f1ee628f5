"""Kernel transfer (paper 4.3, Table 3): the K kernels learned in a source search, used in a target
search without being trained there (``kernel.transfer_from``, ``kernel.transfer_mode``).

``search``     a whole target search (Algorithm 1) whose every step conditions the source's kernels
               on the target's data instead of training new ones (``KernelProposer`` with ``transfer``).
``zero_shot``  the paper's protocol: no target data and no kernel training. The source's kernels,
               their GPs conditioned on the data the source's last step saw (the source's rewards,
               each kernel on its own subset), each maximise expected improvement over the target
               space; the K maximisers are evaluated and the search reports the best of them:

                   x_k = argmax_{x in target space} EI_k(x | source kernel k, source data D_k),  k = 1..K

A target candidate is scored against source architectures, so both must encode to the same
embedding width: the same kernel settings and ``space.max_offset``, and, unless ``kernel.pool=mean``
(the paper's average over layers), the same number of layers (the same teacher family and depth).
With no target data, the evolution maximiser mutates the target's reference architecture (the
teacher) instead of the best evaluated ones.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from omegaconf import DictConfig

from nascomp.evaluator import Evaluator
from nascomp.kernel import EmbeddingKernelModule, pack
from nascomp.search_space import Architecture, Space


@dataclass(frozen=True)
class SourceKernels:
    """The K kernels of one step of a source search. ``state``: their ``EmbeddingKernelModule``
    state_dict. ``data``: what their GPs were conditioned on at that step (None where not stored):
    ``x`` (N, ...) the architectures' features (reference first when the source had one), ``y`` (N,)
    rewards on the kernels' scale (``Evaluator.reward_scale`` applied), ``mask`` (K, N) bool, each
    kernel's subset, ``target`` "f", or "accuracy" where ``y`` is accuracy (the ratio A / A(ref) of
    ``search.target=accuracy``, or Pareto mode's normalised accuracy, less the cost prior with
    ``search.acquisition.pareto_mean=cost``). ``where`` says where they came from (for messages)."""

    state: dict
    data: dict | None = None
    where: str = "the source run"

    def zero_shot_data(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, y, mask) of ``data`` for ``kernel.transfer_mode=zero_shot``; ValueError, saying what to do, when
        the source cannot propose zero-shot: no data stored, or targets that are not f."""
        if self.data is None:
            raise ValueError(f"kernel.transfer_mode=zero_shot: {self.where} stored its kernels without the data their "
                             "GPs were conditioned on (a run made before the store kept it); run the source search again")
        if self.data.get("target", "f") != "f":  # stores written before the key held f
            raise ValueError(f"kernel.transfer_mode=zero_shot: {self.where}'s kernels model accuracy, not f (a source "
                             "run with search.target=accuracy or search.mode=pareto), and zero-shot proposes by EI on f; "
                             "use a single-objective source with search.target=f")
        return self.data["x"], self.data["y"].double(), self.data["mask"]


def propose_zero_shot(space: Space, source: SourceKernels, kernel_cfg: DictConfig, search_cfg: DictConfig,
                      exclude: set[str], rng: np.random.Generator) -> list[tuple[Architecture, int]]:
    """The K source kernels' EI maximisers in ``space`` (one per kernel, none in ``exclude``), each
    with the index of its kernel. Nothing is trained."""
    from nascomp.search import KernelProposer

    proposer = KernelProposer(space, kernel_cfg, search_cfg, reference_f=None)
    x, y, mask = source.zero_shot_data()
    module = EmbeddingKernelModule(kernel_cfg, mask.shape[0], proposer.featurize.input_size)
    module.load_state_dict(source.state)
    module.condition(*pack(x, y, mask))
    width = module.z.shape[-1]
    target_width = module.embed(proposer.featurize([space.reference])).shape[-1]
    if target_width != width:
        raise ValueError(f"kernel.transfer_mode=zero_shot: the source's architectures embed to {width} values and this "
                         f"space's to {target_width} (kernel.pool={kernel_cfg.pool} compares layer by layer, and the "
                         "teachers have different numbers of layers); use kernel.pool=mean in both searches")
    return proposer.acquire(module, y, mask, [space.reference], exclude, rng)


def zero_shot_search(space: Space, evaluator: Evaluator, kernel_cfg: DictConfig, search_cfg: DictConfig, seed: int,
                     source: SourceKernels, after_step: Callable | None = None):
    """Paper 4.3: the K architectures the source's kernels propose (``propose_zero_shot``), evaluated
    as step 0; a ``SearchResult`` of those K (``best_after(K)`` is the best of them)."""
    from nascomp.search import Search, SearchFailed, SearchResult

    start = time.perf_counter()
    known = set() if evaluator.reference_f is None else {space.reference.key}
    batch = propose_zero_shot(space, source, kernel_cfg, search_cfg, known, np.random.default_rng([seed, 1]))
    seconds = {"train": 0.0, "acquisition": time.perf_counter() - start}  # no kernel is trained in the target
    search = Search(space, evaluator, None, len(batch), 0, seed, len(batch), after_step=after_step)
    history = search.evaluate(batch, step=0)
    if all(r.failed for r in history):
        raise SearchFailed(Search.failure_message(history, f"every one of the {len(history)} zero-shot proposals failed"))
    return SearchResult(history, seconds, 0)


def source_data(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, target: str = "f") -> dict:
    """``SourceKernels.data`` of a step: features (N, ...), the kernels' targets (N,), subsets (K, N), and
    what the targets are: "f" (on the kernels' scale) or "accuracy"."""
    return {"x": x.detach().cpu(), "y": y.detach().cpu().double(), "mask": mask.detach().cpu(), "target": target}
