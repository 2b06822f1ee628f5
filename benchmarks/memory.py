"""Memory over many evaluations: proxy-train N candidates in one process (K per call, as a search
step does) and print resident memory (and CUDA memory when present) along the way.

What it measures: RSS of this process (VmRSS) after each step, on CPU; with CUDA also
torch.cuda.memory_allocated / memory_reserved. Candidates: random students of a small residual
teacher on the digits data (1 proxy epoch each by default). The claim checked: after warm-up,
memory does not grow with the number of candidates evaluated (a leak would grow it linearly).

    python benchmarks/memory.py --candidates 100 --k 4
"""
from __future__ import annotations

import argparse
import gc
import time

import numpy as np
import torch

from nascomp import ArchGraph, SearchSpace, data, teachers
from nascomp.config import group
from nascomp.proxy_evaluator import ProxyEvaluator


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--k", type=int, default=4, help="candidates per evaluate() call (a search step)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--teacher-width", type=float, default=1.0)
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    dataset = data.load(group("dataset", "digits"))
    teacher = teachers.create("small_resnet", width=args.teacher_width).eval()
    space = SearchSpace(ArchGraph.from_module(teacher, (1, 8, 8)))
    proxy = group("training", "proxy", [f"epochs={args.epochs}", "batch_size=64"])
    evaluator = ProxyEvaluator(teacher, 0.95, dataset, proxy, "first", True)
    rng = np.random.default_rng(0)
    rows = []
    start = time.perf_counter()
    done = 0
    while done < args.candidates:
        archs = [space.sample(rng) for _ in range(min(args.k, args.candidates - done))]
        evaluator.evaluate(archs)
        done += len(archs)
        gc.collect()
        row = {"evaluated": done, "rss_mb": rss_mb(), "seconds": time.perf_counter() - start}
        if cuda:
            row["cuda_alloc_mb"] = torch.cuda.memory_allocated() / 2**20
            row["cuda_reserved_mb"] = torch.cuda.memory_reserved() / 2**20
        rows.append(row)

    device = torch.cuda.get_device_name() if cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(f"# memory over {args.candidates} proxy evaluations, K = {args.k}, {args.epochs} epoch(s) each, on {device}")
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    marks = {max(1, round(args.candidates * q / 100 / args.k)) * args.k for q in (10, 20, 40, 60, 80, 100)}
    for r in rows:
        if r["evaluated"] in marks or r is rows[-1]:
            print("| " + " | ".join(f"{r[c]:.1f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    warm = next(r for r in rows if r["evaluated"] >= args.candidates // 5)
    last = rows[-1]
    print(f"\nRSS growth from {warm['evaluated']} to {last['evaluated']} evaluations: "
          f"{last['rss_mb'] - warm['rss_mb']:+.1f} MB ({last['rss_mb'] / warm['rss_mb']:.3f}x)")
    if cuda:
        print(f"CUDA allocated growth: {last['cuda_alloc_mb'] - warm['cuda_alloc_mb']:+.1f} MB")


if __name__ == "__main__":
    main()
