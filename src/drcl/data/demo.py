"""The embedded demo dataset: a long-tailed, LVIS-format detection dataset generated from code.

``make_demo_dataset(out_dir)`` writes::

    out_dir/annotations/train.json   LVIS-format (polygons, frequency, neg/not-exhaustive ids)
    out_dir/annotations/val.json
    out_dir/annotations/tune.json    like val (balanced): for choosing hyperparameters
    out_dir/train/000001.png ...
    out_dir/val/000001.png ...
    out_dir/tune/000001.png ...

Generation is deterministic: the same seed and size give byte-identical json and PNG files. Every
image draws from its own random stream ``(seed, split, index)``, so images do not depend on one
another. The classes are in :mod:`drcl.data.demo_shapes`.

How the long tail is made: class of rank k (0 = most frequent, K classes) gets
``n_k = round(n_max * (n_min / n_max) ** (k / (K - 1)))`` training instances — a geometric fall
over the rank, like LVIS's own frequency curve. The instances are shuffled and dealt out to
images of 2-6 objects; the categories' ``image_count``, ``instance_count`` and ``frequency``
(LVIS rule: rare 1-10 images, common 11-100, frequent > 100) are then counted from what was
written. Validation has the same number of instances of every class, so APr is measurable.
The ``tune`` split has val's class balance and is drawn from its own random stream after train
and val, so adding it left those two byte-identical: choose hyperparameters on tune, report val.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from faster_coco_eval.core import mask as coco_mask
from PIL import Image, ImageDraw

from drcl.data.demo_shapes import CLASS_TABLE, COLOURS, pattern_texture, polygon_area, unit_polygon
from drcl.data.groups import lvis_frequency
from drcl.utils.io import atomic_write_json

NUM_CLASSES = len(CLASS_TABLE)
MIN_VISIBLE_FRACTION = 0.3  # an object may lose at most 70% of its pixels to later objects
VAL_IMAGE_ID_OFFSET = 100_000  # val image ids start above this, so train and val ids never meet
VAL_ANN_ID_OFFSET = 1_000_000
TUNE_IMAGE_ID_OFFSET = 200_000
TUNE_ANN_ID_OFFSET = 2_000_000
_SPLIT_CODE = {"train": 0, "val": 1, "tune": 2}
_IMAGE_ID_OFFSET = {"train": 0, "val": VAL_IMAGE_ID_OFFSET, "tune": TUNE_IMAGE_ID_OFFSET}
_ANN_ID_OFFSET = {"train": 0, "val": VAL_ANN_ID_OFFSET, "tune": TUNE_ANN_ID_OFFSET}


@dataclass(frozen=True)
class DemoSize:
    """Scale of a generated demo dataset.

    Attributes:
        image_size: side of the square images, pixels.
        max_train_instances: training instances of the most frequent class.
        min_train_instances: training instances of the rarest class.
        val_instances_per_class: validation instances of every class (balanced).
        objects_per_image: inclusive range of objects per image.
        radius_frac: range of object radius as a fraction of the image side (log-uniform).
        neg_per_image: classes listed in ``neg_category_ids`` (verified absent) per image.
        not_exhaustive_prob: chance an image lists one present class as not exhaustive.
    """

    image_size: int
    max_train_instances: int
    min_train_instances: int
    val_instances_per_class: int
    objects_per_image: tuple[int, int] = (2, 6)
    radius_frac: tuple[float, float] = (0.07, 0.21)
    neg_per_image: int = 8
    not_exhaustive_prob: float = 0.02


SIZES: dict[str, DemoSize] = {
    # ~1000 train / ~240 val images of 128 px
    "small": DemoSize(
        128, max_train_instances=450, min_train_instances=2, val_instances_per_class=20
    ),
    # ~3000 train / ~720 val images of 224 px
    "medium": DemoSize(
        224, max_train_instances=1650, min_train_instances=2, val_instances_per_class=60
    ),
}


@dataclass
class _Placed:
    """An object drawn into an image: its class rank and outline (V, 2) xy in pixels."""

    label: int
    polygon: np.ndarray


# ------------------------------------------------------------------------------------ planning


def train_instance_targets(spec: DemoSize, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Planned training instances per class rank.

    ``n_k = round(n_max * (n_min / n_max) ** (k / (K - 1)))``, k = 0..K-1.

    Returns:
        (K,) int64, non-increasing, first ``max_train_instances``, last ``min_train_instances``.
    """
    k = np.arange(num_classes) / max(1, num_classes - 1)
    ratio = spec.min_train_instances / spec.max_train_instances
    return np.rint(spec.max_train_instances * ratio**k).astype(np.int64)


