"""The embedded demo dataset (v2): a long-tailed, dense, LVIS-format detection set made by code.

``make_demo_dataset(out_dir)`` writes::

    out_dir/annotations/train.json   LVIS-format (RLE masks, frequency, neg/not-exhaustive ids)
    out_dir/annotations/val.json
    out_dir/annotations/tune.json    like val (balanced): for choosing hyperparameters
    out_dir/train/000001.png ...
    out_dir/val/000001.png ...
    out_dir/tune/000001.png ...

Generation is deterministic: the same seed and size give byte-identical json and PNG files. Every
image draws from its own random stream ``(seed, split, index)``, so images do not depend on one
another. The classes (shape family x texture) are in :mod:`drcl.data.demo_shapes`.

What makes it a small proxy of LVIS's structure (docs/demo_dataset.md has the numbers):

- **Classes by form, not colour.** Every instance draws its own two colours, brightness, shading,
  rotation (any angle), aspect (0.7-1.4) and size (radius log-uniform over a 4.2x range).
- **Density.** Objects per image are log-normal (median 9, mean about 10, 3-26); crowded images
  get smaller objects, as in LVIS. Objects overlap: a later object may hide up to 60% of an
  earlier one.
- **Masks are the visible region**, as LVIS (and COCO) annotate them: ``segmentation`` is the
  compressed RLE of the pixels the object owns in the final image, ``bbox`` the tight box of
  those pixels and ``area`` their count. The mask and the image agree to the pixel.
- **Clutter.** Textured backgrounds (two scales of smooth noise, strokes) and 1-5 unlabelled
  distractor blobs per image, which belong to no class and may hide labelled objects.
- **Long tail.** Class of rank k (0 = most frequent, K classes) gets
  ``n_k = round(n_max * (n_min / n_max) ** (k / (K - 1)))`` training instances, a geometric fall
  like LVIS's frequency curve; ``image_count``, ``instance_count`` and ``frequency`` (LVIS rule:
  rare 1-10 images, common 11-100, frequent > 100) are counted from what was written. Validation
  and tune have the same number of instances of every class, so APr is measurable; choose
  hyperparameters on tune, report val.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from faster_coco_eval.core import mask as coco_mask
from PIL import Image, ImageDraw

from drcl.data.demo_shapes import CLASS_TABLE, shape_mask, texture_tone
from drcl.data.groups import lvis_frequency
from drcl.utils.io import atomic_write_json

NUM_CLASSES = len(CLASS_TABLE)
MIN_VISIBLE_FRACTION = 0.4  # an object may lose at most 60% of its pixels to later objects
MIN_VISIBLE_PIXELS = 12  # and keeps at least this many
VAL_IMAGE_ID_OFFSET = 100_000  # val image ids start above this, so train and val ids never meet
VAL_ANN_ID_OFFSET = 1_000_000
TUNE_IMAGE_ID_OFFSET = 200_000
TUNE_ANN_ID_OFFSET = 2_000_000
_SPLIT_CODE = {"train": 0, "val": 1, "tune": 2}
_IMAGE_ID_OFFSET = {"train": 0, "val": VAL_IMAGE_ID_OFFSET, "tune": TUNE_IMAGE_ID_OFFSET}
_ANN_ID_OFFSET = {"train": 0, "val": VAL_ANN_ID_OFFSET, "tune": TUNE_ANN_ID_OFFSET}
_DISTRACTOR = -1  # label of an unlabelled distractor


@dataclass(frozen=True)
class DemoSize:
    """Scale of a generated demo dataset.

    Attributes:
        image_size: side of the square images, pixels.
        max_train_instances: training instances of the most frequent class.
        min_train_instances: training instances of the rarest class.
        val_instances_per_class: validation (and tune) instances of every class (balanced).
        objects_per_image: inclusive range of labelled objects per image.
        objects_log_mean: mean of log(objects per image) (log-normal; median exp of it).
        objects_log_sd: its standard deviation.
        radius_frac: range of object radius as a fraction of the image side (log-uniform).
        distractors_per_image: inclusive range of unlabelled distractor blobs per image.
        neg_per_image: classes listed in ``neg_category_ids`` (verified absent) per image.
        not_exhaustive_prob: chance an image lists one present class as not exhaustive.
    """

    image_size: int
    max_train_instances: int
    min_train_instances: int
    val_instances_per_class: int
    objects_per_image: tuple[int, int] = (3, 26)
    objects_log_mean: float = 2.2
    objects_log_sd: float = 0.45
    radius_frac: tuple[float, float] = (0.055, 0.23)
    distractors_per_image: tuple[int, int] = (1, 5)
    neg_per_image: int = 8
    not_exhaustive_prob: float = 0.02

    @property
    def mean_objects(self) -> float:
        """Expected labelled objects per image (the log-normal's mean, before clipping)."""
        return math.exp(self.objects_log_mean + self.objects_log_sd**2 / 2)


SIZES: dict[str, DemoSize] = {
    # ~540 train / ~100 val / ~100 tune images of 128 px, ~10 objects each
    "small": DemoSize(
        128, max_train_instances=600, min_train_instances=2, val_instances_per_class=20
    ),
    # ~1700 train / ~290 val / ~290 tune images of 224 px
    "medium": DemoSize(
        224, max_train_instances=2000, min_train_instances=2, val_instances_per_class=60
    ),
}


@dataclass
class _Placed:
    """An object drawn into an image: class rank (or ``_DISTRACTOR``) and its full mask window."""

    label: int
    top: int
    left: int
    mask: np.ndarray  # (h, w) bool: the object's full shape inside its window


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
    factor = num_images * spec.mean_objects / targets.sum()
    return np.maximum(1, np.rint(targets * factor)).astype(np.int64)


def _plan_images(counts: np.ndarray, spec: DemoSize, rng: np.random.Generator) -> list[list[int]]:
    """Deal the shuffled instances (class ranks) out to images of log-normal size."""
    labels = np.repeat(np.arange(len(counts)), counts)
    rng.shuffle(labels)
    lo, hi = spec.objects_per_image
    plan: list[list[int]] = []
    i = 0
    while i < len(labels):
        n = int(np.clip(round(rng.lognormal(spec.objects_log_mean, spec.objects_log_sd)), lo, hi))
        plan.append(labels[i : i + n].tolist())
        i += n
    if len(plan) > 1 and len(plan[-1]) < lo:  # no image with fewer objects than asked
        plan[-2].extend(plan.pop())
    return plan


# ----------------------------------------------------------------------------------- rendering


def _smooth_noise(size: int, grid: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth colour noise: a (grid, grid, 3) normal field upsampled to (size, size, 3)."""
    field = rng.normal(0.0, sigma, (grid, grid, 3))
    pos = np.linspace(0, grid - 1, size)
    i0 = np.minimum(np.floor(pos).astype(int), grid - 2)
    f = (pos - i0)[:, None]
    rows = field[i0] * (1 - f)[..., None] + field[i0 + 1] * f[..., None]  # (size, grid, 3)
    return rows[:, i0] * (1 - f.T)[..., None] + rows[:, i0 + 1] * f.T[..., None]


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Textured clutter: gradient + coarse and fine smooth noise + strokes (no class).

    Returns:
        (size, size, 3) float32 RGB.
    """
    colours = rng.uniform(50, 210, (2, 3))
    colours = 0.5 * colours + 0.5 * colours.mean(axis=1, keepdims=True)  # desaturate
    theta = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    t = (xx * math.cos(theta) + yy * math.sin(theta))[..., None]
    t = (t - t.min()) / (t.max() - t.min() + 1e-9)
    img = (1 - t) * colours[0] + t * colours[1]
    img += _smooth_noise(size, 5, 18.0, rng) + _smooth_noise(size, max(6, size // 6), 10.0, rng)
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


def _object_frame(radius: float, size: int, rng: np.random.Generator):
    """Window and object-frame coordinates of a randomly posed object fully inside the image.

    Returns:
        (top, left, u, v): the window's corner and (h, w) coordinates of its pixel centres in the
        object's frame (rotated by any angle, squashed by the aspect, radius 1), or None when the
        object does not fit.
    """
    aspect = math.exp(rng.uniform(math.log(0.7), math.log(1.4)))
    angle = rng.uniform(0, 2 * math.pi)
    half = int(math.ceil(radius * max(aspect, 1 / aspect) * 1.15)) + 1  # holds every shape
    if 2 * half + 1 > size:
        return None
    cx, cy = rng.uniform(half, size - half, 2)
    left, top = int(cx) - half, int(cy) - half
    left, top = min(max(left, 0), size - 2 * half - 1), min(max(top, 0), size - 2 * half - 1)
    ys, xs = np.mgrid[top : top + 2 * half + 1, left : left + 2 * half + 1].astype(np.float64)
    dx, dy = (xs + 0.5 - cx) / radius, (ys + 0.5 - cy) / radius
    u = (dx * math.cos(angle) + dy * math.sin(angle)) / aspect
    v = (-dx * math.sin(angle) + dy * math.cos(angle)) * aspect
    return top, left, u, v


def _distractor_mask(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An irregular blob: radius 0.75 + a random sum of 2nd-5th angular harmonics (no class)."""
    th = np.arctan2(v, u)
    edge = np.full_like(u, 0.75)
    for k in range(2, 6):
        edge += rng.uniform(0.05, 0.16) * np.cos(k * th + rng.uniform(0, 2 * math.pi))
    return np.hypot(u, v) <= edge


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two colours of an instance: any hue; the second differs clearly in brightness."""
    hue, sat, val = rng.uniform(0, 1), rng.uniform(0.25, 1.0), rng.uniform(0.35, 1.0)
    hue2 = hue if rng.random() < 0.5 else (hue + rng.uniform(0.15, 0.85)) % 1.0
    delta = rng.uniform(0.3, 0.55)
    val2 = val - delta if val - delta >= 0.08 else min(1.0, val + delta)
    sat2 = rng.uniform(0.2, 1.0)
    first = np.array(colorsys.hsv_to_rgb(hue, sat, val)) * 255
    second = np.array(colorsys.hsv_to_rgb(hue2, sat2, val2)) * 255
    return first, second


def _appearance(label: int, mask: np.ndarray, u, v, radius: float, rng) -> np.ndarray:
    """RGB of an object over its window: texture tone between two random colours, shading.

    Returns:
        (h, w, 3) float64.
    """
    first, second = _colours(rng)
    if label == _DISTRACTOR:  # smooth blotches between the two colours
        tone = np.clip(0.5 + _smooth_noise(mask.shape[0], 4, 0.35, rng)[..., 0], 0, 1)
    else:
        cls = CLASS_TABLE[label]
        # period >= 3 pixels, so small objects still show a few periods
        period = max(3.0 / radius, rng.uniform(0.36, 0.5))
        tone = texture_tone(cls.texture, cls.shape, u, v, period, float(rng.uniform(0, 1)))
    rgb = first * (1 - tone[..., None]) + second * tone[..., None]
    psi = rng.uniform(0, 2 * math.pi)  # light direction: a brightness ramp across the object
    shade = rng.uniform(0.75, 1.15) * (1 + 0.15 * (u * math.cos(psi) + v * math.sin(psi)))
    return rgb * shade[..., None]


def _occlusion_ok(owner: np.ndarray, keep: np.ndarray, top: int, left: int, mask) -> bool:
    """Would every earlier labelled object keep its visible minimum under ``mask``?

    Args:
        owner: (H, W) index of the object on top of each pixel, -1 for background.
        keep: (N,) pixels each earlier object may still lose (inf for distractors: no limit).
    """
    h, w = mask.shape
    hidden = owner[top : top + h, left : left + w][mask]
    lost = np.bincount(hidden[hidden >= 0], minlength=len(keep))
    return bool(np.all(lost <= keep))


def _place(
    label: int, radius_range: tuple[float, float], owner, keep, size: int, rng
) -> tuple[_Placed, np.ndarray, np.ndarray, float] | None:
    """Pose a new object so that every earlier labelled object keeps its visible minimum.

    Up to 36 tries; every 12 failed tries the object shrinks by 20%.

    Returns:
        (the placed object, u, v, radius in pixels), or None when no place was found.
    """
    lo, hi = (math.log(r) for r in radius_range)
    for attempt in range(36):
        radius = math.exp(rng.uniform(lo, hi)) * 0.8 ** (attempt // 12)
        frame = _object_frame(radius, size, rng)
        if frame is None:
            continue
        top, left, u, v = frame
        if label == _DISTRACTOR:
            mask = _distractor_mask(u, v, rng)
        else:
            mask = shape_mask(CLASS_TABLE[label].shape, u, v)
        if mask.sum() >= 2 * MIN_VISIBLE_PIXELS and _occlusion_ok(owner, keep, top, left, mask):
            return _Placed(label, top, left, mask), u, v, radius
    return None


def _drawing_order(labels: list[int], spec: DemoSize, rng: np.random.Generator) -> list[int]:
    """The labelled objects with distractors inserted at random places (they can hide objects)."""
    lo, hi = spec.distractors_per_image
    order = list(labels)
    for _ in range(int(rng.integers(lo, hi + 1))):
        order.insert(int(rng.integers(0, len(order) + 1)), _DISTRACTOR)
    return order


def _render_image(
    labels: list[int], spec: DemoSize, rng: np.random.Generator
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """Draw one image: background, then objects in order (later ones occlude earlier ones).

    Crowded images get smaller objects: the radius range shrinks by sqrt(10 / n) above 10
    objects. An object that finds no place (see :func:`_place`) is left out.

    Returns:
        (H, W, 3) uint8 image and, for every labelled object in drawing order, its class rank
        and (H, W) bool visible mask.
    """
    size = spec.image_size
    canvas = _background(size, rng)
    owner = np.full((size, size), -1, dtype=np.int64)  # index of the object on top, -1: none
    keep, placed = np.zeros(0), []
    crowd = min(1.0, math.sqrt(10 / max(1, len(labels))))
    lo, hi = (f * size for f in spec.radius_frac)
    radius_range = (lo * max(crowd, 0.8), max(lo * 1.5, hi * crowd))
    for label in _drawing_order(labels, spec, rng):
        found = _place(label, radius_range, owner, keep, size, rng)
        if found is None:
            continue
        obj, u, v, radius = found
        h, w = obj.mask.shape
        window = owner[obj.top : obj.top + h, obj.left : obj.left + w]
        hidden = window[obj.mask]
        lost = np.bincount(hidden[hidden >= 0], minlength=len(keep))
        keep = keep - lost
        window[obj.mask] = len(placed)
        area = float(obj.mask.sum())
        floor = max(MIN_VISIBLE_FRACTION * area, MIN_VISIBLE_PIXELS)
        keep = np.append(keep, np.inf if label == _DISTRACTOR else area - floor)
        rgb = _appearance(label, obj.mask, u, v, radius, rng)
        canvas[obj.top : obj.top + h, obj.left : obj.left + w][obj.mask] = rgb[obj.mask]
        placed.append(obj)
    canvas += rng.normal(0.0, 4.0, canvas.shape)  # sensor noise over everything
    objects = [(p.label, owner == i) for i, p in enumerate(placed) if p.label != _DISTRACTOR]
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), objects


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


def _annotation(ann_id: int, image_id: int, cat_id: int, mask: np.ndarray) -> dict:
    """LVIS record of a visible mask: compressed RLE, tight pixel box, pixel area."""
    ys, xs = np.nonzero(mask)
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    counts = rle["counts"]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cat_id,
        "segmentation": {
            "size": [int(s) for s in rle["size"]],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
        },
        "area": float(len(ys)),
        # pixel (x, y) covers [x, x + 1): the box spans the visible pixels' edges
        "bbox": [
            float(xs.min()),
            float(ys.min()),
            float(xs.max() + 1 - xs.min()),
            float(ys.max() + 1 - ys.min()),
        ],
        "iscrowd": 0,
    }


def _image_records(
    split: str, index: int, labels: list[int], spec: DemoSize, rng: np.random.Generator
) -> dict:
    """The ``images`` entry of one generated image holding classes ``labels`` (ranks)."""
    cat_ids = category_id_of_rank()
    present = set(labels)
    not_exhaustive = []
    if present and rng.random() < spec.not_exhaustive_prob:
        not_exhaustive = [cat_ids[int(rng.choice(sorted(present)))]]
    return {
        "id": index + 1 + _IMAGE_ID_OFFSET[split],
        "file_name": f"{index + 1:06d}.png",
        "width": spec.image_size,
        "height": spec.image_size,
        "neg_category_ids": sorted(cat_ids[r] for r in _negative_ranks(present, spec, rng)),
        "not_exhaustive_category_ids": not_exhaustive,
    }


def _generate_split(
    split: str, counts: np.ndarray, out_dir: Path, spec: DemoSize, seed: int
) -> tuple[list[dict], list[dict]]:
    """Render and save every image of a split; return its ``images`` and ``annotations``."""
    code = _SPLIT_CODE[split]
    plan = _plan_images(counts, spec, np.random.default_rng([seed, code, 0]))
    folder = out_dir / split
    folder.mkdir(parents=True, exist_ok=True)
    cat_ids = category_id_of_rank()
    images, annotations = [], []
    ann_id = _ANN_ID_OFFSET[split]
    for index, labels in enumerate(plan):
        rng = np.random.default_rng([seed, code, 1, index])
        pixels, objects = _render_image(labels, spec, rng)
        image = _image_records(split, index, [r for r, _ in objects], spec, rng)
        # PNG carries no timestamp: equal pixels give equal bytes.
        Image.fromarray(pixels).save(folder / image["file_name"], format="PNG", compress_level=6)
        images.append(image)
        for rank, mask in objects:
            ann_id += 1
            annotations.append(_annotation(ann_id, image["id"], cat_ids[rank], mask))
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
            "texture": cls.texture,
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
        out_dir: output folder; ``annotations/``, ``train/``, ``val/`` and ``tune/`` are created.
        seed: random seed; the same seed gives byte-identical files.
        size: ``"small"`` (128 px, ~540 train / ~100 val / ~100 tune images of ~10 objects) or
            ``"medium"`` (224 px, ~3x).
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
    info = {"description": "drcl embedded demo dataset (v2)", "seed": seed, "size": size}
    paths = {
        "train_ann": out / "annotations" / "train.json",
        "val_ann": out / "annotations" / "val.json",
        "train_images": out / "train",
        "val_images": out / "val",
        "tune_ann": out / "annotations" / "tune.json",
        "tune_images": out / "tune",
    }
    for split, imgs, anns in (
        ("train", train_images, train_anns),
        ("val", val_images, val_anns),
        ("tune", tune_images, tune_anns),
    ):
        atomic_write_json(paths[f"{split}_ann"], _dataset_json(split, imgs, anns, categories, info))
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
