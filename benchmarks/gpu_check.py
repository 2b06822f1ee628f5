"""GPU check: one run that shows the product is ready for a GPU, planned for under 8 minutes on one
H200, writing ``gpu_check.json`` and ``gpu_check.md`` (the table, also printed) to ``--out``.

What it measures, one run of each section (seconds per section printed and recorded):

- throughput: benchmarks/throughput.py's (a) plain PyTorch loop, (b) StudentModule one student at a
  time, (c) a cohort of K = 8 (bf16 autocast and channels_last on CUDA), images/s of each;
- memory: benchmarks/memory.py's 100 random candidates (K = 8 per step) through the run's own
  ``Setup`` and stored evaluator; RSS and torch.cuda.memory_allocated / memory_reserved growth
  from warm-up (the first fifth) to the end;
- out of memory: a cohort of K = 8 whose one deliberately huge student asks the allocator for 16 TiB
  mid-forward (a real CUDA OutOfMemoryError; on the CPU the host allocator's failure, as
  tests/test_faults.py): ``ProxyEvaluator`` retries the cohort one by one; the others get their f;
- DDP: ``full_train`` of one sampled ResNet-18 student with ``trainer=ddp`` over every visible GPU
  (a child process, as Lightning's DDP launcher needs; on the CPU two gloo processes), its seconds
  and accuracies;
- paper scale: ResNet-18 teacher at full width (trained 3 epochs), synthetic CIFAR-shaped data
  (``dataset=synthetic``: 45,000 train, 5,000 val), 10 proxy epochs, K = 8 students of the
  compression space in one cohort, through ``Setup.open_run``; then one ``KernelProposer`` step (on
  the CPU, where the kernels run) on a history of n = 80, the mean over the 19 proposal steps of a
  160-evaluation search (kernel training grows about linearly with n, the acquisition does not
  depend on it; the history past the K real students has synthetic rewards: the cost depends on n,
  not on the values). Projected GPU-hours of a 160-evaluation search =
  (160 x seconds per candidate + 19 x that kernel step) / 3600, the GPU held throughout.
  Target: <= 1 GPU-hour on one H200.

    python -m benchmarks.gpu_check                       # CUDA; --budget-s 480
    python -m benchmarks.gpu_check --device cpu --tiny   # the same code paths in seconds (tests/test_gpu_check.py)

Run once on one H200 (2026-12-04, 391 s; README "GPU check" and benchmarks/results/gpu_check/ hold the
table): every section ran; b/a 0.64 and the projection, 1.39 GPU-hours, missed their targets.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from benchmarks import memory, throughput

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "gpu_check"
SECTIONS = ("throughput", "memory", "oom", "ddp", "paper")
EVALUATIONS, TARGET_HOURS = 160, 1.0  # the projected search and its target on one H200

# Sizes per scale. "gpu": the check on one H200 (budget_s: each section's planned share of 8 minutes);
# "tiny": the same code paths in seconds on a CPU.
SIZES = {
    "gpu": {
        "throughput": {"budget_s": 60, "k": 8, "epochs": 1, "repeats": 2, "n_train": 8192, "n_val": 2048,
                       "teacher_width": None, "student_width": None},  # widths: throughput.WIDTHS["cuda"]
        "memory": {"budget_s": 60, "candidates": 100, "k": 8, "epochs": 1, "teacher_width": 0.5, "overrides": []},
        "oom": {"budget_s": 15, "k": 8, "teacher_width": 0.5, "overrides": []},  # the memory section's teacher
        "ddp": {"budget_s": 45, "devices": -1, "epochs": 2, "width": 1.0, "split": [10000, 2000, 2000]},
        "paper": {"budget_s": 280, "k": 8, "epochs": 10, "width": 1.0, "teacher_epochs": 3, "split": [45000, 5000, 10000],
                  "kernel_n": EVALUATIONS // 2, "overrides": []},
    },
    "tiny": {
        "throughput": {"budget_s": 20, "k": 2, "epochs": 1, "repeats": 1, "n_train": 128, "n_val": 64,
                       "teacher_width": 0.0625, "student_width": 0.03125},
        "memory": {"budget_s": 20, "candidates": 4, "k": 2, "epochs": 1, "teacher_width": 0.25,
                   "overrides": ["teacher_training.epochs=2", "proxy.batch_size=256"]},
        "oom": {"budget_s": 10, "k": 3, "teacher_width": 0.25, "overrides": ["teacher_training.epochs=2", "proxy.batch_size=256"]},
        "ddp": {"budget_s": 30, "devices": 1, "epochs": 1, "width": 0.125, "split": [256, 128, 128]},
        "paper": {"budget_s": 20, "k": 2, "epochs": 1, "width": 0.125, "teacher_epochs": 3, "split": [256, 128, 128],
                  "kernel_n": 6, "overrides": ["dataset.signal=1.0", "teacher_training.batch_size=64",  # a teacher above chance
                                               "search.acquisition.samples=20", "search.acquisition.generations=1",
                                               "kernel.max_steps=3", "kernel.hidden=8"]},
    },
}


def synthetic_overrides(split: list[int]) -> list[str]:
    train, val, test = split
    return ["dataset=synthetic", f"dataset.split.train={train}", f"dataset.split.val={val}", f"dataset.split.test={test}"]


def trainer_overrides(device: torch.device) -> list[str]:
    return ["trainer=auto"] if device.type == "cuda" else ["trainer=cpu"]


def cuda_mb(device: torch.device) -> dict:
    if device.type != "cuda":
        return {}
    return {"cuda_alloc_mb": torch.cuda.memory_allocated() / 2**20, "cuda_reserved_mb": torch.cuda.memory_reserved() / 2**20}


# --------------------------------------------------------------------------- sections
def check_throughput(device: torch.device, size: dict, work: Path) -> dict:
    args = SimpleNamespace(teacher="resnet18", student="resnet18", **{k: v for k, v in size.items() if k != "budget_s"})
    return throughput.bench(device, args)


def check_memory(device: torch.device, size: dict, work: Path) -> dict:
    """Returns the rows and the growth from the first row past a fifth of the candidates to the last."""
    overrides = [f"teacher_dir={work.parent / 'teachers'}", *size["overrides"]]
    setup, evaluator = memory.open_setup(str(work), size["teacher_width"], size["epochs"],
                                         overrides=overrides, cuda=device.type == "cuda")
    rows = list(memory.measure(setup, evaluator, size["candidates"], size["k"]))
    setup.store.close()
    warm = next(r for r in rows if r["evaluated"] >= size["candidates"] // 5)
    growth = {f"{key}_growth": rows[-1][key] - warm[key] for key in rows[-1] if key.endswith("_mb")}
    growth["py_objects_growth"] = rows[-1]["py_objects"] - warm["py_objects"]
    return {"candidates": rows[-1]["evaluated"], "k": size["k"], "warm_at": warm["evaluated"], **growth, "rows": rows}


class Huge:
    """A real candidate whose forward pass first asks the allocator for 16 TiB on the batch's device:
    a genuine out-of-memory error (CUDA's OutOfMemoryError, or the host allocator's RuntimeError)
    raised mid-training, as a student too large for the device would."""

    def __init__(self, arch):
        self.arch, self.key, self.num_params = arch, "huge-" + arch.key, arch.num_params
        self.graph = arch.graph  # its costs are the wrapped candidate's

    def build(self, teacher, inherit):
        net = self.arch.build(teacher, inherit=inherit)

        def allocate(module, args) -> None:
            torch.empty(2**44, dtype=torch.uint8, device=args[0].device)  # 16 TiB: raises

        net.register_forward_pre_hook(allocate)
        return net


def check_oom(device: torch.device, size: dict, work: Path) -> dict:
    """One cohort of k - 1 random students and one ``Huge`` in the memory section's setup (its teacher,
    cached by that section), evaluated by the run's ``ProxyEvaluator``."""
    overrides = [f"teacher_dir={work.parent / 'teachers'}", *size["overrides"]]
    setup, _ = memory.open_setup(str(work), size["teacher_width"], 1, overrides=overrides, cuda=device.type == "cuda")
    rng = np.random.default_rng(1)
    archs = [setup.space.sample(rng) for _ in range(size["k"])]
    cohort = [Huge(archs[0]), *archs[1:]]
    before = cuda_mb(device)
    evals = setup.proxy.evaluate(cohort, 0)
    after = cuda_mb(device)
    setup.store.close()
    students = [{"key": c.key[:17], "huge": isinstance(c, Huge), "failed": e.failed, "f": e.f, "error": e.error}
                for c, e in zip(cohort, evals)]
    failed = [s for s in students if s["failed"]]
    recovered = (len(failed) == 1 and failed[0]["huge"] and memory_error(failed[0]["error"])
                 and all(s["f"] > 0 for s in students if not s["huge"]))
    return {"k": size["k"], "failed": len(failed), "evaluated": len(students) - len(failed), "recovered": recovered,
            "error": failed[0]["error"] if failed else None, "before": before, "after": after, "students": students}


