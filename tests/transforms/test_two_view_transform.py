"""Two views with boxes: identities, geometry, validity, determinism, photometric pipeline."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision.transforms.v2.functional as F
from torchvision import tv_tensors

from drcl.config.schema import ViewConfig
from drcl.transforms import IMAGENET_MEAN, IMAGENET_STD, TwoViewTransform
from drcl.transforms.views import blur_kernel_size, hflip_boxes, transform_boxes

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)
COLOURS = torch.tensor(
    [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1], [0.5, 0.2, 0.9]]
)


def geometry_only(**kwargs) -> ViewConfig:
    """No photometric change, so colours survive into the views."""
    base = dict(jitter_p=0.0, grayscale_p=0.0, blur_p=[0.0, 0.0], solarize_p=[0.0, 0.0])
    return ViewConfig(**{**base, **kwargs})


def coloured_boxes() -> tuple[torch.Tensor, torch.Tensor]:
    """A 120x160 black image with 8 disjoint rectangles, each a unique colour."""
    image = torch.zeros(3, 120, 160)
    boxes = []
    for j in range(8):
        x, y = 5 + (j % 4) * 40, 8 + (j // 4) * 58
        boxes.append([x, y, x + 30, y + 44])
        image[:, y : y + 44, x : x + 30] = COLOURS[j].view(3, 1)[:, :, None]
    return image, torch.tensor(boxes, dtype=torch.float32)


def test_box_identities_survive_both_views() -> None:
    image, boxes = coloured_boxes()
    t = TwoViewTransform(geometry_only(min_box_size=10.0))
    flipped = checked = dropped = 0
    for seed in range(25):
        out = t(image, boxes, seed=seed)
        assert out.valid.tolist() == (out.views[0].keep & out.views[1].keep).tolist()
        for view in out.views:
            rgb = view.image * STD + MEAN
            flipped += view.flipped
            dropped += int((~view.keep).sum())
            for j in torch.nonzero(view.keep).flatten().tolist():
                x1, y1, x2, y2 = view.boxes[j].tolist()
                cx, cy = int((x1 + x2) / 2), int((y1 + y2) / 2)
                assert torch.allclose(rgb[:, cy, cx], COLOURS[j], atol=0.05), (seed, j)
                checked += 1
    assert checked > 150 and flipped > 5 and dropped > 0  # the cases we meant to cover happened


def test_flip_maps_boxes_and_pixels() -> None:
    image = torch.rand(3, 64, 64)
    boxes = torch.tensor([[4.0, 10.0, 20.0, 40.0], [30.0, 0.0, 64.0, 64.0]])
    # scale 1 on a square image: the crop is the whole image, resized to itself
    t = TwoViewTransform(geometry_only(size=64, crop_scale=[1.0, 1.0], flip=1.0, min_box_size=1))
    out = t(image, boxes, seed=0)
    for view in out.views:
        assert view.crop == (0, 0, 64, 64) and view.flipped
        expected = torch.tensor([[44.0, 10.0, 60.0, 40.0], [0.0, 0.0, 34.0, 64.0]])
        torch.testing.assert_close(view.boxes, expected)
        torch.testing.assert_close(view.image * STD + MEAN, F.horizontal_flip(image))
    assert out.valid.all()


def test_transform_boxes_hand_computed() -> None:
    # crop top=10, left=20, 50 high, 100 wide -> 100x100: x * 1, y * 2
    boxes = torch.tensor(
        [
            [30.0, 20.0, 70.0, 40.0],  # inside
            [10.0, 20.0, 30.0, 40.0],  # half outside on the left: visible 0.5
            [0.0, 0.0, 10.0, 5.0],  # entirely outside
            [50.0, 30.0, 51.0, 31.0],  # 1 x 2 px in the view: too small
        ]
    )
    out, keep = transform_boxes(boxes, (10, 20, 50, 100), 100, False, 4.0, 0.6)
    torch.testing.assert_close(out[0], torch.tensor([10.0, 20.0, 50.0, 60.0]))
    torch.testing.assert_close(out[1], torch.tensor([0.0, 20.0, 10.0, 60.0]))
    assert keep.tolist() == [True, False, False, False]
    _, keep = transform_boxes(boxes, (10, 20, 50, 100), 100, False, 4.0, 0.5)
    assert keep.tolist() == [True, True, False, False]
    flipped, _ = transform_boxes(boxes, (10, 20, 50, 100), 100, True, 4.0, 0.5)
    torch.testing.assert_close(flipped[0], torch.tensor([50.0, 20.0, 90.0, 60.0]))


def test_dropped_boxes_are_invalid_and_empty_input() -> None:
    image, boxes = coloured_boxes()
    tiny = torch.tensor([[100.0, 100.0, 101.0, 101.0]])
    out = TwoViewTransform(ViewConfig())(image, torch.cat([boxes, tiny]), seed=3)
    assert not out.valid[-1] and out.valid.shape == (9,)
    empty = TwoViewTransform(ViewConfig())(image, torch.zeros(0, 4), seed=3)
    assert empty.valid.shape == (0,) and empty.views[0].boxes.shape == (0, 4)
    assert empty.views[1].image.shape == (3, 128, 128)


def test_crop_retries_raise_the_share_of_usable_images() -> None:
    image = torch.rand(3, 100, 100)
    corner = torch.tensor([[0.0, 0.0, 25.0, 25.0]])
    rates = []
    for tries in (1, 10):
        t = TwoViewTransform(geometry_only(size=32, min_box_visible=0.9), max_crop_tries=tries)
        rates.append(sum(bool(t(image, corner, seed=s).valid.any()) for s in range(30)))
    assert rates[1] > rates[0]


def test_determinism_seed_and_generator() -> None:
    image, boxes = coloured_boxes()
    t = TwoViewTransform(ViewConfig())
    a = t(image, boxes, seed=5)
    b = t(image, boxes, generator=torch.Generator().manual_seed(5))
    c = t(image, boxes, seed=6)
    for va, vb in zip(a.views, b.views, strict=True):
        assert torch.equal(va.image, vb.image) and torch.equal(va.boxes, vb.boxes)
    assert not torch.equal(a.views[0].image, c.views[0].image)


def test_photometric_ops_follow_the_recorded_geometry() -> None:
    image = torch.rand(3, 90, 110)
    cfg = geometry_only(solarize_p=[0.0, 1.0], blur_p=[0.0, 0.0])
    out = TwoViewTransform(cfg)(image, torch.zeros(0, 4), seed=2)
    for v, view in enumerate(out.views):
        ref = F.resized_crop(image, *view.crop, size=[128, 128], antialias=True)
        ref = F.horizontal_flip(ref) if view.flipped else ref
        ref = F.solarize(ref, threshold=0.5) if v == 1 else ref
        torch.testing.assert_close(view.image, (ref - MEAN) / STD)
    # jitter and grayscale draw after the crops: same crops, different pixels
    gray = TwoViewTransform(dataclasses.replace(cfg, grayscale_p=1.0))(
        image, torch.zeros(0, 4), seed=2
    )
    assert gray.views[0].crop == out.views[0].crop
    rgb = gray.views[0].image * STD + MEAN
    torch.testing.assert_close(rgb[0], rgb[1], atol=1e-5, rtol=0)


def test_uint8_input_and_blur_kernel() -> None:
    image = (torch.rand(3, 50, 60) * 255).to(torch.uint8)
    out = TwoViewTransform(ViewConfig())(image, torch.tensor([[5.0, 5.0, 40.0, 40.0]]), seed=0)
    assert out.views[0].image.dtype == torch.float32
    assert blur_kernel_size(128) == 13 and blur_kernel_size(224) == 23 and blur_kernel_size(16) == 3


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"crop_scale": [0.8, 0.5]}, "crop_scale"),
        ({"blur_p": [1.0]}, "blur_p"),
        ({"solarize_p": [0.0, 1.5]}, "solarize_p"),
        ({"flip": 2.0}, "flip"),
        ({"jitter": [0.4, 0.4, 0.2]}, "jitter"),
        ({"size": 4}, "size"),
    ],
)
def test_bad_config(change: dict, key: str) -> None:
    with pytest.raises(ValueError, match=f"pretrain.views.{key}"):
        TwoViewTransform(ViewConfig(**change))


def test_bad_inputs() -> None:
    t = TwoViewTransform(ViewConfig())
    with pytest.raises(ValueError, match=r"image must be \(3, H, W\)"):
        t(torch.rand(1, 32, 32), torch.zeros(0, 4))
    with pytest.raises(ValueError, match=r"boxes must be \(K, 4\)"):
        t(torch.rand(3, 32, 32), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="dtype must be float or uint8"):
        t(torch.zeros(3, 32, 32, dtype=torch.int32), torch.zeros(0, 4))
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        t(torch.rand(3, 32, 32), torch.zeros(0, 4), generator=3)


def test_hflip_boxes_matches_torchvision_and_is_an_involution() -> None:
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 60
    boxes = torch.cat([xy, xy + torch.rand(50, 2, generator=g) * 40], 1)
    ref = F.horizontal_flip_bounding_boxes(boxes, tv_tensors.BoundingBoxFormat.XYXY, (80, 100))
    assert torch.equal(hflip_boxes(boxes, 100), ref)
    torch.testing.assert_close(hflip_boxes(hflip_boxes(boxes, 100), 100), boxes)
    assert hflip_boxes(torch.zeros(0, 4), 100).shape == (0, 4)
