"""Two augmented views of an image with its K sampled boxes carried along (SPEC "views").

MoCo v2 / BYOL augmentation (SPEC defaults): random resized crop (scale 0.5-1, ratio 3/4-4/3),
horizontal flip 0.5, colour jitter (0.4, 0.4, 0.2, 0.1) with p 0.8, grayscale 0.2, Gaussian blur
(sigma 0.1-2, kernel ~10% of the size, odd) with p 1.0 / 0.1, solarisation p 0 / 0.2, then
ImageNet normalisation. The two views are asymmetric only in blur and solarisation (BYOL).

Box identity is positional: row j of every view's ``boxes`` is the j-th input box, so LCL pairs
box j of view 1 with box j of view 2; ``valid[j]`` says it survived in both views.
All randomness comes from one ``torch.Generator``: the same seed gives the same views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as F
from omegaconf import OmegaConf

from drcl.config.schema import ViewConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))


@dataclass
class View:
    """One augmented view.

    Attributes:
        image: (3, S, S) float, ImageNet-normalised.
        boxes: (K, 4) xyxy pixels in the view, clipped to it; rows with ``keep = False`` are
            meaningless (possibly empty).
        keep: (K,) bool, the box is large and visible enough in this view.
        crop: (top, left, height, width) of the crop in the input image.
        flipped: the view was mirrored horizontally.
        clean: (3, S, S) float, ImageNet-normalised: the same crop, resize and flip as ``image``
            but no photometric change (no jitter, grayscale, blur or solarisation); the AR target,
            the view's "natural appearance".
    """

    image: torch.Tensor
    boxes: torch.Tensor
    keep: torch.Tensor
    crop: tuple[int, int, int, int]
    flipped: bool
    clean: torch.Tensor | None = None


@dataclass
class TwoViews:
    """The two views and ``valid``: (K,) bool, box j kept in both views (usable by LCL)."""

    views: tuple[View, View]
    valid: torch.Tensor


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def _bernoulli(g: torch.Generator, p: float) -> bool:
    return float(torch.rand((), generator=g, dtype=torch.float64)) < p


def crop_params(
    height: int, width: int, scale: tuple[float, float], g: torch.Generator
) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params`` with an explicit generator.

    Returns:
        (top, left, h, w); area fraction in ``scale``, aspect ratio in [3/4, 4/3], 10 tries then
        the centre crop of the clamped ratio (torchvision's fallback).
    """
    area = height * width
    for _ in range(10):
        target = area * _uniform(g, *scale)
        ratio = math.exp(_uniform(g, *_LOG_RATIO))
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=g))
            left = int(torch.randint(0, width - w + 1, (), generator=g))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < 3 / 4:
        w, h = width, int(round(width / (3 / 4)))
    elif in_ratio > 4 / 3:
        h, w = height, int(round(height * (4 / 3)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def transform_boxes(
    boxes: torch.Tensor,
    crop: tuple[int, int, int, int],
    size: int,
    flip: bool,
    min_size: float,
    min_visible: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map boxes through crop -> resize to ``size`` x ``size`` -> optional horizontal flip.

    Args:
        boxes: (K, 4) xyxy in input pixels.
        crop: (top, left, h, w).
        size: output side S.
        flip: mirror horizontally (``x -> S - x``).
        min_size: a kept box is at least this wide and high in the view (pixels).
        min_visible: a kept box keeps at least this fraction of its area inside the crop.

    Returns:
        boxes (K, 4) xyxy in the view, clipped to [0, S]; keep (K,) bool.
    """
    top, left, h, w = crop
    shifted = boxes.float() - torch.tensor([left, top, left, top], dtype=torch.float32)
    clipped = torch.stack(
        [shifted[:, 0].clamp(0, w), shifted[:, 1].clamp(0, h)]
        + [shifted[:, 2].clamp(0, w), shifted[:, 3].clamp(0, h)],
        dim=1,
    )
    area = (shifted[:, 2] - shifted[:, 0]).clamp(min=0) * (shifted[:, 3] - shifted[:, 1]).clamp(
        min=0
    )
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    visible = torch.where(area > 0, inside / area.clamp(min=1e-12), torch.zeros_like(area))
    out = clipped * torch.tensor([size / w, size / h, size / w, size / h])
    out = hflip_boxes(out, size) if flip else out
    big = ((out[:, 2] - out[:, 0]) >= min_size) & ((out[:, 3] - out[:, 1]) >= min_size)
    return out, big & (visible >= min_visible) & (area > 0)


def hflip_boxes(boxes: torch.Tensor, width: float) -> torch.Tensor:
    """Mirror (K, 4) xyxy boxes in an image of this width: ``x1' = W - x2, x2' = W - x1``."""
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)


def blur_kernel_size(size: int) -> int:
    """Odd kernel of about 10% of the view side (BYOL: 23 px at 224)."""
    return max(3, int(0.1 * size) // 2 * 2 + 1)


def color_jitter(
    img: torch.Tensor, strength: tuple[float, ...], g: torch.Generator
) -> torch.Tensor:
    """torchvision ``ColorJitter``: brightness, contrast, saturation factors in [1 - s, 1 + s],
    hue in [-h, h], applied in a random order."""
    b, c, s, h = strength
    for op in torch.randperm(4, generator=g).tolist():
        if op == 0 and b > 0:
            img = F.adjust_brightness(img, _uniform(g, max(0.0, 1 - b), 1 + b))
        elif op == 1 and c > 0:
            img = F.adjust_contrast(img, _uniform(g, max(0.0, 1 - c), 1 + c))
        elif op == 2 and s > 0:
            img = F.adjust_saturation(img, _uniform(g, max(0.0, 1 - s), 1 + s))
        elif op == 3 and h > 0:
            img = F.adjust_hue(img, _uniform(g, -h, h))
    return img


def _check_config(cfg: ViewConfig) -> None:
    """Raise ValueError naming the ``pretrain.views`` key that is out of range."""

    def bad(key: str, why: str) -> ValueError:
        return ValueError(f"pretrain.views.{key}: {why}, got {getattr(cfg, key)!r}")

    lo, hi = cfg.crop_scale
    if not 0 < lo <= hi <= 1:
        raise bad("crop_scale", "need 0 < min <= max <= 1")
    if cfg.size < 8:
        raise bad("size", "need >= 8")
    for key in ("flip", "jitter_p", "grayscale_p", "min_box_visible"):
        if not 0 <= getattr(cfg, key) <= 1:
            raise bad(key, "need a value in [0, 1]")
    for key in ("blur_p", "solarize_p"):
        vals = list(getattr(cfg, key))
        if len(vals) != 2 or not all(0 <= v <= 1 for v in vals):
            raise bad(key, "need two probabilities in [0, 1], one per view")
    if len(cfg.jitter) != 4 or min(cfg.jitter) < 0 or cfg.jitter[3] > 0.5:
        raise bad("jitter", "need [brightness, contrast, saturation, hue], >= 0, hue <= 0.5")
    if cfg.min_box_size < 0:
        raise bad("min_box_size", "need >= 0")


class TwoViewTransform:
    """Two MoCo v2 / BYOL views of an image and its boxes (config ``pretrain.views``).

    Args:
        cfg: the ``pretrain.views`` section (or any object with its fields).
        max_crop_tries: pairs of crops drawn until at least one box is kept in both views; the
            last pair is used if none qualifies (the image then has no valid box for LCL).
    """

    def __init__(self, cfg: ViewConfig, max_crop_tries: int = 10) -> None:
        _check_config(cfg)
        # a plain dataclass: each OmegaConf attribute read costs ~50 us (validation), and an
        # image reads ~30 of them (8% of the data path's time at 128 px)
        self.cfg = OmegaConf.to_object(cfg) if OmegaConf.is_config(cfg) else cfg
        self.max_crop_tries = max(1, int(max_crop_tries))
        self.blur_kernel = blur_kernel_size(cfg.size)

    def __call__(
        self,
        image: torch.Tensor,
        boxes: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> TwoViews:
        """Draw the two views.

        Args:
            image: (3, H, W) float in [0, 1] (uint8 is divided by 255).
            boxes: (K, 4) xyxy pixels in ``image``; K may be 0.
            generator: source of randomness; or give ``seed``; neither: the global torch RNG
                seeds a fresh generator.
            seed: seed of a fresh generator.

        Returns:
            :class:`TwoViews`.
        """
        image, boxes = _check_inputs(image, boxes)
        g = _make_generator(generator, seed)
        crops, geoms = self._sample_crops(image.shape[-2:], boxes, g)
        views = []
        for v in range(2):
            flip = _bernoulli(g, self.cfg.flip)
            out_boxes, keep = geoms[v]
            out_boxes = hflip_boxes(out_boxes, self.cfg.size) if flip else out_boxes
            img = F.resized_crop(image, *crops[v], size=[self.cfg.size] * 2, antialias=True)
            img = F.horizontal_flip(img) if flip else img
            clean = F.normalize(img, list(IMAGENET_MEAN), list(IMAGENET_STD))
            img = self._photometric(img, v, g)
            views.append(View(img, out_boxes, keep, crops[v], flip, clean))
        return TwoViews((views[0], views[1]), views[0].keep & views[1].keep)

    def _sample_crops(
        self, hw: torch.Size, boxes: torch.Tensor, g: torch.Generator
    ) -> tuple[list[tuple[int, int, int, int]], list[tuple[torch.Tensor, torch.Tensor]]]:
        """Pairs of crops until one keeps a box in both views (flip does not change ``keep``)."""
        c = self.cfg
        for _ in range(self.max_crop_tries):
            crops = [crop_params(hw[0], hw[1], tuple(c.crop_scale), g) for _ in range(2)]
            geoms = [
                transform_boxes(boxes, cr, c.size, False, c.min_box_size, c.min_box_visible)
                for cr in crops
            ]
            if len(boxes) == 0 or bool((geoms[0][1] & geoms[1][1]).any()):
                break
        return crops, geoms

    def _photometric(self, img: torch.Tensor, view: int, g: torch.Generator) -> torch.Tensor:
        """Jitter, grayscale, blur, solarise (view-dependent p), then ImageNet normalisation.
        One generator drives both views in a fixed order, so a seed fixes everything.
        """
        c = self.cfg
        if _bernoulli(g, c.jitter_p):
            img = color_jitter(img, tuple(c.jitter), g)
        if _bernoulli(g, c.grayscale_p):
            img = F.rgb_to_grayscale(img, num_output_channels=3)
        if _bernoulli(g, c.blur_p[view]):
            sigma = _uniform(g, 0.1, 2.0)
            img = F.gaussian_blur(img, [self.blur_kernel] * 2, [sigma, sigma])
        if _bernoulli(g, c.solarize_p[view]):
            img = F.solarize(img, threshold=0.5)
        return F.normalize(img, list(IMAGENET_MEAN), list(IMAGENET_STD))


def _make_generator(generator: torch.Generator | None, seed: int | None) -> torch.Generator:
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return generator
    g = torch.Generator()
    g.manual_seed(int(torch.randint(0, 2**62, ())) if seed is None else int(seed))
    return g


def _check_inputs(image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"TwoViewTransform: image must be (3, H, W), got {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        image = image.float() / 255.0
    elif not image.is_floating_point():
        raise ValueError(f"TwoViewTransform: image dtype must be float or uint8, got {image.dtype}")
    boxes = torch.as_tensor(boxes, dtype=torch.float32)
    boxes = boxes.reshape(0, 4) if boxes.numel() == 0 else boxes  # [] or (0,) -> (0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"TwoViewTransform: boxes must be (K, 4) xyxy, got {tuple(boxes.shape)}")
    return image, boxes
