"""The cost of a network: parameters, FLOPs, latency and peak memory (the deployment objectives).

    num_params  parameters of every layer (``ArchGraph.num_params``)
    flops       multiply-accumulates of one forward of one sample, from the shapes the graph holds:
                    conv    C_out * (C_in / groups) * k_h * k_w * H_out * W_out
                    linear  C_out * C_in
                    opaque  its convs and linears, counted by running it once when traced
                every other layer (BN, activations, pools, adds, concat, ...) counts 0: BN folds into
                the conv before it at deployment, and the rest are not multiply-accumulates. No bias
                terms. This is fvcore's count of its ``conv`` and ``linear`` operators exactly; fvcore's
                total adds, in eval mode, 2 per element of an affine ``batch_norm``'s input and 1 per
                element of ``adaptive_avg_pool2d``'s input (``tests/test_cost.py`` checks both).
    latency_ms  measured (or, with ``objective.latency_table``, predicted per layer: ``LatencyTable``): warm-up runs, then the median of ``repeats`` timed forwards of a batch of
                ``batch_size`` on ``device`` (``measure_latency``); cached in the run store per
                (architecture key, device, batch size), so no student is timed twice
    memory_mb   peak memory of one forward of a batch of ``batch_size`` (MiB, 2^20 bytes, float32),
                computed from the graph's shapes, not measured: weights (parameters and BN running
                statistics) plus the largest sum of activations alive at once when ``GraphNet`` runs
                the graph (it frees each output after its last use; identity, flatten, dropout, droppath
                (both the identity in eval mode) and slice (a view) return their input and allocate nothing;
                a sum of n inputs holds one temporary, two when n > 2, and a gate or opaque layer, called
                with its inputs as separate arguments, none; the network input stays alive; while it
                runs, a conv holds a second buffer of its output's size and a max-pool its int64
                indices, as torch's CPU kernels do). Other workspace (im2col of thin convs, cuDNN) is not counted:
                ``benchmarks/costs.py memory`` compares the figure with torch.profiler's.
"""
from __future__ import annotations

import hashlib
import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from nascomp.graph import ArchGraph, Layer
    from nascomp.store import RunStore

COSTS = ("num_params", "flops", "latency_ms", "memory_mb")  # every cost column (a field of Costs), in this order
BYTES = 4  # float32
_ALIASES = frozenset(("identity", "flatten", "dropout", "droppath", "add", "concat", "slice"))  # GraphNet layers returning their input (eval mode)
# what a layer holds while it runs, in units of its output (torch's CPU kernels, measured with torch.profiler):
# a conv (oneDNN) a second output-sized buffer, a max-pool its int64 indices (2 float32 elements per output)
_TRANSIENT = {"conv": 1, "maxpool": 2}


@dataclass(frozen=True)
class Costs:
    """The four costs of one network (units in the module docstring)."""

    num_params: int
    flops: int
    latency_ms: float
    memory_mb: float

    def as_dict(self) -> dict:
        return asdict(self)