def memory_error(error: str | None) -> bool:
    return bool(error) and ("OutOfMemoryError" in error or "out of memory" in error or "can't allocate memory" in error)


def check_ddp(device: torch.device, size: dict, work: Path, tiny: bool) -> dict:
    """``full_train`` under DDP in a child process (``--ddp-child``); Lightning's launcher starts the
    other ranks by re-running the child's command."""
    out = work / "ddp.json"
    cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--ddp-child", str(out), "--device", device.type,
           *(["--tiny"] if tiny else [])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3 * size["budget_s"] + 60)
    if res.returncode != 0 or not out.is_file():
        raise RuntimeError(f"DDP child exited {res.returncode}: {res.stderr[-2000:]}")
    return {**json.loads(out.read_text()), "process_seconds": time.perf_counter() - start}


def ddp_child(path: str, device: torch.device, size: dict) -> None:
    """Rank 0 writes {seconds, val_accuracy, test_accuracy, devices, epochs} to ``path``."""
    from lightning.pytorch.utilities import rank_zero_only
    from omegaconf import OmegaConf

    from nascomp import data, teachers
    from nascomp.config import compose
    from nascomp.graph import ArchGraph
    from nascomp.pipeline import recipe
    from nascomp.compression_space import CompressionSpace
    from nascomp.training import full_train

    on_cpu = ["trainer.accelerator=cpu", "trainer.precision=32-true"] if device.type == "cpu" else []
    cfg = compose(["logger=none", "space.shrink_groups=width", "space.ops=[remove,shrink,skip]", "trainer=ddp", *on_cpu, f"trainer.devices={size['devices']}", "teacher=resnet18",
                   f"teacher.width={size['width']}", *synthetic_overrides(size["split"]), f"full.epochs={size['epochs']}",
                   "full.trainer.enable_progress_bar=false"])
    dataset = data.load(cfg.dataset)
    torch.manual_seed(cfg.seed)
    teacher = teachers.create(cfg.teacher.name, num_classes=dataset.num_classes, width=cfg.teacher.width)
    space = CompressionSpace(ArchGraph.from_module(teacher, tuple(dataset.train.images.shape[1:])), **OmegaConf.to_container(cfg.space))
    arch = space.sample(np.random.default_rng(cfg.seed))
    start = time.perf_counter()
    result = full_train(arch.build(teacher, inherit=cfg.inherit), dataset, recipe(cfg, "full"))
    seconds = time.perf_counter() - start
    if rank_zero_only.rank == 0:
        devices = torch.cuda.device_count() if size["devices"] == -1 else size["devices"]
        Path(path).write_text(json.dumps({"seconds": seconds, "val_accuracy": result.val_accuracy, "test_accuracy": result.test_accuracy,
                                          "devices": devices, "backend": "nccl" if device.type == "cuda" else "gloo",
                                          "epochs": size["epochs"], "train_images": len(dataset.train),
                                          "student_params": arch.num_params}))


