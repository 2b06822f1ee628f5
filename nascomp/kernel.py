"""The learnable kernel of paper 3.1: K embedding networks and their GPs, trained as one batch.

Embedding h(x; θ) (``embedding: lstm``): a Bi-LSTM over the layer encodings of x, its layer
outputs averaged (``pool: mean``, the paper and the default), kept in order (``concat``) or both (``kernel=nb201``),
and L2-normalised (see ``LSTMEmbedding``). ``embedding: flat``: no network, h(x) = the L2-normalised flat view of
x (one-hot choices, 0/1 flags, floats scaled to [0, 1]); the baseline the learned embedding must beat.

Kernel and GP (zero mean, noise β), per kernel k on its own subset S_k of the data:

    k(x, x') = exp(-‖h(x) - h(x')‖² / 2σ²),     K = k(X, X) + β I
    μ(x*) = k*ᵀ K⁻¹ y,                           s²(x*) = 1 + β - k*ᵀ K⁻¹ k*

σ² is ``sigma2`` itself (``sigma2_mode: absolute``) or ``sigma2`` times the median pairwise
squared embedding distance on the kernel's data (``relative``); ``learn_sigma`` multiplies it
by a learned factor. ``sigma2_grid`` (the default [0.25, 0.5, 1.0]; null: off): after training on ``sigma2``,
``condition`` gives each kernel the value of the grid (in ``sigma2_mode``'s units) with the lowest Eq. 5
leave-one-out loss on its own subset (``sigma2_losses``). y is standardised on each kernel's data unless ``standardize: false``, then
(``warp: power``, the default) Yeo-Johnson-transformed and standardised again (``TargetTransform``).

The K subsets are batched exactly by masking: a point outside S_k gets an identity row and column
in K and y = 0, which makes K block diagonal, so every quantity on S_k equals the one computed on
S_k alone. All GP algebra is float64. It is written out here rather than through GPyTorch's
ExactGP, which batches only equal-sized training sets; tests/test_kernel.py checks both losses
against GPyTorch's ``LeaveOneOutPseudoLikelihood`` and ``ExactMarginalLogLikelihood``.

Training objectives (paper Table 8), each a mean over the points of S_k:
  ``posterior`` (Eq. 5)  -1/n Σ log p(y_i | y_-i), from one Cholesky factor:
                         μ_-i = y_i - [K⁻¹y]_i / [K⁻¹]_ii,  s²_-i = 1 / [K⁻¹]_ii
  ``marginal``           -1/n log N(y; 0, K)
  ``euclidean``          1/n Σ (w_kᵀ h(x_i) + b_k - y_i)²  (an FC head; the GP then uses h; unless
                         ``pool: mean``, w_k is shared by the layers, so the head has a fixed width)
"""
from __future__ import annotations

import math
from typing import Sequence

import lightning as L
import numpy as np
import scipy.stats
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor, nn

from nascomp.encoding import encoding_width
from nascomp.schema import EMBEDDINGS, OBJECTIVES, POOLS, SIGMA2_MODES, WARPS
from nascomp.search_space import Architecture, Space
from nascomp.training import signals_kept

LOG_2PI = math.log(2 * math.pi)
LAMBDA_RANGE = (-4.0, 6.0)  # Yeo-Johnson λ is clipped here: a few points can call for a λ that blows one of them up


