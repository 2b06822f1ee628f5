"""Proxy-training throughput: (a) a plain PyTorch loop, (b) StudentModule one student at a time,
(c) a cohort of K students sharing one teacher forward pass per batch (nascomp.training.proxy_train).

All three train the same K students (same initial weights) from the same teacher on the same data
with the proxy recipe (conf/training/proxy.yaml: mse_logits, Adam 1e-3, wd 5e-4, batch 128,
crop+flip on the device, validation each epoch, best-epoch weights kept), bf16 autocast and
channels_last on CUDA. Data: ``dataset=synthetic`` (random CIFAR-shaped tensors, 3x32x32, 10
classes); throughput does not depend on the pixel values. Images/s = K * epochs * n_train / wall seconds, the best of
--repeats interleaved runs after a warm-up, Trainer construction and validation included.

    nice -n 10 python -m benchmarks.throughput                # CPU, and CUDA when present
    python -m benchmarks.throughput --device cuda --epochs 3 --n-train 45000 --n-val 5000

Targets: b/a >= 0.9 (Lightning costs at most 10%), c/b >= 1.5 with a teacher >= 5x the students.
Measured 2026-11-30, `nice -n 10 python -m benchmarks.throughput` (defaults: K=8, 2 epochs of 2048
train + 1024 val images, best of 3 interleaved runs), 1 thread of a 2-core CPU shared with other jobs,
torch 2.14, Lightning 2.6; teacher resnet18 x0.25 (0.70M), students resnet18 x0.1 (0.113M, 6.2x smaller):
| mode | seconds (best) | all runs | images/s |
|---|---|---|---|
| (a) plain PyTorch loop | 61.1 | 87.6 70.0 61.1 | 536 |
| (b) StudentModule, one at a time | 64.0 | 83.8 64.6 64.0 | 512 |
| (c) cohort of K=8 | 30.5 | 48.8 30.5 34.8 | 1076 |
b/a = 0.96, c/b = 2.10. With `--teacher-width 0.5 --student-width 0.2 --n-train 1024 --n-val 512`
(2.80M teacher, 0.447M students, 6.3x): a 59.9 s (273 img/s), b 63.1 s (260), c 37.4 s (438);
b/a = 0.95, c/b = 1.68. On one H200 (2026-12-04, README "GPU check"): defaults of the GPU check
(K=8, 1 epoch of 8192) a 8139, b 5189, c 9261 img/s (b/a 0.64, c/b 1.78); `--k 4 --epochs 2 --n-train 16384
--n-val 2048 --repeats 1`: a 7677, b 5618, c 7582 (b/a 0.73): CPU-bound kernel launches at batch 128.
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

from nascomp import config, data, teachers, training
from nascomp.data import Dataset
from nascomp.student_module import mse_logits

WIDTHS = {"cpu": (0.25, 0.1), "cuda": (1.0, 0.375)}  # (teacher, students): teacher ~6-7x the params


def synthetic(n_train: int, n_val: int) -> Dataset:
    return data.load(config.group("dataset", "synthetic", [f"split.train={n_train}", f"split.val={n_val}", f"split.test={n_val}"]))


def plain_loop(student, teacher, ds: Dataset, cfg, device: torch.device) -> float:
    """(a) The proxy recipe by hand: best validation accuracy over the epochs."""
    cuda = device.type == "cuda"
    fmt = torch.channels_last if cuda else torch.contiguous_format
    student, teacher = student.to(device, memory_format=fmt), teacher.to(device, memory_format=fmt).eval()
    opt = torch.optim.Adam(student.parameters(), lr=cfg.optimizer.lr, weight_decay=cfg.optimizer.weight_decay)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    train = ds.loader("train", cfg.batch_size, shuffle=True, seed=cfg.seed, device=device)
    val = ds.loader("val", cfg.batch_size, device=device)
    autocast = torch.autocast("cuda", torch.bfloat16, enabled=cuda)
    best, best_state = -1.0, None
    for _ in range(cfg.epochs):
        student.train()
        for x, _y in train:
            x = ds.augment(x, gen).contiguous(memory_format=fmt)
            with autocast:
                with torch.no_grad():
                    t = teacher(x)
                loss = mse_logits(student(x), t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        student.eval()
        correct = torch.zeros((), device=device)
        with torch.no_grad(), autocast:
            for x, y in val:
                correct += (student(x.contiguous(memory_format=fmt)).argmax(1) == y).sum()
        acc = correct.item() / len(ds.val)
        if acc > best:
            best, best_state = acc, {k: v.detach().clone() for k, v in student.state_dict().items()}
    student.load_state_dict(best_state)
    student.cpu()
    return best


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench(device: torch.device, args) -> dict:
    """Time (a), (b), (c) (``args``: the CLI's options) and print the table; returns the ratios b/a and
    c/b, and per mode the best seconds, all runs and images/s."""
    t_width, s_width = args.teacher_width or WIDTHS[device.type][0], args.student_width or WIDTHS[device.type][1]
    torch.manual_seed(0)
    teacher = teachers.create(args.teacher, width=t_width)
    students = [teachers.create(args.student, width=s_width) for _ in range(args.k)]
    n_t, n_s = (sum(p.numel() for p in m.parameters()) for m in (teacher, students[0]))
    ds = synthetic(args.n_train, args.n_val)
    cfg = config.group("training", "proxy", [f"epochs={args.epochs}", f"trainer.accelerator={device.type}"])
    warm = config.group("training", "proxy", ["epochs=1", f"trainer.accelerator={device.type}"])
    fresh = lambda: [copy.deepcopy(s) for s in students]
    plain_loop(fresh()[0], teacher, ds, warm, device)
    training.proxy_train(fresh()[:2], teacher, ds, warm)
    runs = {
        "a": lambda: [plain_loop(s, teacher, ds, cfg, device) for s in fresh()],
        "b": lambda: [training.proxy_train(s, teacher, ds, cfg) for s in fresh()],
        "c": lambda: training.proxy_train(fresh(), teacher, ds, cfg),
    }
    times = {key: [] for key in runs}
    for _ in range(args.repeats):  # interleaved, so that load from other processes hits all modes alike
        for key, run in runs.items():
            times[key].append(timed(run, device))
    seconds = {key: min(t) for key, t in times.items()}
    images = args.k * args.epochs * args.n_train
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"\n{name}: teacher {args.teacher} x{t_width} ({n_t / 1e6:.2f}M params), {args.k} students "
          f"{args.student} x{s_width} ({n_s / 1e6:.3f}M, teacher/student {n_t / n_s:.1f}x), "
          f"{args.epochs} epochs of {args.n_train} train + {args.n_val} val images")
    print(f"best of {args.repeats} interleaved runs")
    print("| mode | seconds (best) | all runs | images/s |\n|---|---|---|---|")
    labels = {"a": "(a) plain PyTorch loop", "b": "(b) StudentModule, one at a time", "c": f"(c) cohort of K={args.k}"}
    for key, s in seconds.items():
        print(f"| {labels[key]} | {s:.1f} | {' '.join(f'{t:.1f}' for t in times[key])} | {images / s:.0f} |")
    b_a, c_b = seconds["a"] / seconds["b"], seconds["b"] / seconds["c"]
    print(f"b/a = {b_a:.2f} (target >= 0.9)   c/b = {c_b:.2f} (target >= 1.5)")
    return {"b/a": b_a, "c/b": c_b, "teacher_params": n_t, "student_params": n_s, "images": images,
            "modes": {key: {"label": labels[key], "seconds": s, "runs": times[key], "images_per_s": images / s}
                      for key, s in seconds.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", action="append", choices=["cpu", "cuda"], help="default: cpu, and cuda when present")
    parser.add_argument("--k", type=int, default=8, help="students per cohort")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per mode; the best is reported")
    parser.add_argument("--n-train", type=int, default=2048)
    parser.add_argument("--n-val", type=int, default=1024)
    parser.add_argument("--teacher", default="resnet18")
    parser.add_argument("--student", default="resnet18")
    parser.add_argument("--teacher-width", type=float, help=f"default per device: {WIDTHS}")
    parser.add_argument("--student-width", type=float)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (small convs: more threads mostly contend)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for device in args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else [])):
        bench(torch.device(device), args)


if __name__ == "__main__":
    main()
