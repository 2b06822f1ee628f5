"""experiments/kernel_fit.py: the fit diagnosis scores every unevaluated cell of a real search and tells
the variants apart."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("kernel_fit", ROOT / "experiments" / "kernel_fit.py")
kernel_fit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kernel_fit)


@pytest.mark.slow  # four NAS-Bench-201 fits over all 15,625 cells: ~40 s
def test_fit_scores_cover_every_unevaluated_cell_and_tell_variants_apart():
    fixed = "ours[kernel.sigma2_grid=null]"  # σ² fixed: kernel.sigma2 is then the GP's σ² too
    space, evaluator, result = kernel_fit.search_state("cifar10", "compression", seed=3, budget=16, method=fixed)
    assert len(result.history) == 16
    seen = {r.arch.key for r in result.history} | {space.reference.key}
    # every cell counts as "within": the best 10 are always recalled
    base = kernel_fit.fit_scores(space, evaluator, result, "base", seed=3, top=10, within=15625, method=fixed)
    assert base["unevaluated"] == 15625 - len(seen) and base["recall"] == 1.0
    assert -1 <= base["spearman"] <= 1
    wide = kernel_fit.fit_scores(space, evaluator, result, "kernel.sigma2=1.0", seed=3, method=fixed)
    assert wide["unevaluated"] == base["unevaluated"] and wide["spearman"] != base["spearman"]
    assert wide["recall"] in {i / 50 for i in range(51)}
    loo = kernel_fit.loo_losses(space, evaluator, result, 3, [0.25, 1.0], method=fixed)
    assert loo["grid"] == [0.25, 1.0] and sum(loo["chosen"]) == 8 and all(x > -10 for x in loo["loss"])
    assert loo["loss"][0] != loo["loss"][1]


def test_seeds_variants_and_table():
    assert kernel_fit.seeds_of("0-3") == [0, 1, 2, 3] and kernel_fit.seeds_of("4,9") == [4, 9]
    assert kernel_fit.overrides("base") == [] and kernel_fit.overrides("kernel.sigma2=1.0+kernel.noise=0.01") == [
        "kernel.sigma2=1.0", "kernel.noise=0.01"]
    rows = [{"dataset": "cifar10", "objective": "accuracy", "seed": s, "variant": v, "spearman": sp, "recall": rc}
            for s, v, sp, rc in [(0, "base", 0.1, 0.5), (1, "base", 0.3, 0.7), (0, "w", 0.5, 0.9), (1, "w", 0.7, 0.9),
                                 (2, "base", 0.9, 0.9)]]  # seed 2 lacks "w": left out
    assert kernel_fit.table(rows, ["base", "w"]).splitlines()[-1] == "| cifar10 accuracy | 2 (0–1) | 0.20 / 0.60 | 0.60 / 0.90 |"


def test_readme_table_is_the_committed_rows():
    """The README's kernel-fit table (σ² variants and the flat kernel, tuning seeds 0-5, 80 evaluations) is
    ``table`` of ``benchmarks/results/nb201_kernel_fit.jsonl``, number for number."""
    import json

    rows = [json.loads(line) for line in (ROOT / "benchmarks" / "results" / "nb201_kernel_fit.jsonl").read_text().splitlines()]
    assert {r["seed"] for r in rows} == set(range(6)) and {r["budget"] for r in rows} == {80}
    assert {r["method"] for r in rows} == {"ours[kernel.sigma2_grid=null]"}  # σ² fixed: ours when these ran
    variants = ["base", "kernel.sigma2=0.5", "kernel.sigma2=1.0", "kernel.sigma2=2.0", "kernel.embedding=flat"]
    lines = kernel_fit.table(rows, variants).splitlines()[2:]
    readme = (ROOT / "README.md").read_text().replace("−", "-")
    assert len(lines) == 6
    for line in lines:
        cell, seeds, spearman, recall = line.strip("| ").split(" | ")
        assert seeds == "6 (0–5)"
        assert f"| {cell} | {spearman} | {recall} |" in readme
    loo = kernel_fit.loo_table([r for r in rows if r["variant"] == "loo"]).splitlines()[2:]
    assert len(loo) == 6
    for line in loo:
        cell, seeds, loss, chosen = line.strip("| ").split(" | ")
        assert seeds == "6" and sum(map(int, chosen.split(" / "))) == 48
        assert f"| {cell} | {loss} | {chosen} |" in readme


def test_loo_table_sums_the_kernels_choices():
    rows = [{"dataset": "cifar10", "objective": "compression", "variant": "loo", "grid": [0.25, 1.0], "loss": l, "chosen": c}
            for l, c in (([0.5, 0.7], [6, 2]), ([0.7, 0.5], [3, 5]))]
    assert kernel_fit.loo_table(rows).splitlines()[-1] == "| cifar10 compression | 2 | 0.600 / 0.600 | 9 / 7 |"
