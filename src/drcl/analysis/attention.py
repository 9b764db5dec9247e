"""Grad-CAM attention maps of a torchvision detector's backbone / FPN.

A small hook-based implementation rather than a dependency (``pytorch-grad-cam``): torchvision
detectors return lists of dicts, resize and pad the image internally, and pass FPN levels as a
dict, which generic CAM packages need wrappers for; the whole method is a few lines here.

Grad-CAM (Selvaraju et al., 2017) for one feature map ``A`` (K, h, w) and a scalar score ``y``:
``alpha_k = mean_{u,v} dy/dA_k[u, v]``, ``cam = ReLU(sum_k alpha_k A_k)``. With several FPN levels
each level's map is computed, upsampled to the padded network input and summed. The map is then
cropped to the resized image (the detector pads to a multiple of 32), resized to the original
image, and divided by its maximum (all zeros when the score has no positive evidence).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drcl.analysis.plotting import new_figure, save_figure

DEFAULT_LAYER = "backbone.fpn"


def _resolve_layer(model: nn.Module, layer: str) -> tuple[nn.Module, str | None]:
    """``'backbone.fpn'`` (all levels), ``'backbone.fpn:0'`` (one level) or any module name."""
    name, _, level = layer.partition(":")
    try:
        return model.get_submodule(name), (level or None)
    except AttributeError as err:
        raise ValueError(
            f"layer {name!r} not found in {type(model).__name__} "
            "(e.g. 'backbone.fpn', 'backbone.fpn:0', 'backbone.body.layer4')"
        ) from err


def _feature_maps(output: Any, level: str | None, layer: str) -> list[Tensor]:
    """The (1, K, h, w) maps a hooked module produced: a tensor, or the levels of a dict."""
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, Mapping):
        if level is None:
            return [v for v in output.values() if isinstance(v, Tensor)]
        if level in output:
            return [output[level]]
        raise ValueError(f"layer {layer!r}: no level {level!r}; levels: {', '.join(output)}")
    raise ValueError(f"layer {layer!r} returns {type(output).__name__}, not a feature map")


class _Capture:
    """Forward hooks recording the chosen feature maps, the input geometry and class logits."""

    def __init__(self, model: nn.Module, layer: str):
        module, self.level = _resolve_layer(model, layer)
        self.layer, self.output, self.geometry, self.logits = layer, None, None, None
        self.handles = [module.register_forward_hook(self._features)]
        if isinstance(getattr(model, "transform", None), nn.Module):
            self.handles.append(model.transform.register_forward_hook(self._transform))
        predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
        if isinstance(predictor, nn.Module):
            self.handles.append(predictor.register_forward_hook(self._logits))

    def _features(self, module, args, output) -> None:
        self.output = output

    def _transform(self, module, args, output) -> None:
        images = output[0]  # ImageList: padded batch + sizes after resizing
        self.geometry = (tuple(images.tensors.shape[-2:]), tuple(images.image_sizes[0]))

    def _logits(self, module, args, output) -> None:
        self.logits = output[0]  # (R, C + 1) class logits of the R proposals

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _target_score(detections: list[dict], logits: Tensor | None, target_class: int) -> Tensor:
    """Score of the top detection of ``target_class``; else its max logit over the proposals."""
    det = detections[0]
    mine = det["labels"] == target_class
    if mine.any():
        return det["scores"][mine].max()
    if logits is None or logits.shape[0] == 0:
        raise ValueError(
            f"no detection of class {target_class} and no class logits to fall back on"
        )
    if not 0 <= target_class < logits.shape[1]:
        raise ValueError(f"target_class {target_class} out of range for {logits.shape[1]} logits")
    return logits[:, target_class].max()


def _cam(
    features: Sequence[Tensor], grads: Sequence[Tensor | None], size: tuple[int, int]
) -> Tensor:
    """Sum over maps of ReLU(sum_k alpha_k A_k), each upsampled to ``size``: (h, w)."""
    total = torch.zeros(size, dtype=torch.float64)
    for feat, grad in zip(features, grads, strict=True):
        if grad is None:  # this level did not contribute to the score
            continue
        alpha = grad.detach().double().mean(dim=(2, 3), keepdim=True)  # (1, K, 1, 1)
        cam = F.relu((alpha * feat.detach().double()).sum(1, keepdim=True))  # (1, 1, h, w)
        total += F.interpolate(cam.cpu(), size=size, mode="bilinear", align_corners=False)[0, 0]
    return total


def gradcam(
    model: nn.Module, image: Tensor, target_class: int, layer: str = DEFAULT_LAYER
) -> np.ndarray:
    """Grad-CAM map of one image for one class.

    Args:
        model: a torchvision-style detector (``model([image]) -> [{"boxes", "labels",
            "scores"}]``); put in eval mode for the call, its mode is restored after.
        image: (3, H, W) float in [0, 1], as the detector takes it.
        target_class: contiguous label 1..C.
        layer: ``'backbone.fpn'`` (all FPN levels), ``'backbone.fpn:<level>'``, or any module
            whose output is a feature map, e.g. ``'backbone.body.layer4'``.

    Returns:
        (H, W) float32 map in [0, 1].
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W), got {tuple(image.shape)}")
    capture, was_training = _Capture(model, layer), model.training
    device = next(model.parameters(), torch.empty(0)).device
    # the input requires grad so the graph exists even when every weight is frozen
    x = image.detach().to(device, torch.float32).clone().requires_grad_(True)
    try:
        model.eval()
        with torch.enable_grad():
            detections = model([x])
            score = _target_score(detections, capture.logits, target_class)
            if capture.output is None:
                raise ValueError(f"layer {layer!r} was not run by the model's forward")
            feats = _feature_maps(capture.output, capture.level, layer)
            grads = torch.autograd.grad(score, feats, allow_unused=True)
    finally:
        capture.remove()
        model.train(was_training)
    h, w = image.shape[-2:]
    padded, resized = capture.geometry or ((h, w), (h, w))
    cam = _cam(feats, grads, padded)[: resized[0], : resized[1]]
    cam = F.interpolate(cam[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    peak = float(cam.max())
    return (cam / peak if peak > 0 else torch.zeros_like(cam)).clamp(0, 1).float().numpy()


def _as_hwc(image: Tensor | np.ndarray) -> np.ndarray:
    arr = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(1, 2, 0)
    return np.clip(arr.astype(np.float32), 0, 1)


def plot_attention(
    images: Sequence[Tensor | np.ndarray],
    maps: Mapping[str, Sequence[np.ndarray]],
    out_png: str | os.PathLike,
    row_labels: Sequence[str] | None = None,
) -> Path:
    """Grid of Grad-CAM overlays: rows = images, columns = the image, then one per checkpoint.

    Args:
        images: (3, H, W) tensors or (H, W, 3) arrays in [0, 1].
        maps: ``{checkpoint name: [(H, W) map per image]}``.
        out_png: PNG path, written atomically.
        row_labels: one label per image (e.g. image ids).
    """
    imgs = [_as_hwc(im) for im in images]
    for name, per_image in maps.items():
        if len(per_image) != len(imgs):
            raise ValueError(f"{name!r}: {len(per_image)} maps for {len(imgs)} images")
        for i, (m, im) in enumerate(zip(per_image, imgs, strict=True)):
            if np.shape(m) != im.shape[:2]:
                raise ValueError(f"{name!r}: map {i} is {np.shape(m)}, image is {im.shape[:2]}")
    if not imgs:
        raise ValueError("plot_attention: no images")
    fig = new_figure(2.4 * (1 + len(maps)), 2.4 * len(imgs))
    axes = fig.subplots(len(imgs), 1 + len(maps), squeeze=False)
    for r, im in enumerate(imgs):
        axes[r, 0].imshow(im)
        axes[r, 0].set_ylabel(row_labels[r] if row_labels else f"image {r}", fontsize=8)
        for c, (name, per_image) in enumerate(maps.items(), start=1):
            axes[r, c].imshow(im)
            axes[r, c].imshow(per_image[r], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            axes[0, c].set_title(name, fontsize=9)
    axes[0, 0].set_title("image", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return save_figure(fig, out_png)
