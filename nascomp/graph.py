"""The architecture graph: one representation of a network as a DAG of layers in topological order.

``ArchGraph.from_module(model, input_shape)`` traces any ``nn.Module`` with torch.fx, propagates a
sample input to learn every tensor's shape, and turns each call into a ``Layer``. A layer with
several inputs sums them (paper 6.5), so a residual ``relu(out + shortcut)`` becomes one ReLU layer
with two incoming edges; an addition that cannot be folded that way stays an explicit ``add`` layer.

Any call the search space does not understand becomes an **opaque** layer: a small GraphModule
holding that one call and the non-tensor values it reads (sizes, parameters read outside a module,
a split's tuple), with the teacher's own submodules. It is kept whole with the teacher's weights,
its inputs are separate arguments, and the channel equations pin every channel symbol it touches
(``nascomp.channels``). ``ArchGraph.opaque`` says how many parameters that keeps whole, and which
constructs. Only a model whose own ``forward`` torch.fx cannot trace is a ``GraphError``.

Why torch.fx with a leaf policy, not torch.export: fx records module calls as ``call_module``
nodes with their qualified names, which is what weight inheritance indexes the teacher by, and it
runs in milliseconds on CPU without specialising shapes or decomposing modules into aten ops
(export would turn a BatchNorm into ``_native_batch_norm_legit_no_training`` and lose the module
boundary). Its weakness, Python control flow on tensor values, is confined by the leaf policy:
torch.nn modules are leaves (as in fx), user modules are traced through, and a submodule whose
forward fx cannot trace is retried as a leaf, i.e. kept whole as one opaque layer. A subclass of
Conv2d, Linear or BatchNorm2d from outside torch.nn (timm's BatchNormAct2d and Linear) is a leaf
too, read as its base layer (a norm-act as batchnorm -> drop -> act) when it computes exactly that
on a random input, else kept whole: traced through, it would read its parameters outside a module
and bake the trace-time ``self.training`` into a functional batch norm. Control flow on Python
values needs no ``concrete_args``: fx traces only ``forward``'s tensor argument symbolically, so
timm's pre-logits ``if`` (``forward_head(x, pre_logits=False)``) and ``if self.drop_rate > 0.``
run as plain Python and leave the branch taken. What stays out of reach is control flow on sizes
inside a submodule (timm's VGG ``ConvMlp`` pools ``if x.shape[-2] < 7``): that submodule is kept whole.
The sample batch has 2 images, and a first run 3, so that a tensor without the batch dimension (a
statistic, a parameter, even one of 2 rows) is told apart from a layer output.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import numbers
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
import torchvision.ops
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from nascomp.encoding import LayerSpec

ACTIVATIONS = ("relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish", "leaky_relu", "hardsigmoid", "mish")
PARAMETRIC = ("conv", "linear", "batchnorm")  # and "scale": a parameter read in forward (layer scale)


class GraphError(ValueError):
    """A network, or a part of it, that the architecture graph cannot represent."""


@dataclass
class Layer:
    """One node of the graph.

    ``inputs``: indices of earlier layers (-1 = the network input); several are summed, except for
    ``concat``. Shapes exclude the batch dimension: (C, H, W) or (F,). ``attrs`` holds what
    building needs (kernel_size, stride, padding, groups, bias, eps, ...). ``target`` is the teacher's
    submodule path the weights come from ("" for parameter-free functional calls).
    """

    name: str
    type: str
    inputs: tuple[int, ...]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    target: str = ""
    module: nn.Module | None = field(default=None, compare=False, repr=False)  # an opaque layer's computation

    @property
    def opaque(self) -> bool:
        return self.type == "opaque"

    @property
    def in_channels(self) -> int:
        return self.in_shape[0]

    @property
    def out_channels(self) -> int:
        return self.out_shape[0]

    @property
    def num_params(self) -> int:
        a = self.attrs
        if self.type == "conv":
            k = a["kernel_size"][0] * a["kernel_size"][1]
            return self.out_channels * (self.in_channels // a["groups"]) * k + (self.out_channels if a["bias"] else 0)
        if self.type == "linear":
            return self.out_channels * self.in_channels + (self.out_channels if a["bias"] else 0)
        if self.type == "batchnorm":
            return 2 * self.out_channels if a["affine"] else 0
        if self.type == "opaque":
            return a["params"]
        if self.type == "scale":
            return self.out_channels
        if self.type == "channel_norm":
            return 2 * self.out_channels
        return 0

    @property
    def flops(self) -> int:
        """Multiply-accumulates of this layer for one sample (``nascomp.cost.layer_flops``)."""
        from nascomp.cost import layer_flops

        return layer_flops(self)

    def spec(self) -> LayerSpec:
        """The layer as the encoding (paper 6.2) sees it."""
        a = self.attrs
        first = lambda v: v[0] if isinstance(v, (tuple, list)) else (v or 0)  # noqa: E731
        return LayerSpec(
            type=_ENCODED_AS.get(self.type, self.type),
            kernel_size=first(a.get("kernel_size", 0)),
            stride=first(a.get("stride", 0)),
            padding=first(a.get("padding", 0)),
            groups=a.get("groups", 0),
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            inputs=self.inputs,
        )

    def to_json(self) -> dict:
        return {"name": self.name, "type": self.type, "inputs": list(self.inputs), "in_shape": list(self.in_shape),
                "out_shape": list(self.out_shape), "attrs": _jsonable(self.attrs), "target": self.target}

    @classmethod
    def from_json(cls, d: dict) -> "Layer":
        attrs = {k: tuple(v) if isinstance(v, list) else v for k, v in d["attrs"].items()}
        if "kernel" in attrs:  # written before the attribute was named kernel_size
            attrs["kernel_size"] = attrs.pop("kernel")
        return cls(d["name"], d["type"], tuple(d["inputs"]), tuple(d["in_shape"]), tuple(d["out_shape"]), attrs, d["target"])


def _check_shape(what: str, shape) -> None:
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise GraphError(f"{what} {tuple(shape) if isinstance(shape, (list, tuple)) else shape!r} is not a shape "
                         "(positive integers, without the batch dimension)")


def _jsonable(attrs: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(attrs.items())}


# A key hashes the layer attributes under the names they had when keys were first stored, so that
# renaming an attribute in code never changes an architecture's key: stores and saved students stay valid.
_KEYED_AS = {"kernel_size": "kernel"}


def _keyed(attrs: dict) -> dict:
    return {_KEYED_AS.get(k, k): v for k, v in _jsonable(attrs).items()}


@dataclass
class ArchGraph:
    """A network as topologically sorted layers. ``output`` is the index of the output layer."""

    layers: list[Layer]
    input_shape: tuple[int, ...]
    output: int

    @property
    def num_params(self) -> int:
        return sum(layer.num_params for layer in self.layers)

    @property
    def flops(self) -> int:
        """Multiply-accumulates of one forward of one sample (``nascomp.cost``)."""
        return sum(layer.flops for layer in self.layers)

    @property
    def opaque(self) -> dict:
        """What the search space keeps whole: ``{"params": teacher parameters inside opaque layers,
        "share": their fraction of all parameters, "constructs": {construct: number of opaque layers}}``."""
        kept = [layer for layer in self.layers if layer.opaque]
        params = sum(layer.num_params for layer in kept)
        constructs: dict[str, int] = {}
        for layer in kept:
            constructs[layer.attrs["construct"]] = constructs.get(layer.attrs["construct"], 0) + 1
        return {"params": params, "share": params / max(1, self.num_params), "constructs": dict(sorted(constructs.items()))}

    def __len__(self) -> int:
        return len(self.layers)

    def specs(self) -> list[LayerSpec]:
        return [layer.spec() for layer in self.layers]

    def to_json(self) -> dict:
        return {"input_shape": list(self.input_shape), "output": self.output,
                "layers": [layer.to_json() for layer in self.layers]}

    @classmethod
    def from_json(cls, d: dict) -> "ArchGraph":
        """The graph ``to_json`` wrote, validated (``GraphError`` naming the first bad layer)."""
        try:
            graph = cls([Layer.from_json(x) for x in d["layers"]], tuple(d["input_shape"]), d["output"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not an architecture JSON (missing or malformed field {exc})") from exc
        return graph.validate()

    def validate(self) -> "ArchGraph":
        """Check that the graph is well formed and computes the shapes it records; returns it.

        Every input is -1 (the network input) or an earlier layer; ``output`` is a layer; every
        shape is positive integers; a layer's ``in_shape`` is what its inputs give (their broadcast sum's,
        or for an ``add`` its first term's; for ``concat`` the concatenation's or, as ``CompressionSpace``
        realises it, the first input's); and each layer builds and, run on a meta tensor of that shape (no
        memory, no arithmetic; shape-preserving types are not run), gives ``out_shape``. Raises
        ``GraphError`` naming the first layer that fails.
        """
        n = len(self.layers)
        _check_shape("the graph's input_shape", self.input_shape)
        if isinstance(self.output, bool) or not isinstance(self.output, int) or not 0 <= self.output < n:
            raise GraphError(f"output {self.output!r} is not a layer index (0..{n - 1}, the graph has {n} layers)")
        outs: dict[int, torch.Tensor] = {-1: torch.empty(1, *self.input_shape, device="meta")}
        for j, layer in enumerate(self.layers):
            where = f"layer {j} ({layer.name!r}, {layer.type})"
            if layer.type not in LAYER_TYPES:
                raise GraphError(f"{where}: unknown type {layer.type!r}; known: {', '.join(sorted(LAYER_TYPES))}")
            if not layer.inputs:
                raise GraphError(f"{where} has no inputs")
            for i in layer.inputs:
                if isinstance(i, bool) or not isinstance(i, int) or not -1 <= i < n:
                    raise GraphError(f"{where}: input {i!r} is not a layer index (-1 = the network input, 0..{n - 1} a layer)")
                if i >= j:
                    raise GraphError(f"{where}: input {i} is not an earlier layer (layers are in topological order; "
                                     f"layer {j} reads -1..{j - 1})")
            _check_shape(f"{where}: in_shape", layer.in_shape)
            _check_shape(f"{where}: out_shape", layer.out_shape)
            given = [tuple(outs[i].shape[1:]) for i in layer.inputs]
            if layer.type in SEPARATE_INPUTS:  # its inputs are separate arguments; in_shape is the first one's
                if layer.in_shape != given[0]:
                    raise GraphError(f"{where} records in_shape {layer.in_shape} but its first input gives {given[0]}")
                outs[j] = torch.empty(1, *layer.out_shape, device="meta")  # built from the teacher's module only
                continue
            if layer.type == "concat":  # in_shape: the concatenation's (traced) or the first input's (realised)
                joined = (sum(s[0] for s in given), *given[0][1:])
                consistent = len({s[1:] for s in given}) == 1 and layer.in_shape in (joined, given[0])
            else:  # summed, broadcast (GCNet's x (C, H, W) + context (C, 1, 1)); an add records its first term's
                try:
                    summed = tuple(torch.broadcast_shapes(*given))
                except RuntimeError:
                    summed = None
                consistent = summed is not None and (layer.in_shape == summed or
                                                     layer.type == "add" and layer.in_shape == given[0])
            if not consistent:
                raise GraphError(f"{where} records in_shape {layer.in_shape} but its inputs {layer.inputs} give "
                                 f"{' and '.join(map(str, sorted(set(given))))}")
            try:
                with torch.device("meta"):
                    module = make_layer(layer).eval()
                x = torch.cat([outs[i] for i in layer.inputs], 1) if layer.type == "concat" else \
                    torch.empty(1, *summed, device="meta")
                y = x if layer.type in _SAME_SHAPE else module(x)
            except GraphError:
                raise
            except Exception as exc:  # a torch error building or running the layer: bad attrs
                raise GraphError(f"{where} cannot be built or run on in_shape {layer.in_shape} with attrs "
                                 f"{_jsonable(layer.attrs)}: {type(exc).__name__}: {exc}") from exc
            if tuple(y.shape[1:]) != layer.out_shape:
                raise GraphError(f"{where} computes shape {tuple(y.shape[1:])} from in_shape {layer.in_shape}, "
                                 f"but records out_shape {layer.out_shape}")
            outs[j] = y
        return self

    @property
    def key(self) -> str:
        """Stable hash of everything that defines the network (not layer names or weight sources)."""
        body = [[l.type, list(l.inputs), list(l.in_shape), list(l.out_shape), _keyed(l.attrs)] for l in self.layers]
        text = json.dumps([list(self.input_shape), self.output, body], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def build(self) -> "GraphNet":
        """An ``nn.Module`` computing this graph, freshly initialised from a seed that is the graph's
        ``key``: the same architecture always starts from the same weights, whatever ran before in the
        process (a student with ``inherit=none``, or a fresh-init entry of inheritance, trains the same
        in a resumed run as in an uninterrupted one). The caller's random state is left as it was."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.key[:15], 16))
            return GraphNet(self)

    @classmethod
    def from_module(cls, model: nn.Module, input_shape: tuple[int, ...]) -> "ArchGraph":
        """Trace ``model`` (torch.fx, see the module docstring) in eval mode on a sample input of shape
        (2, *input_shape); each submodule's mode is restored afterwards."""
        return _Tracer(model, tuple(input_shape)).graph()