class BatchedBiLSTM(nn.Module):
    """K independent Bi-LSTMs evaluated as one batch.

    Both directions of all K kernels run in one recurrence over a (2K)-batch of weights: slot
    d·K + k holds direction d (0 forward, 1 backward) of kernel k. Gates are ordered i, f, o, g.
    forward: (N, L, D) shared by all kernels, or (K, N, L, D) -> (K, N, L, 2H).
    """

    def __init__(self, num_kernels: int, input_size: int, hidden: int, layers: int):
        super().__init__()
        self.k, self.hidden = num_kernels, hidden
        bound = 1.0 / math.sqrt(hidden)
        uniform = lambda *shape: nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))
        dims = [input_size] + [2 * hidden] * (layers - 1)
        self.w_ih = nn.ParameterList([uniform(2 * num_kernels, d, 4 * hidden) for d in dims])
        self.w_hh = nn.ParameterList([uniform(2 * num_kernels, hidden, 4 * hidden) for _ in dims])
        self.bias = nn.ParameterList([uniform(2 * num_kernels, 1, 1, 4 * hidden) for _ in dims])

    def _layer(self, x: Tensor, i: int) -> Tensor:
        h_dim = self.hidden
        both = torch.cat([x, x.flip(-2)], dim=0) if x.dim() == 4 else torch.stack([x, x.flip(-2)])  # (2|2K, N, L, D)
        if x.dim() == 3:  # shared input: (2, N, L, D) against (2, K, D, 4H)
            gates_x = torch.einsum("dnlc,dkcg->dknlg", both, self.w_ih[i].view(2, self.k, -1, 4 * h_dim)).flatten(0, 1)
        else:
            gates_x = torch.einsum("knlc,kcg->knlg", both, self.w_ih[i])
        gates_x = (gates_x + self.bias[i]).permute(2, 0, 1, 3).unbind(0)  # L × (2K, N, 4H)
        h = gates_x[0].new_zeros(*gates_x[0].shape[:2], h_dim)
        c = torch.zeros_like(h)
        out = []
        for gx in gates_x:  # unbind/split rather than indexing: their backward does not zero-fill
            sig, cand = torch.baddbmm(gx, h, self.w_hh[i]).split([3 * h_dim, h_dim], dim=-1)
            i_gate, f_gate, o_gate = torch.sigmoid(sig).chunk(3, dim=-1)
            c = f_gate * c + i_gate * torch.tanh(cand)
            h = o_gate * torch.tanh(c)
            out.append(h)
        out = torch.stack(out, dim=2)  # (2K, N, L, H)
        return torch.cat([out[: self.k], out[self.k :].flip(-2)], dim=-1)  # (K, N, L, 2H)

    def forward(self, x: Tensor) -> Tensor:
        for i in range(len(self.w_ih)):
            x = self._layer(x, i)
        return x


class LSTMEmbedding(nn.Module):
    """h(x) = normalise(pool over layers of BiLSTM(x)): (N | K·N, L, D) -> (K, N, E).

    ``pool: mean`` averages the L layer outputs (the paper; E = 2H); ``concat`` keeps them all,
    E = L·2H, so the kernel compares two architectures layer by layer (the same L for every
    architecture of a space: removed layers stay as identity layers); ``both`` joins the two, each
    normalised (E = 2H + L·2H): the RBF on it is the product of the RBFs on each half at 2σ².
    """

    def __init__(self, num_kernels: int, input_size: int, hidden: int, layers: int, pool: str = "mean"):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"kernel.pool must be one of {', '.join(POOLS)}, got {pool!r}")
        self.lstm, self.pool = BatchedBiLSTM(num_kernels, input_size, hidden, layers), pool

    def forward(self, x: Tensor) -> Tensor:
        h = self.lstm(x)
        norm = nn.functional.normalize
        if self.pool == "mean":
            return norm(h.mean(dim=-2), dim=-1)
        if self.pool == "concat":
            return norm(h.flatten(-2), dim=-1)
        return torch.cat([norm(h.mean(dim=-2), dim=-1), norm(h.flatten(-2), dim=-1)], dim=-1) / math.sqrt(2)


class FlatEmbedding(nn.Module):
    """h(x) = x / ‖x‖ on the flat vector: (N, D) -> (K, N, D), or (K, N, D) -> (K, N, D)."""

    def __init__(self, num_kernels: int):
        super().__init__()
        self.num_kernels = num_kernels

    def forward(self, x: Tensor) -> Tensor:
        x = nn.functional.normalize(x, dim=-1)
        return x.expand(self.num_kernels, *x.shape) if x.dim() == 2 else x


