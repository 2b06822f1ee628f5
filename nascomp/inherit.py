"""Weight inheritance: fill a student ``GraphNet`` with the teacher's weights (paper 3.2; reference
code keeps the first filters / input channels).

Every tensor of the student gets the list of teacher channel indices it keeps:

    channel symbol s    ``first``: the first w channels; ``l1``: the w whose producing filters have
                        the largest L1 norm; either taken per block when groups split s into d blocks
    expression          the terms' lists concatenated, offset by the terms' teacher widths;
                        a term (s, m) from flattening expands each channel c to c*m .. c*m + m - 1
    shuffle (g)         out[j] = teacher-inverse-shuffle(in[student-shuffle(j)])
    slice (start..stop)  the input's list at the student's positions start..stop, less the teacher's start
    depthwise conv, BN, activations, pools, removed layers: the input's list
    opaque layer        all its channels (its symbols are fixed), or a channelwise one the input's list;
                        it loads the teacher's tensors whole

A conv copies ``W_t[out_idx][:, in_idx]`` (for grouped convs, the in-group entries that exist in the
teacher's group; others keep their fresh init), a linear likewise, a BN its affine parameters and,
when asked, its running statistics, a layer scale its entries.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from nascomp.channels import INPUT, ChannelSolution
from nascomp.graph import ArchGraph, GraphNet


def _symbol_indices(sol: ChannelSolution, graph: ArchGraph, teacher: nn.Module, width: dict[int, int], mode: str) -> dict[int, torch.Tensor]:
    """Kept teacher channel indices per free channel symbol, sorted."""
    importance: dict[int, torch.Tensor] = {}
    if mode == "l1":
        for j, layer in enumerate(graph.layers):
            expr = sol.out_exprs[j]
            if layer.type in ("conv", "linear") and j not in sol.depthwise and all(m == 1 for _, m in expr):
                w = teacher.get_submodule(layer.target).weight.detach()
                norm = w.abs().flatten(1).sum(1)  # (F,)
                offset = 0
                for s, _ in expr:  # a symbol that slices split is a run of the filters
                    width_s = sol.teacher_width[s]
                    importance[s] = importance.get(s, 0) + norm[offset:offset + width_s]
                    offset += width_s
    kept = {}
    for s in sol.free:
        f, w, d = sol.teacher_width[s], width[s], sol.divisor[s]
        block, take = f // d, w // d
        parts = []
        for b in range(d):
            if s in importance:
                top = torch.topk(importance[s][b * block:(b + 1) * block], take).indices.sort().values
            else:
                top = torch.arange(take)
            parts.append(top + b * block)
        kept[s] = torch.cat(parts)
    return kept


def _expr_indices(expr, kept: dict[int, torch.Tensor], sol: ChannelSolution) -> torch.Tensor:
    parts, offset = [], 0
    for s, m in expr:
        base = kept.get(s)
        if base is None:
            base = torch.arange(sol.teacher_width[s])
        if m > 1:
            base = (base[:, None] * m + torch.arange(m)).flatten()
        parts.append(base + offset)
        offset += sol.teacher_width[s] * m
    return torch.cat(parts)


def _shuffle_perm(c: int, g: int) -> torch.Tensor:
    """ChannelShuffle(g) on c channels: out[j] = in[perm[j]]."""
    j = torch.arange(c)
    return (j % g) * (c // g) + j // g


def tensor_indices(graph: ArchGraph, teacher_graph_widths: list[int], sol: ChannelSolution, kept) -> list[torch.Tensor]:
    """Teacher channel indices kept by each layer's output tensor."""
    idx: list[torch.Tensor] = []
    inp = torch.arange(sol.teacher_width[INPUT])
    for j, layer in enumerate(graph.layers):
        first = idx[layer.inputs[0]] if layer.inputs[0] >= 0 else inp
        if layer.type in ("conv", "linear", "opaque") and j not in sol.depthwise and not layer.attrs.get("channelwise"):
            out = _expr_indices(sol.out_exprs[j], kept, sol)
        elif layer.type == "concat":
            parts, offset = [], 0
            for i in layer.inputs:
                parts.append((idx[i] if i >= 0 else inp) + offset)
                offset += teacher_graph_widths[i] if i >= 0 else sol.teacher_width[INPUT]
            out = torch.cat(parts)
        elif layer.type == "flatten" and len(layer.in_shape) > 1:
            m = math.prod(layer.in_shape[1:])
            out = (first[:, None] * m + torch.arange(m)).flatten()
        elif layer.type == "slice":  # the student's channels start..stop, as teacher channels of the slice
            prefix, constant = sol.slices[j]
            out = first[layer.attrs["start"]:layer.attrs["stop"]] - (sol.value(prefix, {}) + constant)
        elif layer.type == "shuffle":
            g = layer.attrs["groups"]
            f = teacher_graph_widths[j]
            inverse = torch.argsort(_shuffle_perm(f, g))
            out = inverse[first[_shuffle_perm(len(first), g)]]
        else:
            out = first
        idx.append(out)
    return idx