# --------------------------------------------------------------------------- tracing
CHANNEL_DROPOUT = {nn.Dropout1d: 1, nn.Dropout2d: 2, nn.Dropout3d: 3}  # dropout of whole channels: the layer's ``channels``
DROPOUT_OF_CHANNELS = {n: cls for cls, n in CHANNEL_DROPOUT.items()}  # ``channels`` -> the class (make_layer)

_MODULE_TYPES: dict[type, str] = {
    nn.Conv2d: "conv", nn.Linear: "linear", nn.BatchNorm2d: "batchnorm", nn.BatchNorm1d: "batchnorm",
    nn.ReLU: "relu", nn.ReLU6: "relu6", nn.GELU: "gelu", nn.SiLU: "silu", nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh", nn.Hardswish: "hardswish", nn.LeakyReLU: "leaky_relu",
    nn.MaxPool2d: "maxpool", nn.AvgPool2d: "avgpool", nn.AdaptiveAvgPool2d: "adaptive_avgpool",
    nn.AdaptiveMaxPool2d: "adaptive_maxpool", nn.Flatten: "flatten", nn.Identity: "identity",
    nn.Dropout: "dropout", **dict.fromkeys(CHANNEL_DROPOUT, "dropout"),
    nn.ChannelShuffle: "shuffle", nn.Hardsigmoid: "hardsigmoid", nn.Mish: "mish",
    torchvision.ops.StochasticDepth: "droppath", nn.Upsample: "upsample",
}
_FUNCTIONS: dict[Any, str] = {
    operator.add: "add", torch.add: "add", operator.iadd: "add",
    torch.cat: "concat", torch.concat: "concat", torch.flatten: "flatten", torch.squeeze: "flatten",
    F.relu: "relu", torch.relu: "relu", F.relu6: "relu6", F.gelu: "gelu", F.silu: "silu",
    torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.tanh: "tanh", F.tanh: "tanh",
    F.hardswish: "hardswish", F.leaky_relu: "leaky_relu",
    F.max_pool2d: "maxpool", F.avg_pool2d: "avgpool", F.adaptive_avg_pool2d: "adaptive_avgpool",
    F.adaptive_max_pool2d: "adaptive_maxpool", F.dropout: "dropout",
    torch.channel_shuffle: "shuffle", F.channel_shuffle: "shuffle",
    F.hardsigmoid: "hardsigmoid", F.mish: "mish", torchvision.ops.stochastic_depth: "droppath",
    torch.mean: "mean", operator.mul: "gate", torch.mul: "gate", F.interpolate: "upsample",
}
_KIN = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)  # parametric layers whose subclasses are read as them (_Tracer._kin)
LAYER_TYPES = frozenset(_MODULE_TYPES.values()) | frozenset(_FUNCTIONS.values()) | {"opaque", "scale", "channel_norm", "slice"}
SEPARATE_INPUTS = frozenset({"opaque", "gate"})  # layer types that take their inputs as arguments, not summed
_CHANNELS_FIRST = frozenset({"conv", "maxpool", "avgpool", "adaptive_avgpool", "adaptive_maxpool", "shuffle", "upsample"})
# the encoding (paper 6.2) has a fixed list of types; a type added since is encoded as its nearest kin
_ENCODED_AS = {"opaque": "identity", "hardsigmoid": "sigmoid", "mish": "silu", "droppath": "dropout",
               "mean": "adaptive_avgpool", "gate": "add", "scale": "batchnorm",
               "channel_norm": "batchnorm", "slice": "identity", "upsample": "identity"}
