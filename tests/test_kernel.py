"""The kernel module: closed-form leave-one-out, the GP posterior, the batched Bi-LSTM."""
import math

import gpytorch
import numpy as np
import pytest
import scipy.stats
import torch
from omegaconf import OmegaConf

from nascomp.kernel import BatchedBiLSTM, EmbeddingKernelModule, TargetTransform, pack

torch.set_default_dtype(torch.float32)


def kernel_cfg(**over):
    cfg = OmegaConf.load("conf/kernel/default.yaml")
    cfg.merge_with(over)
    return cfg


def flat_module(num_kernels, dim, **over):
    cfg = kernel_cfg(**{"embedding": "flat", "sigma2_mode": "absolute", "sigma2": 0.3, "sigma2_grid": None, **over})  # as kernel=flat
    return EmbeddingKernelModule(cfg, num_kernels, dim)


def gp_predict(z, y, zs, s2, beta):
    """Brute-force GP prediction (noise included) on one subset: float64 solve."""
    kern = lambda a, b: torch.exp(-torch.cdist(a, b) ** 2 / (2 * s2))
    kxx = kern(z, z) + beta * torch.eye(len(z), dtype=z.dtype)
    ks = kern(zs, z)
    mean = ks @ torch.linalg.solve(kxx, y)
    var = 1 + beta - (ks * torch.linalg.solve(kxx, ks.T).T).sum(-1)
    return mean, var


def test_closed_form_loo_equals_brute_force():
    torch.manual_seed(0)
    n, dim = 14, 5
    x = torch.randn(n, dim, dtype=torch.float64)
    y = torch.randn(n, dtype=torch.float64)
    mask = torch.rand(3, n) < 0.6
    module = flat_module(3, dim, standardize=False, warp="none").double()
    losses = module.losses(*pack(x, y, mask))
    z = torch.nn.functional.normalize(x, dim=-1)
    for k in range(3):
        idx = mask[k].nonzero().squeeze(-1)
        nll = []
        for i in idx.tolist():
            rest = idx[idx != i]
            mean, var = gp_predict(z[rest], y[rest], z[i : i + 1], 0.3, 0.05)
            nll.append(0.5 * math.log(2 * math.pi * var) + 0.5 * (y[i] - mean) ** 2 / var)
        assert losses[k].item() == pytest.approx(torch.stack(nll).mean().item(), abs=1e-8)


@pytest.mark.parametrize("objective", ["posterior", "marginal"])
def test_losses_equal_gpytorch(objective):
    """Eq. 5 = -LeaveOneOutPseudoLikelihood, marginal = -ExactMarginalLogLikelihood (both / n)."""
    torch.manual_seed(1)
    n, dim = 12, 4
    x = torch.randn(n, dim, dtype=torch.float64)
    y = torch.randn(n, dtype=torch.float64)
    module = flat_module(1, dim, objective=objective, standardize=False, warp="none").double()
    ours = module.losses(*pack(x, y, torch.ones(1, n, dtype=torch.bool)))[0]

    z = torch.nn.functional.normalize(x, dim=-1)

    class GP(gpytorch.models.ExactGP):
        def __init__(self, likelihood):
            super().__init__(z, y, likelihood)
            self.covar = gpytorch.kernels.RBFKernel()
            self.covar.lengthscale = math.sqrt(0.3)

        def forward(self, t):
            return gpytorch.distributions.MultivariateNormal(torch.zeros(len(t), dtype=t.dtype), self.covar(t))

    lik = gpytorch.likelihoods.GaussianLikelihood().double()
    lik.noise = 0.05
    gp = GP(lik).double()
    gp.train()
    mll_class = gpytorch.mlls.LeaveOneOutPseudoLikelihood if objective == "posterior" else gpytorch.mlls.ExactMarginalLogLikelihood
    with gpytorch.settings.cholesky_jitter(double_value=0.0):
        theirs = -mll_class(lik, gp)(gp(z), y)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)


def test_gp_posterior_on_1d_toy():
    """A 1-D function on an arc of the unit circle: posterior = the direct formula; it interpolates."""
    t = torch.linspace(0, 1.5, 7, dtype=torch.float64)
    x = torch.stack([t.cos(), t.sin()], dim=-1)
    y = torch.sin(3 * t)
    module = flat_module(1, 2, noise=1e-6, standardize=False, warp="none", sigma2=0.1).double()
    module.condition(*pack(x, y, torch.ones(1, 7, dtype=torch.bool)))
    ts = torch.tensor([0.0, 0.125, 0.8, 1.5], dtype=torch.float64)
    mean, var = module.posterior(torch.stack([ts.cos(), ts.sin()], dim=-1))
    ref_mean, ref_var = gp_predict(x, y, torch.stack([ts.cos(), ts.sin()], -1), 0.1, 1e-6)
    assert torch.allclose(mean[0], ref_mean, atol=1e-8) and torch.allclose(var[0], ref_var, atol=1e-8)
    assert mean[0, 0].item() == pytest.approx(0.0, abs=1e-4)  # a training point: y = sin 0
    assert mean[0, 3].item() == pytest.approx(math.sin(4.5), abs=1e-4)
    assert var[0, 0].item() < 1e-4 < var[0, 1].item() < 1.0


