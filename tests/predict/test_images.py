"""Input images of `drcl predict`: any Pillow format, EXIF orientation, greyscale / RGBA, folder
listing, unreadable files set aside by name; and the drawings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from drcl.data.categories import CategoryRecord
from drcl.data.groups import GROUP_COLORS
from drcl.predict.draw import draw_detections, drawing_names
from drcl.predict.images import (
    ImageItem,
    ImageListDataset,
    collate_readable,
    images_in_folder,
)


def _pattern(h: int = 24, w: int = 40) -> np.ndarray:
    """An asymmetric RGB picture (a rotation or flip changes it)."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    arr[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    arr[: h // 3, : w // 4, 2] = 255
    return arr


def _read(path) -> torch.Tensor:
    image, info = ImageListDataset([ImageItem(1, path, path.name)])[0]
    assert image is not None, info
    return image


def _as_float(pil: Image.Image) -> np.ndarray:
    return np.asarray(pil.convert("RGB"), np.float32).transpose(2, 0, 1) / 255.0


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(_pattern()).save(path, quality=100, exif=exif)
    image = _read(path)
    assert tuple(image.shape) == (3, 40, 24)  # (h, w) swapped: shown upright
    # reference: Pillow's own transpose of the same file (JPEG decoders differ by a few levels)
    with Image.open(path) as pil:
        ref = _as_float(ImageOps.exif_transpose(pil))
    assert np.abs(image.numpy() - ref).max() < 6 / 255


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_greyscale_palette_alpha_and_16_bit_become_rgb(tmp_path, mode):
    rgb = Image.fromarray(_pattern())
    if mode == "I;16":
        grey = (np.asarray(rgb.convert("L"), np.uint16) * 257).astype(np.uint16)
        pil = Image.fromarray(grey)  # uint16 -> mode I;16
        ref = np.repeat((grey.astype(np.float32) / 65535.0)[None], 3, axis=0)
    else:
        pil = rgb.convert(mode)
        ref = _as_float(pil)
    path = tmp_path / f"x_{mode.replace(';', '')}.png"
    pil.save(path)
    image = _read(path)
    assert image.shape == (3, 24, 40) and image.dtype == torch.float32
    np.testing.assert_allclose(image.numpy(), ref, atol=1e-6)


@pytest.mark.parametrize("suffix", [".bmp", ".tif", ".webp", ".gif"])
def test_other_pillow_formats(tmp_path, suffix):
    path = tmp_path / f"x{suffix}"
    Image.fromarray(_pattern()).save(path, **({"lossless": True} if suffix == ".webp" else {}))
    image = _read(path)
    assert image.shape == (3, 24, 40)
    if suffix != ".gif":  # GIF is palette-quantised
        np.testing.assert_allclose(image.numpy(), _as_float(Image.open(path)), atol=1e-6)


def test_folder_listing_recursive_sorted_images_only(tmp_path):
    (tmp_path / "b dir").mkdir()
    (tmp_path / ".hidden").mkdir()
    for name in ("z.png", "a.JPG", "b dir/c.tif", ".hidden/h.png", ".x.png"):
        Image.fromarray(_pattern()).save(tmp_path / name, format="PNG")
    (tmp_path / "notes.txt").write_text("no image")
    items = images_in_folder(tmp_path)
    assert [it.file_name for it in items] == ["a.JPG", "b dir/c.tif", "z.png"]
    assert [it.image_id for it in items] == [1, 2, 3]


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="no image files"):
        images_in_folder(tmp_path)
    with pytest.raises(ValueError, match="not a folder"):
        images_in_folder(tmp_path / "missing")


def test_unreadable_images_are_set_aside_with_a_reason(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(_pattern()).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[:40])  # truncated
    items = [
        ImageItem(1, good, "good.png"),
        ImageItem(2, bad, "bad.png"),
        ImageItem(3, tmp_path / "gone.png", "gone.png"),
        ImageItem(4, good, "good.png", size=(10, 10)),  # the json says another size
    ]
    data = ImageListDataset(items)
    images, infos, failed = collate_readable([data[i] for i in range(4)])
    assert [i["image_id"] for i in infos] == [1] and len(images) == 1
    reasons = {f["image_id"]: f["error"] for f in failed}
    assert set(reasons) == {2, 3, 4}
    assert "cannot decode" in reasons[2]
    assert reasons[3] == "file not found"
    assert "differs from the json's (10, 10)" in reasons[4]


def test_drawing_names_never_collide():
    assert drawing_names(["a/b.jpg", "c.png"]) == ["a/b.png", "c.png"]
    assert drawing_names(["x.jpg", "x.png", "y.bmp"]) == ["x.jpg.png", "x.png.png", "y.png"]


def test_draw_colours_boxes_by_group_and_applies_the_threshold():
    image = torch.zeros(3, 60, 60)
    cats = [CategoryRecord(7, "ring", "r", 1), CategoryRecord(9, "disc", "f", 2)]
    output = {
        "boxes": torch.tensor([[5.0, 5.0, 25.0, 25.0], [30.0, 30.0, 55.0, 55.0]]),
        "scores": torch.tensor([0.9, 0.1]),
        "labels": torch.tensor([1, 2]),
    }
    drawn = draw_detections(image, output, cats, score_thr=0.5).permute(1, 2, 0).numpy()
    red = tuple(int(GROUP_COLORS["r"][k : k + 2], 16) for k in (1, 3, 5))
    assert tuple(drawn[15, 5]) == red  # left edge of the rare-class box
    assert not drawn[40:, 40:].any()  # the low-scoring box is not drawn
    none = draw_detections(image, output, cats, score_thr=0.95)
    assert not none.any()
