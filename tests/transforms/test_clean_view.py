"""The AR target: each view carries itself before photometric augmentation."""

from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as F

from drcl.config.schema import ViewConfig
from drcl.transforms import IMAGENET_MEAN, IMAGENET_STD, TwoViewTransform

STRONG = ViewConfig(
    size=48, jitter_p=1.0, grayscale_p=1.0, blur_p=[1.0, 1.0], solarize_p=[1.0, 1.0], flip=0.5
)


def geometric_reference(image: torch.Tensor, crop, flipped: bool, size: int) -> torch.Tensor:
    """Crop -> resize -> flip -> normalise, written out from the view's recorded geometry."""
    out = F.resized_crop(image, *crop, size=[size, size], antialias=True)
    out = F.horizontal_flip(out) if flipped else out
    mean, std = (
        torch.tensor(IMAGENET_MEAN)[:, None, None],
        torch.tensor(IMAGENET_STD)[:, None, None],
    )
    return (out - mean) / std


def test_clean_view_is_the_geometric_transform_of_the_original() -> None:
    image = torch.rand(3, 70, 90, generator=torch.Generator().manual_seed(1))
    boxes = torch.tensor([[10.0, 10.0, 60.0, 50.0]])
    flips = set()
    for seed in range(6):
        pair = TwoViewTransform(STRONG)(image, boxes, seed=seed)
        for v in pair.views:
            flips.add(v.flipped)
            want = geometric_reference(image, v.crop, v.flipped, STRONG.size)
            torch.testing.assert_close(v.clean, want, rtol=0, atol=1e-6)
            assert (v.image - v.clean).abs().mean() > 0.1  # the augmented view did change
    assert flips == {True, False}  # both branches of the flip were checked


def test_clean_view_equals_the_view_without_photometric_augmentation() -> None:
    plain = ViewConfig(size=48, jitter_p=0.0, grayscale_p=0.0, blur_p=[0, 0], solarize_p=[0, 0])
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(2))
    pair = TwoViewTransform(plain)(image, torch.zeros(0, 4), seed=3)
    for v in pair.views:
        assert torch.equal(v.clean, v.image)


def test_carrying_the_clean_view_does_not_change_the_augmented_views() -> None:
    """The clean copy consumes no randomness: the views of a seed are what they were."""
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(4))
    a = TwoViewTransform(STRONG)(image, torch.zeros(0, 4), seed=9)
    g = torch.Generator().manual_seed(9)
    b = TwoViewTransform(STRONG)(image, torch.zeros(0, 4), generator=g)
    for x, y in zip(a.views, b.views, strict=True):
        assert torch.equal(x.image, y.image) and torch.equal(x.clean, y.clean)
