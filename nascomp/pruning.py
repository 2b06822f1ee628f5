"""The pruning baseline: structured (channel) pruning of the teacher with Torch-Pruning, down to a
parameter count, so that a searched student can be compared with "just prune it" at equal size.

Torch-Pruning (``pip install 'nascomp[prune]'``) traces the teacher's channel dependencies (a
residual sum couples the channels of every layer feeding it) and removes whole channels of each
coupled group together, so the pruned copy is a smaller dense network of the same layers. The ranking
is global: every group's channels compete in one list, scored by the importance named here.

    l2        the L2 norm of a channel's weights, summed over its coupled group (Torch-Pruning's
              ``GroupMagnitudeImportance(p=2)``, the library's default; Li et al. 2017 use L1)
    l1        the same with the L1 norm (``p=1``)
    bn_scale  |gamma| of the channel's BatchNorm (Liu et al. 2017, network slimming; here without
              their sparsity-regularised training: the teacher's own scales)

Pruning is iterative (Torch-Pruning's iterative steps, ``steps`` of them) and stops at the first
step whose parameter count is at or below the target; the count only ever falls. The kept channel
fraction shrinks geometrically, by the same factor each step, from 1 to ``END`` x sqrt(target /
teacher params) (about where the target lies, since a conv's parameters scale with the product of
its in and out channels), so every step removes about the same share of what is left: with 200
steps about 1% of the parameters near the target, which the result lands just below. When the
schedule ends above the target, it is run again to a fraction half as large. The output layer is
never pruned (its outputs are the classes).
"""
from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
from torch import nn

from nascomp.schema import PRUNING_IMPORTANCES as IMPORTANCES  # the one list: final.prune is checked against it
END = 0.7  # the schedule ends at END x sqrt(target / teacher params) of the channels, a little past the target


class PruningError(ValueError):
    """The target cannot be reached (or is no compression), or the importance is unknown."""


def num_params(model: nn.Module) -> int:
    """Trainable parameters, counted as Eq. 6 counts them (as ``ArchGraph.num_params``)."""
    return sum(p.numel() for p in model.parameters())


def output_layer(model: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """The leaf module whose output is the model's output (the classifier), found by one forward pass."""
    outputs: dict[nn.Module, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.__setitem__(m, o))
             for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            y = model(example_input)
    finally:
        for h in hooks:
            h.remove()
    found = [m for m, o in outputs.items() if o is y]
    if not found:
        raise PruningError(f"cannot tell {type(model).__name__}'s output layer (no leaf module returns the model's "
                           "output tensor); pass keep=[its classifier module]")
    return found[0]


def importance(name: str):
    """Torch-Pruning's importance criterion for ``name`` in IMPORTANCES."""
    tp = _torch_pruning()
    if name == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if name == "bn_scale":
        return tp.importance.BNScaleImportance()
    raise PruningError(f"unknown pruning importance {name!r}; choose from {', '.join(IMPORTANCES)}")


def prune(teacher: nn.Module, example_input: torch.Tensor, target_params: int, importance_name: str = "l2",
          steps: int = 200, keep: Sequence[nn.Module] | None = None) -> nn.Module:
    """A channel-pruned copy of ``teacher`` with at most ``target_params`` parameters (the teacher is
    left unchanged). ``example_input`` (B, C, H, W) traces the graph; ``keep`` are modules never pruned
    (default: the output layer, so the copy still gives one logit per class). The copy is in train mode
    with every parameter trainable, holding the teacher's surviving weights.

    Raises ``PruningError`` when ``target_params`` is not below the teacher's count, or when pruning
    every prunable group down to about one channel still leaves more than ``target_params``."""
    tp = _torch_pruning()
    criterion = importance(importance_name)
    teacher_params = num_params(teacher)
    if not 0 < target_params < teacher_params:
        raise PruningError(f"pruning target {target_params} parameters: it must be positive and below the "
                           f"teacher's {teacher_params}")
    example_input = example_input.cpu()
    keep_end = END * math.sqrt(target_params / teacher_params)
    while True:
        model = copy.deepcopy(teacher).cpu().requires_grad_(True).eval()  # tracing needs autograd; eval: BN stats stay
        kept = [output_layer(model, example_input)] if keep is None else [_copy_of(teacher, model, m) for m in keep]
        pruner = tp.pruner.MetaPruner(model, example_input, importance=criterion, global_pruning=True,
                                      pruning_ratio=1.0 - keep_end, iterative_steps=steps, ignored_layers=kept,
                                      iterative_pruning_ratio_scheduler=geometric)
        for _ in range(steps):
            pruner.step()
            if num_params(model) <= target_params:
                return model.train()
        count = num_params(model)
        keep_end /= 2
        if keep_end * max(_widths(teacher), default=1) < 1:
            raise PruningError(f"pruning {type(teacher).__name__} ({teacher_params} parameters) with {importance_name} "
                               f"importance reaches no fewer than {count} parameters, above the target {target_params} "
                               "(every prunable channel group is down to about one channel; what is left is the "
                               "unpruned output layer and the layers coupled to it)")


def geometric(pruning_ratio: float, steps: int) -> list[float]:
    """Torch-Pruning's ratio schedule for step 0..steps: the kept fraction (1 - ratio) falls by one
    factor per step, from 1 to 1 - ``pruning_ratio``."""
    return [1.0 - (1.0 - pruning_ratio) ** (i / steps) for i in range(steps + 1)]


def _widths(model: nn.Module) -> list[int]:
    return [m.weight.shape[0] for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def as_student(model: nn.Module, input_shape: tuple[int, ...]):
    """``model`` (a pruned teacher) as a student of the compression space over its own traced graph:
    the space's reference candidate (nothing removed or shrunk) and its ``GraphNet``, holding ``model``'s
    weights and BatchNorm statistics, so the same function. It trains, scores, is stored and exported
    (``Candidate.save``, read back by ``nascomp.load_student``) as every searched student is."""
    from nascomp.compression_space import CompressionSpace
    from nascomp.graph import ArchGraph

    candidate = CompressionSpace(ArchGraph.from_module(model, tuple(input_shape))).reference
    return candidate, candidate.build(model, inherit="first", bn_stats="copy").train()


def _copy_of(original: nn.Module, copied: nn.Module, module: nn.Module) -> nn.Module:
    """The module of ``copied`` at ``module``'s place in ``original``."""
    names = {m: n for n, m in original.named_modules()}
    if module not in names:
        raise PruningError(f"keep: {type(module).__name__} is not a module of the teacher")
    return copied.get_submodule(names[module])


def _torch_pruning():
    try:
        import torch_pruning
    except ImportError as exc:
        raise ImportError("the pruning baseline needs Torch-Pruning: pip install 'nascomp[prune]' "
                          "(or pip install torch-pruning)") from exc
    return torch_pruning
