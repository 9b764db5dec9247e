"""drcl.transforms — two-view augmentation with boxes, and patch masking for SR."""

from drcl.transforms.masking import apply_patch_mask, random_patch_mask
from drcl.transforms.views import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TwoViews,
    TwoViewTransform,
    View,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TwoViewTransform",
    "TwoViews",
    "View",
    "apply_patch_mask",
    "random_patch_mask",
]
