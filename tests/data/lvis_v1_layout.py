"""LVIS v1 / COCO 2017 style copies of the demo data: ``coco_url`` instead of ``file_name``.

The image records follow the LVIS v1 release field by field (``id, coco_url, flickr_url,
height, width, date_captured, license, neg_category_ids, not_exhaustive_category_ids``; no
``file_name``), and the images lie where detectron2's ``lvis.py`` looks for them:
``ROOT/train2017/000000xxxxxx.jpg`` and ``ROOT/val2017/000000xxxxxx.jpg``.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

# Real LVIS v1 val image records (trimmed id lists), used as they come in the release.
REAL_V1_IMAGES = [
    {
        "date_captured": "2013-11-14 17:02:52",
        "neg_category_ids": [1186, 1078, 1010],
        "id": 397133,
        "license": 4,
        "height": 427,
        "width": 640,
        "flickr_url": "http://farm7.staticflickr.com/6116/6255196340_da26cf2c9e_z.jpg",
        "coco_url": "http://images.cocodataset.org/val2017/000000397133.jpg",
        "not_exhaustive_category_ids": [],
    },
    {
        "date_captured": "2013-11-14 22:32:02",
        "neg_category_ids": [],
        "id": 37777,
        "license": 1,
        "height": 230,
        "width": 352,
        "flickr_url": "http://farm9.staticflickr.com/8429/7839199426_f6d48aa585_z.jpg",
        "coco_url": "http://images.cocodataset.org/val2017/000000037777.jpg",
        "not_exhaustive_category_ids": [],
    },
]


def to_v1_json(src_json: Path, src_images: Path, root: Path, split: str, out: Path, n: int) -> Path:
    """Copy the first ``n`` images of a demo split into ``root/<split>/`` as COCO-named JPEGs and
    write a v1-style json (``coco_url``, no ``file_name``) to ``out``."""
    data = json.loads(Path(src_json).read_text())
    images = data["images"][:n]
    keep = {im["id"] for im in images}
    (root / split).mkdir(parents=True, exist_ok=True)
    template = REAL_V1_IMAGES[0]
    new_images = []
    for im in images:
        name = f"{im['id']:012d}.jpg"
        with Image.open(Path(src_images) / im["file_name"]) as pil:
            pil.convert("RGB").save(root / split / name, quality=95)
        rec = {k: v for k, v in template.items() if k not in ("id", "height", "width")}
        rec.update(
            id=im["id"],
            height=im["height"],
            width=im["width"],
            coco_url=f"http://images.cocodataset.org/{split}/{name}",
            neg_category_ids=im.get("neg_category_ids", []),
            not_exhaustive_category_ids=im.get("not_exhaustive_category_ids", []),
        )
        new_images.append(rec)
    data["images"] = new_images
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    out.write_text(json.dumps(data))
    return out