class Featurizer:
    """Architectures -> the embedding network's input, cached by key.

    ``lstm``: the layer encodings, (N, L, m + 6 + 2n) with n the space's ``max_offset``; ``flat``:
    the flat view, (N, D).
    """

    def __init__(self, space: Space, cfg: DictConfig):
        self.space, self.cfg = space, cfg
        self.reference = space.reference.layers() if cfg.numeric == "relative" else None  # once, not per encoding
        self.cache: dict[str, Tensor] = {}
        self.cache_bytes = 0

    def one(self, arch: Architecture) -> Tensor:
        x = self.cache.get(arch.key)
        if x is None:
            x = (arch.encode(n=self.space.max_offset, numeric=self.cfg.numeric, reference=self.reference)
                 if self.cfg.embedding == "lstm" else self._flat(arch))
            if self.cache_bytes > self.cfg.feature_cache_mb * 2**20:
                self.cache.clear()
                self.cache_bytes = 0
            self.cache[arch.key] = x
            self.cache_bytes += x.numel() * x.element_size()
        return x

    def __call__(self, archs: Sequence[Architecture]) -> Tensor:
        xs = [self.one(a) for a in archs]
        if len({x.shape for x in xs}) > 1:
            raise ValueError("architectures of one space must encode to the same number of layers; "
                             "keep removed layers as identity layers so the length stays fixed")
        return torch.stack(xs)

    def _flat(self, arch: Architecture) -> Tensor:
        parts = []
        for dim, v in zip(self.space.flat_dims(), self.space.to_flat(arch)):
            if dim.kind == "choice":
                parts.append(np.eye(len(dim.choices))[int(v)])
            elif dim.kind == "float":
                parts.append([(v - dim.low) / (dim.high - dim.low)])
            else:
                parts.append([float(v)])
        return torch.tensor(np.concatenate(parts), dtype=torch.float32)

    @property
    def input_size(self) -> int:
        if self.cfg.embedding == "lstm":
            return encoding_width(self.space.max_offset)
        return sum(len(d.choices) if d.kind == "choice" else 1 for d in self.space.flat_dims())


