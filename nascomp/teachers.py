"""Teacher networks: a registry of the paper's CIFAR teachers (REFERENCE §6) and user classes.

``create("resnet18", num_classes=10)`` resolves a registered name; ``create("pkg.mod:Class", ...)``
imports a user's own class and passes the keyword arguments to its constructor. Either may load a
checkpoint (a plain state_dict, or a dict holding one under ``state_dict``) with
``weights_only=True``.

``create("efficientnet_b0", library="torchvision")`` builds a classifier of a model library by its
name there (``torchvision``, or ``timm`` when installed: ``pip install nascomp[timm]``), with the
dataset's number of classes; ``library`` arrives as ``teacher.kwargs.library`` from
``conf/teacher/torchvision.yaml`` and ``timm.yaml`` (so the cached teacher's key names the library).
Without a checkpoint its weights start from the library's local pretrained cache when the file is
there (every tensor whose shape fits: the classifier head of another class count does not; DenseNet's
old key names renamed as torchvision renames them; a warning when the file lacks some of the model's
tensors by name), else from the library's random init; the run then trains it as any teacher.

``width`` multiplies every channel count (1.0 = the paper's networks; 0.125 gives CPU-sized
teachers with the same topology). ``in_channels`` is the dataset's channel count (3 for CIFAR, the
default, 1 for digits). The CIFAR stems keep small images usable: ResNet and ShuffleNet halve the
map three times (8x8 -> 1x1) and VGG's max-pools round up (``ceil_mode``), so a pool never takes a
1x1 map to 0x0 (on 32x32 the shapes, and the parameter counts, are the paper's).

:func:`check_input` runs one batch of the real data through a teacher before any work, so a
teacher that cannot take the dataset fails at startup with what it expects and what it was given.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import re
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = fn
        return fn

    return deco


def names() -> list[str]:
    """The registered teacher names."""
    return sorted(_REGISTRY)


def _scaled(channels: int, width: float, multiple: int = 1) -> int:
    return max(multiple, int(round(channels * width / multiple)) * multiple)


# --------------------------------------------------------------------------- VGG-19
class VGG(nn.Module):
    """CIFAR VGG: (3x3 conv with bias, BN, ReLU) blocks, 5 max-pools, flatten, one Linear. The pools
    round up (``ceil_mode``): 32x32 ends at 1x1 as in the paper, and 8x8 stays at 1x1 after its third."""

    def __init__(self, cfg: list, num_classes: int = 10, width: float = 1.0, in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            else:
                c_out = _scaled(v, width)
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
                c_in = c_out
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x):
        return self.classifier(self.flatten(self.features(x)))


_VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


@register("vgg19")
def vgg19(num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> nn.Module:
    return VGG(_VGG19, num_classes, width, in_channels)


# --------------------------------------------------------------------------- ResNet-18/34
class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet: 3x3 stem, no max-pool, BasicBlocks, 1x1 conv + BN downsample, avg-pool, Linear."""

    def __init__(self, blocks: list[int], num_classes: int = 10, width: float = 1.0, in_channels: int = 3):
        super().__init__()
        widths = [_scaled(w, width) for w in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages = []
        c_in = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            stage = []
            for b in range(n):
                stage.append(BasicBlock(c_in, w, 2 if (b == 0 and i > 0) else 1))
                c_in = w
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(c_in, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.linear(torch.flatten(self.pool(x), 1))


@register("resnet18")
def resnet18(num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> nn.Module:
    return ResNet([2, 2, 2, 2], num_classes, width, in_channels)


@register("resnet34")
def resnet34(num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> nn.Module:
    return ResNet([3, 4, 6, 3], num_classes, width, in_channels)


# --------------------------------------------------------------------------- ShuffleNet 1x (g=2)
class ShuffleUnit(nn.Module):
    """ShuffleNet v1 unit. Stride 2: the shortcut is a 1x1 conv then a 3x3 avg-pool, concatenated
    with the branch (the 1x1 conv is the paper's 6.5 modification, so that the shortcut can shrink)."""

    def __init__(self, c_in: int, c_out: int, stride: int, groups: int, ungrouped_input: bool = False):
        super().__init__()
        self.stride = stride
        g1 = 1 if ungrouped_input else groups  # the 24-channel stem output is not grouped (ShuffleNet v1)
        branch_out = c_out - c_in if stride == 2 else c_out
        mid = branch_out // 4
        self.conv1 = nn.Conv2d(c_in, mid, 1, groups=g1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.relu1 = nn.ReLU(inplace=True)
        self.shuffle = nn.ChannelShuffle(g1)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, branch_out, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch_out)
        if stride == 2:
            self.shortcut_conv = nn.Conv2d(c_in, c_in, 1, groups=g1, bias=False)
            self.shortcut_pool = nn.AvgPool2d(3, 2, 1)
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.bn3(self.conv3(self.bn2(self.conv2(self.shuffle(self.relu1(self.bn1(self.conv1(x))))))))
        if self.stride == 2:
            return self.relu2(torch.cat([out, self.shortcut_pool(self.shortcut_conv(x))], 1))
        return self.relu2(out + x)


class ShuffleNet(nn.Module):
    def __init__(self, widths: list[int], blocks: list[int], groups: int, num_classes: int = 10, width: float = 1.0,
                 in_channels: int = 3):
        super().__init__()
        stem = _scaled(24, width, 4 * groups) if width != 1.0 else 24
        self.conv1 = nn.Conv2d(in_channels, stem, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        units = []
        c_in = stem
        # Only the first unit takes the stem's output, ungrouped when the stem is the paper's 24 channels;
        # a scaled stem (a multiple of 4 * groups) feeds a grouped first unit, as it always has here.
        ungrouped = stem == 24
        for w, n in zip(widths, blocks):
            w = _scaled(w, width, 4 * groups)
            for b in range(n):
                units.append(ShuffleUnit(c_in, w, 2 if b == 0 else 1, groups, ungrouped_input=ungrouped))
                ungrouped = False
                c_in = w
        self.units = nn.Sequential(*units)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(c_in, num_classes)

    def forward(self, x):
        x = self.units(self.relu(self.bn1(self.conv1(x))))
        return self.linear(torch.flatten(self.pool(x), 1))


@register("shufflenet_g2")
def shufflenet_g2(num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> nn.Module:
    return ShuffleNet([200, 400, 800], [4, 8, 4], 2, num_classes, width, in_channels)


# --------------------------------------------------------------------------- small CNN (quickstart)
class SmallResNet(nn.Module):
    """A small residual CNN for tiny images (digits, 8x8): stem, two residual stages, avg-pool, Linear."""

    def __init__(self, num_classes: int = 10, width: float = 1.0, in_channels: int = 1):
        super().__init__()
        w1, w2 = _scaled(32, width), _scaled(64, width)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w1, 3, 1, 1, bias=False), nn.BatchNorm2d(w1), nn.ReLU(inplace=True))
        self.block1 = BasicBlock(w1, w1, 1)
        self.block2 = BasicBlock(w1, w1, 1)
        self.block3 = BasicBlock(w1, w2, 2)
        self.block4 = BasicBlock(w2, w2, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(w2, num_classes)

    def forward(self, x):
        x = self.block4(self.block3(self.block2(self.block1(self.stem(x)))))
        return self.linear(torch.flatten(self.pool(x), 1))


@register("small_resnet")
def small_resnet(num_classes: int = 10, width: float = 1.0, in_channels: int = 1) -> nn.Module:
    return SmallResNet(num_classes, width, in_channels)


# --------------------------------------------------------------------------- entry points
def _import(path: str):
    module_name, _, attr = path.partition(":")
    if not attr:
        module_name, _, attr = path.rpartition(".")
    try:
        if not module_name:
            raise ImportError("no module part")
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(
            f"teacher {path!r} is neither a registered name ({', '.join(names())}) nor an importable "
            f"class path such as 'my_package.models:MyNet' ({exc})"
        ) from exc


LIBRARIES = ("torchvision", "timm")


def _from_library(library: str, name: str, num_classes: int, **kwargs) -> nn.Module:
    """A classifier of ``library`` by its name there, starting from the local pretrained cache if present."""
    if library not in LIBRARIES:
        raise ValueError(f"teacher library {library!r} is not one of {', '.join(LIBRARIES)}")
    if library == "timm":
        try:
            import timm
        except ImportError as exc:
            raise ValueError("teacher=timm needs timm, an optional extra: pip install 'nascomp[timm]'") from exc
        tagged = "." in name  # an architecture with a pretrained tag (resnet18.a1_in1k): one timm lists
        if not (timm.list_pretrained(name) if tagged else timm.is_model(name)):
            raise ValueError(f"timm has no model {name!r}; see timm.list_models() (a pretrained tag after a dot: "
                             f"timm.list_models(pretrained=True))")
        model = timm.create_model(name, num_classes=num_classes, **kwargs)
        cached = _timm_cached(model)
    else:
        import torchvision

        known = torchvision.models.list_models(module=torchvision.models)
        if name not in known:
            raise ValueError(f"torchvision has no classifier {name!r}; one of: {', '.join(known)}")
        if name in ("googlenet", "inception_v3"):
            kwargs.setdefault("aux_logits", False)  # the auxiliary heads are training-only outputs
            kwargs.setdefault("init_weights", True)
        model = torchvision.models.get_model(name, num_classes=num_classes, **kwargs)
        weights = torchvision.models.get_model_weights(name).DEFAULT
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if cached is not None and cached.is_file():
        if cached.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(cached)
        else:
            state = torch.load(cached, map_location="cpu", weights_only=True)
        if library == "torchvision" and name.startswith("densenet"):
            state = _densenet_keys(state)
        own = model.state_dict()
        fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        # the classifier head may differ by its class count; any other shape means another width or variant
        # (mobilenet_v2 width_mult=0.5 against the full-width file): the file is not used at all
        wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape and not (
            own[k].dim() == v.dim() and own[k].dim() >= 1 and own[k].shape[0] == num_classes
            and own[k].shape[1:] == v.shape[1:])]
        if wrong:
            warnings.warn(f"{library} {name}: the pretrained file {str(cached)!r} does not fit this model: "
                          f"{len(wrong)} of its tensors have another shape ({', '.join(wrong[:3])}, ...; another "
                          f"width or variant?); it is not used, the model keeps its random init", stacklevel=3)
            return model
        model.load_state_dict(fits, strict=False)
        # a head of another class count does not fit; a tensor absent by name means the file's names differ
        named = [k for k in own if not k.endswith("num_batches_tracked")]  # old files have no BN counters
        absent = [k for k in named if k not in state]
        if absent:
            warnings.warn(f"{library} {name}: the pretrained file {str(cached)!r} has no tensor named like "
                          f"{len(absent)} of the model's {len(named)} ({', '.join(absent[:3])}, ...): loaded {len(fits)}, "
                          f"the rest keep their random init. Delete the file to start from random init throughout, "
                          f"or pass a converted state_dict as teacher.checkpoint", stacklevel=3)
    return model


# torchvision's DenseNet files name the layers of a _DenseLayer 'norm.1', 'conv.2', ...; torchvision
# renames them on load with this pattern (torchvision.models.densenet._load_state_dict, which fetches the
# file itself and so cannot be called on a state_dict).
_DENSENET_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def _densenet_keys(state: dict) -> dict:
    """``state`` with torchvision's old DenseNet key names (``denselayer1.norm.1.weight``) renamed as
    torchvision renames them (``denselayer1.norm1.weight``)."""
    out = {}
    for key, value in state.items():
        match = _DENSENET_OLD_KEY.match(key)
        out[match.group(1) + match.group(2) if match else key] = value
    return out


def _timm_cached(model: nn.Module) -> Path | None:
    """timm's pretrained file for ``model`` in the local Hugging Face cache (``huggingface_hub``'s
    HF_HUB_CACHE, where ``timm.create_model(..., pretrained=True)`` puts it), or None: nothing is downloaded."""
    from huggingface_hub import try_to_load_from_cache

    hub_id = (getattr(model, "pretrained_cfg", None) or {}).get("hf_hub_id")
    for filename in ("model.safetensors", "pytorch_model.bin") if hub_id else ():
        path = try_to_load_from_cache(hub_id, filename)
        if isinstance(path, str):
            return Path(path)
    return None


def create(name: str, num_classes: int = 10, width: float = 1.0, checkpoint: str | Path | None = None,
           in_channels: int | None = None, **kwargs) -> nn.Module:
    """A teacher by registered name or by class path ``"pkg.module:Class"`` (kwargs go to its
    constructor; ``num_classes``, ``width`` and ``in_channels`` too, when it accepts them;
    ``in_channels=None`` keeps the constructor's default). With ``checkpoint`` the weights are loaded
    strictly; a mismatch raises ``ValueError`` naming the offending keys. ``library="torchvision"``
    (or ``"timm"``) takes ``name`` from that library (``width`` and ``in_channels`` do not apply)."""
    library = kwargs.pop("library", None)
    if library is not None:
        model = _from_library(library, name, num_classes, **kwargs)
    elif name in _REGISTRY:
        if in_channels is not None and "in_channels" not in kwargs:
            kwargs["in_channels"] = in_channels
        model = _REGISTRY[name](num_classes=num_classes, width=width, **kwargs)
    else:
        cls = _import(name)
        params = inspect.signature(cls).parameters
        takes_kwargs = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())
        if "num_classes" not in kwargs and ("num_classes" in params or takes_kwargs):
            kwargs["num_classes"] = num_classes
        if "width" in params and "width" not in kwargs:
            kwargs["width"] = width
        if in_channels is not None and "in_channels" in params and "in_channels" not in kwargs:
            kwargs["in_channels"] = in_channels  # else check_input tells whether it fits the data
        model = cls(**kwargs)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, name)
    return model


def check_input(model: nn.Module, images: torch.Tensor, num_classes: int, name: str = "teacher") -> None:
    """One forward pass of ``images`` (a batch of the real data, ``(B, C, H, W)``) through ``model``
    in eval mode without gradients; ``ValueError`` when it fails or when its output is not
    ``(B, num_classes)``, saying what the teacher expects and what the data gives."""
    shape = tuple(images.shape[1:])
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
    expects = ""
    if isinstance(first, nn.Conv2d):
        expects = f"; the teacher expects {first.in_channels} input channels"
    elif isinstance(first, nn.Linear):
        expects = f"; the teacher expects {first.in_features} input features"
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(images)
    except Exception as exc:  # the shape error of whichever layer could not take it
        raise ValueError(
            f"teacher {name} cannot take this dataset's input {shape}: {str(exc).splitlines()[0]}{expects}. "
            f"Choose a teacher built for {shape[0]}-channel {shape[1]}x{shape[2]} images (a class path's "
            f"constructor receives in_channels when it accepts it) or another dataset") from exc
    finally:
        model.train(training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(images), num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"teacher {name} gives outputs of shape {got} for a batch of {len(images)} images; the "
                         f"dataset has {num_classes} classes, so it must give ({len(images)}, {num_classes}) logits "
                         f"(does its constructor take num_classes?)")


CHECKPOINT_WRAPPERS = ("state_dict", "model_state_dict", "model")  # keys a checkpoint may keep its weights under
CHECKPOINT_PREFIXES = ("module.", "_orig_mod.", "model.")  # DataParallel / DDP, torch.compile, a LightningModule's `model`


def load_checkpoint(model: nn.Module, checkpoint: str | Path, name: str = "teacher") -> nn.Module:
    """Load a state_dict checkpoint into ``model`` (``weights_only=True``), with a clear error. The
    weights may sit under one of ``CHECKPOINT_WRAPPERS`` (``{"model": ..., "optimizer": ...}``), and
    their names may carry one of ``CHECKPOINT_PREFIXES`` on every key (a model saved from
    ``nn.DataParallel``, DDP or ``torch.compile``) that the model's own names lack: it is removed."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"{name} checkpoint {str(path)!r} does not exist")
    try:  # timm's train.py keeps its argparse.Namespace of arguments beside the weights: plain data, allowed
        with torch.serialization.safe_globals([argparse.Namespace]):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickled module, ...
        raise ValueError(f"{name} checkpoint {str(path)!r} cannot be read as a weights-only state_dict: {exc}") from exc
    for wrapper in CHECKPOINT_WRAPPERS:  # a training script's dict holding the weights under one key
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict):
        raise ValueError(f"{name} checkpoint {str(path)!r} holds a {type(state).__name__}, not a state_dict")
    own = model.state_dict()
    while state and (prefix := next((p for p in CHECKPOINT_PREFIXES if all(isinstance(k, str) and k.startswith(p) for k in state)
                                     and not any(k.startswith(p) for k in own)), None)):
        state = {k[len(prefix):]: v for k, v in state.items()}  # DataParallel / DDP, torch.compile, a wrapping module
    # BatchNorm's num_batches_tracked counters are absent from old files (torchvision's own): torch's strict
    # load fills them in, so they are not missing
    missing = sorted(k for k in set(own) - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append("shape mismatch " + "; ".join(shapes[:5]))
        if missing:
            parts.append(f"missing keys {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}")
        raise ValueError(
            f"{name} checkpoint {str(path)!r} does not match the {name} architecture "
            f"(wrong teacher, width or number of classes?): " + "; ".join(parts)
        )
    # the counters an old file lacks keep the model's own values (torch fills them in only for a file whose
    # metadata says it predates them; a state_dict with some deleted still says it has them)
    model.load_state_dict({**{k: v for k, v in own.items() if k.endswith("num_batches_tracked") and k not in state}, **state})
    return model
