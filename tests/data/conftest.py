"""Tiny COCO / LVIS datasets built inside each test (PIL images in tmp_path)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _png(path: Path, width: int, height: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)


def _tiny_data() -> dict:
    """3 images (40x30, 32x32, 20x24), 2 categories (ids 5, 2), 4 annotations; image 3 empty."""
    return {
        "info": {"description": "tiny"},
        "images": [
            {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 2, "file_name": "sub/b.png", "width": 32, "height": 32},
            {"id": 3, "file_name": "c.png", "width": 20, "height": 24},
        ],
        "categories": [{"id": 5, "name": "five"}, {"id": 2, "name": "two"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 5, "bbox": [2, 3, 10, 8], "area": 80.0},
            {"id": 11, "image_id": 1, "category_id": 2, "bbox": [20, 10, 5, 5], "area": 25.0},
            {"id": 12, "image_id": 2, "category_id": 5, "bbox": [0, 0, 32, 32], "area": 1024.0},
            {"id": 13, "image_id": 2, "category_id": 5, "bbox": [4, 4, 4, 4], "area": 16.0},
        ],
    }


@pytest.fixture
def write_dataset(tmp_path):
    """``write(data=None, images=True) -> (ann_path, image_dir, data)``; PNGs match the json."""

    def write(data: dict | None = None, images: bool = True, name: str = "ann.json"):
        data = _tiny_data() if data is None else data
        image_dir = tmp_path / "images"
        image_dir.mkdir(exist_ok=True)
        if images:
            for k, img in enumerate(data["images"]):
                _png(image_dir / img["file_name"], img["width"], img["height"], seed=k)
        ann = tmp_path / name
        ann.write_text(json.dumps(data))
        return ann, image_dir, data

    return write


@pytest.fixture
def tiny_data():
    return _tiny_data()
