"""LVIS-style evaluation (AP, APr/APc/APf, COCO-LT AP1..AP4) through faster-coco-eval.

The LVIS protocol (Gupta et al., CVPR 2019, Sec. 5; lvis-api ``LVISEval``):
1. keep the 300 highest-scored detections of every image (over all classes), ``maxDets=[300]``;
2. federated negatives: a detection of class c on image i is evaluated only if c is annotated
   on i (positive) or listed in i's ``neg_category_ids``; otherwise it is dropped;
3. not-exhaustive classes: unmatched detections of c on an image listing c in
   ``not_exhaustive_category_ids`` are ignored (neither true nor false positives);
4. AP per class = mean over IoU 0.50:0.05:0.95 of the 101-point interpolated precision; the
   dataset AP is the mean over classes with ground truth; APr/APc/APf the mean over the
   classes of each frequency group.

Steps 2-4 run in faster-coco-eval's ``lvis_style`` mode; step 1 and the class groups are ours.
A json without any ``neg_category_ids`` / ``not_exhaustive_category_ids`` field is taken as
exhaustively annotated (COCO): every class absent from an image is a verified negative there.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster
from faster_coco_eval.core import mask as mask_utils

from drcl.data.groups import COMMON_MAX_IMAGES, RARE_MAX_IMAGES
from drcl.evaluation.detections import (
    Detections,
    DetectionsInput,
    KnownIds,
    load_detections,
    masks_to_rle,
)
from drcl.evaluation.ground_truth import drop_unknown_ids, validate_ground_truth
from drcl.evaluation.groups import GROUPS, ClassInfo, class_info
from drcl.utils.io import read_json

logger = logging.getLogger(__name__)

IOU_TYPES = ("bbox", "segm")
RULES = ("lvis", "coco")
AREA_KEYS = ("APs", "APm", "APl")  # faster-coco-eval's area ranges 1..3: small, medium, large


@dataclass
class GroundTruth:
    """A ground-truth json prepared for evaluation (annotations copied, never mutated).

    Attributes:
        data: the json dict with shallow-copied annotations (ids renumbered 1..N, area filled).
        known: image ids, category ids and sizes.
        federated: whether any image carries LVIS federated fields.
        allowed: (P,) sorted keys ``image_index * K + category_index`` of the (image, class)
            pairs that are evaluated under the federated rule (positives and negatives).
    """

    data: dict[str, Any]
    known: KnownIds
    federated: bool
    allowed: np.ndarray


def _load_json(obj: str | os.PathLike | dict, what: str) -> dict[str, Any]:
    data = read_json(obj) if isinstance(obj, str | os.PathLike) else obj
    name = os.fspath(obj) if isinstance(obj, str | os.PathLike) else f"<{what}>"
    if not isinstance(data, dict):
        raise ValueError(f"{name}: expected a COCO/LVIS json object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{name}: missing list '{key}' (not a COCO/LVIS json)")
    return data


def _copy_annotations(anns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # faster-coco-eval writes into annotation dicts ('ignore', 'rle') and treats id 0 as
    # "unmatched", so we evaluate shallow copies with ids 1..N; a missing area is w * h.
    out = []
    for i, ann in enumerate(anns):
        copy = dict(ann, id=i + 1)
        if "area" not in copy:
            copy["area"] = float(copy["bbox"][2] * copy["bbox"][3])
        out.append(copy)
    return out


def _federated_keys(data: dict[str, Any], known: KnownIds) -> np.ndarray:
    """Sorted keys of the (image, class) pairs evaluated under the federated rule."""
    k = known.cat_ids.shape[0]
    img = [a["image_id"] for a in data["annotations"]]
    cat = [a["category_id"] for a in data["annotations"]]
    for im in data["images"]:
        neg = im.get("neg_category_ids", [])
        img.extend([im["id"]] * len(neg))
        cat.extend(neg)
    img_idx = np.searchsorted(known.image_ids, np.asarray(img, dtype=np.int64))
    cat_idx = np.searchsorted(known.cat_ids, np.asarray(cat, dtype=np.int64))
    return np.unique(img_idx * k + cat_idx)


def prepare_ground_truth(
    gt: str | os.PathLike | dict[str, Any], iou_type: str = "bbox"
) -> GroundTruth:
    """Read (if a path), check and index a COCO/LVIS ground-truth json.

    Missing required keys raise ``ValueError`` (file, record, field); ids that point nowhere are
    warned about and left out (``drcl.evaluation.ground_truth``).
    """
    raw = _load_json(gt, "gt")
    name = os.fspath(gt) if isinstance(gt, str | os.PathLike) else "<gt>"
    validate_ground_truth(raw, name, iou_type)
    raw = drop_unknown_ids(raw, name)
    data = dict(raw, annotations=_copy_annotations(raw["annotations"]))
    sizes = {im["id"]: (im.get("height", 0), im.get("width", 0)) for im in data["images"]}
    known = KnownIds(
        image_ids=np.array(sorted(sizes), dtype=np.int64),
        cat_ids=np.array(sorted(c["id"] for c in data["categories"]), dtype=np.int64),
        sizes=sizes,
    )
    fields = ("neg_category_ids", "not_exhaustive_category_ids")
    federated = any(f in im for im in data["images"] for f in fields)
    allowed = _federated_keys(data, known) if federated else np.zeros(0, dtype=np.int64)
    return GroundTruth(data, known, federated, allowed)


def federated_filter(dets: Detections, gt: GroundTruth) -> Detections:
    """Drop detections of classes neither positive nor negative on their image (LVIS rule 2)."""
    if not gt.federated or len(dets) == 0:
        return dets
    k = gt.known.cat_ids.shape[0]
    keys = np.searchsorted(gt.known.image_ids, dets.image_id) * k + np.searchsorted(
        gt.known.cat_ids, dets.category_id
    )
    keep = np.isin(keys, gt.allowed)
    return dets if keep.all() else dets.select(keep)


def _result_annotations(dets: Detections, gt: GroundTruth, iou_type: str) -> list[dict]:
    """The dicts faster-coco-eval evaluates: ids 1..N, area = w*h (boxes) or mask area."""
    base = zip(dets.image_id.tolist(), dets.category_id.tolist(), dets.score.tolist(), strict=True)
    if iou_type == "bbox":
        boxes = dets.bbox.tolist()
        return [
            {
                "id": i + 1,
                "image_id": im,
                "category_id": c,
                "score": s,
                "bbox": b,
                "area": b[2] * b[3],
                "iscrowd": 0,
            }
            for i, ((im, c, s), b) in enumerate(zip(base, boxes, strict=True))
        ]
    rles = masks_to_rle(dets, gt.known.sizes)
    areas = mask_utils.area(rles).tolist() if rles else []
    return [
        {
            "id": i + 1,
            "image_id": im,
            "category_id": c,
            "score": s,
            "segmentation": r,
            "area": float(a),
            "iscrowd": 0,
        }
        for i, ((im, c, s), r, a) in enumerate(zip(base, rles, areas, strict=True))
    ]


class _Evaluator(COCOeval_faster):
    """faster-coco-eval without its own class groups (it would need cat['frequency']; we
    compute APr/APc/APf from the precision array ourselves)."""

    def _prepare_freq_group(self) -> list[list[int]]:
        return [[], [], []]


def _silent(*args: Any, **kwargs: Any) -> None:
    return None


def category_chunks(
    cat_of: np.ndarray,
    image_of: np.ndarray,
    cat_ids: list[int],
    max_pairs: int,
    min_chunks: int = 1,
) -> list[list[int]]:
    """Split sorted ``cat_ids`` into runs of classes that are evaluated together.

    A chunk is evaluated only on the images where its classes have ground truth or detections:
    an image with neither adds nothing to a class's precision or recall, so the numbers are those
    of the whole image x class grid; but faster-coco-eval allocates and walks every (image,
    class) pair of a call (~1 kB each; LVIS val has 19.8k x 1203 = 24M), so leaving the empty
    pairs out bounds its memory (at most ``max_pairs`` pairs per chunk, or one class) and its
    time. A chunk also closes once it holds ``1 / min_chunks`` of all annotations, so that
    parallel workers get balanced shares.

    Args:
        cat_of, image_of: (N,) category id and image index (0..I-1) of every ground-truth box
            and detection.
        cat_ids: the classes to evaluate, sorted.
        max_pairs: most (image, class) pairs per chunk.
        min_chunks: split into at least about this many chunks of similar work.
    """
    order = np.argsort(cat_of, kind="stable")
    cats, images = cat_of[order], image_of[order]
    bounds = zip(
        np.searchsorted(cats, cat_ids, "left").tolist(),
        np.searchsorted(cats, cat_ids, "right").tolist(),
        strict=True,
    )
    budget = max(1, math.ceil(len(cats) / max(1, min_chunks)))
    seen = np.zeros(int(image_of.max(initial=-1)) + 1, dtype=bool)
    chunks: list[list[int]] = [[]]
    n_images = work = 0
    for cid, (a, b) in zip(cat_ids, bounds, strict=True):
        own = np.unique(images[a:b])
        union = n_images + int(np.count_nonzero(~seen[own]))
        if chunks[-1] and ((len(chunks[-1]) + 1) * union > max_pairs or work + b - a > budget):
            chunks.append([])
            seen[:] = False
            n_images, work, union = 0, 0, len(own)
        chunks[-1].append(cid)
        seen[own] = True
        n_images, work = union, work + b - a
    return [c for c in chunks if c]


@dataclass
class _Job:
    """Everything a class chunk reads; built once and inherited by forked workers."""

    gt: GroundTruth
    dets: Detections
    iou_type: str
    lvis: bool
    max_dets: int
    gt_cat: np.ndarray  # (G,) category id of every ground-truth annotation
    gt_img: np.ndarray  # (G,) image id of every ground-truth annotation
    chunks: list[list[int]]
    shape: tuple[int, int, int]  # (T, R, A) of faster-coco-eval's precision array


_JOB: _Job | None = None  # set while accumulate_precision runs; read by its forked workers


def _chunk_precision(job: _Job, cat_ids: list[int]) -> np.ndarray:
    """(T, R, len(cat_ids), A) precision of one class chunk, on the images it touches."""
    in_gt = np.isin(job.gt_cat, cat_ids)
    in_dt = np.isin(job.dets.category_id, cat_ids)
    img_ids = np.union1d(job.gt_img[in_gt], job.dets.image_id[in_dt])
    t, r, a = job.shape
    if img_ids.size == 0:  # no ground truth and no detection: -1 as faster-coco-eval gives
        return np.full((t, r, len(cat_ids), a), -1.0)
    data = job.gt.data
    wanted, classes = set(img_ids.tolist()), set(cat_ids)
    images = [im for im in data["images"] if im["id"] in wanted]
    cats = [c for c in data["categories"] if c["id"] in classes]
    anns = [data["annotations"][i] for i in np.flatnonzero(in_gt).tolist()]
    gt_part = {**data, "images": images, "categories": cats, "annotations": anns}
    coco_gt = COCO(gt_part, print_function=_silent)
    coco_dt = COCO(print_function=_silent)
    dt_anns = _result_annotations(job.dets.select(in_dt), job.gt, job.iou_type)
    coco_dt.dataset = {"images": images, "categories": cats, "annotations": dt_anns}
    coco_dt.createIndex()
    ev = _Evaluator(
        coco_gt, coco_dt, iouType=job.iou_type, lvis_style=job.lvis, print_function=_silent
    )
    ev.params.imgIds, ev.params.catIds = img_ids.tolist(), list(cat_ids)
    ev.params.maxDets = [job.max_dets] if job.max_dets else ev.params.maxDets
    ev.evaluate()
    ev.accumulate()
    return ev.eval["precision"][..., -1]


def _run_chunk(i: int) -> np.ndarray:
    assert _JOB is not None, "only called by accumulate_precision's workers"
    return _chunk_precision(_JOB, _JOB.chunks[i])


def eval_workers(workers: int | None) -> int:
    """Worker processes for class chunks: ``workers``, or by default the usable CPUs (1 where
    processes cannot be forked)."""
    if workers is not None and int(workers) < 1:
        raise ValueError(f"workers={workers}: must be >= 1")
    if "fork" not in mp.get_all_start_methods():
        return 1
    if workers is None:
        usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        workers = len(usable) if usable else (os.cpu_count() or 1)
    return int(workers)


def accumulate_precision(
    gt: GroundTruth,
    dets: Detections,
    iou_type: str,
    rules: str,
    max_dets: int,
    max_pairs: int = 1_000_000,
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run faster-coco-eval in class chunks (in parallel processes) and return the precision at
    the largest maxDets.

    Classes are independent in AP, so chunks of classes, each on the images it touches
    (:func:`category_chunks`), give the numbers of one call over everything; ``workers``
    forked processes (default: the usable CPUs; 1 = in this process) evaluate them.

    Returns:
        precision: (T, R, K, A) with T=10 IoU thresholds, R=101 recall points, K classes
            (sorted ids), A=4 area ranges (all, small, medium, large); -1 where a class has no
            ground truth in that area range.
        iou_thrs: (T,).
    """
    global _JOB
    params = _Evaluator(iouType=iou_type, print_function=_silent).params
    iou_thrs = np.asarray(params.iouThrs)
    cat_ids = gt.known.cat_ids.tolist()
    gt_cat = np.array([a["category_id"] for a in gt.data["annotations"]], dtype=np.int64)
    gt_img = np.array([a["image_id"] for a in gt.data["annotations"]], dtype=np.int64)
    n_workers = eval_workers(workers)
    chunks = category_chunks(
        np.concatenate([gt_cat, dets.category_id]),
        np.searchsorted(gt.known.image_ids, np.concatenate([gt_img, dets.image_id])),
        cat_ids,
        max_pairs,
        min_chunks=1 if n_workers == 1 else 4 * n_workers,
    )
    shape = (len(iou_thrs), len(params.recThrs), len(params.areaRng))
    lvis = rules == "lvis"
    _JOB = _Job(
        gt,
        dets,
        iou_type,
        lvis and gt.federated,
        max_dets if lvis else 0,
        gt_cat,
        gt_img,
        chunks,
        shape,
    )
    try:
        n_workers = min(n_workers, len(chunks))
        if n_workers == 1:
            parts = [_run_chunk(i) for i in range(len(chunks))]
        else:  # forked: the job is inherited, only the small precision arrays travel back
            with mp.get_context("fork").Pool(n_workers) as pool:
                parts = pool.map(_run_chunk, range(len(chunks)), chunksize=1)
    finally:
        _JOB = None
    return np.concatenate([np.zeros((*shape[:2], 0, shape[2])), *parts], axis=2), iou_thrs


