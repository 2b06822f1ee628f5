"""benchmarks/gpu_check.py at tiny sizes on the CPU (the code paths of the GPU run), and the synthetic
dataset it trains on."""
import json
import math

import pytest
import torch

from benchmarks import gpu_check
from nascomp import config, data
from nascomp.schema import validate


@pytest.mark.slow
def test_gpu_check_tiny_on_cpu(tmp_path, capsys, one_thread):
    report = gpu_check.main(["--device", "cpu", "--tiny", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == json.loads(json.dumps(report))
    table = (tmp_path / "gpu_check.md").read_text()
    assert table in capsys.readouterr().out  # printed too
    sections = report["sections"]
    assert list(sections) == list(gpu_check.SECTIONS)
    assert {name: s["status"] for name, s in sections.items()} == dict.fromkeys(gpu_check.SECTIONS, "ok")
    for name, s in sections.items():
        assert s["seconds"] > 0 and f"| {name} | " in table

    tp = sections["throughput"]["result"]
    sizes = gpu_check.SIZES["tiny"]["throughput"]
    assert tp["images"] == sizes["k"] * sizes["epochs"] * sizes["n_train"]
    for mode in "abc":
        m = tp["modes"][mode]
        assert m["images_per_s"] > 0 and m["images_per_s"] == pytest.approx(tp["images"] / m["seconds"])
    assert tp["b/a"] == pytest.approx(tp["modes"]["a"]["seconds"] / tp["modes"]["b"]["seconds"])

    mem = sections["memory"]["result"]
    assert [r["evaluated"] for r in mem["rows"]] == [2, 4] and mem["candidates"] == 4
    warm = next(r for r in mem["rows"] if r["evaluated"] == mem["warm_at"])
    assert mem["rss_mb_growth"] == pytest.approx(mem["rows"][-1]["rss_mb"] - warm["rss_mb"])
    assert all(r["rss_mb"] > 0 for r in mem["rows"])

    oom = sections["oom"]["result"]
    huge, *others = oom["students"]
    assert huge["huge"] and huge["failed"] and huge["f"] == 0.0 and "can't allocate memory" in huge["error"]
    assert len(others) == 2 and all(not s["failed"] and s["error"] is None and s["f"] > 0 for s in others)
    assert (oom["failed"], oom["evaluated"], oom["recovered"]) == (1, 2, True)

    ddp = sections["ddp"]["result"]
    assert (ddp["devices"], ddp["backend"], ddp["train_images"]) == (1, "gloo", 256)
    assert ddp["seconds"] > 0 and 0 <= ddp["val_accuracy"] <= 1 and 0 <= ddp["test_accuracy"] <= 1

    paper = sections["paper"]["result"]
    k = paper["k"]
    assert len(paper["students"]) == k == 2 and all(s["error"] is None and s["f"] > 0 for s in paper["students"])
    assert paper["teacher"]["val_accuracy"] > 0.1  # above chance (10 classes)
    p = paper["projection"]
    assert p["seconds_per_candidate"] == pytest.approx(paper["cohort_seconds"] / k)
    assert p["kernel_steps"] == math.ceil(160 / k) - 1 == 79 and p["kernel_n"] == 6 and p["kernel_step_seconds"] > 0
    assert p["hours"] > 0
    assert p["hours"] == pytest.approx((160 * p["seconds_per_candidate"] + 79 * p["kernel_step_seconds"]) / 3600)
    assert p["met"] == (p["hours"] <= 1.0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_gpu_check_without_cuda_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        gpu_check.main(["--out", str(tmp_path)])
    assert exc.value.code == 2 and "--device cpu --tiny" in capsys.readouterr().err
    assert not (tmp_path / "gpu_check.json").exists()


def test_synthetic_dataset_sizes_seed_and_signal():
    cfg = config.group("dataset", "synthetic", ["split.train=2000", "split.val=500", "split.test=300"])
    ds = data.load(cfg)
    assert ds.train.images.shape == (2000, 3, 32, 32) and ds.val.images.shape == (500, 3, 32, 32)
    assert len(ds.test) == 300 and ds.num_classes == 10 and ds.train.labels.dtype == torch.long
    assert set(ds.train.labels.tolist()) == set(range(10))
    assert torch.equal(data.load(cfg).val.images, ds.val.images)  # the seed fixes every split
    other = data.load(config.group("dataset", "synthetic", ["split.train=2000", "split.val=500", "split.test=300", "split.seed=1"]))
    assert not torch.equal(other.train.images, ds.train.images)
    # the signal: each class's mean colour; nearest class mean on the val split is far above chance (0.1)
    colour = lambda split: split.images.mean((2, 3))  # (N, C)
    centres = torch.stack([colour(ds.train)[ds.train.labels == c].mean(0) for c in range(10)])
    accuracy = (torch.cdist(colour(ds.val), centres).argmin(1) == ds.val.labels).float().mean().item()
    assert accuracy > 0.5
    noise = data.load(config.group("dataset", "synthetic", ["split.train=2000", "split.val=500", "split.test=300", "signal=0"]))
    assert abs(noise.train.images.mean().item()) < 0.01 and noise.train.images.std().item() == pytest.approx(1.0, abs=0.01)


def test_synthetic_dataset_is_a_valid_choice():
    cfg = validate(config.compose(["dataset=synthetic", "dataset.split.train=100"]))
    assert cfg.dataset.name == "synthetic" and list(cfg.dataset.shape) == [3, 32, 32] and cfg.dataset.split.train == 100


def test_readme_gpu_table_is_the_committed_run():
    """The README's H200 table is ``markdown`` of the committed gpu_check.json, and its projection's
    arithmetic holds: (160 x seconds per candidate + 19 x kernel step) / 3600."""
    report = json.loads((gpu_check.DEFAULT_OUT / "gpu_check.json").read_text())
    assert report["device"] == "NVIDIA H200" and not report["tiny"]
    table = gpu_check.markdown(report)
    assert table == (gpu_check.DEFAULT_OUT / "gpu_check.md").read_text()
    readme = (gpu_check.ROOT / "README.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(gpu_check.SECTIONS)
    for row in rows:
        assert row in readme
    p = report["sections"]["paper"]["result"]["projection"]
    assert math.isclose(p["hours"], (160 * p["seconds_per_candidate"] + 19 * p["kernel_step_seconds"]) / 3600)
    assert math.isclose(p["seconds_per_candidate"], report["sections"]["paper"]["result"]["cohort_seconds"] / 8)