_SAME_SHAPE = frozenset(ACTIVATIONS + ("batchnorm", "dropout", "droppath", "identity", "add", "scale", "channel_norm"))  # validate() need not run them
_METHODS = {"add": "add", "__add__": "add", "relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh",
            "flatten": "flatten", "view": "flatten", "reshape": "flatten", "squeeze": "flatten", "contiguous": "alias",
            "mean": "mean", "mul": "gate", "__mul__": "gate"}


def _pair(v) -> tuple[int, int]:
    """A size argument as a pair (a tuple's entries may be None: adaptive pooling keeps that side). A size
    read from a tensor at run time (``F.avg_pool2d(x, x.size(3))``) is a node, not a constant: GraphError
    (the call becomes an opaque layer)."""
    if not isinstance(v, (tuple, list)):
        return (_number(v),) * 2
    if not all(i is None or isinstance(i, numbers.Real) for i in v):
        raise GraphError(f"a size computed at run time ({v}), not a constant")
    return tuple(v)


def _number(v, cast=int):
    """A call's constant argument as ``cast``; one computed at run time (a node) is a GraphError."""
    if not isinstance(v, numbers.Real):
        raise GraphError(f"a value computed at run time ({v}), not a constant")
    return cast(v)


def _supported() -> str:
    mods = sorted({t.__name__ for t in _MODULE_TYPES})
    return (f"supported modules: {', '.join(mods)}; functions: +, torch.cat(dim=1), torch.flatten(x, 1), torch.squeeze to (N, C), "
            "F.relu and other activations, F.max/avg/adaptive pooling, channel_shuffle; "
            "methods: x.view/reshape/flatten/squeeze to (N, -1), x.add, x.relu")


class _LeafOnFailure(fx.Tracer):
    """torch.fx's tracer (torch.nn modules are leaves, user modules are traced through), except that a
    submodule whose forward cannot be traced (control flow on tensor values, ...) becomes a leaf
    itself: it is kept whole as an opaque layer. ``leaves`` maps each such submodule to why."""

    def __init__(self):
        super().__init__()
        self.leaves: dict[str, str] = {}

    def is_leaf_module(self, m: nn.Module, path: str) -> bool:
        # a subclass of a parametric torch.nn layer (timm's BatchNormAct2d, Linear) is a leaf: traced
        # through, it reads its own parameters outside a module, and a norm bakes in the trace-time
        # self.training (and would update its statistics while shapes are propagated). See _Tracer._kin.
        return path in self.leaves or isinstance(m, _KIN) or super().is_leaf_module(m, path)

    def call_module(self, m, forward, args, kwargs):
        path = self.path_of_module(m)
        if self.is_leaf_module(m, path):
            return super().call_module(m, forward, args, kwargs)
        stack, calls = list(self.module_stack.items()), dict(self.num_calls)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception as exc:  # the nodes it left behind are unused: dead code, removed after tracing
            self.module_stack.clear()
            self.module_stack.update(stack)
            self.num_calls = calls
            self.leaves[path] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            return super().call_module(m, forward, args, kwargs)


class _NotUnderstood(Exception):
    """A call the search space has no layer type for: it becomes an opaque layer."""


