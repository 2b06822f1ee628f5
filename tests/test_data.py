"""Datasets through the real loaders: CIFAR in its on-disk format, digits, ImageFolder; loader and augmentation."""
import pickle

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar

from nascomp import config, data

N_PER_BATCH = 8  # 5 train batches -> 40 training images, 8 test images


def _write_cifar(root, folder="cifar-10-batches-py", num_classes=10):
    """A tiny CIFAR-10 in the pickled python format; image i has every pixel equal to i."""
    d = root / folder
    d.mkdir(parents=True)
    n = 0
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in files:
        pixels = np.repeat(np.arange(n, n + N_PER_BATCH, dtype=np.uint8), 3072).reshape(N_PER_BATCH, 3072)
        batch = {"data": pixels, "labels": [i % num_classes for i in range(n, n + N_PER_BATCH)]}
        (d / name).write_bytes(pickle.dumps(batch))
        n += N_PER_BATCH
    (d / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(num_classes)]}))
    return root


@pytest.fixture
def cifar_root(tmp_path, monkeypatch):
    # Bypass only the md5 comparison: the files must still exist.
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: __import__("os").path.isfile(fpath))
    return _write_cifar(tmp_path)


def test_cifar_split_is_last_val_size_images(cifar_root):
    cfg = config.group("dataset", "cifar10", [f"root={cifar_root}", "val_size=10"])
    ds = data.load(cfg)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (30, 10, 8)
    assert ds.train.images.shape == (30, 3, 32, 32) and ds.in_channels == 3
    mean, std = torch.tensor(list(cfg.mean)), torch.tensor(list(cfg.std))
    raw = lambda split: (split.images[:, :, 0, 0] * std + mean) * 255  # (N, 3) the pixel value = image index
    assert torch.allclose(raw(ds.train)[:, 0], torch.arange(30.0), atol=1e-3)
    assert torch.allclose(raw(ds.val)[:, 0], torch.arange(30.0, 40.0), atol=1e-3)  # the last 10
    assert torch.allclose(raw(ds.test)[:, 2], torch.arange(40.0, 48.0), atol=1e-3)
    assert ds.val.labels.tolist() == [i % 10 for i in range(30, 40)]


def test_cifar_missing_without_download_says_where_and_what_to_do(tmp_path):
    cfg = config.group("dataset", "cifar100", [f"root={tmp_path / 'nowhere'}"])
    with pytest.raises(FileNotFoundError, match=r"nowhere/cifar-100-python.*download=true"):
        data.load(cfg)


def test_cifar100_has_its_own_normalisation():
    c10, c100 = config.group("dataset", "cifar10"), config.group("dataset", "cifar100")
    assert list(c10.mean) != list(c100.mean) and c100.num_classes == 100 and c10.val_size == c100.val_size == 5000


def test_digits_split_is_fixed_disjoint_and_normalised():
    cfg = config.group("dataset", "digits")
    a, b = data.load(cfg), data.load(cfg)
    assert (len(a.train), len(a.val), len(a.test)) == (1200, 300, 297)
    assert a.train.images.shape == (1200, 1, 8, 8) and a.num_classes == 10
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.test.labels, b.test.labels)
    rows = lambda s: {tuple(r) for r in s.images.flatten(1).tolist()}
    assert not rows(a.val) & rows(a.test)  # no image in two splits (digits has few exact duplicates)
    assert abs(a.train.images.mean().item()) < 0.05 and abs(a.train.images.std().item() - 1) < 0.05


def test_image_folder(tmp_path):
    from PIL import Image

    for c, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        (tmp_path / f"class{c}").mkdir()
        for i in range(6):
            Image.new("RGB", (20, 12), colour).save(tmp_path / f"class{c}" / f"{i}.png")
    cfg = config.group("dataset", "imagefolder", [f"root={tmp_path}", "image_size=8", "split.val=2", "split.test=3"])
    ds = data.load(cfg)
    assert (len(ds.train), len(ds.val), len(ds.test), ds.num_classes) == (7, 2, 3, 2)
    assert ds.train.images.shape[1:] == (3, 8, 8)
    red = ds.train.labels == 0  # class0 is red: channel 0 above channel 2 everywhere
    assert (ds.train.images[red, 0] > ds.train.images[red, 2]).all()