def _mean_valid(p: np.ndarray) -> float:
    """Mean of the entries > -1 (-1 marks classes without ground truth); NaN when none."""
    valid = p[p > -1]
    return float(valid.mean()) if valid.size else math.nan


def summarize_precision(precision: np.ndarray, iou_thrs: np.ndarray, info: ClassInfo) -> dict:
    """AP, AP50, AP75, APs/m/l, APr/c/f, AP1..AP4 (if bins known) and the per-class table."""
    t50 = int(np.argmin(np.abs(iou_thrs - 0.5)))
    t75 = int(np.argmin(np.abs(iou_thrs - 0.75)))
    allarea = precision[..., 0]
    out: dict[str, Any] = {
        "AP": _mean_valid(allarea),
        "AP50": _mean_valid(allarea[t50]),
        "AP75": _mean_valid(allarea[t75]),
    }
    for a, key in enumerate(AREA_KEYS, start=1):
        out[key] = _mean_valid(precision[..., a])
    for g in GROUPS:
        idx = [k for k, x in enumerate(info.groups) if x == g]
        out[f"AP{g}"] = _mean_valid(allarea[:, :, idx])
    if info.bins_source is not None:
        for b in range(1, 5):
            idx = [k for k, x in enumerate(info.bins) if x == b]
            out[f"AP{b}"] = _mean_valid(allarea[:, :, idx])
    out["per_class"] = [
        {
            "id": cid,
            "name": info.names[k],
            "group": info.groups[k],
            "bin": info.bins[k],
            "train_images": info.train_images[k],
            "train_instances": info.train_instances[k],
            "AP": _mean_valid(allarea[:, :, k]),
        }
        for k, cid in enumerate(info.cat_ids)
    ]
    return out


