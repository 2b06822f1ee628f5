"""Datasets as normalised in-memory tensors, a device-resident loader, and tensor-op augmentation.

Every dataset comes back as a :class:`Dataset` of three :class:`Split` s (train / val / test) of
normalised float images ``(N, C, H, W)`` and integer labels ``(N,)``. The split rules and the
normalisation constants live in ``conf/dataset/*.yaml`` and nowhere else:

- ``cifar10`` / ``cifar100``: torchvision's loader; of the 50,000 training images the **last**
  ``val_size`` (5,000) are validation, the first 45,000 train (reference code); the 10,000 test
  images are the test split.
- ``digits``: scikit-learn's bundled 8x8 digits, one permutation drawn with ``split.seed``, then
  ``test`` images, ``val`` images, and the rest train.
- ``imagefolder``: torchvision ``ImageFolder`` layout, resized to ``image_size``; ``val`` / ``test``
  held out by a seeded permutation (or ``test_root``, a second folder, for the test split).

``load`` refuses data that cannot support a run (``ValueError``; exit 2 from ``nascomp.run``):
fewer than 2 classes, an empty train / val / test split, or a class with no training image.

Augmentation (random crop from a zero-padded image, horizontal flip) is a batched tensor op run on
whatever device the batch is on (:class:`Augment`); :class:`DeviceLoader` serves batches of tensors
that already live on the device (airbench style: no workers, no collation). ``Dataset.loader``
falls back to a plain ``torch.utils.data.DataLoader`` when asked (e.g. for DDP, where Lightning
adds the distributed sampler).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset


@dataclass
class Split:
    images: Tensor  # (N, C, H, W) float32, normalised
    labels: Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True)
class Augment:
    """Random crop of an ``(H, W)`` window from the image zero-padded by ``padding`` on each side
    (zero = the dataset mean after normalisation), then a horizontal flip with probability 1/2."""

    padding: int = 0
    flip: bool = False

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        b, c, h, w = x.shape  # (B, C, H, W)
        if self.padding:
            p = self.padding
            padded = torch.nn.functional.pad(x, (p, p, p, p))  # (B, C, H+2p, W+2p)
            dy, dx = torch.randint(0, 2 * p + 1, (2, b), generator=generator, device=x.device)
            rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
            cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
            batch = torch.arange(b, device=x.device)[:, None, None, None]
            chan = torch.arange(c, device=x.device)[None, :, None, None]
            x = padded[batch, chan, rows, cols]  # (B, C, H, W)
        if self.flip:
            mask = torch.rand(b, generator=generator, device=x.device) < 0.5  # (B,)
            x = torch.where(mask[:, None, None, None], x.flip(3), x)
        return x


@dataclass
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    augment: Augment = field(default_factory=Augment)
    _on_device: dict = field(default_factory=dict, repr=False)

    @property
    def in_channels(self) -> int:
        return self.train.images.shape[1]

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {name!r}")
        return getattr(self, name)

    def loader(self, split: str, batch_size: int, *, shuffle: bool = False, seed: int = 0,
               device: torch.device | str = "cpu", resident: bool | None = None, num_workers: int = 0):
        """Batches of one split: a :class:`DeviceLoader` over a copy of the split kept on ``device``
        (made once per device), or with ``resident=False`` a plain DataLoader over host tensors.
        ``resident=None``: on the device when the split fits in half of its free memory."""
        data = self.split(split)
        if resident is None:
            resident = _fits(data, torch.device(device))
        if not resident:
            gen = torch.Generator().manual_seed(seed)
            return DataLoader(TensorDataset(data.images, data.labels), batch_size=batch_size, shuffle=shuffle,
                              generator=gen, num_workers=num_workers, pin_memory=torch.device(device).type == "cuda")
        key = (split, str(torch.device(device)))
        if key not in self._on_device:
            self._on_device[key] = data.to(device)
        return DeviceLoader(self._on_device[key], batch_size, shuffle=shuffle, seed=seed)


class DeviceLoader:
    """Batches ``(x (B, C, H, W), y (B,))`` of a split whose tensors already live on the device.
    With ``shuffle`` each pass draws a new permutation from a generator seeded once with ``seed``:
    two loaders made with the same seed serve the same batches in the same order."""

    def __init__(self, data: Split, batch_size: int, *, shuffle: bool = False, seed: int = 0):
        self.data, self.batch_size, self.shuffle = data, batch_size, shuffle
        self.generator = torch.Generator(device=data.images.device).manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.data) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.data)
        device = self.data.images.device
        order = (torch.randperm(n, generator=self.generator, device=device) if self.shuffle
                 else torch.arange(n, device=device))
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield self.data.images[idx], self.data.labels[idx]


def _fits(data: Split, device: torch.device) -> bool:
    if device.type != "cuda":
        return True  # host memory already holds it
    free, _ = torch.cuda.mem_get_info(device)
    return data.images.nbytes + data.labels.nbytes < free // 2


# --------------------------------------------------------------------------- builders
def _normalise(images: np.ndarray | Tensor, mean, std) -> Tensor:
    """uint8 (N, H, W, C) or float [0, 1] (N, C, H, W) -> normalised float32 (N, C, H, W)."""
    x = torch.as_tensor(images)
    if x.dtype == torch.uint8:
        x = x.permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(list(mean), dtype=torch.float32)[None, :, None, None]
    std = torch.tensor(list(std), dtype=torch.float32)[None, :, None, None]
    return ((x - mean) / std).contiguous()


def _permuted_splits(images: Tensor, labels: Tensor, val: int, test: int, seed: int):
    """One fixed permutation (``seed``): first ``test`` images test, next ``val`` val, rest train."""
    n = len(labels)
    for key, value in (("val", val), ("test", test), ("seed", seed)):
        if type(value) is not int:  # the schema types dataset.split as a plain dict: a string arrives here
            raise ValueError(f"dataset.split.{key}: {value!r} must be an integer"
                             f"{' (a seed)' if key == 'seed' else ' (an image count >= 0)'}")
    if val < 0 or test < 0:
        raise ValueError(f"dataset.split: val={val} and test={test} must be image counts (>= 0)")
    if val + test >= n:
        raise ValueError(f"dataset.split asks for val={val} + test={test} held-out images but the dataset has only "
                         f"{n}, leaving none to train on; lower dataset.split.val / dataset.split.test or add images")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    te, va, tr = order[:test], order[test:test + val], order[test + val:]
    return Split(images[tr], labels[tr]), Split(images[va], labels[va]), Split(images[te], labels[te])


def _cifar(cfg) -> Dataset:
    from torchvision import datasets

    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[cfg.name]
    root = Path(cfg.root).expanduser()
    try:
        train = cls(str(root), train=True, download=cfg.download)
        test = cls(str(root), train=False, download=cfg.download)
    except RuntimeError as exc:
        raise FileNotFoundError(
            f"{cfg.name} not found (or corrupted) under {str(root / cls.base_folder)!r}. Put the python "
            f"version of the dataset there, point dataset.root at it, or pass dataset.download=true "
            f"to fetch it ({exc})") from exc
    except OSError as exc:  # the download failed (offline: URLError), or root cannot be written or read
        raise FileNotFoundError(
            f"{cfg.name} could not be {'downloaded to' if cfg.download else 'read from'} "
            f"{str(root / cls.base_folder)!r} ({type(exc).__name__}: {exc}). Without internet access, fetch the "
            f"python version of the dataset elsewhere, put it there and set dataset.download=false") from exc
    x = _normalise(train.data, cfg.mean, cfg.std)  # (50000, 3, 32, 32)
    y = torch.as_tensor(train.targets, dtype=torch.long)
    n_val = cfg.val_size
    if not 0 < n_val < len(y):
        raise ValueError(f"dataset.val_size must be in (0, {len(y)}), got {n_val}")
    return Dataset(
        name=cfg.name,
        train=Split(x[:-n_val], y[:-n_val]),
        val=Split(x[-n_val:], y[-n_val:]),  # the last val_size training images (reference code)
        test=Split(_normalise(test.data, cfg.mean, cfg.std), torch.as_tensor(test.targets, dtype=torch.long)),
        num_classes=cfg.num_classes,
        augment=Augment(**cfg.augment),
    )


def _digits(cfg) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = _normalise(torch.as_tensor(d.images, dtype=torch.float32)[:, None] / 16.0, cfg.mean, cfg.std)  # (1797, 1, 8, 8)
    y = torch.as_tensor(d.target, dtype=torch.long)
    train, val, test = _permuted_splits(x, y, cfg.split.val, cfg.split.test, cfg.split.seed)
    return Dataset(cfg.name, train, val, test, cfg.num_classes, Augment(**cfg.augment))


# full scale of the PIL modes that are not 8-bit: 16-bit and 32-bit integer images are read as 16-bit
# (a 16-bit PNG opens as I;16 or I), float images as 0..1; each is rescaled to 0..255 before RGB, which
# would otherwise clip them (a 16-bit image turned near-white)
_FULL_SCALE = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}


def _rgb(path: str):
    """The image at ``path`` as 8-bit RGB (the 16-bit, 32-bit and float modes rescaled, not clipped)."""
    from PIL import Image

    with open(path, "rb") as f:
        img = Image.open(f)
        img.load()
    if img.mode in _FULL_SCALE:
        scaled = np.asarray(img, dtype=np.float64) * (255.0 / _FULL_SCALE[img.mode])
        img = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")


def _ImageFolder(*args, **kwargs):
    """torchvision's ImageFolder whose classes are the sub-folders not starting with '.'
    (``.ipynb_checkpoints`` and other hidden folders are not classes)."""
    from torchvision import datasets

    class ImageFolder(datasets.ImageFolder):
        @staticmethod
        def find_classes(directory):
            classes, _ = datasets.folder.find_classes(directory)
            classes = [c for c in classes if not c.startswith(".")]
            if not classes:
                raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
            return classes, {c: i for i, c in enumerate(classes)}

    return ImageFolder(*args, **kwargs)


def _image_folder(cfg) -> Dataset:
    from torchvision import transforms

    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist; set dataset.root to a folder "
                                f"with one sub-folder of images per class")
    tf = transforms.Compose([transforms.Resize(cfg.image_size), transforms.CenterCrop(cfg.image_size),
                             transforms.ToTensor()])

    def item(ds, i: int) -> tuple[Tensor, int]:
        try:
            return ds[i]
        except OSError as exc:  # PIL.UnidentifiedImageError, a truncated file, ...
            raise ValueError(f"image {ds.samples[i][0]!r} cannot be read ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0]}); delete or replace it") from exc

    def read(folder: Path) -> tuple[Tensor, Tensor, list[str]]:
        ds = _ImageFolder(str(folder), transform=tf, loader=_rgb)
        xs, ys = zip(*[item(ds, i) for i in range(len(ds))])
        return _normalise(torch.stack(xs), cfg.mean, cfg.std), torch.as_tensor(ys, dtype=torch.long), ds.classes

    x, y, classes = read(root)
    if cfg.get("test_root"):
        train, val, _ = _permuted_splits(x, y, cfg.split.val, 0, cfg.split.seed)
        tx, ty, test_classes = read(Path(cfg.test_root).expanduser())
        if test_classes != classes:
            raise ValueError(f"test_root classes {test_classes} differ from root classes {classes}")
        test = Split(tx, ty)
    else:
        train, val, test = _permuted_splits(x, y, cfg.split.val, cfg.split.test, cfg.split.seed)
    return Dataset(cfg.name, train, val, test, len(classes), Augment(**cfg.augment))


def _synthetic(cfg) -> Dataset:
    """Standard-normal images (N, *shape) plus a per-class colour shift (num_classes, C) ~ N(0, signal²)."""
    g = torch.Generator().manual_seed(cfg.split.seed)
    shift = cfg.signal * torch.randn(cfg.num_classes, cfg.shape[0], 1, 1, generator=g)  # (classes, C, 1, 1)

    def split(n: int) -> Split:
        y = torch.randint(0, cfg.num_classes, (n,), generator=g)
        return Split(_normalise(torch.randn(n, *cfg.shape, generator=g) + shift[y], cfg.mean, cfg.std), y)

    train, val, test = split(cfg.split.train), split(cfg.split.val), split(cfg.split.test)
    return Dataset(cfg.name, train, val, test, cfg.num_classes, Augment(**cfg.augment))


_BUILDERS = {"cifar10": _cifar, "cifar100": _cifar, "digits": _digits, "imagefolder": _image_folder,
             "synthetic": _synthetic}


def load(cfg) -> Dataset:
    """The dataset described by a ``conf/dataset/*.yaml`` node (``cfg.name`` picks the builder),
    refused with ``ValueError`` when it cannot support a run (:func:`check`)."""
    if cfg.name not in _BUILDERS:
        raise ValueError(f"unknown dataset {cfg.name!r}; known: {', '.join(sorted(_BUILDERS))}")
    return check(_BUILDERS[cfg.name](cfg))


def check(ds: Dataset) -> Dataset:
    """The minimums of a run: at least 2 classes (one class makes every student perfect), a
    non-empty validation and test split, and at least one training image of every class (a teacher
    cannot learn a class it never sees). Labels must lie in ``[0, num_classes)``."""
    where = f"dataset {ds.name!r}"
    if ds.num_classes < 2:
        raise ValueError(f"{where} has {ds.num_classes} class(es); a run needs at least 2 (an image folder "
                         f"needs one sub-folder of images per class)")
    for name in ("train", "val", "test"):
        split = ds.split(name)
        if len(split) == 0:
            raise ValueError(f"{where}: the {name} split is empty; give it images (dataset.split.{name} / "
                             f"dataset.val_size for val and test, more images for train)")
        if split.labels.min() < 0 or split.labels.max() >= ds.num_classes:
            raise ValueError(f"{where}: the {name} split holds labels outside [0, {ds.num_classes}); "
                             f"does dataset.num_classes match the data?")
    counts = torch.bincount(ds.train.labels, minlength=ds.num_classes)  # (num_classes,)
    missing = (counts == 0).nonzero().flatten().tolist()
    if missing:
        raise ValueError(f"{where}: the train split holds no image of class(es) {missing[:10]} "
                         f"({len(ds.train)} training images for {ds.num_classes} classes); the train split needs "
                         f"at least one image of every class: add images or hold out fewer (dataset.split.val / .test)")
    return ds