def test_standardised_posterior_is_in_standard_units():
    x = torch.randn(10, 3, dtype=torch.float64)
    y = 100 + 5 * torch.randn(10, dtype=torch.float64)
    module = flat_module(1, 3, warp="none").double()
    module.condition(*pack(x, y, torch.ones(1, 10, dtype=torch.bool)))
    assert module.transform.mean.item() == pytest.approx(y.mean().item())
    assert module.standardise(y.max().view(1)).item() == pytest.approx(((y.max() - y.mean()) / y.std(unbiased=False)).item())


def test_power_warp_equals_scipy_yeo_johnson_on_each_subset():
    """warp: power = standardise, Yeo-Johnson with scipy's maximum-likelihood λ, standardise; per subset."""
    rng = np.random.default_rng(0)
    y = torch.from_numpy(np.concatenate([[0.0], 1 - rng.exponential(0.1, 40)]))  # a reference at 0, rewards bunched near 1
    mask = torch.from_numpy(rng.random((3, 41)) < 0.5)
    mask[:, 0] = True
    t = TargetTransform.fit(y, mask, warp="power")
    out = t(y.expand(3, -1))
    plain = TargetTransform.fit(y, mask)(y.expand(3, -1))
    for k in range(3):
        sub = y[mask[k]].numpy()
        z = (sub - sub.mean()) / sub.std()
        lam = scipy.stats.yeojohnson_normmax(z)
        w = scipy.stats.yeojohnson(z, lmbda=lam)
        assert t.lam[k] == pytest.approx(lam, abs=1e-8) and lam > 1  # left-skewed rewards: a convex map
        assert np.allclose(out[k][mask[k]].numpy(), (w - w.mean()) / w.std(), atol=1e-8)
        assert np.array_equal(np.argsort(out[k].numpy()), np.argsort(y.numpy()))  # order (and so f*) kept
        top2 = y[mask[k]].topk(2).indices
        spread = lambda v: (v[mask[k]][top2[0]] - v[mask[k]][top2[1]]).item()
        assert spread(out[k]) > spread(plain[k]) > 0  # the best rewards move apart
        assert out[k, 0] > plain[k, 0]  # and the reference's outlier is pulled in


def test_posterior_of_a_training_point_is_its_warped_target():
    """standardise() maps rewards to the posterior's units: with tiny noise, μ(x_i) = t(y_i)."""
    torch.manual_seed(0)
    x = torch.randn(9, 3, dtype=torch.float64)
    y = torch.tensor([0.0, 0.9, 0.95, 0.97, 0.5, 0.99, 0.93, 0.96, 0.8], dtype=torch.float64)
    module = flat_module(1, 3, warp="power", noise=1e-8).double()
    module.condition(*pack(x, y, torch.ones(1, 9, dtype=torch.bool)))
    mean, _ = module.posterior(x)
    assert torch.allclose(mean[0], module.standardise(y.view(1, -1))[0], atol=1e-5)
    with pytest.raises(ValueError, match="warp"):
        TargetTransform.fit(y, torch.ones(1, 9, dtype=torch.bool), warp="log")


def test_batched_bilstm_equals_torch_lstm():
    torch.manual_seed(0)
    k, hidden, dim = 3, 5, 7
    ours = BatchedBiLSTM(k, dim, hidden, layers=2)
    x = torch.randn(4, 6, dim)
    out = ours(x)  # (K, N, L, 2H)
    perm = torch.cat([torch.arange(0, 2 * hidden), torch.arange(3 * hidden, 4 * hidden), torch.arange(2 * hidden, 3 * hidden)])
    for j in range(k):
        ref = torch.nn.LSTM(dim, hidden, num_layers=2, bidirectional=True, batch_first=True)
        with torch.no_grad():
            for layer in range(2):
                for d, suffix in enumerate(["", "_reverse"]):
                    slot = d * k + j  # torch orders gates i, f, g, o; ours i, f, o, g
                    getattr(ref, f"weight_ih_l{layer}{suffix}").copy_(ours.w_ih[layer][slot].T[perm.argsort()])
                    getattr(ref, f"weight_hh_l{layer}{suffix}").copy_(ours.w_hh[layer][slot].T[perm.argsort()])
                    getattr(ref, f"bias_ih_l{layer}{suffix}").copy_(ours.bias[layer][slot].flatten()[perm.argsort()])
                    getattr(ref, f"bias_hh_l{layer}{suffix}").zero_()
        assert torch.allclose(out[j], ref(x)[0], atol=1e-5)


def test_pack_keeps_each_subset_in_order():
    x = torch.arange(5.0).view(5, 1)
    mask = torch.tensor([[1, 0, 1, 0, 1], [0, 1, 0, 0, 0]], dtype=torch.bool)
    px, py, pm = pack(x, x.squeeze(-1), mask)
    assert px.shape == (2, 3, 1)
    assert py[0].tolist() == [0, 2, 4] and py[1, 0].item() == 1 and pm.sum(-1).tolist() == [3, 1]