class _Tracer:
    BATCH = 2  # the sample batch: a tensor whose first dimension is not this (nor 3 on 3 images) is no layer output

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...]):
        self.model = model
        self.input_shape = input_shape
        self.modules = dict(model.named_modules())

    def graph(self) -> ArchGraph:
        """The model traced in eval mode (a train-only branch, timm's DropPath, is not baked in as a
        random layer), each submodule's mode restored afterwards."""
        modes = {m: m.training for m in self.model.modules()}
        self.model.eval()
        try:
            return self._graph()
        finally:
            for m, training in modes.items():
                m.training = training

    def _graph(self) -> ArchGraph:
        tracer = _LeafOnFailure()
        try:
            fx_graph = tracer.trace(self.model)
        except Exception as exc:
            raise GraphError(f"torch.fx cannot trace {type(self.model).__name__}.forward: {type(exc).__name__}: {exc}. "
                             "Only the model's own forward() must be traceable (a submodule that is not is kept "
                             "whole): move control flow that depends on tensor values or sizes into a submodule, "
                             "or mark the function that holds it with torch.fx.wrap") from exc
        gm = fx.GraphModule(self.model, fx_graph)
        if tracer.leaves:  # what the submodules that became leaves had traced before failing
            gm.graph.eliminate_dead_code()
            gm.recompile()
        self.modules = dict(gm.named_modules())
        gm.eval()
        self.batched = None  # the nodes whose first dimension follows the batch: a (2, C) parameter is not one
        try:
            with torch.no_grad():
                ShapeProp(gm).propagate(torch.zeros(self.BATCH + 1, *self.input_shape))
            self.batched = {n for n in gm.graph.nodes if (_shape(n) or (0,))[0] == self.BATCH + 1}
        except Exception:  # it runs on the sample batch only: every tensor of BATCH rows is taken for a layer output
            pass
        try:
            with torch.no_grad():
                ShapeProp(gm).propagate(torch.zeros(self.BATCH, *self.input_shape))
        except Exception as exc:
            raise GraphError(f"{type(self.model).__name__} does not run on input shape {self.input_shape}: {exc}") from exc

        layers: list[Layer] = []
        value: dict[fx.Node, int] = {}  # fx node -> layer index (-1: network input)
        called: dict[str, str] = {}
        output = None
        shuffles, inner = _channel_shuffles(gm.graph)
        self.region, permutes = _channels_last(gm.graph, self.modules)
        for node in gm.graph.nodes:
            if node in inner:
                continue  # inside a channel shuffle written with view and transpose
            if node in permutes and node.args[0] in value:  # to channels-last and back: the same channels
                value[node] = value[node.args[0]]
                continue
            if node in shuffles and shuffles[node][0] in value:
                x, groups = shuffles[node]
                shape = tuple(node.meta["tensor_meta"].shape[1:])
                layers.append(Layer(node.name, "shuffle", (value[x],), shape, shape, {"groups": groups}, ""))
                value[node] = len(layers) - 1
            elif node.op == "placeholder":
                if value:
                    raise GraphError(f"{type(self.model).__name__}.forward takes several inputs; only one is supported")
                value[node] = -1
            elif node.op == "output":
                arg = node.args[0]
                if not isinstance(arg, fx.Node) or arg not in value:
                    raise GraphError("the network must return exactly one tensor")
                output = value[arg]
            elif not self._is_value(node):
                continue  # x.size(0), a split's tuple, a parameter: computed inside the layer that reads it
            else:
                try:
                    layer = self._understood(node, value, called)
                except _NotUnderstood as exc:
                    layer = self._opaque(node, value, gm, str(exc))
                if layer is None:  # an alias (x.contiguous())
                    continue
                for k, part in enumerate(layer if isinstance(layer, list) else [layer]):  # a chain: each reads the last
                    layers.append(part if k == 0 else Layer(part.name, part.type, (len(layers) - 1,), part.in_shape,
                                                            part.out_shape, part.attrs, part.target))
                value[node] = len(layers) - 1
        if output is None or output < 0:
            raise GraphError("the network's output is not a layer")
        return _fold_adds(ArchGraph(layers, self.input_shape, output))

    def _is_value(self, node: fx.Node) -> bool:
        """A layer output: a batched tensor with at least one dimension besides the batch."""
        meta = node.meta.get("tensor_meta")
        return (node.op != "get_attr" and hasattr(meta, "shape") and len(meta.shape) >= 2
                and meta.shape[0] == self.BATCH and (self.batched is None or node in self.batched))

    def _understood(self, node: fx.Node, value: dict, called: dict) -> Layer | list[Layer] | None:
        """The layer ``node`` is (a list: a chain of layers, each reading the one before), None for an
        alias of its input; ``_NotUnderstood`` where the search space has no layer type for it."""
        if node in self.region and node.args[0] in value:
            return self._channels_last_layer(node, value[node.args[0]], called)
        sliced = _channel_slice(node)
        if sliced is not None and sliced[0] in value:  # channels start..stop of a layer output
            x, start, stop = sliced
            in_shape, out_shape = _shape(x)[1:], _shape(node)[1:]
            if out_shape != (stop - start,) + in_shape[1:]:
                raise _NotUnderstood(f"node {node.name!r} takes shape {out_shape} of {in_shape}, not channels {start}..{stop}")
            return Layer(node.name, "slice", (value[x],), in_shape, out_shape, {"start": start, "stop": stop}, "")
        if node.op == "call_module" and type(self.modules[node.target]) not in _KIN \
                and isinstance(self.modules[node.target], _KIN) and node.args and node.args[0] in value:
            return self._kin(node, value[node.args[0]], called)
        try:
            kind, attrs, target = self._classify(node, called)
        except GraphError as exc:
            raise _NotUnderstood(str(exc)) from exc
        tensor_inputs = [a for a in node.all_input_nodes if a in value]  # each once, in order of first use
        if kind == "concat":  # every term, in order, a repeat kept: torch.cat([y, y], 1) has twice y's channels
            tensor_inputs = [a for a in _arg(node, 0, "tensors") if isinstance(a, fx.Node) and a in value]
        # a parameter, or a parameter reshaped (timm's x.mul(gamma.reshape(1, -1, 1, 1)))
        params = [a for a in node.all_input_nodes if a.op == "get_attr" or (
            a.target in _RESHAPES and isinstance(a.args[0], fx.Node) and a.args[0].op == "get_attr"
            and all(isinstance(d, int) for d in a.args[1:]) and not a.kwargs)]
        if kind == "gate" and len(tensor_inputs) == 1 and len(params) == 1:  # x * gamma: layer scale
            shape = tuple(tensor_inputs[0].meta["tensor_meta"].shape[1:])
            gamma = tuple(params[0].meta["tensor_meta"].shape)
            source = params[0] if params[0].op == "get_attr" else params[0].args[0]
            if len(shape) != 3 or gamma not in ((shape[0], 1, 1), (1, shape[0], 1, 1)) or \
                    not isinstance(self._attr(source.target), nn.Parameter):
                raise _NotUnderstood(f"node {node.name!r} scales {shape} by a tensor of shape {gamma}")
            return Layer(node.name, "scale", (value[tensor_inputs[0]],), shape, shape, {"shape": gamma}, source.target)
        if kind == "alias" and len(tensor_inputs) == 1:
            value[node] = value[tensor_inputs[0]]
            return None
        if any(a not in value and hasattr(a.meta.get("tensor_meta"), "shape") for a in node.all_input_nodes):
            raise _NotUnderstood(f"node {node.name!r} reads a tensor that is not a layer output")
        if not tensor_inputs:
            raise _NotUnderstood(f"node {node.name!r} has no tensor input")
        inputs = tuple(value[a] for a in tensor_inputs)
        in_shape = tuple(tensor_inputs[0].meta["tensor_meta"].shape[1:])
        out_shape = tuple(node.meta["tensor_meta"].shape[1:])
        if kind == "add" and len(inputs) != 2:
            raise _NotUnderstood(f"node {node.name!r}: only the sum of two tensors is a layer")
        if kind == "concat":
            in_shape = out_shape
        if kind == "flatten" and not (len(out_shape) == 1 and math.prod(in_shape) == out_shape[0]):
            raise _NotUnderstood(f"node {node.name!r} reshapes {in_shape} to {out_shape}, which is not a flatten")
        if kind in _CHANNELS_FIRST and len(in_shape) != 3:
            raise _NotUnderstood(f"node {node.name!r} ({kind}) on a tensor of shape {in_shape}, not (C, H, W)")
        if kind == "mean" and len(in_shape) != 3:
            raise _NotUnderstood(f"node {node.name!r}: a mean of shape {in_shape}, not (C, H, W)")
        if kind == "gate":  # x (C, H, W) times a gate of shape (C, H, W) or (C, 1, 1): x first
            shapes = [tuple(a.meta["tensor_meta"].shape[1:]) for a in tensor_inputs]
            if len(inputs) != 2 or len(out_shape) != 3 or out_shape not in shapes or any(
                    len(sh) != 3 or sh[0] != out_shape[0] or sh[1:] not in (out_shape[1:], (1, 1)) for sh in shapes):
                raise _NotUnderstood(f"node {node.name!r} multiplies shapes {shapes}, not x (C, H, W) by a gate (C, 1, 1)")
            if shapes[0] != out_shape:
                inputs, in_shape = inputs[::-1], shapes[1]
        if kind == "linear" and len(in_shape) != 1:
            raise _NotUnderstood(f"node {node.name!r}: a linear layer on shape {in_shape}, not (F,)")
        if kind == "batchnorm" and (len(in_shape) not in (1, 3) or len(in_shape) != len(out_shape)):
            raise _NotUnderstood(f"node {node.name!r}: a batch norm on shape {in_shape}")
        return Layer(node.name, kind, inputs, in_shape, out_shape, attrs, target)

    def _kin(self, node: fx.Node, source: int, called: dict) -> list[Layer]:
        """A subclass of Conv2d, Linear or BatchNorm2d with a forward of its own, understood as what it
        computes: its base layer (timm's Linear, which calls F.linear on its own parameters), or, for a
        BatchNorm2d with ``drop`` and ``act`` submodules (timm's BatchNormAct2d and kin), a batchnorm on
        its parameters and statistics, then the dropout and the activation as layers of their own (an
        Identity left out). Either reading is checked on a random input in eval mode against the module
        itself (a subclass computing anything else, Conv2dSame's padding say, is not understood and is
        kept whole), and the activation must be one the space has a type for."""
        mod = self.modules[node.target]
        shape = _shape(node.args[0])
        base = next(b for b in _KIN if isinstance(mod, b))
        kind = _MODULE_TYPES[base]
        if node.target in called:
            raise _NotUnderstood(f"module {node.target!r} is called more than once; weight sharing is not supported")
        where = f"module {node.target!r} of type {type(mod).__name__}"
        parts = [(name, getattr(mod, name, None)) for name in ("drop", "act")] if kind == "batchnorm" else []
        if not all(isinstance(p, nn.Module) for _, p in parts) or len(shape or ()) != (2 if kind == "linear" else 4):
            raise _NotUnderstood(f"{where} is not read as {base.__name__}{' -> drop -> act' if parts else ''} "
                                 f"on shape {shape}")
        layers = [Layer(node.name, kind, (source,), shape[1:], _shape(node)[1:] if not parts else shape[1:],
                        _module_attrs(kind, mod, node.target), node.target)]
        for name, part in parts:
            part_kind = _MODULE_TYPES.get(type(part))
            if part_kind == "identity":
                continue
            if part_kind not in ACTIVATIONS + ("dropout", "droppath"):
                raise _NotUnderstood(f"{where}: its {name} ({type(part).__name__}) is not an activation or dropout "
                                     "the space has a type for")
            layers.append(Layer(f"{node.name}_{name}", part_kind, (source,), shape[1:], shape[1:],
                                _module_attrs(part_kind, part, f"{node.target}.{name}"), ""))

        def reading(x):
            x = base.forward(mod, x)
            for _, part in parts:
                x = part(x)
            return x

        modes = {m: m.training for m in mod.modules()}
        try:
            mod.eval()
            with torch.no_grad():
                x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
                y, z = mod(x), reading(x)
                same = y.shape == z.shape and torch.allclose(y, z, rtol=1e-4, atol=1e-5)
        except Exception as exc:
            raise _NotUnderstood(f"{where} does not run on shape {shape}: {exc}") from exc
        finally:
            for m, training in modes.items():
                m.training = training
        if not same:
            raise _NotUnderstood(f"{where} does not compute what {' -> '.join([base.__name__] + [n for n, _ in parts])} does")
        called[node.target] = node.name
        return layers

    def _channels_last_layer(self, node: fx.Node, source: int, called: dict) -> Layer:
        """A layer between permute(0, 2, 3, 1) and permute(0, 3, 1, 2), as its channels-first equal:
        Linear -> 1x1 conv, LayerNorm over C -> channel_norm, an activation as itself."""
        h, w, c = node.args[0].meta["tensor_meta"].shape[1:]
        shape_in = (c, h, w)
        c_out = node.meta["tensor_meta"].shape[-1]
        mod = self.modules.get(node.target) if node.op == "call_module" else None
        if isinstance(mod, nn.Linear):
            if node.target in called:
                raise _NotUnderstood(f"module {node.target!r} is called more than once")
            called[node.target] = node.name
            attrs = {"kernel_size": (1, 1), "stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1,
                     "bias": mod.bias is not None}
            return Layer(node.name, "conv", (source,), shape_in, (c_out, h, w), attrs, node.target)
        if isinstance(mod, nn.LayerNorm) or node.target is F.layer_norm:
            if mod is None:
                owner = _arg(node, 2, "weight").target.rpartition(".")[0]
                eps = float(_arg(node, 4, "eps", 1e-5))
            else:
                owner, eps = node.target, mod.eps
            return Layer(node.name, "channel_norm", (source,), shape_in, shape_in, {"eps": eps}, owner)
        kind, attrs, _ = self._classify(node, called)
        return Layer(node.name, kind, (source,), shape_in, shape_in, attrs, "")

    def _attr(self, target: str):
        owner, _, name = target.rpartition(".")
        return getattr(self.model.get_submodule(owner), name)

    def _opaque(self, node: fx.Node, value: dict, gm: fx.GraphModule, reason: str) -> Layer:
        """The node as one opaque layer: a GraphModule computing it from its layer inputs (separate
        arguments), with every non-layer value it reads (sizes, parameters, a split's tuple)
        computed inside. It holds the teacher's own submodules and parameters (no copy)."""
        sub = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        inputs: list[int] = []
        shapes: list[tuple[int, ...]] = []
        dtypes: list[torch.dtype] = []  # a mask is a bool tensor (EdgeNeXt's ~mask)

        def copy(n: fx.Node) -> fx.Node:
            if n not in env:
                if n in value:
                    env[n] = sub.placeholder(f"x{len(inputs)}")
                    if n.op == "call_method" and n.target == "contiguous":  # an alias of its input, as memory too
                        env[n] = sub.call_method("contiguous", (env[n],))
                    inputs.append(value[n])
                    shapes.append(self.input_shape if n.op == "placeholder" else tuple(n.meta["tensor_meta"].shape[1:]))
                    dtypes.append(torch.float32 if n.op == "placeholder" else n.meta["tensor_meta"].dtype)
                else:
                    for a in n.all_input_nodes:
                        copy(a)
                    env[n] = sub.node_copy(n, lambda a: env[a])
            return env[n]

        sub.output(copy(node))
        if not inputs:
            raise GraphError(f"node {node.name!r} ({_construct(node, self.modules)}) computes a batched tensor from "
                             "no input: it cannot be a layer")
        module = fx.GraphModule(gm, sub)
        params = sum(p.numel() for p in module.parameters())
        attrs = {"construct": _construct(node, self.modules), "params": params, "flops": _macs(module, shapes, dtypes)}
        out_shape = tuple(node.meta["tensor_meta"].shape[1:])
        # a torch or Python operator, or a parameter-free torch.nn module (nn.ELU, nn.Softplus) only: a user's
        # function (fx.wrap) or module stays a black box
        builtin = node.op == "call_method" or node.op == "call_function" and \
            (getattr(node.target, "__module__", None) or "").split(".")[0] in ("_operator", "torch") or \
            node.op == "call_module" and type(self.modules[node.target]).__module__.startswith("torch.nn.") and \
            next(self.modules[node.target].parameters(), None) is None
        if builtin and len(inputs) == 1 and len(out_shape) == 3 and out_shape == shapes[0] \
                and dtypes[0].is_floating_point and _channelwise(module, out_shape):
            attrs["channelwise"] = True
        return Layer(node.name, "opaque", tuple(inputs), shapes[0], tuple(node.meta["tensor_meta"].shape[1:]),
                     attrs, "", module)

    def _classify(self, node: fx.Node, called: dict[str, str]) -> tuple[str, dict, str]:
        if node.op == "call_module":
            mod = self.modules[node.target]
            kind = _MODULE_TYPES.get(type(mod))
            if kind is None:
                raise GraphError(f"cannot represent module {node.target!r} of type {type(mod).__name__}; {_supported()}")
            if kind in PARAMETRIC:
                if node.target in called:
                    raise GraphError(f"module {node.target!r} is called more than once; weight sharing is not supported")
                called[node.target] = node.name
            return kind, _module_attrs(kind, mod, node.target), node.target if kind in PARAMETRIC else ""
        if node.op == "call_function":
            kind = _FUNCTIONS.get(node.target)
            name = getattr(node.target, "__name__", str(node.target))
            if kind is None:
                raise GraphError(f"cannot represent function {name!r} at node {node.name!r}; {_supported()}")
            return kind, _function_attrs(kind, node), ""
        if node.op == "call_method":
            kind = _METHODS.get(node.target)
            if kind is None:
                raise GraphError(f"cannot represent method .{node.target}() at node {node.name!r}; {_supported()}")
            if kind == "add" and (not all(isinstance(a, fx.Node) for a in node.args) or node.kwargs.get("alpha", 1) != 1):
                raise GraphError(f"node {node.name!r} adds a constant or scales a term (alpha); only the sum of two "
                                 "tensors is supported")
            if kind in ("mean", "gate"):
                return kind, _function_attrs(kind, node), ""
            return kind, {"negative_slope": 0.01} if kind == "leaky_relu" else {}, ""
        raise GraphError(f"cannot represent {node.op} {node.target!r} at node {node.name!r} (parameters used "
                         f"outside a module are not supported); {_supported()}")


