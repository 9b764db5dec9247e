"""Long-tail classification losses for the Fast R-CNN box classifier.

One class-channel layout for every loss, torchvision's ``FastRCNNPredictor`` layout:

- ``logits: (N, C + 1)``; channel ``0`` is background, channels ``1..C`` are the classes;
- ``labels: (N,)`` int64 in ``0..C``, ``0`` = background (torchvision's ``RoIHeads`` labels).

What each loss does with channel 0 (and so how scores are read at test time, see ``scores``):

=============  =============================================  ===================================
loss           channel 0 (background)                         test score of class c
=============  =============================================  ===================================
``ce``         one of C + 1 softmax classes                   ``softmax(z)[c]``
``bce``        unused (no gradient); C sigmoids               ``sigmoid(z_c)``
``federated``  unused (no gradient); sigmoids on a subset     ``sigmoid(z_c)``
``seesaw``     objectness logit, ``sigmoid(z_0) = P(bg)``     ``softmax(z_1..C)[c] * sigmoid(-z_0)``
``ecm``        one more sigmoid "class" (background)          ``sigmoid(z_c) * (1 - sigmoid(z_0))``
=============  =============================================  ===================================

mmdetection lays seesaw out as ``C + 2`` (C classes, then a bg/fg logit pair) and ECM as ``C + 1``
with background last; our single objectness logit equals the difference of mmdetection's pair
(a 2-way softmax is a sigmoid of the difference), and background sits first to match torchvision.

Class frequencies are always arguments (tensors), never files: ``class_freqs: (C,)`` = number of
training images holding each class (LVIS ``image_count``), in label order 1..C.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LOSSES",
    "ClassificationLoss",
    "ECMLoss",
    "FederatedLoss",
    "SeesawLoss",
    "SigmoidBCELoss",
    "SoftmaxCELoss",
    "build_classification_loss",
    "ecm_loss",
    "ecm_margins",
    "federated_classes",
    "federated_loss",
    "seesaw_loss",
    "seesaw_weights",
    "sigmoid_bce_loss",
    "softmax_ce_loss",
]


def _check(logits: Tensor, labels: Tensor) -> None:
    if logits.dim() != 2 or labels.dim() != 1 or logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"expected logits (N, C + 1) and labels (N,), got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if labels.numel() and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(
            f"labels must be in 0..{logits.shape[1] - 1} (0 = background), got "
            f"{labels.min().item()}..{labels.max().item()}"
        )


def _full_precision(logits: Tensor) -> Tensor:
    # Under AMP the predictor emits fp16/bf16; margins, count ratios and logs need float32.
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def _zero(logits: Tensor) -> Tensor:
    # An empty batch: a zero that stays connected to the graph (DDP needs every parameter used).
    return logits.sum() * 0.0


# ---- softmax cross-entropy ---------------------------------------------------------------------


def softmax_ce_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Softmax cross-entropy over C + 1 channels, mean over the N samples (torchvision baseline).

    Args:
        logits: (N, C + 1), background at channel 0.
        labels: (N,) in 0..C, 0 = background.
    """
    _check(logits, labels)
    logits = _full_precision(logits)
    if labels.numel() == 0:
        return _zero(logits)
    return F.cross_entropy(logits, labels)


# ---- sigmoid BCE and federated loss ------------------------------------------------------------


def sigmoid_bce_loss(logits: Tensor, labels: Tensor, class_mask: Tensor | None = None) -> Tensor:
    """Per-class sigmoid BCE on the foreground channels, summed over classes, mean over samples.

    ``L = (1/N) sum_i sum_{c in S} BCE(z_ic, [y_i == c])`` with ``S`` the classes where
    ``class_mask`` is True (all C when None). Background samples are negatives for every class;
    channel 0 is not used (detectron2 / CenterNet2 ``sigmoid_cross_entropy_loss``).

    Args:
        logits: (N, C + 1), background at channel 0 (ignored).
        labels: (N,) in 0..C, 0 = background.
        class_mask: (C,) bool over classes 1..C, or None for all.
    """
    _check(logits, labels)
    logits = _full_precision(logits)
    n, c = logits.shape[0], logits.shape[1] - 1
    if n == 0:
        return _zero(logits)
    target = F.one_hot(labels, c + 1)[:, 1:].to(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits[:, 1:], target, reduction="none")
    if class_mask is not None:
        loss = loss * class_mask.to(loss.dtype)[None, :]
    return loss.sum() / n