def test_image_folder_rescales_16_bit_images_and_skips_hidden_folders(tmp_path):
    """A 16-bit grayscale PNG (mode I;16) was clipped to near-white by convert("RGB"), and a stray
    .ipynb_checkpoints folder became a class."""
    from PIL import Image

    for c, level in enumerate([1000, 60000]):  # of 65535: 4 and 233 in 8 bits
        (tmp_path / f"class{c}").mkdir()
        for i in range(6):
            Image.fromarray(np.full((8, 8), level, dtype=np.uint16)).save(tmp_path / f"class{c}" / f"{i}.png")
    assert Image.open(tmp_path / "class0" / "0.png").mode == "I;16"
    (tmp_path / ".ipynb_checkpoints").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / ".ipynb_checkpoints" / "0-checkpoint.png")
    cfg = config.group("dataset", "imagefolder", [f"root={tmp_path}", "image_size=8", "split.val=2", "split.test=2"])
    ds = data.load(cfg)
    assert ds.num_classes == 2 and len(ds.train) + len(ds.val) + len(ds.test) == 12
    mean, std = torch.tensor(cfg.mean).view(1, 3, 1, 1), torch.tensor(cfg.std).view(1, 3, 1, 1)
    raw = torch.cat([s.images for s in (ds.train, ds.val, ds.test)]) * std + mean  # (12, 3, 8, 8) in [0, 1]
    labels = torch.cat([s.labels for s in (ds.train, ds.val, ds.test)])
    for c, level in enumerate([1000, 60000]):
        assert torch.allclose(raw[labels == c], torch.tensor(round(level * 255 / 65535) / 255), atol=1e-5)


def test_device_loader_covers_the_split_and_repeats_with_the_seed():
    split = data.Split(torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10))
    loader = data.DeviceLoader(split, 4, shuffle=True, seed=3)
    assert len(loader) == 3
    first = [y.tolist() for _, y in loader]
    assert sorted(sum(first, [])) == list(range(10)) and [len(b) for b in first] == [4, 4, 2]
    assert first == [y.tolist() for _, y in data.DeviceLoader(split, 4, shuffle=True, seed=3)]
    assert first != [y.tolist() for _, y in loader]  # next epoch, next permutation


def test_augment_crops_a_shifted_window_and_flips():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(64, 1, 1, 1)  # (64, 1, 4, 4)
    out = data.Augment(padding=1, flip=True)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x[0], (1, 1, 1, 1))[0]  # (6, 6)
    windows = {tuple(w.flatten().tolist()) for dy in range(3) for dx in range(3)
               for w in (padded[dy:dy + 4, dx:dx + 4], padded[dy:dy + 4, dx:dx + 4].flip(1))}
    got = {tuple(o.flatten().tolist()) for o in out[:, 0]}
    assert got <= windows and len(got) > 9  # only legal windows, and both flips occur
    assert torch.equal(data.Augment()(x), x)


def test_plain_dataloader_serves_the_same_batches_as_the_device_loader():
    ds = data.load(config.group("dataset", "digits"))
    resident, plain = ds.loader("val", 64), ds.loader("val", 64, resident=False)
    assert isinstance(resident, data.DeviceLoader) and isinstance(plain, torch.utils.data.DataLoader)
    assert len(resident) == len(plain) == 5
    for (xa, ya), (xb, yb) in zip(resident, plain):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def _folder(root, images_per_class, size=(10, 10)):
    """An ImageFolder of tiny PNGs: class c's images are filled with grey level 40 c + i."""
    from PIL import Image

    for c, n in enumerate(images_per_class):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", size, (40 * c + i,) * 3).save(root / f"class{c}" / f"{i}.png")
    return root