def layer_flops(layer: "Layer") -> int:
    """Multiply-accumulates of one layer for one sample (conv and linear; an opaque layer the convs and
    linears inside it; 0 for every other type: slice, upsample, gate, scale, ... are no MACs). ``Layer.flops``, and ``ArchGraph.flops`` / ``Candidate.flops`` (their sum), call it."""
    if layer.type == "conv":
        kh, kw = layer.attrs["kernel_size"]
        return layer.out_channels * (layer.in_channels // layer.attrs["groups"]) * kh * kw * math.prod(layer.out_shape[1:])
    if layer.type == "linear":
        return layer.out_channels * layer.in_channels * math.prod(layer.out_shape[1:])
    if layer.type == "opaque":  # the convs and linears inside, counted once when traced (nascomp.graph._macs)
        return layer.attrs.get("flops", 0)
    return 0


def weight_bytes(graph: "ArchGraph") -> int:
    """Parameters and BN running statistics (mean, var), float32."""
    stats = sum(2 * layer.out_channels for layer in graph.layers
                if layer.type == "batchnorm" and layer.attrs.get("track_running_stats", True))
    return BYTES * (graph.num_params + stats)


def peak_activations(graph: "ArchGraph") -> int:
    """The most activation elements (one sample) alive at once while ``GraphNet`` runs ``graph``."""
    from nascomp.graph import SEPARATE_INPUTS

    numel = lambda shape: math.prod(shape)  # noqa: E731
    size: dict[int, int] = {-1: numel(graph.input_shape)}  # storage id -> elements
    holds: dict[int, int] = {-1: -1}  # layer output (-1: the input) -> storage id
    last_use: dict[int, int] = {}
    for j, layer in enumerate(graph.layers):
        for i in layer.inputs:
            last_use[i] = j
    peak = size[-1]
    for j, layer in enumerate(graph.layers):
        extra = 0  # a temporary freed within the layer
        if layer.type == "concat":
            h = j + len(graph.layers)  # a new storage
            size[h] = sum(numel(graph.layers[i].out_shape) if i >= 0 else size[-1] for i in layer.inputs)
        elif len(layer.inputs) == 1 or layer.type in SEPARATE_INPUTS:  # no sum: layer(*inputs), all alive already
            h = holds[layer.inputs[0]]
        else:  # h = h + outs[i], one new tensor per input after the first
            h = j + len(graph.layers)
            size[h] = numel(layer.in_shape)
            extra = size[h] if len(layer.inputs) > 2 else 0
        out = h if layer.type in _ALIASES else j
        if out == j:
            size[j] = numel(layer.out_shape)
        alive = set(holds.values()) | {h}
        during = sum(size[s] for s in alive)  # the layer's input ready
        made = size[out] if out not in alive else 0
        peak = max(peak, during + extra, during + made * (1 + _TRANSIENT.get(layer.type, 0)))
        holds[j] = out
        for i in set(layer.inputs):
            if last_use[i] == j and i not in (-1, graph.output):
                del holds[i]
    return peak


def memory_mb(graph: "ArchGraph", batch_size: int) -> float:
    """Weights + peak activations of one forward of ``batch_size`` samples, in MiB."""
    return (weight_bytes(graph) + BYTES * batch_size * peak_activations(graph)) / 2**20


def profiled_peak_bytes(graph: "ArchGraph", batch_size: int) -> int:
    """The peak of the bytes that one forward of ``GraphNet`` allocates on the CPU and has not yet freed
    (torch.profiler's memory events, the input excluded), after one unprofiled forward: the measurement
    that ``peak_activations`` is checked against (``tests/test_cost.py``, ``benchmarks/costs.py memory``)."""
    from torch.profiler import ProfilerActivity, profile

    net, x = graph.build().eval(), torch.zeros(batch_size, *graph.input_shape)
    with torch.inference_mode():
        net(x)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            net(x)
    current = peak = 0
    for event in sorted(prof.profiler.kineto_results.events(), key=lambda e: e.start_ns()):
        if event.name() == "[memory]":
            current += event.nbytes()
            peak = max(peak, current)
    return peak


def measure_latency(module: torch.nn.Module, input_shape: tuple[int, ...], batch_size: int, device: str,
                    warmup: int, repeats: int) -> list[float]:
    """Milliseconds of each of ``repeats`` timed forwards (after ``warmup`` untimed ones) of a batch of
    zeros (``batch_size``, *input_shape) in eval mode, on ``device`` (CUDA is synchronised around each)."""
    module = module.to(device).eval()
    x = torch.zeros(batch_size, *input_shape, device=device)
    return _time(lambda: module(x), device, warmup, repeats)


def _time(fn, device: str, warmup: int, repeats: int) -> list[float]:
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if i >= warmup:
                times.append(1e3 * (time.perf_counter() - start))
    return times


class LatencyTable:
    """Predicted latency (``objective.latency_table=true``): the sum over layers of each layer's latency
    timed alone (the sum or concatenation of its inputs, then the layer; a gate or opaque layer called with
    its inputs as separate arguments, as ``GraphNet`` calls it; on zeros of its input shapes at
    the batch size; the median of ``repeats`` after ``warmup``). Each distinct layer (type, input and
    output shapes, attributes) is timed once and kept here, so a new student costs only the layers no
    earlier one had. Its error against the measured figure: ``benchmarks/costs.py table``.

    With a ``store`` (and its ``device_key``, as ``Meter`` has them), each layer's timing is kept in the
    store's latency table too (key ``layer:<digest of the signature>``), so a search resumed or replayed
    on that store predicts, and so proposes, as it did the first time instead of timing the layers again."""

    def __init__(self, device: str, batch_size: int, warmup: int, repeats: int, store: "RunStore | None" = None,
                 device_key: str | None = None):
        self.device, self.batch_size, self.warmup, self.repeats = device, batch_size, warmup, repeats
        self.store, self.device_key = store, device_key or device
        self.ms: dict[str, float] = {}  # layer signature -> ms

    def predict(self, graph: "ArchGraph") -> float:
        from nascomp.graph import _jsonable

        total = 0.0
        for layer in graph.layers:
            shapes = [graph.input_shape if i < 0 else graph.layers[i].out_shape for i in layer.inputs]
            signature = repr((layer.type, shapes, layer.out_shape, _jsonable(layer.attrs)))
            if signature not in self.ms:
                stored = self._stored(signature)
                self.ms[signature] = self._timed(layer, shapes, signature) if stored is None else stored
            total += self.ms[signature]
        return total

    def _stored(self, signature: str) -> float | None:
        if self.store is None:
            return None
        return self.store.latency(_layer_key(signature), self.device_key, self.batch_size)

    def _timed(self, layer: "Layer", shapes: list, signature: str) -> float:
        from nascomp.graph import SEPARATE_INPUTS, make_layer

        module = make_layer(layer).to(self.device).eval()
        xs = [torch.zeros(self.batch_size, *s, device=self.device) for s in shapes]
        if layer.type in SEPARATE_INPUTS:  # its inputs are separate arguments (GraphNet.forward)
            run = lambda: module(*xs)  # noqa: E731
        elif layer.type == "concat":
            run = lambda: module(torch.cat(xs, 1))  # noqa: E731
        else:
            run = lambda: module(sum(xs[1:], xs[0]))  # noqa: E731
        ms = statistics.median(_time(run, self.device, self.warmup, self.repeats))
        if self.store is not None:
            self.store.save_latency(_layer_key(signature), self.device_key, self.batch_size, ms, self.repeats)
        return ms


def _layer_key(signature: str) -> str:
    """The store's latency key of a layer signature (``LatencyTable``); architecture keys never start so."""
    return "layer:" + hashlib.sha256(signature.encode()).hexdigest()[:24]


def check_device(device: str) -> str:
    """``device`` if latency can be measured on it here, else a ValueError saying what to set."""
    try:
        kind = torch.device(device).type
    except RuntimeError as exc:
        raise ValueError(f"objective.device={device!r} is not a torch device (cpu, cuda, cuda:1, ...)") from exc
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"objective.device={device}, but CUDA is not available here; measure latency with "
                         "objective.device=cpu, or run where that device is")
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"objective.device={device!r}: latency is measured on cpu or cuda only")
    return device