def federated_classes(
    labels: Tensor,
    class_freqs: Tensor,
    num_sampled: int,
    power: float = 0.5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Classes the federated loss trains on: those in the batch plus sampled negatives.

    Zhou et al., "Probabilistic two-stage detection" (2021), federated loss: every foreground
    class present in ``labels`` is kept; more classes are drawn without replacement with
    probability ``P(c) ∝ freq_c ** power`` until ``num_sampled`` classes are reached (all classes
    with non-zero frequency if there are fewer). Classes never seen in training (freq 0) are never
    drawn.

    Args:
        labels: (N,) in 0..C, 0 = background.
        class_freqs: (C,) training image counts of classes 1..C.
        num_sampled: the size of the subset (``finetune.federated_num_classes``).
        power: frequency exponent (0.5 in the paper).
        generator: optional RNG for reproducible draws.

    Returns:
        (K,) sorted labels in 1..C.
    """
    present = torch.unique(labels[labels > 0])
    if present.numel() >= num_sampled:
        return present
    prob = class_freqs.to(torch.float64).clamp(min=0) ** power
    prob[present - 1] = 0.0
    k = min(num_sampled - present.numel(), int((prob > 0).sum()))
    if k == 0:
        return present
    extra = torch.multinomial(prob.cpu(), k, replacement=False, generator=generator) + 1
    return torch.sort(torch.cat([present, extra.to(present.device)])).values


def federated_loss(
    logits: Tensor,
    labels: Tensor,
    class_freqs: Tensor,
    num_sampled: int,
    power: float = 0.5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Federated loss: :func:`sigmoid_bce_loss` restricted to :func:`federated_classes`.

    Args:
        logits: (N, C + 1), background at channel 0 (ignored).
        labels: (N,) in 0..C, 0 = background.
        class_freqs: (C,) training image counts of classes 1..C.
        num_sampled: subset size |S|.
        power: ``P(c) ∝ freq_c ** power`` for the sampled negatives.
        generator: optional RNG.
    """
    _check(logits, labels)
    logits = _full_precision(logits)
    classes = federated_classes(labels, class_freqs, num_sampled, power, generator)
    mask = torch.zeros(logits.shape[1] - 1, dtype=torch.bool, device=logits.device)
    mask[classes - 1] = True
    return sigmoid_bce_loss(logits, labels, mask)


# ---- Seesaw ------------------------------------------------------------------------------------


def seesaw_weights(
    logits: Tensor, labels: Tensor, cum_counts: Tensor, p: float, q: float, eps: float = 1e-2
) -> Tensor:
    """Seesaw factors ``S_ij = M_ij * C_ij`` of foreground samples (Wang et al., CVPR 2021).

    Mitigation ``M_ij = (N_j / N_i) ** p`` if ``N_i > N_j`` else 1 (N = cumulative counts);
    compensation ``C_ij = (s_j / s_i) ** q`` if ``s_j > s_i`` else 1 (s = softmax probabilities,
    ``s_i`` clamped to ``eps``). i is the sample's class, j any other class.

    Args:
        logits: (P, C) class logits of foreground samples (no background channel), detached.
        labels: (P,) in 0..C-1 (class index, not detection label).
        cum_counts: (C,) cumulative training instances per class.
        p: mitigation exponent; q: compensation exponent; eps: clamp of ``s_i``.

    Returns:
        (P, C) factors, 1 on the sample's own class.
    """
    counts = cum_counts.to(logits.dtype).clamp(min=1)
    ratio = counts[None, :] / counts[labels][:, None]  # N_j / N_i
    mitigation = torch.where(ratio < 1, ratio.pow(p), torch.ones_like(ratio))
    probs = F.softmax(logits, dim=1)
    self_prob = probs.gather(1, labels[:, None]).clamp(min=eps)
    score_ratio = probs / self_prob  # s_j / s_i
    compensation = torch.where(score_ratio > 1, score_ratio.pow(q), torch.ones_like(score_ratio))
    return mitigation * compensation


def seesaw_loss(
    logits: Tensor, labels: Tensor, cum_counts: Tensor, p: float = 0.8, q: float = 2.0
) -> Tensor:
    """Seesaw loss with an objectness channel, normalised by the number of samples N.

    ``L = (1/N) [ sum_i BCE(z_i0, [y_i = 0]) + sum_{i: y_i > 0} -log σ̂_{i,y_i} ]`` with
    ``σ̂_{i,k} = e^{z_ik} / (e^{z_ik} + sum_{j != k} S_kj e^{z_ij})`` over channels 1..C (Seesaw
    paper, Eq. 2); background samples only train the objectness channel, as in mmdetection.

    Args:
        logits: (N, C + 1); channel 0 is the background (objectness) logit, 1..C the classes.
        labels: (N,) in 0..C, 0 = background.
        cum_counts: (C,) cumulative training instances of classes 1..C, including this batch.
        p: mitigation exponent (0.8 in the paper); q: compensation exponent (2.0).
    """
    _check(logits, labels)
    logits = _full_precision(logits)
    n = logits.shape[0]
    if n == 0:
        return _zero(logits)
    is_bg = (labels == 0).to(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits[:, 0], is_bg, reduction="sum")
    fg = labels > 0
    if fg.any():
        z, y = logits[fg, 1:], labels[fg] - 1
        weights = seesaw_weights(z.detach(), y, cum_counts, p, q)
        # log S added to the other classes' logits: e^{z_j} -> S_ij e^{z_j}.
        off_target = 1.0 - F.one_hot(y, z.shape[1]).to(z.dtype)
        loss = loss + F.cross_entropy(z + weights.log() * off_target, y, reduction="sum")
    return loss / n


# ---- ECM ---------------------------------------------------------------------------------------


def ecm_margins(class_freqs: Tensor, fg_bg_ratio: float = 6.3313) -> tuple[Tensor, Tensor, Tensor]:
    """Effective class-margins and class weights (Cho & Krähenbühl, ECCV 2022, Thm. 2).

    Counts ``n_c`` (C + 1 channels, background first with ``n_0 = fg_bg_ratio * sum_c n_c``, the
    official code's empirical Mask R-CNN fg/bg ratio), ``n̄_c = sum n - n_c``:

    - positive margin ``m+_c = log((n_c^¼ + n̄_c^¼) / n̄_c^¼)``,
    - negative margin ``m-_c = log((n_c^¼ + n̄_c^¼) / n_c^¼)``,
    - weight ``w_c = a_c log((1 + a_c) / a_c)`` with ``a_c = n̄_c / n_c``.

    Counts are clamped to >= 1 so a class absent from training gets finite margins.

    Args:
        class_freqs: (C,) training image counts of classes 1..C.
        fg_bg_ratio: background count relative to the total foreground count.

    Returns:
        ``m_pos, m_neg, weight``, each (C + 1,), background at index 0.
    """
    fg = class_freqs.to(torch.float64).clamp(min=1)
    n = torch.cat([fg.sum()[None] * fg_bg_ratio, fg])
    n_neg = n.sum() - n
    root_pos, root_neg = n.pow(0.25), n_neg.pow(0.25)
    m_pos = torch.log((root_pos + root_neg) / root_neg)
    m_neg = torch.log((root_pos + root_neg) / root_pos)
    a = n_neg / n
    weight = a * torch.log((1 + a) / a)
    return m_pos.float(), m_neg.float(), weight.float()


def ecm_loss(
    logits: Tensor, labels: Tensor, class_freqs: Tensor, fg_bg_ratio: float = 6.3313
) -> Tensor:
    """Effective class-margin loss: margin-adjusted binary sigmoid over C + 1 channels.

    ``p+_ic = e^{z_ic + m+_c} / (e^{z_ic + m+_c} + e^{-z_ic + m-_c}) = σ(2 z_ic + m+_c - m-_c)``,
    ``L = (1/N) sum_i sum_c w_c [-t_ic log p+_ic - (1 - t_ic) log(1 - p+_ic)]`` with ``t`` the
    one-hot label over C + 1 channels (background is channel 0). Margins are training-only: test
    scores are ``sigmoid(z_c) * (1 - sigmoid(z_0))`` (official implementation).

    Args:
        logits: (N, C + 1), background at channel 0.
        labels: (N,) in 0..C, 0 = background.
        class_freqs: (C,) training image counts of classes 1..C.
        fg_bg_ratio: see :func:`ecm_margins`.
    """
    _check(logits, labels)
    logits = _full_precision(logits)
    n = logits.shape[0]
    if n == 0:
        return _zero(logits)
    m_pos, m_neg, weight = (t.to(logits) for t in ecm_margins(class_freqs, fg_bg_ratio))
    x = 2 * logits + (m_pos - m_neg)[None, :]
    target = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(x, target, reduction="none")
    return (loss * weight[None, :]).sum() / n


# ---- modules: loss + test-time scores ----------------------------------------------------------


class ClassificationLoss(nn.Module):
    """A box classification loss together with the matching test-time scores.

    ``forward(logits (N, C + 1), labels (N,)) -> scalar``; ``scores(logits) -> (N, C)``
    probabilities of classes 1..C (background excluded), used by the detector's postprocessing.
    ``sigmoid_prior`` (or None) is the initial foreground probability the classifier bias is set
    to (detectron2 initialises sigmoid classifiers with prior 0.01 so the C negatives start small).
    """

    name = "base"
    sigmoid_prior: float | None = None

    def __init__(self, num_classes: int):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes

    def scores(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits[:, 1:])

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"


class SoftmaxCELoss(ClassificationLoss):
    """:func:`softmax_ce_loss`; scores = softmax over C + 1, background column dropped."""

    name = "ce"

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return softmax_ce_loss(logits, labels)

    def scores(self, logits: Tensor) -> Tensor:
        return F.softmax(logits, dim=1)[:, 1:]


class SigmoidBCELoss(ClassificationLoss):
    """:func:`sigmoid_bce_loss` over all C classes; scores = ``sigmoid(z_1..C)``."""

    name = "bce"
    sigmoid_prior = 0.01

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return sigmoid_bce_loss(logits, labels)


def _freqs_buffer(class_freqs: Tensor | None, num_classes: int, loss: str) -> Tensor:
    if class_freqs is None:
        raise ValueError(f"loss '{loss}' needs class_freqs (training image count per class)")
    freqs = torch.as_tensor(class_freqs, dtype=torch.float32).flatten()
    if freqs.numel() != num_classes:
        raise ValueError(
            f"loss '{loss}': class_freqs has {freqs.numel()} entries, need {num_classes}"
        )
    if (freqs < 0).any():
        raise ValueError(f"loss '{loss}': class_freqs must be >= 0")
    return freqs


class FederatedLoss(ClassificationLoss):
    """:func:`federated_loss`; scores = ``sigmoid(z_1..C)``.

    Args:
        num_classes: C.
        class_freqs: (C,) training image counts (not saved in checkpoints: data, not state).
        num_sampled: classes per iteration (``finetune.federated_num_classes``).
        power: sampling exponent (``finetune.federated_power``).
    """

    name = "federated"
    sigmoid_prior = 0.01

    def __init__(self, num_classes: int, class_freqs: Tensor, num_sampled: int = 50, power=0.5):
        super().__init__(num_classes)
        if num_sampled < 1:
            raise ValueError(f"finetune.federated_num_classes must be >= 1, got {num_sampled}")
        self.register_buffer(
            "class_freqs", _freqs_buffer(class_freqs, num_classes, self.name), persistent=False
        )
        self.num_sampled, self.power = num_sampled, power

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return federated_loss(logits, labels, self.class_freqs, self.num_sampled, self.power)


class SeesawLoss(ClassificationLoss):
    """:func:`seesaw_loss` with the cumulative class counts kept as a buffer (saved, resumable).

    In training mode each call first adds the batch's foreground label counts to ``cum_counts``
    (summed over ranks when ``gather_distributed`` and a process group exist, so every rank keeps
    the global counts), then computes the loss. Scores = ``softmax(z_1..C) * sigmoid(-z_0)``.
    """

    name = "seesaw"

    def __init__(self, num_classes: int, p: float = 0.8, q: float = 2.0, gather_distributed=True):
        super().__init__(num_classes)
        self.p, self.q, self.gather_distributed = p, q, gather_distributed
        self.register_buffer("cum_counts", torch.zeros(num_classes, dtype=torch.float64))

    @torch.no_grad()
    def update_counts(self, labels: Tensor) -> None:
        batch = torch.bincount(labels, minlength=self.num_classes + 1)[1:].to(self.cum_counts)
        if self.gather_distributed and dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch)
        self.cum_counts += batch

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        if self.training:
            self.update_counts(labels)
        return seesaw_loss(logits, labels, self.cum_counts, self.p, self.q)

    def scores(self, logits: Tensor) -> Tensor:
        return F.softmax(logits[:, 1:], dim=1) * torch.sigmoid(-logits[:, :1])


class ECMLoss(ClassificationLoss):
    """:func:`ecm_loss`; scores = ``sigmoid(z_c) * (1 - sigmoid(z_0))`` (margins train-only)."""

    name = "ecm"

    def __init__(self, num_classes: int, class_freqs: Tensor, fg_bg_ratio: float = 6.3313):
        super().__init__(num_classes)
        self.register_buffer(
            "class_freqs", _freqs_buffer(class_freqs, num_classes, self.name), persistent=False
        )
        self.fg_bg_ratio = fg_bg_ratio

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return ecm_loss(logits, labels, self.class_freqs, self.fg_bg_ratio)

    def scores(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits[:, 1:]) * torch.sigmoid(-logits[:, :1])


# name -> factory(num_classes, class_freqs, options); ``finetune.loss`` picks one.
LOSSES: dict[str, Callable[..., ClassificationLoss]] = {
    "ce": lambda c, freqs, o: SoftmaxCELoss(c),
    "bce": lambda c, freqs, o: SigmoidBCELoss(c),
    "federated": lambda c, freqs, o: FederatedLoss(
        c, freqs, o.get("federated_num_classes", 50), o.get("federated_power", 0.5)
    ),
    "seesaw": lambda c, freqs, o: SeesawLoss(c, o.get("seesaw_p", 0.8), o.get("seesaw_q", 2.0)),
    "ecm": lambda c, freqs, o: ECMLoss(c, freqs, o.get("ecm_fg_bg_ratio", 6.3313)),
}


def build_classification_loss(
    name: str, num_classes: int, class_freqs: Tensor | None = None, **options: float
) -> ClassificationLoss:
    """Build a loss from :data:`LOSSES`.

    Args:
        name: one of ``ce``, ``bce``, ``federated``, ``seesaw``, ``ecm``.
        num_classes: C (foreground classes).
        class_freqs: (C,) training image counts; required by ``federated`` and ``ecm``.
        options: ``federated_num_classes``, ``federated_power``, ``seesaw_p``, ``seesaw_q``,
            ``ecm_fg_bg_ratio``.
    """
    if name not in LOSSES:
        raise ValueError(f"finetune.loss: got {name!r}, allowed: {', '.join(LOSSES)}")
    return LOSSES[name](num_classes, class_freqs, options)


def prior_bias(prior: float) -> float:
    """Logit whose sigmoid is ``prior``: ``-log((1 - prior) / prior)``."""
    return -math.log((1 - prior) / prior)
