"""The torchvision zoo, one row per CNN classifier (torchvision.models.list_models, without ViT, Swin
and MaxViT: 68 models; each family's smallest member first): layers, parameters, trace seconds, the
graph built with the teacher's weights against the teacher (max abs difference, eval mode, BN
statistics copied), the share of parameters kept whole in opaque layers and their constructs, and
sampled candidates (10, or 3 above 60M parameters) that build with l1 inheritance, run in train
mode with finite outputs, are smaller than the teacher and count their parameters exactly, with
the sample+build+run milliseconds per candidate.

At 3x64x64 (80x80 for googlenet and inception_v3), 10 classes, torchvision's random init, one
thread, batch 2. Measured on the 2-core CPU machine: every model traces and equals its teacher
(max difference 6e-8 at most); see the final report of issue 12 for the table.

    PYTHONPATH=$PWD python benchmarks/zoo_table.py
"""
import sys, time, torch, torchvision
from nascomp import ArchGraph, CompressionSpace
from nascomp.schema import OPERATORS  # the paper's operators: students that remove layers and add skips
torch.set_num_threads(1)
EXCLUDE = ("vit_", "swin_", "maxvit_")
names = [n for n in torchvision.models.list_models(module=torchvision.models) if not n.startswith(EXCLUDE)]
sys.path.insert(0, "tests")
from test_zoo import FAMILIES
first = list(FAMILIES.values())
names = first + [n for n in names if n not in first]
print("| model | family | params | layers | traced | graph = teacher (max diff) | opaque params % | opaque constructs | candidates ok |")
print("|---|---|---|---|---|---|---|---|---|")
for name in names:
    size = 80 if name in ("googlenet", "inception_v3") else 64
    kw = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    row = [name, next((f for f, n in FAMILIES.items() if n == name), "")]
    try:
        torch.manual_seed(0)
        m = torchvision.models.get_model(name, num_classes=10, **kw).eval()
        P = sum(p.numel() for p in m.parameters())
        row.append(f"{P/1e6:.1f}M")
        t = time.time(); g = ArchGraph.from_module(m, (3, size, size)); tt = time.time() - t
        row += [str(len(g)), f"yes ({tt:.1f}s)"]
        x = torch.randn(2, 3, size, size); t = time.time()
        sp = CompressionSpace(g, ops=OPERATORS)
        with torch.no_grad():
            d = (sp.reference.build(m, bn_stats="copy").eval()(x) - m(x)).abs().max().item()
        row.append(f"{d:.1e}")
        o = g.opaque
        row += [f"{100*o['share']:.1f}", ", ".join(f"{k}x{v}" for k, v in o["constructs"].items()) or "-"]
        n = 3 if P > 60e6 else 10
        ok = 0
        for i in range(n):
            c = sp.sample(seed=i)
            s = c.build(m, inherit="l1").train()
            with torch.no_grad(): y = s(x)
            if not torch.isfinite(y).all(): print("nonfinite", name, i, file=sys.stderr)
            if torch.isfinite(y).all() and c.num_params == sum(p.numel() for p in s.parameters()) < g.num_params and y.shape == (2, 10):
                ok += 1
        row.append(f"{ok}/{n} ({(time.time() - t - tt) / n * 1000:.0f} ms each)")
    except Exception as exc:
        row.append(f"FAIL {type(exc).__name__}: {str(exc).splitlines()[0][:150]}")
    print("| " + " | ".join(row) + " |", flush=True)