def _dims(node: fx.Node):
    if node.target not in ("permute", torch.permute):
        return None
    dims = node.args[1:] if node.op == "call_method" and len(node.args) > 2 else node.args[1] if len(node.args) > 1 else None
    return tuple(d % 4 for d in dims) if isinstance(dims, (tuple, list)) and len(dims) == 4 else None


def _channels_last(graph: fx.Graph, modules: dict) -> tuple[set[fx.Node], set[fx.Node]]:
    """Regions x.permute(0, 2, 3, 1) -> Linear / LayerNorm over C / activations -> permute(0, 3, 1, 2)
    (ConvNeXt) where each node has one tensor input and every path returns to channels-first:
    (the nodes inside, the two kinds of permute)."""
    region, permutes = set(), set()
    for start in graph.nodes:
        if _dims(start) != (0, 2, 3, 1) or len(_shape(start) or ()) != 4:
            continue
        c = _shape(start)[3]
        inside, ends, todo, ok = set(), set(), list(start.users), True
        while todo and ok:
            n = todo.pop()
            if n in inside or n in ends:
                continue
            if _dims(n) == (0, 3, 1, 2):
                ends.add(n)
                continue
            mod = modules.get(n.target) if n.op == "call_module" else None
            if isinstance(mod, nn.LayerNorm):
                ok = tuple(mod.normalized_shape) == (c,) and mod.elementwise_affine and mod.bias is not None
            elif n.target is F.layer_norm:
                ok = (tuple(_arg(n, 1, "normalized_shape")) == (_shape(n.args[0]) or (0,))[-1:] and
                      all(isinstance(a, fx.Node) and a.op == "get_attr" for a in (_arg(n, 2, "weight"), _arg(n, 3, "bias")))
                      and _arg(n, 2, "weight").target.rpartition(".")[0] == _arg(n, 3, "bias").target.rpartition(".")[0])
            elif isinstance(mod, nn.Linear):
                ok = True
            else:
                kind = _MODULE_TYPES.get(type(mod)) if mod is not None else _FUNCTIONS.get(n.target) if n.op == "call_function" \
                    else _METHODS.get(n.target)
                ok = (kind in ACTIVATIONS or kind in ("dropout", "identity")) and not isinstance(
                    mod, tuple(CHANNEL_DROPOUT))  # channels-last, it would drop others
            ok = ok and len([a for a in n.all_input_nodes if a.op != "get_attr"]) == 1
            inside.add(n)
            todo.extend(n.users)
        if ok and ends:
            region |= inside
            permutes |= {start} | ends
    return region, permutes