@pytest.mark.parametrize("counts, split, message", [
    ([6], ["split.val=1", "split.test=1"], r"has 1 class\(es\); a run needs at least 2"),
    ([1, 1, 1], ["split.val=1", "split.test=1"], r"the train split holds no image of class\(es\) \[\d(, \d)?\] \(1 training images for 3 classes\)"),
    ([2, 2], ["split.val=2", "split.test=2"], r"val=2 \+ test=2 held-out images but the dataset has only 4, leaving none to train on"),
    ([4, 4], ["split.val=0", "split.test=2"], r"the val split is empty"),
    ([4, 4], ["split.val=2", "split.test=0"], r"the test split is empty"),
])
def test_image_folder_that_cannot_support_a_run_is_refused(tmp_path, counts, split, message):
    cfg = config.group("dataset", "imagefolder", [f"root={_folder(tmp_path / 'images', counts)}", "image_size=8", *split])
    with pytest.raises(ValueError, match=message):
        data.load(cfg)


def test_smallest_image_folder_that_supports_a_run_loads(tmp_path):
    cfg = config.group("dataset", "imagefolder", [f"root={_folder(tmp_path / 'images', [3, 3])}", "image_size=8",
                                                  "split.val=1", "split.test=1"])
    ds = data.load(cfg)  # 2 classes of 3: whichever 2 are held out, every class keeps a training image
    assert (len(ds.train), len(ds.val), len(ds.test), ds.num_classes) == (4, 1, 1, 2)
    assert set(ds.train.labels.tolist()) == {0, 1}


def test_digits_with_an_empty_split_is_refused():
    with pytest.raises(ValueError, match="the val split is empty"):
        data.load(config.group("dataset", "digits", ["split.val=0"]))


@pytest.mark.parametrize("where", ["root", "test_root"])
def test_an_unreadable_image_is_named_with_what_to_do(tmp_path, where):
    """A corrupt file (PIL's UnidentifiedImageError, an OSError) is a ValueError naming it, in either folder."""
    root = _folder(tmp_path / "images", [4, 4])
    test_root = _folder(tmp_path / "test", [2, 2])
    broken = (root if where == "root" else test_root) / "class1" / "broken.png"
    broken.write_bytes(b"not a png at all")
    cfg = config.group("dataset", "imagefolder", [f"root={root}", f"test_root={test_root}", "image_size=8",
                                                  "split.val=2", "split.test=0"])
    with pytest.raises(ValueError, match=rf"image '{broken}' cannot be read \(UnidentifiedImageError: cannot identify "
                                         rf"image file .*\); delete or replace it"):
        data.load(cfg)
    broken.unlink()
    ds = data.load(cfg)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (6, 2, 4)


def test_cifar_download_that_fails_offline_says_what_to_do(tmp_path, monkeypatch):
    """The download's URLError (an OSError) is a FileNotFoundError naming the folder, the cause and the fix."""
    import urllib.error

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    cfg = config.group("dataset", "cifar10", [f"root={tmp_path / 'dl'}", "download=true"])
    with pytest.raises(FileNotFoundError, match=rf"cifar10 could not be downloaded to '{tmp_path / 'dl'}/cifar-10-batches-py' "
                                                r"\(URLError: <urlopen error \[Errno -2\] Name or service not known>\)\. "
                                                r"Without internet access, .*set dataset.download=false"):
        data.load(cfg)


@pytest.mark.parametrize("override, message", [
    ("split.val=abc", r"dataset.split.val: 'abc' must be an integer \(an image count >= 0\)"),
    ("split.seed=x", r"dataset.split.seed: 'x' must be an integer \(a seed\)"),
])
def test_a_split_that_is_not_an_integer_is_named(override, message):
    """The schema types dataset.split as a plain dict, so the loader checks it (once a TypeError from '<')."""
    with pytest.raises(ValueError, match=message):
        data.load(config.group("dataset", "digits", [override]))