def check_paper(device: torch.device, size: dict, work: Path) -> dict:
    """One proxy evaluation at paper scale through the run's Setup, one kernel step, the projection."""
    from nascomp.acquisition import random_candidates
    from nascomp.config import compose
    from nascomp.pipeline import Setup
    from nascomp.search import KernelProposer, Record

    k = size["k"]
    cfg = compose(["logger=none", "space.shrink_groups=width", "space.ops=[remove,shrink,skip]", "teacher=resnet18", f"teacher.width={size['width']}", *synthetic_overrides(size["split"]),
                   f"proxy.epochs={size['epochs']}", f"search.K={k}", f"teacher_training.epochs={size['teacher_epochs']}",
                   f"teacher_dir={work.parent / 'teachers'}", f"store.path={work / 'paper.sqlite'}", *trainer_overrides(device),
                   *size["overrides"]])
    start = time.perf_counter()
    setup = Setup.build(cfg, work)
    setup_seconds = time.perf_counter() - start
    evaluator = setup.open_run("gpu-check", resume=False)
    rng = np.random.default_rng(cfg.seed)
    archs = random_candidates(setup.space, k, {setup.space.reference.key}, rng)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    evals = []
    seconds = throughput.timed(lambda: evals.extend(evaluator.evaluate(archs, 0)), device)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    setup.store.close()
    records = [Record(a, e.f, e.accuracy, e.num_params, 0, None, e.seconds, e.error) for a, e in zip(archs, evals)]

    # one proposal step at n = kernel_n: the K real records, then random ones with synthetic rewards
    extra = random_candidates(setup.space, size["kernel_n"] - k, {a.key for a in archs}, rng)
    history = records + [Record(a, float(rng.random()), 0.0, a.num_params, 1 + i // k, None, 0.0)
                         for i, a in enumerate(extra)]
    proposer = KernelProposer(setup.space, cfg.kernel, cfg.search, evaluator.reference_f)
    start = time.perf_counter()
    proposer.propose(history, k, {r.arch.key for r in history}, rng)
    kernel_step = time.perf_counter() - start

    per_candidate = seconds / k
    kernel_steps = -(-EVALUATIONS // k) - 1  # proposal steps after the first K random students
    hours = (EVALUATIONS * per_candidate + kernel_steps * kernel_step) / 3600
    return {
        "teacher": {"name": "resnet18", "width": size["width"], "params": setup.graph.num_params,
                    "val_accuracy": setup.teacher_accuracy, "epochs": size["teacher_epochs"]},
        "data": {"train": len(setup.dataset.train), "val": len(setup.dataset.val)},
        "setup_seconds": setup_seconds, "k": k, "epochs": size["epochs"], "cohort_seconds": seconds, "peak_cuda_mb": peak,
        "students": [{"params": e.num_params, "f": e.f, "accuracy": e.accuracy, "error": e.error} for e in evals],
        "projection": {"evaluations": EVALUATIONS, "seconds_per_candidate": per_candidate, "kernel_n": len(history),
                       "kernel_step_seconds": kernel_step, "kernel_steps": kernel_steps, "hours": hours,
                       "target_hours": TARGET_HOURS, "met": hours <= TARGET_HOURS},
    }


# --------------------------------------------------------------------------- report
def summary(name: str, r: dict) -> str:
    if name == "throughput":
        return ", ".join(f"{key} {m['images_per_s']:.0f} img/s" for key, m in r["modes"].items()) + \
            f"; b/a {r['b/a']:.2f}, c/b {r['c/b']:.2f}"
    if name == "memory":
        growth = ", ".join(f"{key[:-10]} {r[key]:+.1f} MB" for key in r if key.endswith("_mb_growth"))
        return f"{r['candidates']} candidates (K={r['k']}), growth from {r['warm_at']} to the end: {growth}"
    if name == "oom":
        cuda = (f"; CUDA allocated {r['before']['cuda_alloc_mb']:.0f} MB before, {r['after']['cuda_alloc_mb']:.0f} MB after"
                if r["before"] else "")
        return (f"cohort of {r['k']}: {r['evaluated']} evaluated, {r['failed']} failed "
                f"({(r['error'] or '')[:60]}); recovered: {r['recovered']}{cuda}")
    if name == "ddp":
        return (f"{r['devices']} device(s) ({r['backend']}), {r['epochs']} epochs of {r['train_images']} images: "
                f"{r['seconds']:.1f} s, val {r['val_accuracy']:.3f}, test {r['test_accuracy']:.3f}")
    p = r["projection"]
    return (f"K={r['k']}, {r['epochs']} epochs of {r['data']['train']} images: {r['cohort_seconds']:.1f} s, "
            f"{p['seconds_per_candidate']:.1f} s/candidate; kernel step (n={p['kernel_n']}) {p['kernel_step_seconds']:.1f} s; "
            f"{p['evaluations']} evaluations: {p['hours']:.2f} GPU-hours (target <= {p['target_hours']:g}: "
            f"{'met' if p['met'] else 'NOT met'})")


def markdown(report: dict) -> str:
    lines = [f"GPU check on {report['device']} ({'tiny' if report['tiny'] else 'full'} sizes), "
             f"torch {report['torch']}, {report['total_seconds']:.0f} s in all",
             "", "| section | result | seconds (budget) |", "|---|---|---|"]
    for name, s in report["sections"].items():
        result = summary(name, s["result"]) if s["status"] == "ok" else f"{s['status']}: {s['reason']}"
        lines.append(f"| {name} | {result} | {s['seconds']:.1f} ({s['budget_s']}) |")
    return "\n".join(lines) + "\n"


def write_report(report: dict, seconds: float, out: Path) -> str:
    """Writes ``gpu_check.json`` and ``gpu_check.md`` (the sections so far) to ``out``; returns the table."""
    report["total_seconds"] = seconds
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (out / "gpu_check.md").write_text(table)
    return table


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: the same code paths in seconds")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--budget-s", type=float, default=480, help="a section starts only while the run is under this")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--ddp-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.exit(2, "gpu_check: --device cuda but no CUDA device is available; use --device cpu --tiny\n")
    sizes = SIZES["tiny" if args.tiny else "gpu"]
    if device.type == "cpu":
        torch.set_num_threads(1)  # small convs: more threads only contend
    if args.ddp_child:
        return ddp_child(args.ddp_child, device, sizes["ddp"])
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"--sections: unknown {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    os.environ.setdefault("WANDB_MODE", "disabled")

    checks = {"throughput": check_throughput, "memory": check_memory, "oom": check_oom,
              "ddp": lambda d, s, w: check_ddp(d, s, w, args.tiny), "paper": check_paper}
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} thread)"
    report = {"device": name, "tiny": args.tiny, "torch": torch.__version__, "budget_s": args.budget_s, "sections": {}}
    started = time.perf_counter()
    table = write_report(report, 0.0, args.out)
    with tempfile.TemporaryDirectory() as tmp:
        for section in sections:
            size, elapsed = sizes[section], time.perf_counter() - started
            entry = {"budget_s": size["budget_s"], "seconds": 0.0}
            if elapsed >= args.budget_s:
                entry.update(status="skipped", reason=f"the run is at {elapsed:.0f} s, over --budget-s {args.budget_s:g}")
            else:
                print(f"\n== {section} (planned {size['budget_s']} s)", flush=True)
                work = Path(tmp) / section
                work.mkdir()
                start = time.perf_counter()
                try:
                    entry.update(status="ok", result=checks[section](device, size, work))
                except Exception as exc:  # a failed section is reported; the others still run
                    entry.update(status="failed", reason=f"{type(exc).__name__}: {str(exc)[-1000:]}")
                entry["seconds"] = time.perf_counter() - start
                print(f"== {section}: {entry['status']} in {entry['seconds']:.1f} s "
                      f"(planned {size['budget_s']} s; {time.perf_counter() - started:.0f} s so far)", flush=True)
            report["sections"][section] = entry
            table = write_report(report, time.perf_counter() - started, args.out)  # after each section: a killed run keeps what ran
    print("\n" + table)
    print(f"wrote {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.md'}")
    return report


if __name__ == "__main__":
    main()