def _check_options(iou_type: str, rules: str, max_dets: int, workers: int | None) -> None:
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type={iou_type!r}: allowed {', '.join(IOU_TYPES)}")
    if rules not in RULES:
        raise ValueError(f"rules={rules!r}: allowed {', '.join(RULES)}")
    if int(max_dets) < 1:
        raise ValueError(f"max_dets={max_dets}: must be >= 1")
    eval_workers(workers)


def evaluate_detections(
    gt: str | os.PathLike | dict[str, Any],
    dets: DetectionsInput,
    iou_type: str = "bbox",
    train_ann: str | os.PathLike | dict[str, Any] | None = None,
    max_dets: int = 300,
    rules: str = "lvis",
    rare_max: int = RARE_MAX_IMAGES,
    common_max: int = COMMON_MAX_IMAGES,
    workers: int | None = None,
) -> dict[str, Any]:
    """LVIS-style (or COCO-style) AP of detections against a ground-truth json.

    Args:
        gt: ground-truth COCO/LVIS json (path or dict; never modified).
        dets: COCO results: a json path, a glob or list of per-rank json paths (merged), a list
            of record dicts, or an (N, 7) array ``[image_id, x, y, w, h, score, category_id]``.
        iou_type: 'bbox' or 'segm'.
        train_ann: training json (path or dict) giving image counts (frequency groups when the
            gt has no ``frequency`` field) and instance counts (COCO-LT bins AP1..AP4).
        max_dets: rules='lvis': detections kept per image (over all classes) and maxDets.
        rules: 'lvis' (top-``max_dets`` per image, federated, maxDets=[max_dets]) or 'coco'
            (all detections, maxDets=[1, 10, 100], metrics at 100: pycocotools' numbers).
        rare_max, common_max: the LVIS rule's thresholds when groups come from ``train_ann``
            (``data.groups``); an empty group is noted with thresholds to try.
        workers: processes evaluating class chunks in parallel (default: the usable CPUs;
            1 = in this process); the metrics do not depend on it.

    Returns:
        Fractions in [0, 1] (NaN for a group without classes with ground truth): AP, AP50,
        AP75, APs, APm, APl, APr, APc, APf, plus AP1..AP4 when training instance counts are
        known; ``per_class`` (id, name, group, bin, train_images, train_instances, AP); and
        iou_type, rules, max_dets, num_images, num_detections (evaluated), groups_source,
        bins_source, federated.

    Raises:
        ValueError: bad detections (naming file, record and field) or options.
    """
    _check_options(iou_type, rules, max_dets, workers)
    truth = prepare_ground_truth(gt, iou_type)
    train = None if train_ann is None else _load_json(train_ann, "train_ann")
    info = class_info(truth.data["categories"], train, rare_max, common_max)
    cap = int(max_dets) if rules == "lvis" else None
    detections = load_detections(dets, truth.known, iou_type, max_per_image=cap)
    if rules == "lvis":
        detections = federated_filter(detections, truth)
    precision, iou_thrs = accumulate_precision(
        truth, detections, iou_type, rules, cap or 100, workers=workers
    )
    out = summarize_precision(precision, iou_thrs, info)
    out.update(
        iou_type=iou_type,
        rules=rules,
        max_dets=cap or 100,
        num_images=len(truth.data["images"]),
        num_detections=len(detections),
        groups_source=info.groups_source,
        bins_source=info.bins_source,
        notes=info.notes,
        federated=bool(truth.federated and rules == "lvis"),
    )
    return out


def json_safe(obj: Any) -> Any:
    """Replace NaN/inf floats by None (JSON has no NaN), recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj
