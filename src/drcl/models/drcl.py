"""The 2DRCL pre-training model: online + EMA target ResNet-FPN with HCL, LCL, AR and SR heads.

One training step sees, per image, two augmented views, K boxes carried into both, and a
patch-masked copy of view 1 (see ``drcl.pretrain.dataset``). Passes per step:

- online encoder on ``[view1; view2]`` (once, batched), with gradient;
- target encoder on ``[view1; view2]`` (once, ``no_grad``), reused by HCL, LCL and SR;
- online encoder on ``masked_view1`` (once), only when SR or AR(input=masked) is on; it uses
  batch statistics but does not update the backbone's BN running statistics
  (``sr.masked_bn_update``), so the exported backbone carries statistics of unmasked views only.

Losses (``docs/method.md`` gives the formulas and the reasons):

- HCL: global-pooled C5 -> projector -> predictor; BYOL ``2 - 2 cos`` against the target's
  projection of the other view, symmetrised (mean of both directions); or InfoNCE.
- LCL: ``MultiScaleRoIAlign`` 7x7 on P2-P5 -> ``TwoMLPHead`` -> projector -> predictor;
  InfoNCE (t = 0.5), positive = the same box in the other view (target), negatives = all other
  valid boxes of the global batch; supervised option = multi-positive by known class.
- AR: decoder from P2 of the masked view 1 -> normalised RGB of view 1 before photometric
  augmentation (``clean_view1``); L1 on the masked patches (MAE-style; options in ``ar``).
- SR: predictor on the masked image's P2-P5 -> target's P2-P5 of the whole view 1, ``1 - cos``
  at masked positions.

A term with weight 0 builds no head, is not computed and is returned as a detached 0. Parts of
the encoder that no enabled term reaches (FPN without LCL/AR/SR, box head without LCL) are frozen,
so DDP runs with ``find_unused_parameters=False``.
"""

from __future__ import annotations

import contextlib
import copy
import os
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import MultiScaleRoIAlign, roi_align

from drcl.config.schema import (
    ARConfig,
    EMAConfig,
    HCLConfig,
    LCLConfig,
    ModelConfig,
    SRConfig,
)
from drcl.losses.contrastive import (
    byol_loss,
    gather_with_local_grad,
    info_nce,
    multi_positive_info_nce,
)
from drcl.losses.reconstruction import (
    patch_normalize,
    pixel_l1_loss,
    semantic_reconstruction_loss,
)
from drcl.models.backbone import build_resnet_fpn, set_stage_checkpointing
from drcl.models.batch import REQUIRED, PretrainBatch
from drcl.models.bn_stats import frozen_bn_stats
from drcl.models.ema import ema_momentum, ema_update
from drcl.models.heads import (
    FeaturePredictor,
    MLPHead,
    PixelDecoder,
    RoIPixelDecoder,
    TwoMLPHead,
    global_pool,
    masked_rows,
)

LEVELS = ("0", "1", "2", "3")  # P2-P5 (strides 4-32); 'pool' (P6) is for the RPN only
TERMS = ("hcl", "lcl", "ar", "sr")
AR_TARGET_SIZE = 28  # object-centric AR: box crops at 28x28 (the mask head's resolution)


class Encoder(nn.Module):
    """The parts that exist in both networks: ResNet-FPN, box head, HCL and LCL projectors."""

    def __init__(
        self,
        backbone: nn.Module,
        box_head: TwoMLPHead,
        hcl_projector: MLPHead | None,
        lcl_projector: MLPHead | None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.box_head = box_head
        self.hcl_projector = hcl_projector
        self.lcl_projector = lcl_projector

    def encode(self, x: Tensor, with_fpn: bool) -> tuple[Tensor, dict[str, Tensor] | None]:
        """``x: (B, 3, H, W)`` -> (C5 ``(B, C5, H/32, W/32)``, FPN levels or None)."""
        feats = self.backbone.body(x)  # '0'..'3' = C2..C5 (layer1..layer4), before the FPN
        c5 = feats["3"]
        return c5, (self.backbone.fpn(feats) if with_fpn else None)


class DRCLModel(nn.Module):
    """2DRCL pre-training model; ``forward(batch)`` returns the losses.

    Args:
        depth, fpn_channels, norm, trainable_layers, weights: the ResNet-FPN
            (:func:`drcl.models.backbone.build_resnet_fpn`).
        box_head_dim: ``TwoMLPHead`` width (1024 in torchvision's Faster R-CNN).
        hcl, lcl, ar, sr, ema: the ``cfg.pretrain.*`` sections (dataclasses or OmegaConf nodes);
            ``None`` = schema defaults.
        gather_distributed: contrast against the keys of all ranks when a process group exists.
        checkpointing: recompute the online ResNet stages in backward (``pretrain.checkpointing``;
            :func:`drcl.models.backbone.set_stage_checkpointing`): same numbers, less memory.
    """

    def __init__(
        self,
        depth: int,
        fpn_channels: int = ModelConfig.fpn_channels,  # defaults live in the schema, once
        box_head_dim: int = ModelConfig.box_head_dim,
        norm: str = ModelConfig.norm,
        trainable_layers: int = ModelConfig.trainable_layers,
        weights: str | os.PathLike | None = None,
        hcl: HCLConfig | None = None,
        lcl: LCLConfig | None = None,
        ar: ARConfig | None = None,
        sr: SRConfig | None = None,
        ema: EMAConfig | None = None,
        gather_distributed: bool = True,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.hcl_cfg = hcl if hcl is not None else HCLConfig()
        self.lcl_cfg = lcl if lcl is not None else LCLConfig()
        self.ar_cfg = ar if ar is not None else ARConfig()
        self.sr_cfg = sr if sr is not None else SRConfig()
        self.ema_cfg = ema if ema is not None else EMAConfig()
        self.gather_distributed = gather_distributed
        terms = (self.hcl_cfg, self.lcl_cfg, self.ar_cfg, self.sr_cfg)
        self.loss_weights = {t: float(c.weight) for t, c in zip(TERMS, terms, strict=True)}
        self._check_values()
        on = self.enabled
        head_norm = nn.SyncBatchNorm if norm == "sync_bn" else nn.BatchNorm1d
        backbone = build_resnet_fpn(depth, fpn_channels, norm, trainable_layers, weights)
        c5_dim = backbone.body.layer4[-1].conv1.in_channels  # 512 (basic) or 2048 (bottleneck)
        h, lc = self.hcl_cfg, self.lcl_cfg
        self.online = Encoder(
            backbone,
            TwoMLPHead(fpn_channels * 7 * 7, box_head_dim),
            MLPHead(c5_dim, h.hidden_dim, h.proj_dim, head_norm) if on("hcl") else None,
            MLPHead(box_head_dim, lc.hidden_dim, lc.proj_dim, head_norm) if on("lcl") else None,
        )
        self._build_online_only_heads(fpn_channels, head_norm, norm)
        self._freeze_unreached()
        self.target = copy.deepcopy(self.online)
        self.target.requires_grad_(False)
        set_stage_checkpointing(self.online.backbone.body, checkpointing)  # online side only
        self.roi_pool = MultiScaleRoIAlign(list(LEVELS), 7, sampling_ratio=2)
        self.ar_roi_pool = MultiScaleRoIAlign(list(LEVELS), 14, sampling_ratio=2)
        self._init_queue()

    # ----------------------------------------------------------------------------- construction
    def enabled(self, term: str) -> bool:
        """A term is on when its weight is non-zero (the paper's ablation switches)."""
        return self.loss_weights[term] != 0.0

    def _check_values(self) -> None:
        # choices (hcl.loss, ar.target, ar.input) are Enums, checked when the config loads
        if not any(self.enabled(t) for t in TERMS):
            raise ValueError("pretrain.{hcl,lcl,ar,sr}.weight are all 0: nothing to train")
        if self.enabled("sr") and int(self.sr_cfg.patch) < 1:
            raise ValueError(f"pretrain.sr.patch: must be >= 1, got {self.sr_cfg.patch}")

    @property
    def _ar_input(self) -> str:
        return str(self.ar_cfg.input)

    def _build_online_only_heads(self, fpn_channels: int, head_norm: Any, norm: str) -> None:
        """Predictors (online side only, BYOL's asymmetry) and the reconstruction heads."""
        h, lc = self.hcl_cfg, self.lcl_cfg
        on = self.enabled
        self.hcl_predictor = (
            MLPHead(h.proj_dim, h.hidden_dim, h.proj_dim, head_norm) if on("hcl") else None
        )
        self.lcl_predictor = (
            MLPHead(lc.proj_dim, lc.hidden_dim, lc.proj_dim, head_norm) if on("lcl") else None
        )
        ch = int(self.ar_cfg.channels)
        self.ar_decoder: nn.Module | None = None
        if on("ar"):
            pixel = self.ar_cfg.target == "pixel"
            self.ar_decoder = (PixelDecoder if pixel else RoIPixelDecoder)(fpn_channels, ch)
        bn2d = nn.SyncBatchNorm if norm == "sync_bn" else nn.BatchNorm2d
        self.sr_predictor = FeaturePredictor(fpn_channels, bn2d) if on("sr") else None

    def _freeze_unreached(self) -> None:
        """Freeze what no enabled loss reaches, so every trainable parameter gets a gradient."""
        fpn = self.online.backbone.fpn
        if not (self.enabled("lcl") or self.enabled("sr") or self.enabled("ar")):
            fpn.requires_grad_(False)
        elif not (self.enabled("lcl") or self.enabled("sr")) and self.ar_cfg.target == "pixel":
            fpn.layer_blocks[1:].requires_grad_(False)  # pixel AR reads P2 only
        if not self.enabled("lcl"):
            self.online.box_head.requires_grad_(False)

    def _init_queue(self) -> None:
        """HCL InfoNCE option: a MoCo queue of target projections (``hcl.queue_size`` > 0)."""
        size = int(self.hcl_cfg.queue_size)
        queue = None
        if self.enabled("hcl") and self.hcl_cfg.loss == "infonce" and size > 0:
            queue = nn.functional.normalize(torch.randn(size, self.hcl_cfg.proj_dim), dim=1)
        self.register_buffer("queue", queue)
        if queue is not None:
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.int64))

    # --------------------------------------------------------------------------------- forward
    def forward(self, batch: PretrainBatch) -> dict[str, Tensor]:
        """Compute the enabled losses for one batch.

        Args:
            batch: a :class:`~drcl.models.batch.PretrainBatch`, of which ``view1``, ``view2``:
                (B, 3, S, S) ImageNet-normalised views;
                ``boxes1``, ``boxes2``: (B, K, 4) xyxy in view pixels (the same boxes);
                ``box_valid``: (B, K) bool, the box survived in both views;
                ``box_labels``: (B, K) int64, class 1..C or 0 = unknown;
                ``mask``: (B, ceil(S/patch), ceil(S/patch)) bool, True = masked patch, and
                ``masked_view1``: (B, 3, S, S), needed when SR or AR(input=masked) is on.

        Returns:
            ``loss_hcl``, ``loss_lcl``, ``loss_ar``, ``loss_sr`` (unweighted; a disabled term is a
            detached 0) and ``loss`` = sum of weight * term over enabled terms.
        """
        self._check_batch(batch)
        b = batch.view1.shape[0]
        views = torch.cat([batch.view1, batch.view2])
        c5_on, fpn_on, c5_tg, fpn_tg, fpn_masked = self._encode_all(views, batch)
        losses: dict[str, Tensor] = {}
        if self.enabled("hcl"):
            losses["hcl"] = self._hcl_loss(c5_on, c5_tg)
        if self.enabled("lcl"):
            losses["lcl"] = self._lcl_loss(fpn_on, fpn_tg, batch)
        if self.enabled("ar"):
            ar_feats = fpn_masked if self._ar_masked else {k: fpn_on[k][:b] for k in LEVELS}
            losses["ar"] = self._ar_loss(ar_feats, batch)
        if self.enabled("sr"):
            losses["sr"] = self._sr_loss(fpn_masked, {k: fpn_tg[k][:b] for k in LEVELS}, batch)
        return self._with_total(losses, views)

    @property
    def _ar_masked(self) -> bool:
        return self.enabled("ar") and self._ar_input == "masked"

    def _encode_all(self, views: Tensor, batch: PretrainBatch) -> tuple[Any, ...]:
        """Run each network once, computing only what the enabled terms read.

        Returns:
            ``(c5_online, fpn_online, c5_target, fpn_target, fpn_masked)`` for ``views =
            [view1; view2]`` (2B images) and ``masked_view1`` (B images); None where not needed.
        """
        on = self.enabled
        ar_view = on("ar") and not self._ar_masked
        c5_on = fpn_on = c5_tg = fpn_tg = fpn_masked = None
        masked = on("sr") or self._ar_masked
        shared = masked and bool(self.sr_cfg.shared_pass)
        if shared and (on("hcl") or on("lcl") or ar_view):
            # one online pass over [masked view 1; view 2] serves every term (sr.shared_pass)
            b = views.shape[0] // 2
            with self._masked_bn_context():
                c5_on, fpn_on = self.online.encode(
                    torch.cat([batch.masked_view1, views[b:]]), with_fpn=True
                )
            self._update_bn_stats(views[b:])
            fpn_masked = {k: v[:b] for k, v in fpn_on.items()}
        elif on("hcl") or on("lcl") or ar_view:
            c5_on, fpn_on = self.online.encode(views, with_fpn=on("lcl") or ar_view)
        if on("hcl") or on("lcl") or on("sr"):
            with torch.no_grad():
                c5_tg, fpn_tg = self.target.encode(views, with_fpn=on("lcl") or on("sr"))
        if masked and fpn_masked is None:
            with self._masked_bn_context():
                fpn_masked = self.online.encode(batch.masked_view1, with_fpn=True)[1]
        return c5_on, fpn_on, c5_tg, fpn_tg, fpn_masked

    def _masked_bn_context(self) -> Any:
        """The exported backbone's BN running statistics ignore masked images (sr.masked_bn_update
        false, the default): they describe real images, which is what fine-tuning sees."""
        if self.sr_cfg.masked_bn_update:
            return contextlib.nullcontext()
        return frozen_bn_stats(self.online.backbone)

    @torch.no_grad()
    def _update_bn_stats(self, images: Tensor) -> None:
        """sr.shared_pass: the shared pass mixed masked and unmasked images, so refresh the
        running statistics from the unmasked view 2 alone (a no-grad pass through the ResNet
        body; the FPN has no BN). Skipped with masked_bn_update or in eval mode."""
        if self.sr_cfg.masked_bn_update or not self.training:
            return
        self.online.backbone.body(images)

    def _with_total(self, losses: dict[str, Tensor], ref: Tensor) -> dict[str, Tensor]:
        zero = ref.new_zeros((), dtype=torch.float32)
        out = {f"loss_{t}": losses[t] if t in losses else zero.detach() for t in TERMS}
        out["loss"] = sum((self.loss_weights[t] * losses[t] for t in losses), zero)
        return out

    # ------------------------------------------------------------------------------- HCL (C5)
    def _hcl_loss(self, c5_on: Tensor, c5_tg: Tensor) -> Tensor:
        """Symmetric HCL: ``(D(p1, z2) + D(p2, z1)) / 2`` on global-pooled C5 of ``[v1; v2]``."""
        b = c5_on.shape[0] // 2
        p = self.hcl_predictor(self.online.hcl_projector(global_pool(c5_on)))
        with torch.no_grad():
            z = self.target.hcl_projector(global_pool(c5_tg))
        if self.hcl_cfg.loss == "byol":
            return 0.5 * (byol_loss(p[:b], z[b:]) + byol_loss(p[b:], z[:b]))
        t, extra = float(self.hcl_cfg.temperature), self.queue
        extra = None if extra is None else extra.clone()  # enqueue below must not alter it
        gather = self.gather_distributed
        loss = 0.5 * (
            info_nce(p[:b], z[b:], t, gather_distributed=gather, extra_negatives=extra)
            + info_nce(p[b:], z[:b], t, gather_distributed=gather, extra_negatives=extra)
        )
        if self.queue is not None:
            self._enqueue(z)
        return loss

    @torch.no_grad()
    def _enqueue(self, z: Tensor) -> None:
        """Write the (gathered) target projections into the ring buffer, oldest first out."""
        z_all = gather_with_local_grad(z)[0] if self.gather_distributed else z
        size = self.queue.shape[0]
        z_all = nn.functional.normalize(z_all[-size:].float(), dim=1)
        idx = (self.queue_ptr + torch.arange(z_all.shape[0], device=z.device)) % size
        self.queue[idx] = z_all.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + z_all.shape[0]) % size)

    # ------------------------------------------------------------------------------ LCL (boxes)
    def _lcl_loss(self, fpn_on: dict, fpn_tg: dict, batch: PretrainBatch) -> Tensor:
        """Symmetric box-level InfoNCE between online(view a) predictions and target(view b)."""
        valid = batch.box_valid.bool()
        b, k = valid.shape
        size = tuple(batch.view1.shape[-2:])
        boxes = _fill_invalid(torch.cat([batch.boxes1, batch.boxes2]), valid.repeat(2, 1), size)
        valid2 = valid.reshape(-1).repeat(2)
        online = self._box_embeddings(self.online, fpn_on, boxes, valid2, size)
        q = masked_rows(self.lcl_predictor, online, valid2)
        with torch.no_grad():
            key = self._box_embeddings(self.target, fpn_tg, boxes, valid2, size)
        n, v = b * k, valid.reshape(-1)
        return 0.5 * (
            self._box_contrast(q[:n], key[n:], v, batch)
            + self._box_contrast(q[n:], key[:n], v, batch)
        )

    def _box_embeddings(
        self, enc: Encoder, fpn: dict, boxes: Tensor, valid: Tensor, size: tuple[int, int]
    ) -> Tensor:
        """``boxes: (2B, K, 4)`` -> RoIAlign 7x7 on P2-P5 -> box head -> projector: (2B*K, D)."""
        rois = self.roi_pool(
            {n: fpn[n] for n in LEVELS}, list(boxes.unbind(0)), [size] * len(boxes)
        )
        return masked_rows(enc.lcl_projector, enc.box_head(rois), valid)

    def _box_contrast(self, q: Tensor, k: Tensor, valid: Tensor, batch: PretrainBatch) -> Tensor:
        t, gather = float(self.lcl_cfg.temperature), self.gather_distributed
        if self.lcl_cfg.supervised:
            labels = batch.box_labels.reshape(-1)
            return multi_positive_info_nce(q, k, labels, labels, t, valid, gather)
        return info_nce(q, k, t, valid, gather)

    # ------------------------------------------------------------------------ AR and SR (pixels)
    def _ar_loss(self, feats: dict[str, Tensor], batch: PretrainBatch) -> Tensor:
        """L1 to the normalised RGB of view 1 before photometric augmentation (``ar.clean_target``),
        on the masked patches (``ar.masked_only``), whole image or box crops."""
        image = batch.clean_view1 if self._ar_clean else batch.view1
        size = tuple(image.shape[-2:])
        norm_pix = bool(self.ar_cfg.norm_pix)
        if self.ar_cfg.target == "pixel":
            mask = self._pixel_mask(batch) if self._ar_masked_only else None
            target = patch_normalize(image, int(self.sr_cfg.patch)) if norm_pix else image
            return pixel_l1_loss(self.ar_decoder(feats["0"], size), target, mask)
        valid = batch.box_valid.bool()
        boxes = list(_fill_invalid(batch.boxes1, valid, size).unbind(0))
        pred = self.ar_decoder(self.ar_roi_pool(feats, boxes, [size] * len(boxes)))
        with torch.no_grad():  # (B*K, 3, 28, 28) crops, same box order as the RoI features
            target = roi_align(image, boxes, AR_TARGET_SIZE, 1.0, 2, aligned=True)
            target = patch_normalize(target, AR_TARGET_SIZE) if norm_pix else target
        keep = valid.reshape(-1)[:, None, None].expand(-1, AR_TARGET_SIZE, AR_TARGET_SIZE)
        return pixel_l1_loss(pred, target, keep)

    @property
    def _ar_clean(self) -> bool:
        return self.enabled("ar") and bool(self.ar_cfg.clean_target)

    @property
    def _ar_masked_only(self) -> bool:
        """Masked patches only: pixel target decoded from the masked view (with input=view
        nothing is hidden, so every pixel counts)."""
        return self._ar_masked and self.ar_cfg.target == "pixel" and bool(self.ar_cfg.masked_only)

    def _sr_loss(self, fpn_masked: dict, fpn_tg1: dict, batch: PretrainBatch) -> Tensor:
        """``1 - cos`` between predicted P2-P5 of the masked view 1 and the target's of view 1."""
        pred = self.sr_predictor([fpn_masked[n] for n in LEVELS])
        target = [fpn_tg1[n] for n in LEVELS]
        return semantic_reconstruction_loss(pred, target, self._pixel_mask(batch))

    def _pixel_mask(self, batch: PretrainBatch) -> Tensor:
        """Patch grid ``(B, gh, gw)`` -> pixel mask ``(B, H, W)`` with ``patch = sr.patch``."""
        grid, (h, w) = batch.mask.bool(), batch.view1.shape[-2:]
        patch = int(self.sr_cfg.patch)
        if grid.shape[1:] != (-(-h // patch), -(-w // patch)):
            raise ValueError(
                f"batch.mask: shape {tuple(grid.shape)} is not the ceil({h}/{patch}) x "
                f"ceil({w}/{patch}) patch grid of pretrain.sr.patch={patch}"
            )
        return grid.repeat_interleave(patch, 1).repeat_interleave(patch, 2)[:, :h, :w]

    def _check_batch(self, batch: PretrainBatch) -> None:
        need = list(REQUIRED)
        if self.enabled("sr") or self._ar_masked:
            need += ["mask", "masked_view1"]
        if self._ar_clean:
            need += ["clean_view1"]
        missing = [key for key in need if getattr(batch, key) is None]
        if missing:
            raise ValueError(f"batch is missing {missing}; it has {sorted(batch.tensors())}")
        v1 = batch.view1
        if v1.dim() != 4 or v1.shape[1] != 3 or batch.view2.shape != v1.shape:
            raise ValueError(f"batch.view1/view2: need equal (B, 3, S, S), got {tuple(v1.shape)}")
        b, k = batch.box_valid.shape
        for key, shape in (("boxes1", (b, k, 4)), ("boxes2", (b, k, 4)), ("box_labels", (b, k))):
            if tuple(getattr(batch, key).shape) != shape or b != v1.shape[0]:
                raise ValueError(
                    f"batch.{key}: expected {shape} with B={v1.shape[0]}, "
                    f"got {tuple(getattr(batch, key).shape)}"
                )

    # ------------------------------------------------------------------------ EMA and export
    def update_target(self, progress: float) -> float:
        """EMA step with momentum ``m(progress)`` (cosine from ema.momentum to ema.momentum_end)."""
        m = ema_momentum(progress, float(self.ema_cfg.momentum), float(self.ema_cfg.momentum_end))
        ema_update(self.target, self.online, m)
        return m

    def export_state_dict(self) -> dict[str, Tensor]:
        """Online backbone, FPN and box head in torchvision's detector key layout.

        Keys: ``backbone.body.*``, ``backbone.fpn.*``, ``roi_heads.box_head.fc6.*``/``fc7.*``,
        as in ``FasterRCNN(backbone, ...)``; tensors are detached copies.
        """
        out = {f"backbone.{k}": v for k, v in self.online.backbone.state_dict().items()}
        out |= {f"roi_heads.box_head.{k}": v for k, v in self.online.box_head.state_dict().items()}
        return {k: v.detach().clone() for k, v in out.items()}


def _fill_invalid(boxes: Tensor, valid: Tensor, size: tuple[int, int]) -> Tensor:
    """Replace padding boxes by the whole view so RoIAlign never sees garbage coordinates.

    Args:
        boxes: (N, K, 4) xyxy. valid: (N, K) bool. size: (H, W) of the view.
    """
    whole = boxes.new_tensor([0.0, 0.0, float(size[1]), float(size[0])])
    return torch.where(valid[..., None], boxes, whole)
