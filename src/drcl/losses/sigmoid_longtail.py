"""Sigmoid classification losses for dense (one-stage) detectors: focal, ECM, equalized focal.

One layout for every loss, the one-stage heads' layout (RetinaNet / FCOS / ATSS):

- ``logits: (M, C)`` over all anchors of a batch; channel ``j`` is class ``j + 1`` (no
  background channel: background is "every sigmoid low");
- ``labels: (M,)`` int64 in ``-1..C``: ``0`` = background (negative for every class), ``1..C``
  = class, ``-1`` = ignored (RetinaNet's anchors between the IoU thresholds);
- ``normalizer``: the number of positive anchors (mmdetection's ``avg_factor``), so a loss is
  ``sum over valid anchors and classes / normalizer``.

Labels ``0..C`` with 0 = background are the R-CNN losses' convention too
(:mod:`drcl.losses.longtail`); only the logits lose the background column.

Test scores are ``sigmoid(z)`` for all three losses (ECM's margins and EFL's focusing terms are
training-only), so the detectors' torchvision postprocessing is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from drcl.losses.longtail import _freqs_buffer, ecm_margins

__all__ = [
    "DENSE_LOSSES",
    "DenseClassificationLoss",
    "ECMSigmoidLoss",
    "EqualizedFocalLoss",
    "FocalLoss",
    "build_dense_loss",
    "dense_targets",
    "ecm_sigmoid_loss",
    "equalized_focal_loss",
    "focal_loss",
]


def _check(logits: Tensor, labels: Tensor) -> None:
    if logits.dim() != 2 or labels.dim() != 1 or logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"expected logits (M, C) and labels (M,), got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if labels.numel() and (labels.min() < -1 or labels.max() > logits.shape[1]):
        raise ValueError(
            f"labels must be in -1..{logits.shape[1]} (-1 ignored, 0 background), got "
            f"{labels.min().item()}..{labels.max().item()}"
        )


def dense_targets(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Valid rows of ``logits`` (labels >= 0) and their one-hot targets over classes 1..C.

    Returns:
        ``z (V, C)`` (float32 under AMP) and ``t (V, C)`` in {0, 1}; a background row is all 0.
    """
    _check(logits, labels)
    valid = labels >= 0
    z = logits[valid]
    z = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z
    t = F.one_hot(labels[valid], logits.shape[1] + 1)[:, 1:].to(z.dtype)
    return z, t