def pack(x: Tensor, y: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Gather each kernel's subset: x (N, ...), y (N,), mask (K, N) -> (K, M, ...), (K, M), (K, M),
    M the largest subset; padding rows repeat point 0 and are masked out. The embedding network
    then runs on about half the points (subset_prob 0.5) instead of all N for every kernel."""
    m = int(mask.sum(-1).max())
    order = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True)[:, :m]  # subset first, in order
    packed_mask = torch.gather(mask, 1, order)
    idx = torch.where(packed_mask, order, 0)
    return x[idx], y[idx], packed_mask


def sq_dist(a: Tensor, b: Tensor) -> Tensor:
    """‖a_i - b_j‖²: (K, N, E), (K, M, E) -> (K, N, M)."""
    return (a.pow(2).sum(-1, keepdim=True) + b.pow(2).sum(-1).unsqueeze(-2) - 2 * a @ b.transpose(-1, -2)).clamp_min(0)


class EmbeddingKernelModule(L.LightningModule):
    """K learnable kernels and their zero-mean GPs (see the module docstring).

    ``fit(x, y, mask)`` trains and conditions: x (N, ...) features shared by all kernels, y (N,)
    rewards, mask (K, N) bool, the subset of each kernel. ``posterior(xc)`` then gives the
    predictive mean and variance (K, C) of candidates xc ((K, C, ...) or (C, ...)), in the units
    of the GP targets: ``self.transform`` (a ``TargetTransform`` fitted on each kernel's subset by
    ``condition``) maps rewards there, ``standardise(f)`` applies it.
    """

    def __init__(self, cfg: DictConfig, num_kernels: int, input_size: int):
        super().__init__()
        self.cfg, self.num_kernels = cfg, num_kernels
        if cfg.embedding == "lstm":
            self.embed = LSTMEmbedding(num_kernels, input_size, cfg.hidden, cfg.layers, cfg.pool)
        elif cfg.embedding == "flat":
            self.embed = FlatEmbedding(num_kernels)
        else:
            raise ValueError(f"kernel.embedding must be one of {', '.join(EMBEDDINGS)}, got {cfg.embedding!r}")
        if cfg.objective not in OBJECTIVES:
            raise ValueError(f"kernel.objective must be one of {', '.join(OBJECTIVES)}, got {cfg.objective!r}")
        if cfg.sigma2_mode not in SIGMA2_MODES:
            raise ValueError(f"kernel.sigma2_mode must be one of {', '.join(SIGMA2_MODES)}, got {cfg.sigma2_mode!r}")
        self.log_sigma_scale = nn.Parameter(torch.zeros(num_kernels, 1, 1), requires_grad=bool(cfg.learn_sigma))
        if cfg.objective == "euclidean":
            width = 2 * cfg.hidden if cfg.embedding == "lstm" else input_size
            self.head_w = nn.Parameter(torch.zeros(num_kernels, width, 1))
            self.head_b = nn.Parameter(torch.zeros(num_kernels, 1))
        self.step_losses: Tensor | None = None

    # ---- GP algebra (float64) -------------------------------------------------------------
    def sigma2(self, z: Tensor, mask: Tensor, base: Tensor | None = None) -> Tensor:
        """σ² per kernel, (K, 1, 1), from embeddings z (K, N, E) of the kernel's data; ``base`` (K, 1, 1), in
        ``sigma2_mode``'s units, in place of ``kernel.sigma2`` (a value of ``sigma2_grid``)."""
        if base is not None:
            s2 = base.to(dtype=z.dtype, device=z.device)
        else:
            s2 = torch.full((z.shape[0], 1, 1), float(self.cfg.sigma2), dtype=z.dtype, device=z.device)
        if self.cfg.sigma2_mode == "relative":
            d2 = sq_dist(z, z).detach()
            pair = mask.unsqueeze(-1) & mask.unsqueeze(-2) & ~torch.eye(z.shape[1], dtype=torch.bool, device=z.device)
            med = torch.nanmedian(torch.where(pair, d2, torch.nan).flatten(1), dim=1).values
            s2 = s2 * torch.nan_to_num(med, nan=1.0).clamp_min(1e-6).view(-1, 1, 1)
        return s2 * self.log_sigma_scale.double().exp()

    def gram(self, z: Tensor, mask: Tensor, s2: Tensor) -> Tensor:
        """K = k(X, X) + βI on each subset, identity outside: (K, N, N)."""
        pair = mask.unsqueeze(-1) & mask.unsqueeze(-2)
        kxx = torch.where(pair, torch.exp(-sq_dist(z, z) / (2 * s2)), 0.0)
        diag = torch.where(mask, float(self.cfg.noise), 1.0).to(z.dtype)
        return kxx + torch.diag_embed(diag)

    def targets(self, y: Tensor, mask: Tensor) -> tuple[Tensor, "TargetTransform"]:
        """Masked transformed targets (K, N) and the transform, fitted on each kernel's subset."""
        t = TargetTransform.fit(y, mask, self.cfg.standardize, self.cfg.warp)
        return mask * t(y.expand(mask.shape)), t

    def losses(self, x: Tensor, y: Tensor, mask: Tensor) -> Tensor:
        """The training objective of each kernel, (K,), on packed data (see ``pack``)."""
        return self.target_losses(x, self.targets(y.double(), mask)[0], mask)

    def target_losses(self, x: Tensor, yk: Tensor, mask: Tensor) -> Tensor:
        """``losses`` on targets already transformed (``targets``)."""
        return self.embedding_losses(self.embed(x).double(), yk, mask)

    def embedding_losses(self, z: Tensor, yk: Tensor, mask: Tensor, objective: str | None = None,
                         base: Tensor | None = None) -> Tensor:
        """``target_losses`` from the embeddings z (K, N, E); ``objective`` in place of ``kernel.objective``,
        ``base`` in place of ``kernel.sigma2`` (``sigma2``)."""
        objective = objective or self.cfg.objective
        n = mask.sum(-1).double()
        if objective == "euclidean":
            if self.cfg.embedding == "lstm" and self.cfg.pool != "mean":  # one head weight per feature, shared by the layers
                z = z.unflatten(-1, (-1, 2 * self.cfg.hidden)).sum(-2)
            pred = (z @ self.head_w.double()).squeeze(-1) + self.head_b.double()  # (K, N)
            return (mask * (pred - yk) ** 2).sum(-1) / n
        chol = torch.linalg.cholesky(self.gram(z, mask, self.sigma2(z, mask, base)))  # (K, N, N)
        alpha = torch.cholesky_solve(yk.unsqueeze(-1), chol).squeeze(-1)  # (K, N)
        if objective == "marginal":
            logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
            return (0.5 * (yk * alpha).sum(-1) + 0.5 * logdet) / n + 0.5 * LOG_2PI
        kinv_diag = torch.diagonal(torch.cholesky_inverse(chol), dim1=-2, dim2=-1)  # (K, N)
        loo_var = 1.0 / kinv_diag
        loo_resid = alpha / kinv_diag  # y_i - μ_-i
        nll = 0.5 * torch.log(loo_var) + 0.5 * loo_resid**2 / loo_var + 0.5 * LOG_2PI
        return (mask * nll).sum(-1) / n

    def sigma2_losses(self, z: Tensor, yk: Tensor, mask: Tensor, grid) -> Tensor:
        """Eq. 5 (leave-one-out) loss of each kernel with its σ² set to each value of ``grid`` (in
        ``sigma2_mode``'s units), everything else as it is: (len(grid), K)."""
        return torch.stack([self.embedding_losses(z, yk, mask, objective="posterior",
                                                  base=torch.full((z.shape[0], 1, 1), float(value), dtype=z.dtype))
                            for value in grid])

    # ---- Lightning ------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        losses = self.target_losses(*batch)  # (x, transformed targets, mask)
        self.step_losses = losses.detach()
        return losses.sum()  # kernels share no parameters: the sum trains each on its own loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return instantiate(self.cfg.optimizer)(self.parameters())  # a _partial_ node, as the training recipes

    def fit(self, x: Tensor, y: Tensor, mask: Tensor) -> "EmbeddingKernelModule":
        """Train (unless nothing is learnable) and condition the GPs: x (N, ...), y (N,), mask (K, N)."""
        x, y, mask = pack(x, y, mask)
        if any(p.requires_grad for p in self.parameters()) and self.cfg.max_steps > 0:
            loader = torch.utils.data.DataLoader([(x, self.targets(y.double(), mask)[0], mask)], batch_size=None)
            trainer = L.Trainer(
                max_steps=self.cfg.max_steps, max_epochs=-1, accelerator="cpu", logger=False,
                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                callbacks=[EmaStopping(self.cfg.ema.decay, self.cfg.ema.tol)], num_sanity_val_steps=0,
            )
            with signals_kept():
                trainer.fit(self, loader)
        self.condition(x, y, mask)
        return self

    # ---- posterior ------------------------------------------------------------------------
    @torch.no_grad()
    def condition(self, x: Tensor, y: Tensor, mask: Tensor) -> None:
        """On packed data (K, M, ...), (K, M), (K, M): cache what the posterior needs: embeddings, Cholesky factor, K⁻¹y, σ², target scaling."""
        self.eval()
        z = self.embed(x).double()
        yk, self.transform = self.targets(y.double(), mask)
        grid, base = self.cfg.get("sigma2_grid"), None  # training used kernel.sigma2 (base None)
        if grid:  # each kernel takes the σ² of the grid with the lowest Eq. 5 loss on its own subset
            best = self.sigma2_losses(z, yk, mask, grid).argmin(0)  # (K,)
            base = torch.tensor([float(v) for v in grid], dtype=z.dtype)[best].view(-1, 1, 1)
        self.s2 = self.sigma2(z, mask, base)
        self.chol = torch.linalg.cholesky(self.gram(z, mask, self.s2))
        self.alpha = torch.cholesky_solve(yk.unsqueeze(-1), self.chol).squeeze(-1)
        self.z, self.mask = z, mask

    @torch.no_grad()
    def posterior(self, xc: Tensor) -> tuple[Tensor, Tensor]:
        """Predictive mean and variance (noise included) of candidates: (K, C) each."""
        zc = self.embed(xc).double()  # (K, C, E)
        kc = torch.where(self.mask.unsqueeze(-2), torch.exp(-sq_dist(zc, self.z) / (2 * self.s2)), 0.0)  # (K, C, N)
        mean = (kc * self.alpha.unsqueeze(-2)).sum(-1)
        v = torch.linalg.solve_triangular(self.chol, kc.transpose(-1, -2), upper=False)  # (K, N, C)
        var = 1.0 + float(self.cfg.noise) - v.pow(2).sum(-2)
        return mean, var.clamp_min(1e-12)

    def standardise(self, f: Tensor) -> Tensor:
        """Rewards (K, ...) in the units of the posterior."""
        return self.transform(f.double())


class TargetTransform:
    """Per-kernel map of rewards to GP targets, fitted on each kernel's subset: standardise
    (``standardize``; always before the warp), then (``warp: power``) the Yeo-Johnson power transform with the λ that
    maximises the normal likelihood of the subset (scipy; clipped to LAMBDA_RANGE), standardised again. Both steps are
    increasing, so the order of rewards (and f* of EI) is kept; the power transform spreads the
    best rewards apart and pulls in a long tail of poor ones (the teacher's f = 0, broken cells).
    ``t(f)``: (K, ...) -> (K, ...), float64.
    """

    def __init__(self, mean: Tensor, std: Tensor, lam: np.ndarray | None = None, mean2: Tensor | None = None, std2: Tensor | None = None):
        self.mean, self.std, self.lam, self.mean2, self.std2 = mean, std, lam, mean2, std2

    @staticmethod
    def moments(y: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and sd (population) of each row of y (K, N) over its mask: (K,), (K,)."""
        m = mask.to(y.dtype)
        n = m.sum(-1).clamp_min(1)
        mean = (m * y).sum(-1) / n
        return mean, ((m * (y - mean[:, None]) ** 2).sum(-1) / n).sqrt().clamp_min(1e-9)

    @classmethod
    def fit(cls, y: Tensor, mask: Tensor, standardize: bool = True, warp: str = "none") -> "TargetTransform":
        """Fit on y (N,) or (K, N) and mask (K, N)."""
        if warp not in WARPS:
            raise ValueError(f"kernel.warp must be one of {', '.join(WARPS)}, got {warp!r}")
        y = y.double().expand(mask.shape)
        if standardize or warp == "power":
            t = cls(*cls.moments(y, mask))
        else:
            t = cls(torch.zeros(mask.shape[0], dtype=torch.float64), torch.ones(mask.shape[0], dtype=torch.float64))
        if warp == "power":
            z = t(y)
            lam = [scipy.stats.yeojohnson_normmax(z[k][mask[k]].numpy()) if mask[k].sum() > 2 else 1.0 for k in range(len(z))]
            t.lam = np.clip(lam, *LAMBDA_RANGE)
            t.mean2, t.std2 = cls.moments(t.power(z), mask)
        return t

    def power(self, z: Tensor) -> Tensor:
        """Yeo-Johnson of standardised values (K, ...) with each kernel's λ."""
        return torch.stack([torch.from_numpy(np.asarray(scipy.stats.yeojohnson(zk.numpy(), lmbda=lam), dtype=np.float64)) for zk, lam in zip(z, self.lam)])

    def __call__(self, f: Tensor) -> Tensor:
        shape = (-1,) + (1,) * (f.dim() - 1)
        z = (f.double() - self.mean.view(shape)) / self.std.view(shape)
        if self.lam is None:
            return z
        return (self.power(z) - self.mean2.view(shape)) / self.std2.view(shape)

    def inverse(self, t: Tensor, k: int) -> Tensor:
        """Kernel k's map back from targets to rewards, any shape, float64: the inverse of ``__call__``'s row k.
        Where the Yeo-Johnson transform is bounded (λ < 0 above, λ > 2 below), targets past its bound map to ±inf."""
        t = t.double()
        if self.lam is not None:
            lam = float(self.lam[k])
            z = t * self.std2[k] + self.mean2[k]
            pos, neg = z.clamp_min(0.0), z.clamp_max(0.0)
            up = torch.expm1(pos) if abs(lam) < 1e-12 else (lam * pos + 1).clamp_min(0.0).pow(1 / lam) - 1
            down = -torch.expm1(-neg) if abs(lam - 2) < 1e-12 else 1 - (1 - (2 - lam) * neg).clamp_min(0.0).pow(1 / (2 - lam))
            t = torch.where(z >= 0, up, down)
        return t * self.std[k] + self.mean[k]


class EmaStopping(L.Callback):
    """Stop when every kernel's exponential moving average of its loss moves by less than ``tol``."""

    def __init__(self, decay: float, tol: float):
        self.decay, self.tol, self.ema = decay, tol, None

    def on_train_batch_end(self, trainer: L.Trainer, module: EmbeddingKernelModule, *args) -> None:
        loss = module.step_losses
        if self.ema is None:
            self.ema = loss
            return
        new = self.decay * self.ema + (1 - self.decay) * loss
        if torch.all((new - self.ema).abs() < self.tol):
            trainer.should_stop = True
        self.ema = new