_RESHAPES = {"view", "reshape", torch.reshape}
_SPLITS = {"split", "chunk", torch.split, torch.chunk}


def _channel_slice(node: fx.Node) -> tuple[fx.Node, int, int] | None:
    """(x, start, stop) when ``node`` is channels start..stop of x (N, C, H, W): ``x[:, a:b]`` (more
    dimensions taken whole), or the i-th piece of ``x.split(sizes, 1)`` / ``x.chunk(n, 1)``; else None."""
    if node.op != "call_function" or node.target is not operator.getitem or not isinstance(node.args[0], fx.Node):
        return None
    src, index = node.args
    if src.target in _SPLITS and src.op in ("call_method", "call_function") and isinstance(index, int):
        metas = src.meta.get("tensor_meta")
        if _arg(src, 2, "dim", 0) not in (1, -3) or not isinstance(metas, (tuple, list)) or len(_shape(src.args[0]) or ()) != 4:
            return None
        sizes = [m.shape[1] for m in metas]
        i = index % len(sizes)
        return src.args[0], sum(sizes[:i]), sum(sizes[:i + 1])
    shape = _shape(src)
    whole = slice(None)
    if shape is None or len(shape) != 4 or not isinstance(index, tuple) or not 2 <= len(index) <= 4 \
            or not isinstance(index[0], slice) or index[0] != whole or not isinstance(index[1], slice) \
            or any(not isinstance(k, slice) or k != whole for k in index[2:]) \
            or not all(v is None or isinstance(v, int) for v in (index[1].start, index[1].stop, index[1].step)):
        return None
    start, stop, step = index[1].indices(shape[1])
    return (src, start, stop) if step == 1 and stop > start else None

_TRANSPOSES = {"transpose", torch.transpose}


