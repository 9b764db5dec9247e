"""Hand-made run folders for the report tests (and for looking at a report by eye).

Three runs over a 6-class dataset (2 rare, 2 common, 2 frequent by the json's ``frequency``):

- ``baseline``: Faster R-CNN fine-tuning (box metrics, detections, classifier weights);
- ``drcl``: Mask R-CNN fine-tuning (box + mask metrics, per-class AP, attention PNGs);
- ``pretrain``: a pre-training run (loss_hcl/lcl/ar/sr, alpha, lr).

Metric values are fractions (as ``drcl evaluate`` writes them); the tests know them from
``BOX`` / ``MASK`` below.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

# 6 classes: id -> (name, frequency, training instances)
CLASSES = {
    1: ("disc", "f", 300),
    2: ("square", "f", 150),
    3: ("triangle", "c", 40),
    4: ("star", "c", 25),
    5: ("ring", "r", 3),
    6: ("cross", "r", 1),
}
BOX = {
    "baseline": {"AP": 0.253, "AP50": 0.45, "AP75": 0.30, "APr": 0.10, "APc": 0.2, "APf": 0.40},
    "drcl": {"AP": 0.271, "AP50": 0.47, "AP75": 0.30, "APr": 0.15, "APc": None, "APf": 0.39},
}
MASK = {"drcl": {"AP": 0.22, "AP50": 0.41, "AP75": 0.2, "APr": 0.12, "APc": 0.18, "APf": 0.33}}
# per-class box AP of each fine-tuning run, by class id
PER_CLASS = {
    "baseline": {1: 0.5, 2: 0.4, 3: 0.2, 4: 0.2, 5: 0.05, 6: 0.15},
    "drcl": {1: 0.48, 2: 0.41, 3: 0.25, 4: 0.15, 5: 0.2, 6: None},
}


def _categories() -> list[dict]:
    return [{"id": c, "name": n, "frequency": f} for c, (n, f, _) in CLASSES.items()]


def write_train_json(path: Path) -> None:
    """Training json with exactly CLASSES' instance counts, 2 boxes per image."""
    anns = [cid for cid, (_, _, n) in CLASSES.items() for _ in range(n)]
    images = [{"id": i + 1, "file_name": f"{i}.png", "width": 64, "height": 64} for i in range(300)]
    records = [
        {
            "id": k + 1,
            "image_id": k % 300 + 1,
            "category_id": cid,
            "bbox": [4, 4, 20, 20],
            "area": 400,
            "iscrowd": 0,
        }
        for k, cid in enumerate(anns)
    ]
    data = {"images": images, "annotations": records, "categories": _categories()}
    path.write_text(json.dumps(data))


def write_val_json(path: Path) -> None:
    """Validation json: 4 images, one box of class 1..4 each (exhaustively labelled)."""
    images = [{"id": i, "file_name": f"{i}.png", "width": 64, "height": 64} for i in range(1, 5)]
    anns = [
        {
            "id": i,
            "image_id": i,
            "category_id": i,
            "bbox": [10, 10, 30, 30],
            "area": 900,
            "iscrowd": 0,
        }
        for i in range(1, 5)
    ]
    data = {"images": images, "annotations": anns, "categories": _categories()}
    path.write_text(json.dumps(data))


def write_val_images(folder: Path) -> None:
    """The 4 validation images (64 x 64 PNG): a grey background, the object as a filled square."""
    from PIL import Image

    folder.mkdir(parents=True)
    for i in range(1, 5):
        pixels = np.full((64, 64, 3), 90 + 20 * i, np.uint8)
        pixels[10:40, 10:40] = (60 * i, 200 - 40 * i, 120)
        Image.fromarray(pixels).save(folder / f"{i}.png")


def _detections(shift: float) -> list[dict]:
    """One good box per image, one shifted (location error), one far away (background)."""
    dets = []
    for i in range(1, 5):
        dets.append({"image_id": i, "category_id": i, "bbox": [10, 10, 30, 30], "score": 0.9})
        dets.append(
            {"image_id": i, "category_id": i, "bbox": [10 + shift, 10, 30, 30], "score": 0.5}
        )
        dets.append({"image_id": i, "category_id": 5, "bbox": [45, 45, 15, 15], "score": 0.3})
    return dets


