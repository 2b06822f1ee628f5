"""The Lightning StudentModule: distillation (proxy) or cross-entropy (full) training of a cohort.

A cohort is K students trained in lockstep on one device: each batch is augmented once, the teacher
runs once (no grad, eval mode), and every student takes its own step on the same batch. The loss
that is back-propagated is the sum of the K students' losses; the students share no parameters,
so each gets exactly the gradient of its own loss, and one optimiser over all of them (Adam and
SGD act element-wise) takes the same step each would take alone. With the same seeds a cohort
therefore gives every student the same result as training it alone (``tests/test_student_module``).

Losses (``cfg.loss``), for student logits s, teacher logits t (B, classes), labels y (B,):

    mse_logits:  mean_{b,c} (s_bc - t_bc)^2                                       (reference code)
    kl:          (1 - a) T^2 KL(softmax(t/T) || softmax(s/T)) + a CE(s, y)          (Hinton et al.)
    ce:          CE(s, y)                                                 (full and teacher training)

KL is averaged over the batch. Per student the module keeps the best validation accuracy over the
epochs, the epoch it came from and a copy of that epoch's weights, and loads them back at the end
of fit, so that a following ``trainer.test`` measures the weights chosen on validation.
"""
from __future__ import annotations

import functools
import warnings
from typing import Callable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

# The frozen teacher is in eval mode on purpose (its BN uses running statistics).
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode", module="lightning")


def mse_logits(student: Tensor, teacher: Tensor, labels: Tensor | None = None) -> Tensor:
    """Mean over all B x classes entries of (s - t)^2; the labels are ignored."""
    return F.mse_loss(student.float(), teacher.float())


def kl(student: Tensor, teacher: Tensor, labels: Tensor, temperature: float, alpha: float) -> Tensor:
    """(1 - alpha) T^2 KL(softmax(t/T) || softmax(s/T)) + alpha CE(s, y), KL averaged over the batch."""
    t = temperature
    soft = F.kl_div(F.log_softmax(student.float() / t, 1), F.log_softmax(teacher.float() / t, 1),
                    reduction="batchmean", log_target=True)
    return (1.0 - alpha) * t * t * soft + alpha * F.cross_entropy(student.float(), labels)


def ce(student: Tensor, teacher: Tensor | None, labels: Tensor) -> Tensor:
    """CE(s, y), averaged over the batch; the teacher is ignored."""
    return F.cross_entropy(student.float(), labels)


def loss_function(cfg) -> Callable[[Tensor, Tensor | None, Tensor], Tensor]:
    """``loss(student_logits, teacher_logits, labels)`` for ``cfg.loss`` in mse_logits | kl | ce
    (plain functions, so that the module pickles for spawned processes)."""
    if cfg.loss == "mse_logits":
        return mse_logits
    if cfg.loss == "kl":
        return functools.partial(kl, temperature=cfg.temperature, alpha=cfg.alpha)
    if cfg.loss == "ce":
        return ce
    raise ValueError(f"training.loss must be mse_logits, kl or ce, got {cfg.loss!r}")


class StudentModule(L.LightningModule):
    """K students (a single ``nn.Module`` is a cohort of one), an optional frozen teacher, a recipe
    ``cfg`` (a ``conf/training/*.yaml`` node) and the dataset's ``augment`` (applied on the device).

    After fit: ``best_accuracy[k]``, ``best_epoch[k]``, ``best_state[k]`` (and the students hold
    those weights); after test: ``test_accuracy[k]``.
    """

    def __init__(self, students: nn.Module | Sequence[nn.Module], cfg, num_classes: int,
                 teacher: nn.Module | None = None, augment: Callable | None = None):
        super().__init__()
        self.students = nn.ModuleList([students] if isinstance(students, nn.Module) else list(students))
        self.cfg, self.augment = cfg, augment
        self.loss = loss_function(cfg)
        if cfg.loss != "ce" and teacher is None:
            raise ValueError(f"loss {cfg.loss!r} distils from a teacher; pass teacher=")
        self.teacher = teacher.requires_grad_(False).eval() if teacher is not None and cfg.loss != "ce" else None
        k = len(self.students)
        accuracy = lambda: MulticlassAccuracy(num_classes, average="micro", validate_args=False)  # no per-batch checks
        self.val_acc = nn.ModuleList([accuracy() for _ in range(k)])
        self.test_acc = nn.ModuleList([accuracy() for _ in range(k)])
        self.best_accuracy = [-1.0] * k
        self.best_epoch = [-1] * k
        self.best_state: list[dict | None] = [None] * k
        self.test_accuracy: list[float | None] = [None] * k
        self.diverged = [False] * k  # after fit: whether a student's loss was ever non-finite
        self._finite: Tensor | None = None  # (K,) bool on the device: no host sync per step
        self._generator: torch.Generator | None = None

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # BN uses its running statistics; Lightning must not flip it
        return self

    def _channels_last(self) -> bool:
        return self.device.type == "cuda" and self.cfg.get("channels_last", False)

    def on_fit_start(self):
        self._finite = torch.ones(len(self.students), dtype=torch.bool, device=self.device)
        self._generator = torch.Generator(device=self.device).manual_seed(self.cfg.seed + self.global_rank)
        if self._channels_last():
            self.to(memory_format=torch.channels_last)

    def on_test_start(self):
        if self._channels_last():
            self.to(memory_format=torch.channels_last)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch  # (B, C, H, W), (B,)
        if self.trainer.training and self.augment is not None:
            x = self.augment(x, self._generator)
        if self._channels_last():
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, y = batch
        t = None
        if self.teacher is not None:
            with torch.no_grad():
                t = self.teacher(x)  # (B, classes), one forward pass for the whole cohort
        losses = [self.loss(s(x), t, y) for s in self.students]
        self._finite &= torch.isfinite(torch.stack([loss.detach() for loss in losses]))  # (K,)
        if self.logger is not None:
            for k, loss in enumerate(losses):
                self.log(f"train/loss_{k}", loss, on_step=False, on_epoch=True)
        return torch.stack(losses).sum()

    def validation_step(self, batch, batch_idx: int):
        x, y = batch
        for s, acc in zip(self.students, self.val_acc):
            acc.update(s(x).argmax(1), y)

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            for acc in self.val_acc:
                acc.reset()
            return
        for k, (s, acc) in enumerate(zip(self.students, self.val_acc)):
            value = acc.compute().item()
            acc.reset()
            if self.logger is not None:
                self.log(f"val/acc_{k}", value)
            if value > self.best_accuracy[k]:
                self.best_accuracy[k], self.best_epoch[k] = value, self.current_epoch
                self.best_state[k] = {n: v.detach().clone() for n, v in s.state_dict().items()}

    def on_fit_end(self):
        self.diverged = [not f for f in self._finite.tolist()]
        for s, state in zip(self.students, self.best_state):
            if state is not None:
                s.load_state_dict(state)

    def test_step(self, batch, batch_idx: int):
        x, y = batch
        for s, acc in zip(self.students, self.test_acc):
            acc.update(s(x).argmax(1), y)

    def on_test_epoch_end(self):
        for k, acc in enumerate(self.test_acc):
            self.test_accuracy[k] = acc.compute().item()
            acc.reset()

    def configure_optimizers(self):
        optimizer = instantiate(self.cfg.optimizer)(self.students.parameters())
        if self.cfg.get("scheduler") is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": instantiate(self.cfg.scheduler)(optimizer)}