def _scaled_targets(targets: np.ndarray, num_images: int, spec: DemoSize) -> np.ndarray:
    # Shrink or grow every class count by the same factor so about num_images images come out.
    mean_objects = sum(spec.objects_per_image) / 2
    factor = num_images * mean_objects / targets.sum()
    return np.maximum(1, np.rint(targets * factor)).astype(np.int64)


def _plan_images(counts: np.ndarray, spec: DemoSize, rng: np.random.Generator) -> list[list[int]]:
    """Deal the shuffled instances (class ranks) out to images of 2-6 objects."""
    labels = np.repeat(np.arange(len(counts)), counts)
    rng.shuffle(labels)
    lo, hi = spec.objects_per_image
    plan: list[list[int]] = []
    i = 0
    while i < len(labels):
        n = int(rng.integers(lo, hi + 1))
        plan.append(labels[i : i + n].tolist())
        i += n
    if len(plan) > 1 and len(plan[-1]) < lo:  # no image with fewer objects than asked
        plan[-2].extend(plan.pop())
    return plan


# ----------------------------------------------------------------------------------- rendering


def _bilinear_noise(size: int, grid: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth colour noise: a (grid, grid, 3) normal field upsampled to (size, size, 3)."""
    field = rng.normal(0.0, sigma, (grid, grid, 3))
    pos = np.linspace(0, grid - 1, size)
    i0 = np.minimum(np.floor(pos).astype(int), grid - 2)
    f = (pos - i0)[:, None]
    rows = field[i0] * (1 - f)[..., None] + field[i0 + 1] * f[..., None]  # (size, grid, 3)
    return rows[:, i0] * (1 - f.T)[..., None] + rows[:, i0 + 1] * f.T[..., None]


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Low-saturation gradient + smooth noise + distractor strokes (clutter, not a class).

    Returns:
        (size, size, 3) float32 RGB.
    """
    colours = rng.uniform(60, 200, (2, 3))
    colours = 0.5 * colours + 0.5 * colours.mean(axis=1, keepdims=True)  # desaturate
    theta = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    t = (xx * math.cos(theta) + yy * math.sin(theta))[..., None]
    t = (t - t.min()) / (t.max() - t.min() + 1e-9)
    img = (1 - t) * colours[0] + t * colours[1] + _bilinear_noise(size, 5, 18.0, rng)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(3, 9))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        width = int(rng.integers(1, 3 + size // 128))
        if rng.random() < 0.5:
            pts = [tuple(p) for p in rng.uniform(0, size, (int(rng.integers(2, 5)), 2)).tolist()]
            draw.line(pts, fill=colour, width=width)
        else:
            x0, y0 = rng.uniform(-0.2 * size, size, 2)
            r = rng.uniform(0.1, 0.5) * size
            start = float(rng.uniform(0, 360))
            draw.arc([x0, y0, x0 + r, y0 + r], start, start + float(rng.uniform(60, 270)), colour,
                     width)  # fmt: skip
    return np.asarray(pil, dtype=np.float32)


def _rasterize(poly: np.ndarray, size: int) -> np.ndarray:
    """Pixels of ``poly`` exactly as pycocotools / faster-coco-eval decode the json polygon.

    Drawing with the evaluator's own rasteriser makes the painted object and its ground-truth
    mask the same pixels.

    Returns:
        (size, size) bool mask.
    """
    rles = coco_mask.frPyObjects([poly.reshape(-1).tolist()], size, size)
    return coco_mask.decode(coco_mask.merge(rles)).astype(bool)


def _random_outline(label: int, radius: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """The class's outline scaled, squashed, rotated and placed fully inside the image."""
    shape = CLASS_TABLE[label].shape
    aspect = rng.uniform(0.85, 1.15)
    angle = rng.uniform(-math.pi / 12, math.pi / 12)  # small tilt: a square stays a square
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    local = (unit_polygon(shape) * np.array([aspect, 1 / aspect]) * radius) @ rot.T
    lo, hi = local.min(axis=0), local.max(axis=0)
    free = size - (hi - lo)
    if np.any(free <= 0):
        return np.empty((0, 2))
    # rounded as in the json, so the drawn pixels are the json polygon's pixels
    return np.round(local - lo + rng.uniform(0, 1, 2) * free, 2)


def _occlusion_ok(owner: np.ndarray, visible: np.ndarray, areas: np.ndarray, cover) -> bool:
    """Would every earlier object keep >= MIN_VISIBLE_FRACTION of its pixels under ``cover``?"""
    hidden = owner[cover]
    lost = np.bincount(hidden[hidden >= 0], minlength=len(visible))
    return bool(np.all(visible - lost >= MIN_VISIBLE_FRACTION * areas))


def _paint(canvas: np.ndarray, mask: np.ndarray, poly: np.ndarray, label: int, rng) -> None:
    """Fill the object's pixels with its colour family and pattern (vectorised over its box).

    Args:
        canvas: (H, W, 3) float32 image, changed in place.
        mask: (H, W) bool pixels of the object.
        poly: (V, 2) outline in pixels.
    """
    cls = CLASS_TABLE[label]
    base = np.asarray(COLOURS[cls.colour], dtype=np.float64) + rng.normal(0, 12, 3)
    base = np.clip(base * rng.uniform(0.85, 1.1), 0, 255)
    ys, xs = np.nonzero(mask)
    y0, x0 = ys.min(), xs.min()
    box = mask[y0 : ys.max() + 1, x0 : xs.max() + 1]
    centre = (poly.min(axis=0) + poly.max(axis=0)) / 2
    radius = float((poly.max(axis=0) - poly.min(axis=0)).max() / 2)
    dy, dx = np.mgrid[0 : box.shape[0], 0 : box.shape[1]].astype(np.float64)
    dx += x0 + 0.5 - centre[0]  # pixel centres relative to the object's centre
    dy += y0 + 0.5 - centre[1]
    phi = rng.uniform(0, 2 * math.pi)  # pattern orientation
    u = dx * math.cos(phi) + dy * math.sin(phi)
    v = -dx * math.sin(phi) + dy * math.cos(phi)
    tex = pattern_texture(cls.pattern, u, v, base, radius, float(rng.uniform(0, 1)))
    canvas[y0 : y0 + box.shape[0], x0 : x0 + box.shape[1]][box] = tex[box]


def _place(
    label: int, owner: np.ndarray, visible: np.ndarray, areas: np.ndarray, spec: DemoSize, rng
) -> tuple[np.ndarray, np.ndarray] | None:
    """Find an outline for a new object that hides < 70% of every earlier object.

    Up to 36 tries; every 12 failed tries the object shrinks by 15%.

    Returns:
        (V, 2) outline and its (H, W) bool mask, or None when no place was found.
    """
    size = spec.image_size
    lo, hi = (math.log(f * size) for f in spec.radius_frac)
    for attempt in range(36):
        radius = math.exp(rng.uniform(lo, hi)) * 0.85 ** (attempt // 12)
        poly = _random_outline(label, radius, size, rng)
        if len(poly) == 0:
            continue
        mask = _rasterize(poly, size)
        if mask.any() and _occlusion_ok(owner, visible, areas, mask):
            return poly, mask
    return None


def _render_image(
    labels: list[int], spec: DemoSize, rng: np.random.Generator
) -> tuple[np.ndarray, list[_Placed]]:
    """Draw one image: background, then objects in order (later ones occlude earlier ones).

    An object that finds no place (see :func:`_place`) is left out.

    Returns:
        (H, W, 3) uint8 image and the placed objects in drawing order.
    """
    size = spec.image_size
    canvas = _background(size, rng)
    owner = np.full((size, size), -1, dtype=np.int64)  # index of the object on top, -1: none
    visible, areas, placed = np.zeros(0), np.zeros(0), []
    for label in labels:
        found = _place(label, owner, visible, areas, spec, rng)
        if found is None:
            continue
        poly, mask = found
        hidden = owner[mask]
        visible -= np.bincount(hidden[hidden >= 0], minlength=len(visible))
        owner[mask] = len(placed)
        visible, areas = np.append(visible, mask.sum()), np.append(areas, mask.sum())
        _paint(canvas, mask, poly, label, rng)
        placed.append(_Placed(label, poly))
    canvas += rng.normal(0.0, 4.0, canvas.shape)  # sensor noise over everything
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), placed


# ------------------------------------------------------------------------------------- records


def category_id_of_rank() -> list[int]:
    """Category id of every class rank: ids 1..K in alphabetical order of the names.

    Ids do not follow the frequency rank, so code that mixes up ids and ranks shows it.
    """
    order = sorted(range(NUM_CLASSES), key=lambda r: CLASS_TABLE[r].name)
    ids = [0] * NUM_CLASSES
    for cat_id, rank in enumerate(order, start=1):
        ids[rank] = cat_id
    return ids


def _twin_ranks() -> dict[int, set[int]]:
    """Rank -> ranks of the classes it is confusable with (both directions)."""
    rank_of = {c.name: r for r, c in enumerate(CLASS_TABLE)}
    twins: dict[int, set[int]] = {r: set() for r in range(NUM_CLASSES)}
    for r, c in enumerate(CLASS_TABLE):
        if c.twin is not None:
            twins[r].add(rank_of[c.twin])
            twins[rank_of[c.twin]].add(r)
    return twins


def _negative_ranks(present: set[int], spec: DemoSize, rng: np.random.Generator) -> list[int]:
    """Classes verified absent: absent twins of present classes first, then random absent ones.

    Listing the twins makes a confusion between twins count as a false positive in LVIS's
    federated evaluation.
    """
    twins = _twin_ranks()
    first = sorted({t for r in present for t in twins[r]} - present)[: spec.neg_per_image]
    others = np.array(sorted(set(range(NUM_CLASSES)) - present - set(first)), dtype=np.int64)
    rng.shuffle(others)
    return first + others[: spec.neg_per_image - len(first)].tolist()


def _annotation(ann_id: int, image_id: int, cat_id: int, poly: np.ndarray) -> dict:
    x0, y0 = poly.min(axis=0)
    x1, y1 = poly.max(axis=0)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cat_id,
        "segmentation": [poly.reshape(-1).tolist()],
        "area": round(polygon_area(poly), 2),
        "bbox": [float(x0), float(y0), round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
        "iscrowd": 0,
    }


def _image_records(
    split: str, index: int, placed: list[_Placed], spec: DemoSize, rng: np.random.Generator
) -> tuple[dict, list[tuple[int, np.ndarray]]]:
    """The ``images`` entry of one generated image and its (category id, polygon) objects."""
    cat_ids = category_id_of_rank()
    image_id = index + 1 + _IMAGE_ID_OFFSET[split]
    present = {p.label for p in placed}
    not_exhaustive = []
    if present and rng.random() < spec.not_exhaustive_prob:
        not_exhaustive = [cat_ids[int(rng.choice(sorted(present)))]]
    image = {
        "id": image_id,
        "file_name": f"{index + 1:06d}.png",
        "width": spec.image_size,
        "height": spec.image_size,
        "neg_category_ids": sorted(cat_ids[r] for r in _negative_ranks(present, spec, rng)),
        "not_exhaustive_category_ids": not_exhaustive,
    }
    return image, [(cat_ids[p.label], p.polygon) for p in placed]


def _generate_split(
    split: str, counts: np.ndarray, out_dir: Path, spec: DemoSize, seed: int
) -> tuple[list[dict], list[dict]]:
    """Render and save every image of a split; return its ``images`` and ``annotations``."""
    code = _SPLIT_CODE[split]
    plan = _plan_images(counts, spec, np.random.default_rng([seed, code, 0]))
    folder = out_dir / split
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    ann_id = _ANN_ID_OFFSET[split]
    for index, labels in enumerate(plan):
        rng = np.random.default_rng([seed, code, 1, index])
        pixels, placed = _render_image(labels, spec, rng)
        image, objects = _image_records(split, index, placed, spec, rng)
        # PNG carries no timestamp: equal pixels give equal bytes.
        Image.fromarray(pixels).save(folder / image["file_name"], format="PNG", compress_level=6)
        images.append(image)
        for cat_id, poly in objects:
            ann_id += 1
            annotations.append(_annotation(ann_id, image["id"], cat_id, poly))
    return images, annotations


def _categories(train_annotations: list[dict]) -> list[dict]:
    """Category records with image/instance counts and frequency counted from the train set."""
    cat_ids = category_id_of_rank()
    instances = {c: 0 for c in cat_ids}
    images: dict[int, set[int]] = {c: set() for c in cat_ids}
    for a in train_annotations:
        instances[a["category_id"]] += 1
        images[a["category_id"]].add(a["image_id"])
    records = []
    for rank, cls in enumerate(CLASS_TABLE):
        cid = cat_ids[rank]
        records.append({
            "id": cid,
            "name": cls.name,
            "synset": f"{cls.name}.n.01",  # synset-like; there is no WordNet entry
            "synonyms": [cls.name],
            "def": cls.definition,
            "frequency": lvis_frequency(len(images[cid])),
            "image_count": len(images[cid]),
            "instance_count": instances[cid],
            "shape": cls.shape,
            "pattern": cls.pattern,
            "colour": cls.colour,
            "twin": cls.twin,
            "frequency_rank": rank,
        })  # fmt: skip
    return sorted(records, key=lambda r: r["id"])


# --------------------------------------------------------------------------------------- public


def _dataset_json(split: str, images: list[dict], anns: list[dict], cats: list[dict], info) -> dict:
    return {
        "info": {**info, "split": split},
        "licenses": [],
        "images": images,
        "annotations": anns,
        "categories": cats,
    }


def _check_groups(categories: list[dict]) -> None:
    groups = {c["frequency"] for c in categories}
    if groups != {"r", "c", "f"}:
        raise RuntimeError(f"demo dataset lacks a frequency group: has only {sorted(groups)}")


def make_demo_dataset(
    out_dir: str | Path,
    seed: int = 0,
    size: str = "small",
    num_train: int | None = None,
    num_val: int | None = None,
) -> dict[str, Path]:
    """Generate the demo dataset (deterministic for a given seed, size and overrides).

    Args:
        out_dir: output folder; ``annotations/``, ``train/`` and ``val/`` are created in it.
        seed: random seed; the same seed gives byte-identical files.
        size: ``"small"`` (128 px, ~1000 train / ~240 val images) or ``"medium"`` (224 px, ~3x).
        num_train: about this many training images instead of the size's own (every class count
            is scaled alike, at least 1 each); for quick tests. The r/c/f groups are then whatever
            the counts give; without overrides all three are guaranteed.
        num_val: about this many validation (and tune) images instead of the size's own.

    Returns:
        Paths ``train_ann``, ``val_ann``, ``train_images``, ``val_images`` (the keys of
        ``DataConfig``), and ``tune_ann``, ``tune_images`` (the tuning split: point
        ``data.val_*`` at them to choose hyperparameters).
    """
    if size not in SIZES:
        raise ValueError(f"unknown demo size {size!r}; allowed: {', '.join(SIZES)}")
    spec, out = SIZES[size], Path(out_dir)
    train_counts = train_instance_targets(spec)
    val_counts = np.full(NUM_CLASSES, spec.val_instances_per_class, dtype=np.int64)
    if num_train is not None:
        train_counts = _scaled_targets(train_counts, num_train, spec)
    if num_val is not None:
        val_counts = _scaled_targets(val_counts, num_val, spec)
    train_images, train_anns = _generate_split("train", train_counts, out, spec, seed)
    val_images, val_anns = _generate_split("val", val_counts, out, spec, seed)
    tune_images, tune_anns = _generate_split("tune", val_counts, out, spec, seed)
    # val.json carries the training counts and frequencies, as LVIS's val json does
    categories = _categories(train_anns)
    if num_train is None:
        _check_groups(categories)
    info = {"description": "drcl embedded demo dataset", "seed": seed, "size": size}
    paths = {
        "train_ann": out / "annotations" / "train.json",
        "val_ann": out / "annotations" / "val.json",
        "train_images": out / "train",
        "val_images": out / "val",
        "tune_ann": out / "annotations" / "tune.json",
        "tune_images": out / "tune",
    }
    atomic_write_json(
        paths["train_ann"], _dataset_json("train", train_images, train_anns, categories, info)
    )
    atomic_write_json(
        paths["val_ann"], _dataset_json("val", val_images, val_anns, categories, info)
    )
    atomic_write_json(
        paths["tune_ann"], _dataset_json("tune", tune_images, tune_anns, categories, info)
    )
    return paths


def summarize(train_ann: dict) -> dict[str, dict[str, int]]:
    """Per frequency group: number of classes, training images and instances of those classes."""
    out = {g: {"classes": 0, "instances": 0, "min_images": 0, "max_images": 0} for g in "rcf"}
    for g in "rcf":
        cats = [c for c in train_ann["categories"] if c["frequency"] == g]
        if cats:
            out[g] = {
                "classes": len(cats),
                "instances": sum(c["instance_count"] for c in cats),
                "min_images": min(c["image_count"] for c in cats),
                "max_images": max(c["image_count"] for c in cats),
            }
    return out