@pytest.mark.slow
@pytest.mark.parametrize("objective, pool", [("posterior", "concat"), ("marginal", "concat"), ("euclidean", "concat"),
                                             ("posterior", "mean"), ("euclidean", "mean"), ("posterior", "both"), ("euclidean", "both")])
def test_fit_lowers_the_training_loss(objective, pool):
    torch.manual_seed(0)
    x = torch.randn(30, 4, 8)
    y = x[:, :, 0].sum(-1).double()
    mask = torch.rand(2, 30) < 0.7
    module = EmbeddingKernelModule(kernel_cfg(objective=objective, pool=pool, max_steps=40, ema={"tol": 0.0},
                                              optimizer={"lr": 1e-2, "weight_decay": 0.0}), 2, 8)
    before = module.losses(*pack(x, y, mask)).detach()
    module.fit(x, y, mask)
    after = module.losses(*pack(x, y, mask)).detach()
    assert (after < before).all()


@pytest.mark.parametrize("pool", ["mean", "concat", "both"])
def test_lstm_embedding_pools(pool):
    torch.manual_seed(0)
    module = EmbeddingKernelModule(kernel_cfg(hidden=3, pool=pool), 2, 5)
    x = torch.randn(4, 6, 5)  # N = 4 architectures of L = 6 layers
    h = module.embed.lstm(x)  # (K, N, L, 2H)
    unit = lambda t: t / t.norm(dim=-1, keepdim=True)
    want = {"mean": unit(h.mean(-2)), "concat": unit(h.reshape(2, 4, 36))}
    want["both"] = torch.cat([want["mean"], want["concat"]], -1) / math.sqrt(2)
    z = module.embed(x)
    assert z.shape == (2, 4, {"mean": 6, "concat": 36, "both": 42}[pool])
    assert torch.allclose(z, want[pool], atol=1e-6)
    assert torch.allclose(z.norm(dim=-1), torch.ones(2, 4))
    # both: the RBF on the joined embedding is the product of the two halves' RBFs at 2σ²
    if pool == "both":
        d2 = lambda e: torch.cdist(e[0], e[0]) ** 2
        assert torch.allclose(torch.exp(-d2(z) / 0.5), torch.exp(-d2(want["mean"]) / 1.0) * torch.exp(-d2(want["concat"]) / 1.0), atol=1e-5)
    # concat compares layer by layer: the reversed sequence embeds elsewhere
    if pool != "mean":
        assert not torch.allclose(module.embed(x.flip(-2)), z, atol=1e-3)


def test_bad_pool_fails_clearly():
    with pytest.raises(ValueError, match="kernel.pool must be one of mean, concat, both"):
        EmbeddingKernelModule(kernel_cfg(pool="max"), 1, 5)


def test_sigma2_grid_gives_each_kernel_the_value_with_the_lowest_loo_loss():
    """``kernel.sigma2_grid``: after training, each kernel takes the σ² of the grid whose leave-one-out loss
    (Eq. 5) on its own subset is lowest, computed here by brute force, and its posterior is then that of a
    kernel with that σ² fixed."""
    torch.manual_seed(3)
    n, dim, grid = 24, 4, [0.02, 0.3, 3.0]
    x = torch.randn(n, dim, dtype=torch.float64)
    y = torch.sin(3 * x[:, 0]) + 0.3 * torch.randn(n, dtype=torch.float64)
    mask = torch.zeros(3, n, dtype=torch.bool)
    mask[0, :8], mask[1, 4:], mask[2, ::2] = True, True, True
    module = flat_module(3, dim, standardize=False, warp="none", sigma2_grid=grid).double()
    module.fit(x, y, mask)
    z = torch.nn.functional.normalize(x, dim=-1)
    chosen = []
    for k in range(3):
        idx = mask[k].nonzero().squeeze(-1)
        loss = []
        for s2 in grid:
            nll = []
            for i in idx.tolist():
                rest = idx[idx != i]
                mean, var = gp_predict(z[rest], y[rest], z[i: i + 1], s2, 0.05)
                nll.append(0.5 * math.log(2 * math.pi * var) + 0.5 * (y[i] - mean) ** 2 / var)
            loss.append(torch.stack(nll).mean().item())
        chosen.append(grid[int(np.argmin(loss))])
    assert module.s2.view(-1).tolist() == chosen and len(set(chosen)) > 1
    xc = torch.randn(5, dim, dtype=torch.float64)
    mean, var = module.posterior(xc)
    for k, s2 in enumerate(chosen):
        fixed = flat_module(3, dim, standardize=False, warp="none", sigma2=s2).double()
        fixed.fit(x, y, mask)
        m, v = fixed.posterior(xc)
        assert torch.allclose(mean[k], m[k], atol=1e-10) and torch.allclose(var[k], v[k], atol=1e-10)