def focal_loss(
    logits: Tensor, labels: Tensor, normalizer: float, alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """Sigmoid focal loss (Lin et al., ICCV 2017, eq. 5), summed, divided by ``normalizer``.

    ``FL(p_t) = -α_t (1 - p_t)^γ log(p_t)`` per anchor and class; torchvision's
    ``sigmoid_focal_loss`` computes the elements.
    """
    z, t = dense_targets(logits, labels)
    loss = sigmoid_focal_loss(z, t, alpha=alpha, gamma=gamma, reduction="sum")
    return loss / max(float(normalizer), 1.0)


def ecm_sigmoid_loss(
    logits: Tensor,
    labels: Tensor,
    normalizer: float,
    class_freqs: Tensor,
    fg_bg_ratio: float = 6.3313,
) -> Tensor:
    """Effective class-margin loss for C sigmoid channels (Cho & Krähenbühl, ECCV 2022, eq. 9).

    Per anchor i and class c: ``w_c BCE(2 z_ic + m+_c - m-_c, t_ic)`` — the margin-adjusted
    binary sigmoid ``e^{z+m+} / (e^{z+m+} + e^{-z+m-})`` of :func:`drcl.losses.longtail.ecm_loss`
    without the background channel. Margins and weights are :func:`ecm_margins` of classes
    1..C; the background count (``fg_bg_ratio * sum n``) still enters each ``n̄_c``, since
    background anchors are negatives of every class.
    """
    z, t = dense_targets(logits, labels)
    m_pos, m_neg, weight = (x[1:].to(z) for x in ecm_margins(class_freqs, fg_bg_ratio))
    loss = F.binary_cross_entropy_with_logits(2 * z + (m_pos - m_neg), t, reduction="none")
    return (loss * weight).sum() / max(float(normalizer), 1.0)


def equalized_focal_loss(
    logits: Tensor,
    labels: Tensor,
    normalizer: float,
    pos_neg_ratio: Tensor,
    alpha: float = 0.25,
    gamma_b: float = 2.0,
    scale: float = 8.0,
) -> Tensor:
    """Equalized focal loss (Li et al., CVPR 2022, eq. 6-7), summed, divided by ``normalizer``.

    ``γ_j = γ_b + s (1 - g_j)`` with ``g_j`` the accumulated positive/negative gradient ratio of
    class j (in [0, 1]); ``EFL = -α_t (γ_j / γ_b) (1 - p_t)^{γ_j} log(p_t)``. Rare classes
    (small ``g_j``) focus harder and are up-weighted. ``γ_j`` is not differentiated.

    Args:
        pos_neg_ratio: (C,) ``g_j``.
    """
    z, t = dense_targets(logits, labels)
    gamma = (gamma_b + scale * (1 - pos_neg_ratio.to(z))).detach()[None, :]
    p = torch.sigmoid(z)
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = alpha * t + (1 - alpha) * (1 - t)
    ce = F.binary_cross_entropy_with_logits(z, t, reduction="none")  # = -log(p_t), stable
    loss = alpha_t * (gamma / gamma_b) * (1 - p_t).pow(gamma) * ce
    return loss.sum() / max(float(normalizer), 1.0)


# ---- modules ------------------------------------------------------------------------------------


class DenseClassificationLoss(nn.Module):
    """``forward(logits (M, C), labels (M,), normalizer) -> scalar``; scores are sigmoids."""

    name = "base"

    def __init__(self, num_classes: int):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes

    def scores(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"


class FocalLoss(DenseClassificationLoss):
    """:func:`focal_loss` (mmdetection's ATSS default: α 0.25, γ 2)."""

    name = "focal"

    def __init__(self, num_classes: int, alpha: float = 0.25, gamma: float = 2.0):
        super().__init__(num_classes)
        self.alpha, self.gamma = alpha, gamma

    def forward(self, logits: Tensor, labels: Tensor, normalizer: float) -> Tensor:
        return focal_loss(logits, labels, normalizer, self.alpha, self.gamma)


class ECMSigmoidLoss(DenseClassificationLoss):
    """:func:`ecm_sigmoid_loss` with the class image counts as a (non-saved) buffer."""

    name = "ecm"

    def __init__(self, num_classes: int, class_freqs: Tensor, fg_bg_ratio: float = 6.3313):
        super().__init__(num_classes)
        freqs = _freqs_buffer(class_freqs, num_classes, self.name)
        self.register_buffer("class_freqs", freqs, persistent=False)
        self.fg_bg_ratio = fg_bg_ratio

    def forward(self, logits: Tensor, labels: Tensor, normalizer: float) -> Tensor:
        return ecm_sigmoid_loss(logits, labels, normalizer, self.class_freqs, self.fg_bg_ratio)


class EqualizedFocalLoss(DenseClassificationLoss):
    """:func:`equalized_focal_loss` with the gradient statistics ``g_j`` kept as buffers.

    In training, a hook on the logits stages each class's summed ``|dL/dz|`` over positive and
    negative anchors; the staged sums are then added to ``pos_grad`` / ``neg_grad`` (summed over
    ranks with ``gather_distributed``) and ``pos_neg = clamp(pos_grad / neg_grad, 0, 1)`` — the
    official code's update, after the backward pass of the step. ``pos_neg`` starts at 1 (plain
    focal loss with γ_b). The buffers are saved in checkpoints, so a resumed run continues them.

    Mixed precision: under fp16 the hook sees gradients multiplied by the loss scaler's scale,
    and an overflowing step gives inf. The training engine therefore calls
    :meth:`defer_grad_stats` once and :meth:`end_grad_step` after every optimizer step with the
    scale the step's backward used and whether the step was applied: staged sums are divided
    by that scale, and a step the scaler skipped (or whose sums are not finite) adds nothing.
    Used outside the engine (a plain ``loss.backward()``), each backward is added at once with
    scale 1, and a non-finite one is dropped.
    """

    name = "efl"

    def __init__(
        self,
        num_classes: int,
        alpha: float = 0.25,
        gamma_b: float = 2.0,
        scale: float = 8.0,
        gather_distributed: bool = True,
    ):
        super().__init__(num_classes)
        self.alpha, self.gamma_b, self.scale = alpha, gamma_b, scale
        self.gather_distributed = gather_distributed
        self.register_buffer("pos_grad", torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer("neg_grad", torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer("pos_neg", torch.ones(num_classes))
        self._staged: tuple[Tensor, Tensor] | None = None  # (pos, neg) of the current step
        self._deferred = False
        self.skipped_grad_steps = 0  # steps whose statistics were dropped (skipped / non-finite)

    def forward(self, logits: Tensor, labels: Tensor, normalizer: float) -> Tensor:
        if self.training and logits.requires_grad:
            target = F.one_hot(labels.clamp(min=0), self.num_classes + 1)[:, 1:]
            valid = (labels >= 0)[:, None]
            logits.register_hook(lambda g: self._collect(g, target, valid))
        return equalized_focal_loss(
            logits, labels, normalizer, self.pos_neg, self.alpha, self.gamma_b, self.scale
        )

    def defer_grad_stats(self) -> None:
        """Stage the statistics until :meth:`end_grad_step` (the engine calls this once)."""
        self._deferred = True

    @torch.no_grad()
    def _collect(self, grad: Tensor, target: Tensor, valid: Tensor) -> None:
        g = grad.abs().double() * valid
        pos, neg = (g * target).sum(0), (g * (1 - target)).sum(0)
        if self._staged is not None:  # accumulation: several backward passes per step
            pos, neg = pos + self._staged[0], neg + self._staged[1]
        self._staged = (pos, neg)
        if not self._deferred:
            self.end_grad_step(1.0, True)

    @torch.no_grad()
    def end_grad_step(self, grad_scale: float, applied: bool) -> None:
        """Add the staged sums of this optimizer step, unscaled, if the step was applied.

        Args:
            grad_scale: the loss scale the step's backward passes used (1 without a scaler).
            applied: False when the optimizer step was skipped (non-finite loss, or the fp16
                scaler found inf/NaN gradients); the staged sums are then dropped.
        """
        staged, self._staged = self._staged, None
        if self.gather_distributed and dist.is_available() and dist.is_initialized():
            # every rank calls this once per step, so the collective stays matched
            pos, neg = staged if staged is not None else (self.pos_grad * 0, self.neg_grad * 0)
            flag = torch.tensor([float(staged is not None)], dtype=torch.float64, device=pos.device)
            for t in (pos, neg, flag):
                dist.all_reduce(t)
            staged = (pos, neg) if flag.item() > 0 else None
        if staged is None:
            return
        pos, neg = (t / grad_scale for t in staged)
        if not applied or not (torch.isfinite(pos).all() and torch.isfinite(neg).all()):
            self.skipped_grad_steps += 1
            return
        self.pos_grad += pos
        self.neg_grad += neg
        self.pos_neg.copy_((self.pos_grad / (self.neg_grad + 1e-10)).clamp(0, 1))


# name -> factory(num_classes, class_freqs, options); ``finetune.loss`` picks one (one-stage).
DENSE_LOSSES: dict[str, Callable[..., DenseClassificationLoss]] = {
    "focal": lambda c, freqs, o: FocalLoss(
        c, o.get("focal_alpha", 0.25), o.get("focal_gamma", 2.0)
    ),
    "ecm": lambda c, freqs, o: ECMSigmoidLoss(c, freqs, o.get("ecm_fg_bg_ratio", 6.3313)),
    "efl": lambda c, freqs, o: EqualizedFocalLoss(
        c, o.get("focal_alpha", 0.25), o.get("focal_gamma", 2.0), o.get("efl_scale", 8.0)
    ),
}


def build_dense_loss(
    name: str, num_classes: int, class_freqs: Tensor | None = None, **options: float
) -> DenseClassificationLoss:
    """Build a one-stage classification loss from :data:`DENSE_LOSSES`.

    Args:
        name: ``focal``, ``ecm`` or ``efl``.
        num_classes: C.
        class_freqs: (C,) training image counts; required by ``ecm``.
        options: ``focal_alpha``, ``focal_gamma`` (EFL's γ_b), ``efl_scale``, ``ecm_fg_bg_ratio``.
    """
    if name not in DENSE_LOSSES:
        raise ValueError(
            f"finetune.loss: got {name!r} for a one-stage detector, allowed: "
            f"{', '.join(DENSE_LOSSES)}"
        )
    return DENSE_LOSSES[name](num_classes, class_freqs, options)
