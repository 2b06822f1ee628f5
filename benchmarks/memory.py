"""Memory over many evaluations: proxy-train N candidates in one process (K per call, as a search
step does, through the run's own ``Setup`` and stored evaluator) and report resident memory (and
CUDA memory when present) along the way.

What it measures: RSS of the process (VmRSS) after each step, the number of live Python objects,
and with CUDA torch.cuda.memory_allocated / memory_reserved. Candidates: random students of a
small residual teacher on the digits data (``experiment=cpu``: the cached teacher and its measured
accuracy; 1 proxy epoch each by default). The claim checked:
after warm-up, memory does not grow with the number of candidates evaluated (a leak would grow it
linearly).

Two child processes run the same candidates side by side: ``trim`` is the product as shipped
(nascomp.training releases the host heap's free pages with glibc malloc_trim after every cohort),
``keep`` switches that one call off (``proxy.release_host_heap=false``). The table shows both, so what the trim buys is read in one run.

    python benchmarks/memory.py --candidates 100 --k 4
"""
from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from typing import Iterator, Sequence

import numpy as np
import torch


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def open_setup(run_dir: str, teacher_width: float, epochs: int, release_host_heap: bool = True,
               overrides: Sequence[str] = (), cuda: bool | None = None):
    """The run's own ``Setup`` of the memory candidates (``experiment=cpu``; with ``cuda``, default:
    when CUDA is present, ``trainer=auto``) with its store in ``run_dir``, and its stored evaluator
    for a fresh run; ``overrides`` go after these."""
    from nascomp.config import compose
    from nascomp.pipeline import Setup

    cuda = torch.cuda.is_available() if cuda is None else cuda
    cfg = compose(["experiment=cpu", "logger=none", f"teacher.width={teacher_width}", f"proxy.epochs={epochs}",
                   f"proxy.release_host_heap={release_host_heap}", f"store.path={run_dir}/store.sqlite",
                   *(["trainer=auto"] if cuda else []), *overrides])
    setup = Setup.build(cfg, run_dir)
    return setup, setup.open_run("memory-" + ("trim" if release_host_heap else "keep"), resume=False)


def measure(setup, evaluator, candidates: int, k: int) -> Iterator[dict]:
    """Evaluate ``candidates`` random students, ``k`` per step; after each step one row: evaluated,
    rss_mb, py_objects, seconds (and cuda_alloc_mb, cuda_reserved_mb when the students train on CUDA)."""
    cuda = setup.proxy.cfg.trainer.accelerator != "cpu" and torch.cuda.is_available()
    rng = np.random.default_rng(0)
    start, done, step = time.perf_counter(), 0, 0
    while done < candidates:
        archs = [setup.space.sample(rng) for _ in range(min(k, candidates - done))]
        evaluator.evaluate(archs, step)
        done, step = done + len(archs), step + 1
        gc.collect()
        row = {"evaluated": done, "rss_mb": rss_mb(), "py_objects": len(gc.get_objects()),
               "seconds": time.perf_counter() - start}
        if cuda:
            row["cuda_alloc_mb"] = torch.cuda.memory_allocated() / 2**20
            row["cuda_reserved_mb"] = torch.cuda.memory_reserved() / 2**20
        yield row


def child(args) -> None:
    """Evaluate the candidates through the run's own setup and evaluation path; print one JSON row per step."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        setup, evaluator = open_setup(tmp, args.teacher_width, args.epochs, args.child == "trim")
        for row in measure(setup, evaluator, args.candidates, args.k):
            print(json.dumps(row), flush=True)
        setup.store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--k", type=int, default=4, help="candidates per evaluate() call (a search step)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--teacher-width", type=float, default=0.5)
    parser.add_argument("--child", choices=["trim", "keep"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    runs = {}
    for mode in ("trim", "keep"):
        out = subprocess.run([sys.executable, __file__, "--child", mode, *sys.argv[1:]], check=True,
                             stdout=subprocess.PIPE, text=True).stdout
        runs[mode] = [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"# memory over {args.candidates} proxy evaluations, K = {args.k}, {args.epochs} epoch(s) each, on {device}")
    print("# trim: as shipped (malloc_trim after each cohort); keep: without it")
    extra = [c for c in runs["trim"][0] if c.startswith("cuda")]
    cols = ["rss_mb", "py_objects", "seconds", *extra]
    print("| evaluated | " + " | ".join(f"{m} {c}" for c in cols for m in runs) + " |")
    print("|---|" + "---|" * (len(cols) * len(runs)))
    marks = {max(1, round(args.candidates * q / 100 / args.k)) * args.k for q in (10, 20, 40, 60, 80, 100)}
    for i, r in enumerate(runs["trim"]):
        if r["evaluated"] in marks or i == len(runs["trim"]) - 1:
            cells = [runs[m][i][c] for c in cols for m in runs]
            print(f"| {r['evaluated']} | " + " | ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in cells) + " |")
    print()
    for mode, rows in runs.items():
        warm = next(r for r in rows if r["evaluated"] >= args.candidates // 5)
        last = rows[-1]
        line = (f"{mode}: RSS growth from {warm['evaluated']} to {last['evaluated']} evaluations "
                f"{last['rss_mb'] - warm['rss_mb']:+.1f} MB ({last['rss_mb'] / warm['rss_mb']:.3f}x), "
                f"Python objects {last['py_objects'] - warm['py_objects']:+d}")
        if extra:
            line += f", CUDA allocated {last['cuda_alloc_mb'] - warm['cuda_alloc_mb']:+.1f} MB"
        print(line)


if __name__ == "__main__":
    main()
