"""Validate a COCO / LVIS json (and its images) all at once; write a cleaned copy.

``check_annotations`` reports every problem, not just the first: each ``Problem`` names the file,
the record (``image`` / ``annotation`` / ``category``, or ``file`` for the json itself), its id
(or ``#<position>`` when it has no usable id), the field and what is wrong. Severities:

- ``error``: the record would break or silently corrupt training / evaluation;
- ``warning``: legal but suspicious (a category with no annotations, a missing ``area``);
- ``info``: worth knowing (images with no annotations: fine for LVIS negatives).

``fix_annotations`` writes a copy that passes the check: it drops what cannot be repaired (and
the annotations of dropped images / categories), clips boxes into their image, keeps the first of
duplicate ids, removes malformed optional fields and fills a missing ``area`` from the box.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from drcl.data.paths import image_path, image_relpath, safe_join
from drcl.utils.io import atomic_write_json

REQUIRED_TOP = ("images", "annotations", "categories")
REQUIRED_KEYS = {
    "category": ("id", "name"),
    "image": ("id", "width", "height"),  # and file_name or coco_url (LVIS v1)
    "annotation": ("id", "image_id", "category_id", "bbox"),
}
ID_LIST_FIELDS = ("neg_category_ids", "not_exhaustive_category_ids")  # LVIS v1 image fields
# boxes may poke out of the image by float noise; more than this is reported (and clipped by fix)
BOX_TOLERANCE = 1.0
# EXIF orientations that swap width and height (transpose, rotate 90/270, transverse)
_EXIF_SWAPS = (5, 6, 7, 8)


@dataclass(frozen=True)
class Problem:
    """One problem in one record. ``str(p)`` is ``file:kind id:field: severity: message``."""

    file: str
    kind: str  # "file" | "image" | "annotation" | "category"
    record_id: Any  # the record's id, "#<position>" without a usable id, "-" for the file
    field: str
    message: str
    severity: str = "error"  # "error" | "warning" | "info"

    def __str__(self) -> str:
        where = f"{self.file}:{self.kind} {self.record_id}:{self.field}"
        return f"{where}: {self.severity}: {self.message}"


@dataclass(frozen=True)
class Change:
    """One change made by ``fix_annotations``."""

    kind: str
    record_id: Any
    action: str  # "dropped" | "clipped bbox" | "removed field" | "filtered ids" | "set area" ...
    reason: str

    def __str__(self) -> str:
        return f"{self.kind} {self.record_id}: {self.action}: {self.reason}"


@dataclass
class _Issue:
    field: str
    message: str
    severity: str = "error"
    repair: str = "drop"  # what fix does: drop | clip | unset | filter | area | "" (nothing)


@dataclass
class _Record:
    kind: str
    position: int
    record: Any
    issues: list[_Issue] = field(default_factory=list)

    @property
    def rid(self) -> Any:
        rec = self.record
        rid = rec.get("id") if isinstance(rec, dict) else None
        return rid if _is_int(rid) else f"#{self.position}"

    @property
    def dropped(self) -> bool:
        return any(i.repair == "drop" for i in self.issues)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ----------------------------------------------------------------------------- records


def _required(rec: Any, kind: str) -> list[_Issue]:
    """Record must be an object with its required keys; ``id`` must be an integer."""
    if not isinstance(rec, dict):
        return [_Issue("-", f"record is {type(rec).__name__}, expected an object")]
    issues = [_Issue(k, f"missing required key '{k}'") for k in REQUIRED_KEYS[kind] if k not in rec]
    for key in ("id", "image_id", "category_id"):
        if key in rec and key in REQUIRED_KEYS[kind] and not _is_int(rec[key]):
            issues.append(_Issue(key, f"must be an integer, got {rec[key]!r}"))
    return issues


def _category_issues(cat: Any) -> list[_Issue]:
    issues = _required(cat, "category")
    if not isinstance(cat, dict):
        return issues
    if "name" in cat and not (isinstance(cat["name"], str) and cat["name"]):
        issues.append(_Issue("name", f"must be a non-empty string, got {cat['name']!r}"))
    freq = cat.get("frequency")
    if freq is not None and freq not in ("r", "c", "f"):
        issues.append(_Issue("frequency", f"must be 'r', 'c' or 'f', got {freq!r}", repair="unset"))
    for key in ("image_count", "instance_count"):
        if key in cat and not (_is_int(cat[key]) and cat[key] >= 0):
            msg = f"must be a non-negative integer, got {cat[key]!r}"
            issues.append(_Issue(key, msg, repair="unset"))
    return issues


def _image_issues(img: Any, cat_ids: set[int]) -> list[_Issue]:
    issues = _required(img, "image")
    if not isinstance(img, dict):
        return issues
    if "file_name" not in img and "coco_url" not in img:
        issues.append(_Issue("file_name", "missing required key 'file_name' (or 'coco_url')"))
    else:
        field_name = "file_name" if "file_name" in img else "coco_url"
        try:
            safe_join(".", image_relpath(img))
        except ValueError as err:
            issues.append(_Issue(field_name, f"unsafe path: {err}"))
    for key in ("width", "height"):
        if key in img and not (_is_int(img[key]) and img[key] > 0):
            issues.append(_Issue(key, f"must be a positive integer, got {img[key]!r}"))
    for key in ID_LIST_FIELDS:
        issues += _id_list_issues(img, key, cat_ids)
    return issues


def _id_list_issues(img: dict, key: str, cat_ids: set[int]) -> list[_Issue]:
    """LVIS ``neg_category_ids`` / ``not_exhaustive_category_ids``: lists of known category ids."""
    if key not in img:
        return []
    ids = img[key]
    if not isinstance(ids, list) or not all(_is_int(c) for c in ids):
        return [_Issue(key, "must be a list of integer category ids", repair="unset")]
    unknown = sorted(set(ids) - cat_ids)
    if unknown:
        return [_Issue(key, f"unknown category ids {unknown[:10]}", repair="filter")]
    return []


def _bbox_issues(bbox: Any, size: tuple[int, int] | None, tol: float) -> list[_Issue]:
    """COCO box [x, y, w, h]: 4 finite numbers, w, h > 0, inside the image (width, height)."""
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_num(v) for v in bbox)):
        return [_Issue("bbox", f"must be a list of 4 numbers [x, y, w, h], got {bbox!r}")]
    if not all(math.isfinite(v) for v in bbox):
        return [_Issue("bbox", f"has NaN or infinite values: {bbox}")]
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return [_Issue("bbox", f"width and height must be positive, got w={w}, h={h}")]
    if size is None:
        return []
    width, height = size
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return [_Issue("bbox", f"{bbox} lies entirely outside the {width}x{height} image")]
    if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
        msg = f"{bbox} extends outside the {width}x{height} image"
        return [_Issue("bbox", msg, repair="clip")]
    return []


def _polygon_extent(segm: Any) -> list[float] | None:
    """[x, y, w, h] spanned by a valid polygon segmentation, or None (RLE, empty, malformed)."""
    if not (isinstance(segm, list) and segm and all(isinstance(p, list) for p in segm)):
        return None
    xs = [v for p in segm for v in p[0::2]]
    ys = [v for p in segm for v in p[1::2]]
    if not xs or not ys or not all(_is_num(v) and math.isfinite(v) for v in xs + ys):
        return None
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def _close(a: list[float], b: list[float], scale: float) -> bool:
    tol = max(2.0, 0.1 * scale)  # pixels: polygon rounding and loose boxes stay "close"
    return all(abs(u - v) <= tol for u, v in zip(a, b, strict=True))


def _box_format_issues(ann: dict, size: tuple[int, int] | None) -> list[_Issue]:
    """A valid-looking box in the wrong format: normalised to 0-1, or [x1, y1, x2, y2].

    These are refused by ``--fix-out`` (repair ``"refuse"``): clipping or dropping them would
    write wrong boxes that then pass the check.
    """
    x, y, w, h = ann["bbox"]
    if size is not None and min(size) > 32 and max(x, y, w, h) <= 1.0:
        msg = (
            f"{ann['bbox']} looks normalised to 0-1 on a {size[0]}x{size[1]} image; COCO boxes "
            "are [x, y, width, height] in pixels"
        )
        return [_Issue("bbox", msg, repair="refuse")]
    segm = ann.get("segmentation")
    extent = _polygon_extent(segm) if _segmentation_issue(segm, size) is None else None
    scale = max(extent[2], extent[3]) if extent else 0.0
    if scale < 8:  # tiny objects: rounding alone can make both readings look alike
        return []
    as_xyxy = [x, y, w - x, h - y]
    if not _close(ann["bbox"], extent, scale) and _close(as_xyxy, extent, scale):
        msg = (
            f"{ann['bbox']} looks like [x1, y1, x2, y2]: its segmentation spans "
            f"[x, y, w, h] = {[round(v, 1) for v in extent]}"
        )
        return [_Issue("bbox", msg, repair="refuse")]
    return []


def _segmentation_issue(segm: Any, size: tuple[int, int] | None) -> str | None:
    """Why a segmentation is malformed, or None. ``[]`` (box-only data) is accepted."""
    if isinstance(segm, list):
        for k, poly in enumerate(segm):
            if not (isinstance(poly, list) and all(_is_num(v) for v in poly)):
                return f"polygon {k} must be a list of numbers"
            if len(poly) < 6 or len(poly) % 2:
                return f"polygon {k} needs an even number (>= 6) of coordinates, has {len(poly)}"
            if not all(math.isfinite(v) for v in poly):
                return f"polygon {k} has NaN or infinite coordinates"
        return None
    if not isinstance(segm, dict):
        return f"must be a polygon list or an RLE object, got {type(segm).__name__}"
    counts, rle_size = segm.get("counts"), segm.get("size")
    if not (isinstance(counts, str) or (isinstance(counts, list) and all(map(_is_int, counts)))):
        return "RLE 'counts' must be a string or a list of integers"
    if not (isinstance(rle_size, list) and len(rle_size) == 2 and all(map(_is_int, rle_size))):
        return "RLE 'size' must be [height, width]"
    if size is not None and rle_size != [size[1], size[0]]:
        return f"RLE size {rle_size} differs from the image's [height, width] {[size[1], size[0]]}"
    if isinstance(counts, str):
        try:
            counts = rle_string_counts(counts)
        except ValueError as err:
            return f"RLE 'counts' string is malformed: {err}"
    if sum(counts) != rle_size[0] * rle_size[1]:
        return f"RLE counts sum to {sum(counts)}, expected height*width = {math.prod(rle_size)}"
    return None


def rle_string_counts(text: str) -> list[int]:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``: 5-bit
    groups offset by 48, bit 0x20 = more groups follow, bit 0x10 of the last = negative; from
    the third run on, a delta to the run two before).

    Raises:
        ValueError: a character outside the alphabet, a run cut short, or a negative run.
    """
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(text):
                raise ValueError("early end")
            c = ord(text[pos]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {text[pos]!r} at {pos} is not RLE")
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos, shift = pos + 1, shift + 5
            if not more and c & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        if value < 0:
            raise ValueError(f"negative run length {value} at run {len(counts)}")
        counts.append(value)
    return counts


def _annotation_issues(
    ann: Any, image_sizes: dict[int, tuple[int, int]], image_ids: set, cat_ids: set, tol: float
) -> list[_Issue]:
    issues = _required(ann, "annotation")
    if not isinstance(ann, dict):
        return issues
    iid, cid = ann.get("image_id"), ann.get("category_id")
    if _is_int(iid) and iid not in image_ids:
        issues.append(_Issue("image_id", f"unknown image id {iid}"))
    if _is_int(cid) and cid not in cat_ids:
        issues.append(_Issue("category_id", f"unknown category id {cid}"))
    if "bbox" in ann:
        box_issues = _bbox_issues(ann["bbox"], image_sizes.get(iid), tol)
        issues += box_issues or _box_format_issues(ann, image_sizes.get(iid))
    if "segmentation" in ann:
        why = _segmentation_issue(ann["segmentation"], image_sizes.get(iid))
        if why:
            issues.append(_Issue("segmentation", why, repair="unset"))
    if ann.get("iscrowd", 0) not in (0, 1) or isinstance(ann.get("iscrowd"), bool):
        issues.append(_Issue("iscrowd", f"must be 0 or 1, got {ann['iscrowd']!r}", repair="unset"))
    area = ann.get("area")
    if area is None:
        issues.append(_Issue("area", "missing (COCO evaluation needs it)", "warning", "area"))
    elif not (_is_num(area) and math.isfinite(area) and area >= 0):
        issues.append(_Issue("area", f"must be a finite number >= 0, got {area!r}", repair="area"))
    return issues


# ----------------------------------------------------------------------------- passes


def _records(data: dict, key: str, kind: str) -> list[_Record]:
    items = data.get(key)
    return [_Record(kind, k, r) for k, r in enumerate(items if isinstance(items, list) else [])]


def _mark_duplicates(records: list[_Record]) -> None:
    """Keep the first record of each id; later ones are dropped."""
    first: dict[int, int] = {}
    for rec in records:
        if isinstance(rec.record, dict) and _is_int(rec.record.get("id")):
            rid = rec.record["id"]
            if rid in first:
                msg = f"duplicate id {rid} (first at position {first[rid]})"
                rec.issues.append(_Issue("id", msg))
            else:
                first[rid] = rec.position


def _ids(records: list[_Record]) -> set[int]:
    return {
        r.record["id"]
        for r in records
        if isinstance(r.record, dict) and _is_int(r.record.get("id"))
    }


def _sizes(images: list[_Record]) -> dict[int, tuple[int, int]]:
    """(width, height) of images whose id and size are valid."""
    bad = {"id", "width", "height", "-"}
    return {
        r.record["id"]: (r.record["width"], r.record["height"])
        for r in images
        if not any(i.field in bad for i in r.issues)
    }


def probe_image(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """(width, height) after EXIF orientation, or ``(None, why)`` if missing or not decodable."""
    if not path.is_file():
        return None, f"image file not found: {path}"
    try:
        with Image.open(path) as img:
            img.load()  # full decode: catches truncated files, not just bad headers
            w, h = img.size
            if img.getexif().get(0x0112, 1) in _EXIF_SWAPS:
                w, h = h, w
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return None, f"unreadable or truncated image {path}: {err}"
    return (w, h), None


def _file_issues(images: list[_Record], image_dir: Path) -> None:
    """Missing, unreadable, truncated files and sizes that disagree with the json."""
    todo = [r for r in images if not r.dropped]
    paths = [image_path(image_dir, r.record) for r in todo]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        probed = list(pool.map(probe_image, paths))
    for rec, (size, why) in zip(todo, probed, strict=True):
        if why:
            rec.issues.append(_Issue("file_name", why))
        elif size != (rec.record["width"], rec.record["height"]):
            w, h = rec.record["width"], rec.record["height"]
            msg = f"file is {size[0]}x{size[1]} (EXIF applied), json says {w}x{h}"
            rec.issues.append(_Issue("width,height", msg))


def _negative_and_annotated(images: list[_Record], anns: list[_Record]) -> None:
    """LVIS: a class annotated on an image cannot also be a verified negative there."""
    present: dict[int, set[int]] = {}
    for a in anns:
        if not a.dropped:
            present.setdefault(a.record["image_id"], set()).add(a.record["category_id"])
    for rec in images:
        if rec.dropped or not isinstance(rec.record.get("neg_category_ids"), list):
            continue
        both = sorted(present.get(rec.record["id"], set()) & set(rec.record["neg_category_ids"]))
        if both:
            msg = (
                f"category ids {both[:10]} are annotated on this image and also listed as negative"
            )
            rec.issues.append(_Issue("neg_category_ids", msg, repair="unneg"))


def _xyxy_dataset_issue(anns: list[_Record], sizes: dict[int, tuple[int, int]], tol: float) -> str:
    """Why the boxes as a whole look like [x1, y1, x2, y2], or "".

    Boxes that poke out of their image by a pixel happen; a large share (>= 20%, at least 3) of
    boxes that leave the image as [x, y, w, h] but would all fit as [x1, y1, x2, y2] is a format
    mistake.
    """
    boxes = [
        (a.record["bbox"], sizes[a.record["image_id"]])
        for a in anns
        if not a.dropped and a.record.get("image_id") in sizes
    ]
    outside = [(b, s) for b, s in boxes if b[0] + b[2] > s[0] + tol or b[1] + b[3] > s[1] + tol]
    fit = [
        b[2] > b[0] and b[3] > b[1] and b[2] <= s[0] + tol and b[3] <= s[1] + tol
        for b, s in outside
    ]
    if len(outside) >= 3 and len(outside) >= 0.2 * len(boxes) and all(fit):
        return (
            f"{len(outside)} of {len(boxes)} boxes ({100 * len(outside) / len(boxes):.0f}%) end "
            "outside their image as [x, y, w, h] but all fit as [x1, y1, x2, y2]: the boxes look "
            "like xyxy; convert them to [x, y, width, height]"
        )
    return ""


def _usage_issues(cats: list[_Record], images: list[_Record], anns: list[_Record]) -> None:
    """Categories never annotated (warning) and images without annotations (info)."""
    valid = [a.record for a in anns if not a.dropped]
    used_cats = Counter(a["category_id"] for a in valid)
    used_imgs = Counter(a["image_id"] for a in valid)
    for rec in cats:
        if not rec.dropped and rec.record["id"] not in used_cats:
            rec.issues.append(_Issue("id", "category has no annotations", "warning", ""))
    for rec in images:
        if not rec.dropped and rec.record["id"] not in used_imgs:
            rec.issues.append(_Issue("id", "image has no annotations", "info", ""))


def _validate(
    data: dict, image_dir: str | os.PathLike | None, tol: float
) -> dict[str, list[_Record]]:
    cats = _records(data, "categories", "category")
    for rec in cats:
        rec.issues += _category_issues(rec.record)
    _mark_duplicates(cats)
    cat_ids = _ids(cats)
    images = _records(data, "images", "image")
    for rec in images:
        rec.issues += _image_issues(rec.record, cat_ids)
    _mark_duplicates(images)
    if image_dir is not None:
        _file_issues(images, Path(image_dir))
    sizes, image_ids = _sizes(images), _ids(images)
    anns = _records(data, "annotations", "annotation")
    for rec in anns:
        rec.issues += _annotation_issues(rec.record, sizes, image_ids, cat_ids, tol)
    _mark_duplicates(anns)
    xyxy = _xyxy_dataset_issue(anns, sizes, tol)
    if xyxy:  # clipping such boxes would write wrong boxes: refuse them instead
        for rec in anns:
            for issue in rec.issues:
                if issue.repair == "clip":
                    issue.repair = "refuse"
    _negative_and_annotated(images, anns)
    _usage_issues(cats, images, anns)
    return {"categories": cats, "images": images, "annotations": anns, "xyxy": xyxy}


def _top_level_problems(data: Any, file: str) -> list[Problem]:
    if not isinstance(data, dict):
        msg = f"top level is {type(data).__name__}, expected an object"
        return [Problem(file, "file", "-", "-", msg)]
    problems = []
    for key in REQUIRED_TOP:
        if key not in data:
            problems.append(Problem(file, "file", "-", key, f"missing top-level key '{key}'"))
        elif not isinstance(data[key], list):
            msg = f"must be a list, got {type(data[key]).__name__}"
            problems.append(Problem(file, "file", "-", key, msg))
    return problems


def _images_folder_problem(file: str, image_dir: str | os.PathLike | None) -> Problem | None:
    if image_dir is None or Path(image_dir).is_dir():
        return None
    what = "is not a folder" if Path(image_dir).exists() else "not found"
    return Problem(file, "file", "-", "--images", f"images folder {what}: {image_dir}")


def _load(path: Path) -> tuple[Any, Problem | None]:
    from drcl.utils.io import read_text_utf8

    try:
        return json.loads(read_text_utf8(path, "json")), None
    except json.JSONDecodeError as err:
        msg = f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
        return None, Problem(str(path), "file", "-", "-", msg)
    except ValueError as err:  # compressed, UTF-16, not UTF-8, a folder: named by the reader
        return None, Problem(str(path), "file", "-", "-", str(err).split(": ", 1)[-1])
    except OSError as err:
        return None, Problem(str(path), "file", "-", "-", f"cannot read: {err}")


def check_annotations(
    ann_path: str | os.PathLike,
    image_dir: str | os.PathLike | None = None,
    box_tolerance: float = BOX_TOLERANCE,
) -> list[Problem]:
    """Every problem of a COCO / LVIS json (and, with ``image_dir``, of its image files).

    Args:
        ann_path: the json.
        image_dir: folder ``file_name`` is relative to; ``None`` skips the file checks.
        box_tolerance: pixels a box may extend outside its image before it is reported.

    Returns:
        Problems in file, category, image, annotation order (empty when all is well).
    """
    file = str(ann_path)
    data, problem = _load(Path(ann_path))
    if problem:
        return [problem]
    problems = _top_level_problems(data, file)
    if not isinstance(data, dict):
        return problems
    folder_problem = _images_folder_problem(file, image_dir)
    if folder_problem:  # one error, not one "file not found" per image
        problems.append(folder_problem)
        image_dir = None
    result = _validate(data, image_dir, box_tolerance)
    if result["xyxy"]:
        problems.append(Problem(file, "file", "-", "bbox", result["xyxy"]))
    for key in ("categories", "images", "annotations"):
        for rec in result[key]:
            problems += [
                Problem(file, rec.kind, rec.rid, i.field, i.message, i.severity) for i in rec.issues
            ]
    return _merge_missing_files(problems, data, image_dir, file)


_NOT_FOUND = "image file not found: "


def _merge_missing_files(
    problems: list[Problem], data: dict, image_dir: str | os.PathLike | None, file: str
) -> list[Problem]:
    """Most image files missing means a wrong ``--images`` root: one error with a hint instead
    of one line per image."""
    missing = [p for p in problems if p.field == "file_name" and p.message.startswith(_NOT_FOUND)]
    images = data.get("images") if isinstance(data.get("images"), list) else []
    if image_dir is None or len(missing) < 2 or 2 * len(missing) < len(images):
        return problems
    example = missing[0].message[len(_NOT_FOUND) :]
    msg = (
        f"{len(missing)} of {len(images)} image files not found under --images {image_dir} "
        f"(e.g. {example}): is it the folder that images[].file_name is relative to?"
    )
    try:
        hint = _root_hint(Path(image_dir), Path(example).relative_to(image_dir))
    except ValueError:  # a path not under the root (LVIS coco_url layout): no hint
        hint = None
    if hint:
        msg += f" {hint}"
    rest = [p for p in problems if p not in missing]
    return [Problem(file, "file", "-", "--images", msg), *rest]


def _root_hint(root: Path, rel: Path) -> str | None:
    """Where ``rel`` (a missing file_name) does exist near ``root``: under its parent or a
    sub-folder (try that as --images), or under root without its first folder."""
    candidates = [root.parent]
    try:
        candidates += sorted(d for d in root.iterdir() if d.is_dir())[:100]
    except OSError:
        pass
    for cand in candidates:
        if (cand / rel).is_file():
            return f"{rel} exists under {cand}: try --images {cand}"
    if len(rel.parts) > 1 and (root / Path(*rel.parts[1:])).is_file():
        return (
            f"{Path(*rel.parts[1:])} exists under {root}: file_name has an extra '{rel.parts[0]}/'"
        )
    return None


# ----------------------------------------------------------------------------- fixing


def _repair(rec: _Record, sizes: dict[int, tuple[int, int]], cat_ids: set[int]) -> list[Change]:
    """Apply the non-dropping repairs of one kept record in place."""
    changes, obj = [], rec.record
    for issue in rec.issues:
        if issue.repair == "unset":
            obj.pop(issue.field, None)
            changes.append(Change(rec.kind, rec.rid, f"removed field {issue.field}", issue.message))
        elif issue.repair == "filter":
            obj[issue.field] = [c for c in obj[issue.field] if c in cat_ids]
            changes.append(Change(rec.kind, rec.rid, f"filtered {issue.field}", issue.message))
        elif issue.repair == "unneg":  # applied in fix_annotations, which knows the annotations
            changes.append(Change(rec.kind, rec.rid, "filtered neg_category_ids", issue.message))
        elif issue.repair == "clip":
            obj["bbox"] = _clip_box(obj["bbox"], sizes[obj["image_id"]])
            changes.append(Change(rec.kind, rec.rid, "clipped bbox", issue.message))
    if any(i.repair == "area" for i in rec.issues):
        obj["area"] = float(obj["bbox"][2] * obj["bbox"][3])
        changes.append(Change(rec.kind, rec.rid, "set area", "area = bbox width * height"))
    return changes


def _clip_box(bbox: list[float], size: tuple[int, int]) -> list[float]:
    """[x, y, w, h] clipped into [0, W] x [0, H]."""
    x1, y1 = max(0.0, bbox[0]), max(0.0, bbox[1])
    x2, y2 = min(float(size[0]), bbox[0] + bbox[2]), min(float(size[1]), bbox[1] + bbox[3])
    return [x1, y1, x2 - x1, y2 - y1]


def _kept(records: list[_Record], changes: list[Change]) -> list[_Record]:
    kept = []
    for rec in records:
        if rec.dropped:
            why = "; ".join(f"{i.field}: {i.message}" for i in rec.issues if i.repair == "drop")
            changes.append(Change(rec.kind, rec.rid, "dropped", why))
        else:
            kept.append(rec)
    return kept


def _cascade(anns: list[_Record], images: set[int], cats: set[int], changes: list) -> list:
    """Drop annotations whose image or category was dropped."""
    kept = []
    for rec in anns:
        iid, cid = rec.record["image_id"], rec.record["category_id"]
        if iid in images and cid in cats:
            kept.append(rec)
        else:
            what = f"image {iid}" if iid not in images else f"category {cid}"
            changes.append(Change(rec.kind, rec.rid, "dropped", f"its {what} was dropped"))
    return kept


def _refuse_wrong_formats(recs: dict[str, Any], ann_path: str | os.PathLike) -> None:
    """Boxes that look normalised or xyxy cannot be repaired by clipping: refuse to write."""
    refused = [r for r in recs["annotations"] if any(i.repair == "refuse" for i in r.issues)]
    if recs["xyxy"] or refused:
        first = next((i.message for r in refused for i in r.issues if i.repair == "refuse"), "")
        why = recs["xyxy"] or f"{len(refused)} boxes look like the wrong format, e.g. {first}"
        raise ValueError(
            f"{ann_path}: --fix-out refuses to clip or drop boxes that look like the wrong format "
            f"(it would write wrong boxes): {why}. Convert the boxes first; nothing written"
        )


def fix_annotations(
    ann_path: str | os.PathLike,
    out_path: str | os.PathLike,
    image_dir: str | os.PathLike | None = None,
    box_tolerance: float = BOX_TOLERANCE,
) -> list[Change]:
    """Write a cleaned copy of ``ann_path`` to ``out_path`` (atomically); return the changes.

    Raises:
        ValueError: the json cannot be parsed or its top level is not an object.
    """
    data, problem = _load(Path(ann_path))
    if problem:
        raise ValueError(str(problem))
    if not isinstance(data, dict):
        raise ValueError(f"{ann_path}: top level is {type(data).__name__}, expected an object")
    changes = [
        Change("file", "-", f"set {key} = []", "missing or not a list")
        for key in REQUIRED_TOP
        if not isinstance(data.get(key), list)
    ]
    folder_problem = _images_folder_problem(str(ann_path), image_dir)
    if folder_problem:
        raise ValueError(f"{folder_problem}; nothing written")
    recs = _validate(data, image_dir, box_tolerance)
    _refuse_wrong_formats(recs, ann_path)
    cats = _kept(recs["categories"], changes)
    images = _kept(recs["images"], changes)
    anns = _kept(recs["annotations"], changes)
    cat_ids, image_ids = _ids(cats), _ids(images)
    anns = _cascade(anns, image_ids, cat_ids, changes)
    sizes = _sizes(images)
    for rec in cats + images + anns:
        changes += _repair(rec, sizes, cat_ids)
    present: dict[int, set[int]] = {}
    for rec in anns:
        present.setdefault(rec.record["image_id"], set()).add(rec.record["category_id"])
    for rec in images:  # dropped categories must leave the LVIS id lists too
        for key in ID_LIST_FIELDS:
            if isinstance(rec.record.get(key), list):
                rec.record[key] = [c for c in rec.record[key] if c in cat_ids]
        if isinstance(rec.record.get("neg_category_ids"), list):  # annotated wins over negative
            here = present.get(rec.record["id"], set())
            rec.record["neg_category_ids"] = [
                c for c in rec.record["neg_category_ids"] if c not in here
            ]
    out = dict(data)
    out.update(
        categories=[r.record for r in cats],
        images=[r.record for r in images],
        annotations=[r.record for r in anns],
    )
    atomic_write_json(out_path, out)
    return changes


# ----------------------------------------------------------------------------- CLI


def _summary(problems: list[Problem]) -> str:
    by_sev = Counter(p.severity for p in problems)
    parts = [
        f"{by_sev.get(s, 0)} {s}{'s' if by_sev.get(s, 0) != 1 else ''}"
        for s in ("error", "warning", "info")
    ]
    kinds = Counter(p.kind for p in problems if p.severity == "error")
    detail = ", ".join(f"{k}: {n}" for k, n in sorted(kinds.items()))
    return ", ".join(parts) + (f" (errors by record kind: {detail})" if detail else "")


_PLURAL = {"category": "categories"}


def group_problems(problems: list[Problem], examples: int = 3) -> list[str]:
    """One line per distinct finding: problems equal in file, kind, field, severity and message
    are merged into ``FILE:KIND ID1, ID2, ID3:FIELD: SEVERITY: MESSAGE (N KINDs; first 3 shown)``.

    The real LVIS v1 val json has 1,040 categories without annotations: one line, not 1,040.
    Order: first occurrence of each finding.
    """
    groups: dict[tuple, list[Problem]] = {}
    for p in problems:
        groups.setdefault((p.file, p.kind, p.field, p.severity, p.message), []).append(p)
    lines = []
    for (file, kind, fld, severity, message), members in groups.items():
        if len(members) == 1:
            lines.append(str(members[0]))
            continue
        ids = ", ".join(str(p.record_id) for p in members[:examples])
        more = f"; first {examples} shown" if len(members) > examples else ""
        lines.append(
            f"{file}:{kind} {ids}:{fld}: {severity}: {message} "
            f"({len(members)} {_PLURAL.get(kind, kind + 's')}{more})"
        )
    return lines