@torch.no_grad()
def inherit_weights(net: GraphNet, teacher: nn.Module, graph: ArchGraph, sol: ChannelSolution,
                    width: dict[int, int], mode: str, copy_bn_stats: bool) -> None:
    teacher_widths = [sol.value(sol.out_exprs[j], {}) for j in range(len(graph.layers))]
    kept = _symbol_indices(sol, graph, teacher, width, mode)
    idx = tensor_indices(graph, teacher_widths, sol, kept)
    inp = torch.arange(sol.teacher_width[INPUT])
    teacher_state = None
    for j, layer in enumerate(graph.layers):
        if layer.opaque:  # kept whole: the teacher's own tensors, by their names in the teacher
            teacher_state = teacher.state_dict() if teacher_state is None else teacher_state
            net.layers[j].load_state_dict({k: teacher_state[k] for k in net.layers[j].state_dict()})
            continue
        if not layer.target:
            continue
        src = teacher.get_parameter(layer.target) if layer.type == "scale" else teacher.get_submodule(layer.target)
        dst = net.layers[j]
        out_idx = idx[j]
        in_idx = idx[layer.inputs[0]] if layer.inputs[0] >= 0 else inp
        if layer.type == "conv" and isinstance(src, nn.Linear):  # a Linear applied channels-last: a 1x1 conv
            dst.weight.copy_(src.weight[out_idx][:, in_idx][:, :, None, None])
            if dst.bias is not None:
                dst.bias.copy_(src.bias[out_idx])
        elif layer.type == "conv":
            _copy_conv(dst, src, in_idx, out_idx, j in sol.depthwise)
        elif layer.type == "linear":
            dst.weight.copy_(src.weight[out_idx][:, in_idx])
            if dst.bias is not None:
                dst.bias.copy_(src.bias[out_idx])
        elif layer.type == "scale":
            dst.weight.copy_(src.flatten()[out_idx].view_as(dst.weight))  # gamma (C,), (C, 1, 1) or (1, C, 1, 1)
        elif layer.type == "channel_norm":
            dst.weight.copy_(src.weight[out_idx])
            dst.bias.copy_(src.bias[out_idx])
        elif layer.type == "batchnorm":
            if dst.affine:
                dst.weight.copy_(src.weight[out_idx])
                dst.bias.copy_(src.bias[out_idx])
            if copy_bn_stats and dst.track_running_stats:
                dst.running_mean.copy_(src.running_mean[out_idx])
                dst.running_var.copy_(src.running_var[out_idx])
                dst.num_batches_tracked.copy_(src.num_batches_tracked)


def _copy_conv(dst: nn.Conv2d, src: nn.Conv2d, in_idx: torch.Tensor, out_idx: torch.Tensor, depthwise: bool) -> None:
    if dst.bias is not None:
        dst.bias.copy_(src.bias[out_idx])
    if depthwise:
        dst.weight.copy_(src.weight[out_idx])  # (w, 1, k, k)
        return
    g = src.groups
    if g == 1:
        dst.weight.copy_(src.weight[out_idx][:, in_idx])
        return
    f_out_g, f_in_g = src.out_channels // g, src.in_channels // g
    w_out_g, w_in_g = dst.out_channels // g, dst.in_channels // g
    teacher_group = out_idx // f_out_g  # (w_out,)
    student_group = torch.arange(dst.out_channels) // w_out_g  # (w_out,)
    local = in_idx.view(g, w_in_g)[student_group] - teacher_group[:, None] * f_in_g  # (w_out, w_in_g)
    ok = (local >= 0) & (local < f_in_g)
    rows = src.weight[out_idx]  # (w_out, f_in_g, k, k)
    picked = rows[torch.arange(len(out_idx))[:, None], local.clamp(0, f_in_g - 1)]  # (w_out, w_in_g, k, k)
    dst.weight.copy_(torch.where(ok[:, :, None, None], picked, dst.weight))