def _metrics_file(values: dict, per_class: dict | None) -> dict:
    out = {k: (v if v is not None else None) for k, v in values.items()}
    out.update({"APs": -1.0, "APm": 0.2, "APl": 0.3})
    if per_class is not None:
        out["per_class"] = [
            {"id": c, "name": CLASSES[c][0], "group": CLASSES[c][1], "AP": ap}
            for c, ap in per_class.items()
        ]
    return out


def _metrics_rows(
    keys: list[str], n: int = 20, alpha: bool = False, decay: float = 100
) -> list[dict]:
    rows = []
    for k in range(n):
        it = (k + 1) * 10
        row = {"iter": it, "lr": 0.02 * min(1.0, it / 50), "data_time": 0.01, "step_time": 0.2}
        for j, key in enumerate(keys):
            row[key] = float(np.exp(-it / decay) * (j + 1) + 0.1)
        row["loss"] = sum(row[key] for key in keys)
        if alpha:
            row["alpha"] = 0.5 * (1 - np.cos(np.pi * k / (n - 1)))
        rows.append(row)
    return rows


def _write_common(run: Path, data: Path, arch: str | None, rows: list[dict]) -> None:
    run.mkdir(parents=True)
    config = {"data": {"train_ann": str(data / "train.json"), "val_ann": str(data / "val.json")}}
    config["data"]["val_images"] = str(data / "val")
    if arch:
        config["finetune"] = {"arch": arch}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _write_finetune(run: Path, data: Path, name: str, arch: str, shift: float) -> None:
    rows = _metrics_rows(["loss_classifier", "loss_box_reg"], decay=10 * shift)
    _write_common(run, data, arch, rows)
    (run / "eval").mkdir()
    box = _metrics_file(BOX[name], PER_CLASS[name])
    (run / "eval" / "metrics_bbox.json").write_text(json.dumps(box))
    if name in MASK:
        (run / "eval" / "metrics_segm.json").write_text(json.dumps(_metrics_file(MASK[name], None)))
    (run / "eval" / "detections_bbox.json").write_text(json.dumps(_detections(shift)))
    _write_classifier(run / "model_final.safetensors", scale=1.0 + shift / 10)


def _write_classifier(path: Path, scale: float) -> None:
    """torchvision layout: cls_score is (C + 1, D), background first."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(len(CLASSES) + 1, 16, generator=gen) * scale
    state = {
        "roi_heads.box_predictor.cls_score.weight": weight,
        "roi_heads.box_predictor.cls_score.bias": torch.zeros(len(CLASSES) + 1),
    }
    save_file(state, str(path))


def _write_attention(folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True)
    for k in range(2):
        grid = np.outer(np.hanning(32), np.hanning(32)) * (k + 1)
        plt.imsave(folder / f"image {k}.png", grid, cmap="jet")


def make_fake_runs(root: Path) -> dict[str, Path]:
    """Write data/ and three run folders under ``root``; returns ``{name: folder}`` in order."""
    data = root / "data"
    data.mkdir(parents=True)
    write_train_json(data / "train.json")
    write_val_json(data / "val.json")
    write_val_images(data / "val")
    runs = {"baseline": root / "baseline", "drcl": root / "drcl", "pretrain": root / "pretrain"}
    _write_finetune(runs["baseline"], data, "baseline", "faster_rcnn", shift=12.0)
    _write_finetune(runs["drcl"], data, "drcl", "mask_rcnn", shift=4.0)
    _write_attention(runs["drcl"] / "attention")
    keys = ["loss_hcl", "loss_lcl", "loss_ar", "loss_sr"]
    _write_common(runs["pretrain"], data, None, _metrics_rows(keys, alpha=True))
    (runs["pretrain"] / "pretrained.json").write_text(json.dumps({"iters": 200}))
    (runs["pretrain"] / "pretrained.safetensors").write_bytes(b"")
    return runs