class Meter:
    """The four costs of architecture graphs, as the ``objective`` config node says to measure them
    (``device``, ``batch_size``, ``warmup``, ``repeats``; ``latency_table``: predicted by a
    ``LatencyTable`` instead of measured, and not stored). Measured latencies are cached in ``store`` (its
    ``latency`` table, per ``device_key``: the device, and for the CPU the thread count) when one is
    given, and in this object."""

    def __init__(self, cfg, store: "RunStore | None" = None):
        self.device, self.batch_size = check_device(str(cfg.device)), int(cfg.batch_size)
        # CPU latency depends on the threads torch uses: a CPU figure is stored per thread count
        self.device_key = f"cpu/{torch.get_num_threads()} threads" if self.device == "cpu" else self.device
        self.warmup, self.repeats = int(cfg.warmup), int(cfg.repeats)
        self.store = store
        self._layers: LatencyTable | None = None
        self.table = self.layers if cfg.get("latency_table") else None
        self._latency: dict[str, float] = {}
        self.timed = 0  # graphs timed (cache misses)

    @property
    def layers(self) -> LatencyTable:
        """This meter's per-layer ``LatencyTable`` (what ``objective.latency_table=true`` measures with, and
        what ``Objective.predicted`` predicts candidates' latency with), its timings kept in the store."""
        if self._layers is None:
            self._layers = LatencyTable(self.device, self.batch_size, self.warmup, self.repeats, self.store, self.device_key)
        return self._layers

    def latency_ms(self, graph: "ArchGraph") -> float:
        key = graph.key
        if key in self._latency:
            return self._latency[key]
        if self.table is not None:
            self._latency[key] = self.table.predict(graph)
            return self._latency[key]
        ms = self.store.latency(key, self.device_key, self.batch_size) if self.store is not None else None
        if ms is None:
            times = measure_latency(graph.build(), graph.input_shape, self.batch_size, self.device, self.warmup, self.repeats)
            ms = statistics.median(times)
            self.timed += 1
            if self.store is not None:
                self.store.save_latency(key, self.device_key, self.batch_size, ms, self.repeats)
        self._latency[key] = ms
        return ms

    def costs(self, graph: "ArchGraph") -> Costs:
        return Costs(graph.num_params, graph.flops, self.latency_ms(graph), memory_mb(graph, self.batch_size))
