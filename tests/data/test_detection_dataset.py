"""DetectionDataset: targets, masks, image formats, broken files, path safety, collate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from drcl.data.dataset import DataError, DetectionDataset, collate, read_image_rgb


def _rgb(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0


def test_boxes_labels_and_image(write_dataset):
    ann, image_dir, _ = write_dataset()
    ds = DetectionDataset(ann, image_dir)
    assert len(ds) == 3
    image, target = ds[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32
    np.testing.assert_allclose(image.numpy().transpose(1, 2, 0), _rgb(image_dir / "a.png"))
    # xywh [2, 3, 10, 8] -> xyxy [2, 3, 12, 11]; cat 5 -> label 2, cat 2 -> label 1
    assert target["boxes"].tolist() == [[2, 3, 12, 11], [20, 10, 25, 15]]
    assert target["boxes"].dtype == torch.float32
    assert target["labels"].tolist() == [2, 1] and target["labels"].dtype == torch.int64
    assert target["image_id"] == 1
    assert target["iscrowd"].tolist() == [0, 0]
    assert target["area"].tolist() == [80.0, 25.0]
    assert "masks" not in target


def test_image_without_annotations(write_dataset):
    ann, image_dir, _ = write_dataset()
    image, target = DetectionDataset(ann, image_dir, with_masks=True)[2]
    assert image.shape == (3, 24, 20)
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64
    assert target["masks"].shape == (0, 24, 20)
    assert target["image_id"] == 3


def test_masks_polygon_rle_and_box_fallback(write_dataset, tiny_data):
    anns = tiny_data["annotations"]
    # rectangle polygon (4,4)-(14,10): pycocotools fills rows 4..9, columns 4..13
    anns[0]["segmentation"] = [[4, 4, 14, 4, 14, 10, 4, 10]]
    # uncompressed RLE, column-major over 30 rows: skip 35 pixels = column 1 from row 5, 10 on
    anns[1].update(segmentation={"size": [30, 40], "counts": [35, 10, 1155]}, iscrowd=1)
    known = np.zeros((32, 32), np.uint8)
    known[3:9, 20:31] = 1
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(known))
    anns[2]["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
    ann, image_dir, _ = write_dataset(tiny_data)
    ds = DetectionDataset(ann, image_dir, with_masks=True)
    _, t0 = ds[0]
    assert t0["masks"].shape == (2, 30, 40) and t0["masks"].dtype == torch.uint8
    expected = np.zeros((30, 40), np.uint8)
    expected[4:10, 4:14] = 1
    np.testing.assert_array_equal(t0["masks"][0].numpy(), expected)
    rle_mask = np.zeros((30, 40), np.uint8)
    rle_mask[5:15, 1] = 1
    np.testing.assert_array_equal(t0["masks"][1].numpy(), rle_mask)
    assert t0["iscrowd"].tolist() == [0, 1]  # crowd kept, flagged
    _, t1 = ds[1]
    np.testing.assert_array_equal(t1["masks"][0].numpy(), known)
    box_mask = np.zeros((32, 32), np.uint8)
    box_mask[4:8, 4:8] = 1  # no segmentation: bbox [4, 4, 4, 4] filled
    np.testing.assert_array_equal(t1["masks"][1].numpy(), box_mask)


def test_boxes_clipped_and_degenerate_dropped(write_dataset, tiny_data):
    tiny_data["annotations"][0]["bbox"] = [-5, 2, 10, 4]  # -> [0, 2, 5, 6]
    tiny_data["annotations"][1]["bbox"] = [50, 2, 10, 4]  # right of the 40 px image
    ann, image_dir, _ = write_dataset(tiny_data)
    _, target = DetectionDataset(ann, image_dir, with_masks=True)[0]
    assert target["boxes"].tolist() == [[0, 2, 5, 6]]
    assert target["labels"].tolist() == [2]
    assert target["masks"].shape == (1, 30, 40)
    assert target["masks"][0].sum() == 5 * 4  # box fallback, clipped at column 0


def _one_image_dataset(tmp_path, save, width, height):
    """Dataset of one image written by ``save(path)``, json size (width, height)."""
    image_dir = tmp_path / "imgs"
    image_dir.mkdir()
    name = save(image_dir)
    data = {
        "images": [{"id": 1, "file_name": name, "width": width, "height": height}],
        "annotations": [],
        "categories": [{"id": 1, "name": "x"}],
    }
    (tmp_path / "a.json").write_text(json.dumps(data))
    return DetectionDataset(tmp_path / "a.json", image_dir), image_dir / name


ARR = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("mode", "ext"), [("L", "png"), ("LA", "png"), ("RGBA", "png"), ("P", "png"), ("CMYK", "jpg")]
)
def test_colour_modes_become_rgb(tmp_path, mode, ext):
    def save(d):
        Image.fromarray(ARR).convert(mode).save(d / f"x.{ext}")
        return f"x.{ext}"

    ds, path = _one_image_dataset(tmp_path, save, 30, 20)
    image, _ = ds[0]
    assert image.shape == (3, 20, 30)
    np.testing.assert_allclose(image.numpy().transpose(1, 2, 0), _rgb(path), atol=1e-6)
    if mode in ("L", "LA"):
        assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


@pytest.mark.parametrize("ext", ["png", "tiff"])
def test_16_bit_keeps_depth(tmp_path, ext):
    gray = np.random.default_rng(1).integers(0, 65535, (20, 30)).astype(np.uint16)

    def save(d):
        Image.fromarray(gray).save(d / f"x.{ext}")
        return f"x.{ext}"

    ds, _ = _one_image_dataset(tmp_path, save, 30, 20)
    image, _ = ds[0]
    for c in range(3):
        np.testing.assert_allclose(image[c].numpy(), gray / 65535.0, atol=1e-6)


@pytest.mark.parametrize("ext", ["png", "jpg", "tiff"])
def test_exif_rotation_applied(tmp_path, ext):
    def save(d):
        img = Image.fromarray(ARR)  # stored 30 wide, 20 high
        exif = img.getexif()
        exif[0x0112] = 6  # "rotate 90 CW to display": shown 20 wide, 30 high
        img.save(d / f"x.{ext}", exif=exif)
        return f"x.{ext}"

    ds, path = _one_image_dataset(tmp_path, save, 20, 30)
    image, _ = ds[0]
    assert image.shape == (3, 30, 20)
    ref = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB")) / 255.0
    np.testing.assert_allclose(image.numpy().transpose(1, 2, 0), ref, atol=1e-6)


def test_size_disagreeing_with_json_is_an_error(tmp_path):
    def save(d):
        Image.fromarray(ARR).save(d / "x.png")
        return "x.png"

    ds, _ = _one_image_dataset(tmp_path, save, 31, 20)
    with pytest.raises(DataError, match=r"x\.png \(image 1 of .*a\.json\): decoded size"):
        ds[0]


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_image_raise_vs_skip(write_dataset):
    ann, image_dir, _ = write_dataset()
    _truncate(image_dir / "sub" / "b.png")
    with pytest.raises(DataError, match=r"sub/b\.png \(image 2 of .*ann\.json\): cannot decode"):
        DetectionDataset(ann, image_dir)[1]
    ds = DetectionDataset(ann, image_dir, on_error="skip")
    image, target = ds[1]  # image 2 is broken: image 3 comes instead
    assert target["image_id"] == 3 and image.shape == (3, 24, 20)
    assert [s.image_id for s in ds.skipped] == [2]
    assert ds.skipped[0].file == "sub/b.png" and "cannot decode" in ds.skipped[0].reason
    ds[1]
    assert len(ds.skipped) == 1  # counted once per image
    assert ds[0][1]["image_id"] == 1


def test_missing_file_and_all_broken(write_dataset):
    ann, image_dir, _ = write_dataset(images=False)
    with pytest.raises(DataError, match=r"a\.png \(image 1 .*file not found"):
        DetectionDataset(ann, image_dir)[0]
    ds = DetectionDataset(ann, image_dir, on_error="skip")
    with pytest.raises(DataError, match="no readable image at all"):
        ds[0]
    assert sorted(s.image_id for s in ds.skipped) == [1, 2, 3]


def test_path_escape_rejected(write_dataset, tiny_data):
    tiny_data["images"][0]["file_name"] = "../../etc/passwd"
    ann, image_dir, _ = write_dataset(tiny_data, images=False)
    with pytest.raises(DataError, match=r"image 1: file_name '\.\./\.\./etc/passwd' escapes"):
        DetectionDataset(ann, image_dir)[0]


def test_bad_on_error_value(write_dataset):
    ann, image_dir, _ = write_dataset(images=False)
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip'"):
        DetectionDataset(ann, image_dir, on_error="ignore")


def test_transforms_and_collate_in_dataloader(write_dataset):
    ann, image_dir, _ = write_dataset()

    def hflip(image, target):
        w = image.shape[-1]
        boxes = target["boxes"].clone()
        boxes[:, [0, 2]] = w - target["boxes"][:, [2, 0]]
        return image.flip(-1), {**target, "boxes": boxes}

    ds = DetectionDataset(ann, image_dir, transforms=hflip)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate)
    batches = list(loader)
    assert [len(b[0]) for b in batches] == [2, 1]
    images, targets = batches[0]
    assert isinstance(images, list) and isinstance(targets, list)
    assert targets[0]["boxes"].tolist() == [[28, 3, 38, 11], [15, 10, 20, 15]]
    plain = DetectionDataset(ann, image_dir)[0][0]
    assert torch.equal(images[0], plain.flip(-1))
    assert collate([]) == ([], [])


def test_read_image_rgb_rejects_garbage(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises((OSError, RuntimeError)):
        read_image_rgb(bad)