def _shape(node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if hasattr(meta, "shape") else None


def _channel_shuffles(graph: fx.Graph) -> tuple[dict[fx.Node, tuple[fx.Node, int]], set[fx.Node]]:
    """Channel shuffles written as x.view(N, g, C/g, H, W) -> transpose(1, 2) [-> contiguous()] ->
    view(N, C, H, W): {the last view: (x, g)} and the nodes in between, each used only inside."""
    found, inner = {}, set()
    for node in graph.nodes:
        if node.target not in _RESHAPES or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        out = _shape(node)
        chain, t = [], node.args[0]
        if t.op == "call_method" and t.target == "contiguous":
            chain.append(t)
            t = t.args[0]
        if t.target not in _TRANSPOSES or sorted(d % 5 for d in t.args[1:3]) != [1, 2]:
            continue
        v = t.args[0]
        if not isinstance(v, fx.Node) or v.target not in _RESHAPES or not isinstance(v.args[0], fx.Node):
            continue
        x = v.args[0]
        xs, vs = _shape(x), _shape(v)
        if out is None or xs is None or vs is None or len(xs) != 4 or xs != out or len(vs) != 5 \
                or vs[0] != xs[0] or vs[3:] != xs[2:] or vs[1] * vs[2] != xs[1]:
            continue
        chain += [t, v]
        if any(len(n.users) != 1 for n in chain):
            continue
        found[node] = (x, vs[1])
        inner.update(chain)
    return found, inner


def _channelwise(module: nn.Module, shape: tuple[int, ...]) -> bool:
    """Whether a one-input opaque torch operation on (C, H, W) treats each channel alone, so that it runs
    unchanged on any subset of the channels (``x + 0``, ``x * s + b`` with scalar parameters s and b,
    timm's learnable affine): on a random input in eval mode, module(x[:, every other channel]) equals
    module(x)[:, every other channel]. Such a layer is kept whole but lets its channels shrink."""
    if shape[0] < 3:
        return False
    idx = torch.arange(0, shape[0], 2)
    modes = {m: m.training for m in module.modules()}
    try:
        module.eval()
        with torch.no_grad():
            x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
            y, z = module(x)[:, idx], module(x[:, idx])
        return isinstance(z, torch.Tensor) and y.shape == z.shape and torch.allclose(y, z, rtol=1e-4, atol=1e-5)
    except Exception:  # it reads the channel count (a parameter per channel, a reshape): not channelwise
        return False
    finally:
        for m, training in modes.items():
            m.training = training


def _macs(module: nn.Module, shapes: list[tuple[int, ...]], dtypes: list[torch.dtype]) -> int:
    """Multiply-accumulates of the convs and linears inside an opaque layer for one sample, counted by
    running it once on zeros (eval mode, each submodule's mode restored): what ``nascomp.cost`` counts."""
    macs, hooks = [0], []

    def count(m, args, out):
        if isinstance(m, nn.Conv2d):
            macs[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            macs[0] += out.numel() * m.in_features

    modes = {m: m.training for m in module.modules()}
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(count))
    try:
        module.eval()
        with torch.no_grad():
            module(*[torch.zeros(1, *shape, dtype=dtype) for shape, dtype in zip(shapes, dtypes)])
    finally:
        for h in hooks:
            h.remove()
        for m, training in modes.items():
            m.training = training
    return macs[0]


def _construct(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """What an opaque node computes, as a user would name it: a module class, a function, a method."""
    if node.op == "call_module":
        return type(modules[node.target]).__name__
    if node.op == "call_method":
        return f".{node.target}()"
    owner = getattr(node.target, "__self__", None)  # torch.autograd.Function.apply
    if isinstance(owner, type):
        return f"{owner.__name__}.{node.target.__name__}"
    return getattr(node.target, "__name__", str(node.target))


def _module_attrs(kind: str, mod: nn.Module, target: str) -> dict:
    if kind == "conv":
        if mod.padding_mode != "zeros" or isinstance(mod.padding, str):
            raise GraphError(f"conv {target!r}: only numeric zero padding is supported")
        return {"kernel_size": _pair(mod.kernel_size), "stride": _pair(mod.stride), "padding": _pair(mod.padding),
                "dilation": _pair(mod.dilation), "groups": mod.groups, "bias": mod.bias is not None}
    if kind == "linear":
        return {"bias": mod.bias is not None}
    if kind == "batchnorm":
        return {"eps": mod.eps, "momentum": mod.momentum, "affine": mod.affine,
                "track_running_stats": mod.track_running_stats}
    if kind in ("maxpool", "avgpool"):
        attrs = {"kernel_size": _pair(mod.kernel_size), "stride": _pair(mod.stride or mod.kernel_size),
                 "padding": _pair(mod.padding), "ceil_mode": mod.ceil_mode}
        if kind == "maxpool":
            if _pair(mod.dilation) != (1, 1) or mod.return_indices:
                raise GraphError(f"max-pool {target!r}: dilation and return_indices are not supported")
        else:
            attrs["count_include_pad"] = mod.count_include_pad
            if mod.divisor_override is not None:
                raise GraphError(f"avg-pool {target!r}: divisor_override is not supported")
        return attrs
    if kind in ("adaptive_avgpool", "adaptive_maxpool"):
        if getattr(mod, "return_indices", False):
            raise GraphError(f"adaptive max-pool {target!r}: return_indices is not supported")
        return {"output_size": _pair(mod.output_size)}
    if kind == "flatten" and (mod.start_dim != 1 or mod.end_dim != -1):
        raise GraphError(f"flatten {target!r}: only Flatten(1, -1) is supported")
    if kind == "dropout":  # Dropout1d/2d/3d drop whole channels in training: the student's dropout does too
        channels = CHANNEL_DROPOUT.get(type(mod))
        return {"p": mod.p, **({"channels": channels} if channels else {})}
    if kind == "shuffle":
        return {"groups": mod.groups}
    if kind == "leaky_relu":
        return {"negative_slope": mod.negative_slope}
    if kind == "gelu":
        return {"approximate": mod.approximate}
    if kind == "droppath":
        return {"p": mod.p, "mode": mod.mode}
    if kind == "upsample":  # its output size is the traced shape's (Layer.out_shape)
        return {"mode": mod.mode, "align_corners": mod.align_corners}
    return {}


def _arg(node: fx.Node, index: int, name: str, default=None):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _function_attrs(kind: str, node: fx.Node) -> dict:
    if kind == "concat":
        if _arg(node, 1, "dim", 0) not in (1, -3):
            raise GraphError(f"node {node.name!r}: torch.cat is supported along the channel dimension (dim=1) only")
        return {}
    if kind == "flatten":  # torch.squeeze(x) / (x, dims): a flatten when it gives (N, C), checked on the shapes
        if node.target is not torch.squeeze and (_arg(node, 1, "start_dim", 0) != 1 or _arg(node, 2, "end_dim", -1) != -1):
            raise GraphError(f"node {node.name!r}: only torch.flatten(x, 1) is supported")
        return {}
    if kind == "add":
        if not all(isinstance(a, fx.Node) for a in node.args[:2]) or node.kwargs.get("alpha", 1) != 1:
            raise GraphError(f"node {node.name!r} adds a constant or scales a term; only the sum of two tensors is supported")
        return {}
    if kind in ("maxpool", "avgpool"):
        k = _pair(_arg(node, 1, "kernel_size"))
        s = _arg(node, 2, "stride", None)
        attrs = {"kernel_size": k, "stride": _pair(s) if s else k, "padding": _pair(_arg(node, 3, "padding", 0)),
                 "ceil_mode": bool(_arg(node, 5 if kind == "maxpool" else 4, "ceil_mode", False))}
        if kind == "maxpool":  # F.max_pool2d(x, k, stride, padding, dilation, ceil_mode, return_indices)
            if _pair(_arg(node, 4, "dilation", 1)) != (1, 1) or _arg(node, 6, "return_indices", False):
                raise GraphError(f"node {node.name!r}: max-pool dilation and return_indices are not supported")
        else:  # F.avg_pool2d(x, k, stride, padding, ceil_mode, count_include_pad, divisor_override)
            attrs["count_include_pad"] = bool(_arg(node, 5, "count_include_pad", True))
            if _arg(node, 6, "divisor_override") is not None:
                raise GraphError(f"node {node.name!r}: avg-pool divisor_override is not supported")
        return attrs
    if kind in ("adaptive_avgpool", "adaptive_maxpool"):
        if kind == "adaptive_maxpool" and _arg(node, 2, "return_indices", False):
            raise GraphError(f"node {node.name!r}: adaptive max-pool return_indices is not supported")
        return {"output_size": _pair(_arg(node, 1, "output_size"))}
    if kind == "dropout":
        return {"p": _number(_arg(node, 1, "p", 0.5), float)}
    if kind == "shuffle":
        return {"groups": _number(_arg(node, 1, "groups"))}
    if kind == "leaky_relu":
        return {"negative_slope": _number(_arg(node, 1, "negative_slope", 0.01), float)}
    if kind == "gelu":
        return {"approximate": node.kwargs.get("approximate", "none")}
    if kind == "droppath":
        return {"p": _number(_arg(node, 1, "p"), float), "mode": str(_arg(node, 2, "mode"))}
    if kind == "upsample":
        if _arg(node, 5, "recompute_scale_factor") or _arg(node, 6, "antialias", False):
            raise GraphError(f"node {node.name!r}: interpolate with recompute_scale_factor or antialias")
        return {"mode": str(_arg(node, 3, "mode", "nearest")), "align_corners": _arg(node, 4, "align_corners")}
    if kind == "mean":  # over H and W of (N, C, H, W): a global average pool
        dims = _arg(node, 1, "dim")
        dims = tuple(dims) if isinstance(dims, (tuple, list)) else (dims,)
        if sorted(d % 4 for d in dims if isinstance(d, int)) != [2, 3] or len(dims) != 2 or node.kwargs.get("dtype"):
            raise GraphError(f"node {node.name!r}: a mean over dims {dims}, not over H and W")
        return {"keepdim": bool(_arg(node, 2, "keepdim", False))}
    if kind == "gate":  # x * g(x): both tensors (a scale by a constant is not a gate)
        if len(node.args) != 2 or not all(isinstance(a, fx.Node) for a in node.args):
            raise GraphError(f"node {node.name!r} multiplies by a constant")
        return {}
    return {}


def _fold_adds(graph: ArchGraph) -> ArchGraph:
    """Fold each two-input ``add`` into its consumer when that consumer is its only one and takes
    nothing else (``relu(a + b)`` -> a ReLU with inputs (a, b)): paper 6.5 sums a layer's inputs."""
    layers = graph.layers
    consumers: dict[int, list[int]] = {i: [] for i in range(len(layers))}
    for j, layer in enumerate(layers):
        for i in layer.inputs:
            if i >= 0:
                consumers[i].append(j)
    fold = {i for i, layer in enumerate(layers)
            if layer.type == "add" and i != graph.output and len(consumers[i]) == 1
            and layers[consumers[i][0]].inputs == (i,) and layers[consumers[i][0]].type != "concat"
            and layers[consumers[i][0]].type not in SEPARATE_INPUTS}
    new_index, kept = {-1: -1}, []
    for i, layer in enumerate(layers):
        if i in fold:
            continue
        new_index[i] = len(kept)
        kept.append(layer)
    out = []
    for layer in kept:
        inputs = []
        for i in layer.inputs:
            inputs.extend(new_index[a] for a in layers[i].inputs) if i in fold else inputs.append(new_index[i])
        out.append(Layer(layer.name, layer.type, tuple(inputs), layer.in_shape, layer.out_shape, layer.attrs, layer.target,
                         layer.module))
    return ArchGraph(out, graph.input_shape, new_index[graph.output])


# --------------------------------------------------------------------------- building
def make_layer(layer: Layer) -> nn.Module:
    """The ``nn.Module`` for one layer, freshly initialised."""
    a, t = layer.attrs, layer.type
    if t == "opaque":
        if layer.module is None:
            raise GraphError(f"layer {layer.name!r} is an opaque {a['construct']}, built from the teacher's own module, "
                             "which a graph read from JSON does not hold: trace the teacher again (ArchGraph.from_module)")
        module = copy.deepcopy(layer.module)  # fresh submodules; a parameter read outside one keeps its value
        for m in module.modules():
            if m is not module and hasattr(m, "reset_parameters"):
                m.reset_parameters()
        return module
    if t == "conv":
        return nn.Conv2d(layer.in_channels, layer.out_channels, a["kernel_size"], a["stride"], a["padding"],
                         a.get("dilation", (1, 1)), a["groups"], a["bias"])
    if t == "linear":
        return nn.Linear(layer.in_channels, layer.out_channels, a["bias"])
    if t == "batchnorm":
        cls = nn.BatchNorm2d if len(layer.in_shape) == 3 else nn.BatchNorm1d
        return cls(layer.out_channels, a["eps"], a["momentum"], a["affine"], a["track_running_stats"])
    if t == "maxpool":
        return nn.MaxPool2d(a["kernel_size"], a["stride"], a["padding"], ceil_mode=a["ceil_mode"])
    if t == "avgpool":
        return nn.AvgPool2d(a["kernel_size"], a["stride"], a["padding"], a["ceil_mode"], a["count_include_pad"])
    if t == "adaptive_avgpool":
        return nn.AdaptiveAvgPool2d(a["output_size"])
    if t == "adaptive_maxpool":
        return nn.AdaptiveMaxPool2d(a["output_size"])
    if t == "shuffle":
        return nn.ChannelShuffle(a["groups"])
    if t == "dropout":
        return DROPOUT_OF_CHANNELS.get(a.get("channels"), nn.Dropout)(a["p"])
    if t == "flatten":
        return nn.Flatten(1)
    if t == "leaky_relu":
        return nn.LeakyReLU(a["negative_slope"])
    if t == "gelu":
        return nn.GELU(a.get("approximate", "none"))
    if t == "droppath":
        return torchvision.ops.StochasticDepth(a["p"], a["mode"])
    if t == "mean":
        return _Mean(a["keepdim"])
    if t == "gate":
        return _Gate()
    if t == "channel_norm":
        return _ChannelNorm(layer.out_channels, a["eps"])
    if t == "slice":
        return _Slice(a["start"], a["stop"])
    if t == "upsample":
        return nn.Upsample(size=tuple(layer.out_shape[1:]), mode=a["mode"], align_corners=a["align_corners"])
    if t == "scale":
        return _Scale((layer.out_channels,) + tuple(a["shape"][-2:]) if len(a["shape"]) == 3 else
                      (1, layer.out_channels) + tuple(a["shape"][-2:]))
    simple = {"relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
              "hardswish": nn.Hardswish, "hardsigmoid": nn.Hardsigmoid, "mish": nn.Mish, "identity": nn.Identity, "add": nn.Identity, "concat": nn.Identity}
    if t in simple:
        return simple[t]()  # never in-place: an input may feed several layers
    raise GraphError(f"layer {layer.name!r} has type {t!r}, which cannot be built")


class _Mean(nn.Module):
    """x.mean((2, 3)): the average over H and W."""

    def __init__(self, keepdim: bool):
        super().__init__()
        self.keepdim = keepdim

    def forward(self, x):
        return x.mean((2, 3), keepdim=self.keepdim)


class _Slice(nn.Module):
    """x[:, start:stop]: channels start..stop (a split's or chunk's piece)."""

    def __init__(self, start: int, stop: int):
        super().__init__()
        self.start, self.stop = start, stop

    def forward(self, x):
        return x[:, self.start:self.stop]


class _ChannelNorm(nn.Module):
    """LayerNorm over the channels of (N, C, H, W) (ConvNeXt's, written there channels-last)."""

    def __init__(self, channels: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight, self.bias = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.weight.shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class _Gate(nn.Module):
    """x * g: a tensor times its gate (squeeze-excitation), broadcast over H and W."""

    def forward(self, x, g):
        return x * g


class _Scale(nn.Module):
    """x * gamma: a learnt per-channel scale (layer scale), gamma of shape (C, 1, 1) or (1, C, 1, 1)."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(shape))

    def forward(self, x):
        return x * self.weight


class GraphNet(nn.Module):
    """Runs an ``ArchGraph``: layer i applies to the sum of its inputs (the concatenation, for concat).
    Each intermediate output is released after its last use."""

    def __init__(self, graph: ArchGraph):
        super().__init__()
        self.graph = graph
        self.layers = nn.ModuleList(make_layer(layer) for layer in graph.layers)
        self._inputs = [layer.inputs for layer in graph.layers]
        self._concat = [layer.type == "concat" for layer in graph.layers]
        self._opaque = [layer.type in SEPARATE_INPUTS for layer in graph.layers]
        last_use: dict[int, int] = {}
        for j, inputs in enumerate(self._inputs):
            for i in inputs:
                last_use[i] = j
        self._free = [[i for i in set(inputs) if last_use[i] == j and i != graph.output] for j, inputs in enumerate(self._inputs)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs: dict[int, torch.Tensor] = {-1: x}
        for j, layer in enumerate(self.layers):
            inputs = self._inputs[j]
            if self._opaque[j]:  # its inputs are separate arguments
                outs[j] = layer(*[outs[i] for i in inputs])
                for i in self._free[j]:
                    del outs[i]
                continue
            if self._concat[j]:
                h = torch.cat([outs[i] for i in inputs], 1)
            else:
                h = outs[inputs[0]]
                for i in inputs[1:]:
                    h = h + outs[i]
            outs[j] = layer(h)
            for i in self._free[j]:
                del outs[i]
        return outs[self.graph.output]
