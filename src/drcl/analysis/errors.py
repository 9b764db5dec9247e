"""Error breakdown per frequency group (the paper's pie charts), TIDE-style.

Definitions (SPEC.md, "Error breakdown definitions"). The LVIS rules come first:

1. top ``max_dets`` (300) detections per image by score;
2. federated filter: a detection of class c on image i is kept only if c is one of i's positive
   categories (annotated on i) or in ``neg_category_ids`` of i. Images without a
   ``neg_category_ids`` field (plain COCO) are exhaustively labelled: every class is kept.

Then every kept detection of an image, in decreasing score order, gets exactly one type, with
foreground IoU ``t_f`` (0.5) and background IoU ``t_b`` (0.1):

- **correct**: IoU >= t_f with a not yet matched ground truth of its class (greedy by score: the
  unmatched same-class ground truth of highest IoU is taken);
- **classification**: else IoU >= t_f with a ground truth of another class;
- **location**: else IoU >= t_b with a ground truth of its class (this includes duplicates:
  IoU >= t_f with an already matched ground truth);
- **background**: IoU < t_b with every ground truth of the image;
- **other**: the rest (wrong class and poorly localised).

Ignored (not counted, as in LVIS / COCO AP): a detection that is not correct and whose class is
in the image's ``not_exhaustive_category_ids``; a detection that is not correct and covers a
same-class crowd region (``iscrowd=1``) with intersection-over-detection-area >= t_f (COCO's
crowd rule). Crowd ground truths play no other role (never matched, never missed).
Ground truths never matched are **missed**. Detections are grouped by the frequency group of
their predicted class, missed ground truths by their own class.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.patches import Patch
from torchvision.ops import box_convert, box_iou

from drcl.analysis.plotting import new_figure, save_figure
from drcl.data.groups import FREQUENCY_GROUPS as GROUPS
from drcl.data.groups import GROUP_NAMES, class_counts, groups_for
from drcl.utils.io import read_json

ERROR_TYPES = ("correct", "classification", "location", "background", "other")
COUNT_KEYS = (*ERROR_TYPES, "missed")
CORRECT, CLASSIFICATION, LOCATION, BACKGROUND, OTHER = range(5)
IGNORED_CROWD = -1
# LVIS rule (Gupta et al., 2019): rare 1-10 training images, common 11-100, frequent > 100.
TYPE_COLORS = {
    "correct": "#2ca02c",
    "classification": "#d62728",
    "location": "#ff7f0e",
    "background": "#7f7f7f",
    "other": "#9467bd",
}


# ----------------------------------------------------------------------------- inputs


def _load(obj: str | os.PathLike | Any, what: str) -> tuple[Any, str]:
    """A json path or an already loaded object, plus a name for messages."""
    if isinstance(obj, str | os.PathLike):
        return read_json(obj), str(obj)
    return obj, f"<{what}>"


def category_groups(
    categories: list[Mapping[str, Any]], train_ann: str | os.PathLike | dict | None = None
) -> dict[int, str]:
    """``{cat_id: 'r'|'c'|'f'}``: the category's ``frequency`` field, else the LVIS rule.

    Args:
        categories: category records of the ground truth.
        train_ann: training json (path or dict); its image counts decide categories without a
            valid ``frequency`` (a class absent from training is rare).

    Raises:
        ValueError: a category has no ``frequency`` and no training json is given.
    """
    counts = None
    if train_ann is not None:
        train, source = _load(train_ann, "train_ann")
        try:
            counts = class_counts(train)[0]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{source}: bad annotation record ({err!r})") from err
    try:
        return groups_for(categories, counts)
    except ValueError as err:  # no counts: say which input is missing
        raise ValueError(f"{err}; pass the training json (train_ann)") from err


def _raise_bad_record(records: list, source: str, what: str, fields: tuple[str, ...]) -> None:
    """Find the first malformed record and name it with its field (slow path, errors only)."""
    for k, r in enumerate(records):
        if not isinstance(r, Mapping):
            raise ValueError(f"{source}: {what} {k}: expected an object, got {type(r).__name__}")
        for key in fields:
            if key not in r:
                raise ValueError(f"{source}: {what} {k}: missing field '{key}'")
        box = r["bbox"]
        if not isinstance(box, list | tuple) or len(box) != 4:
            raise ValueError(f"{source}: {what} {k}: field 'bbox' must be [x, y, w, h]: {box!r}")
        for key in fields:
            values = r[key] if key == "bbox" else [r[key]]
            if any(not isinstance(v, int | float) or isinstance(v, bool) for v in values):
                raise ValueError(f"{source}: {what} {k}: field '{key}' is not a number")
    raise ValueError(f"{source}: malformed {what} records")


def _detection_arrays(dets: Any, source: str) -> dict[str, np.ndarray]:
    """COCO results records -> arrays; boxes (N, 4) xyxy."""
    if not isinstance(dets, list):
        raise ValueError(f"{source}: expected a list of detections, got {type(dets).__name__}")
    try:
        out = {
            "image_id": np.array([d["image_id"] for d in dets], np.int64),
            "category_id": np.array([d["category_id"] for d in dets], np.int64),
            "score": np.array([d["score"] for d in dets], np.float64),
            "bbox": np.array([d["bbox"] for d in dets], np.float64).reshape(-1, 4),
        }
    except (KeyError, TypeError, ValueError):
        _raise_bad_record(dets, source, "detection", ("image_id", "category_id", "bbox", "score"))
    bad = (
        ~np.isfinite(out["score"])
        | ~np.isfinite(out["bbox"]).all(1)
        | (out["bbox"][:, 2:] < 0).any(1)
    )
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{source}: detection {k}: non-finite score/bbox or negative width/height")
    out["bbox"] = box_convert(torch.from_numpy(out["bbox"]), "xywh", "xyxy").numpy()
    return out


def _check_ids(
    arrays: dict[str, np.ndarray], gt: Mapping[str, Any], source: str, what: str
) -> None:
    """Every record must name an image and a category of the ground truth (as in LVIS)."""
    for field, table in (("image_id", "images"), ("category_id", "categories")):
        records = gt[table]
        try:
            known = np.array([int(r["id"]) for r in records], np.int64)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{source}: a record of '{table}' lacks a numeric 'id'") from err
        bad = ~np.isin(arrays[field], known)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{source}: {what} {k}: field '{field}' = {int(arrays[field][k])} "
                "is not in the ground truth"
            )


# ----------------------------------------------------------------------------- one image


def _to_t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(K, G) IoU of xyxy boxes, via torchvision."""
    return box_iou(_to_t(a), _to_t(b)).numpy()


def _ioa(dets: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """(K, G) intersection / detection area (COCO's overlap with a crowd region).

    From IoU = I / (A + B - I):  I = IoU * (A + B) / (1 + IoU).
    """
    iou = _iou(dets, crowd)
    a = (dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1])
    b = (crowd[:, 2] - crowd[:, 0]) * (crowd[:, 3] - crowd[:, 1])
    inter = iou * (a[:, None] + b[None, :]) / (1.0 + iou)
    return inter / np.maximum(a[:, None], np.finfo(np.float64).tiny)


def _greedy_correct(iou_same: np.ndarray, t_f: float) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching by score (rows are in score order): (K,) correct, (G,) matched."""
    correct = np.zeros(iou_same.shape[0], bool)
    matched = np.zeros(iou_same.shape[1], bool)
    # only detections that reach t_f with some same-class GT can be correct
    for k in np.flatnonzero((iou_same >= t_f).any(1)):
        row = np.where(matched, -1.0, iou_same[k])
        j = int(row.argmax())
        if row[j] >= t_f:
            correct[k], matched[j] = True, True
    return correct, matched


def assign_image(
    det_boxes: np.ndarray,
    det_cats: np.ndarray,
    gt_boxes: np.ndarray,
    gt_cats: np.ndarray,
    gt_crowd: np.ndarray,
    t_f: float = 0.5,
    t_b: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Error types of one image's detections.

    Args:
        det_boxes: (K, 4) xyxy, rows sorted by decreasing score.
        det_cats: (K,) category ids.
        gt_boxes: (G, 4) xyxy.
        gt_cats: (G,) category ids.
        gt_crowd: (G,) bool, crowd regions.

    Returns:
        types: (K,) int, ``CORRECT..OTHER`` or ``IGNORED_CROWD``.
        missed: (G,) bool, non-crowd ground truths left unmatched.
    """
    real = ~gt_crowd
    boxes, cats = gt_boxes[real], gt_cats[real]
    iou = _iou(det_boxes, boxes)
    same = det_cats[:, None] == cats[None, :]
    iou_same, iou_other = np.where(same, iou, 0.0), np.where(same, 0.0, iou)
    correct, matched = _greedy_correct(iou_same, t_f)

    def row_max(m: np.ndarray) -> np.ndarray:
        return m.max(1) if m.shape[1] else np.zeros(m.shape[0])

    # later writes take precedence: the rule order of SPEC.md read from the bottom up
    types = np.full(len(det_boxes), OTHER, np.int64)
    types[row_max(iou) < t_b] = BACKGROUND
    types[row_max(iou_same) >= t_b] = LOCATION
    types[row_max(iou_other) >= t_f] = CLASSIFICATION
    if gt_crowd.any():
        ioa = _ioa(det_boxes, gt_boxes[gt_crowd])
        in_crowd = row_max(np.where(det_cats[:, None] == gt_cats[gt_crowd][None, :], ioa, 0.0))
        types[in_crowd >= t_f] = IGNORED_CROWD
    types[correct] = CORRECT
    missed = np.zeros(len(gt_boxes), bool)
    missed[np.flatnonzero(real)[~matched]] = True
    return types, missed


# ----------------------------------------------------------------------------- whole dataset

IGNORED_NOT_EXHAUSTIVE = -2


def _check_params(t_f: float, t_b: float, max_dets: int) -> None:
    if not 0.0 < t_b <= t_f <= 1.0:
        raise ValueError(f"thresholds must satisfy 0 < t_b <= t_f <= 1, got t_b={t_b}, t_f={t_f}")
    if max_dets < 1:
        raise ValueError(f"max_dets must be >= 1, got {max_dets}")


def _gt_arrays(gt: Mapping[str, Any], source: str) -> dict[str, np.ndarray]:
    """Ground-truth annotations -> arrays; boxes (M, 4) xyxy, crowd (M,) bool."""
    for key in ("images", "annotations", "categories"):
        if not isinstance(gt.get(key) if isinstance(gt, Mapping) else None, list):
            raise ValueError(f"{source}: top-level '{key}' missing or not a list")
    anns = gt["annotations"]
    try:
        out = {
            "image_id": np.array([a["image_id"] for a in anns], np.int64),
            "category_id": np.array([a["category_id"] for a in anns], np.int64),
            "bbox": np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4),
            "crowd": np.array([bool(a.get("iscrowd", 0)) for a in anns], bool),
        }
    except (KeyError, TypeError, ValueError):
        _raise_bad_record(anns, source, "annotation", ("image_id", "category_id", "bbox"))
    out["bbox"][:, 2:] += out["bbox"][:, :2]
    return out


def _split_sorted(ids: np.ndarray, order: np.ndarray) -> dict[int, np.ndarray]:
    """``{id: indices}`` from ``order``, an index array that sorts ``ids`` (stably)."""
    if len(order) == 0:
        return {}
    uniq, starts = np.unique(ids[order], return_index=True)
    return dict(zip(uniq.tolist(), np.split(order, starts[1:]), strict=True))


def _top_k_order(dets: dict[str, np.ndarray], max_dets: int) -> np.ndarray:
    """Indices of the kept detections, sorted by image then decreasing score (ties: input order)."""
    order = np.lexsort((-dets["score"], dets["image_id"]))
    ids = dets["image_id"][order]
    _, starts, counts = np.unique(ids, return_index=True, return_counts=True)
    rank = np.arange(len(order)) - np.repeat(starts, counts)  # position inside its image
    return order[rank < max_dets]


def _image_rules(img: Mapping[str, Any]) -> tuple[np.ndarray | None, np.ndarray]:
    """(negative category ids or None for an exhaustively labelled image, not-exhaustive ids)."""
    neg = img.get("neg_category_ids")
    not_exh = img.get("not_exhaustive_category_ids") or []
    return (None if neg is None else np.asarray(neg, np.int64)), np.asarray(not_exh, np.int64)


def _empty(n: int) -> np.ndarray:
    return np.zeros(n, np.int64)


def _assign_all(
    gt: Mapping[str, Any],
    dets: dict[str, np.ndarray],
    gts: dict[str, np.ndarray],
    params: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """Apply the LVIS rules and :func:`assign_image` to every image.

    Returns:
        (D,) category ids and (D,) types of the counted detections, (M,) category ids of the
        missed ground truths, and how many detections each rule left out.
    """
    kept = _top_k_order(dets, params["max_dets"])
    ignored = {"over_max_dets": len(dets["score"]) - len(kept)}
    low = dets["score"][kept] < params["min_score"]
    ignored["below_min_score"], kept = int(low.sum()), kept[~low]
    ignored.update(federated=0, not_exhaustive=0, crowd=0)
    det_by_img = _split_sorted(dets["image_id"], kept)
    gt_by_img = _split_sorted(gts["image_id"], np.argsort(gts["image_id"], kind="stable"))
    out_cats, out_types, missed_cats = [_empty(0)], [_empty(0)], [_empty(0)]
    for img in gt["images"]:
        d, g = det_by_img.get(int(img["id"]), _empty(0)), gt_by_img.get(int(img["id"]), _empty(0))
        neg, not_exh = _image_rules(img)
        if neg is not None:  # federated: positives (annotated here) or verified negatives only
            ok = np.isin(dets["category_id"][d], np.concatenate([gts["category_id"][g], neg]))
            ignored["federated"] += int((~ok).sum())
            d = d[ok]
        cats = dets["category_id"][d]
        types, missed = assign_image(
            dets["bbox"][d], cats, gts["bbox"][g], gts["category_id"][g], gts["crowd"][g],
            params["t_f"], params["t_b"],
        )  # fmt: skip
        types[(types > CORRECT) & np.isin(cats, not_exh)] = IGNORED_NOT_EXHAUSTIVE
        ignored["crowd"] += int((types == IGNORED_CROWD).sum())
        ignored["not_exhaustive"] += int((types == IGNORED_NOT_EXHAUSTIVE).sum())
        out_cats.append(cats[types >= 0])
        out_types.append(types[types >= 0])
        missed_cats.append(gts["category_id"][g][missed])
    return np.concatenate(out_cats), np.concatenate(out_types), np.concatenate(missed_cats), ignored


def _group_summary(row: np.ndarray) -> dict[str, Any]:
    """Counts, shares of the detection types (sum to 1 when there are detections), missed rate.

    A group without detections has no shares, and one without ground truth no missed rate:
    None (json null, printed n/a), never 0.0.
    """
    counts = {k: int(v) for k, v in zip(COUNT_KEYS, row, strict=True)}
    n = sum(counts[k] for k in ERROR_TYPES)
    num_gt = counts["correct"] + counts["missed"]  # every non-crowd GT is matched or missed
    return {
        "counts": counts,
        "shares": {k: counts[k] / n if n else None for k in ERROR_TYPES},
        "num_detections": n,
        "num_gt": num_gt,
        "missed_share": counts["missed"] / num_gt if num_gt else None,
    }


def _summarise(
    det_cats: np.ndarray, det_types: np.ndarray, missed_cats: np.ndarray, groups: dict[int, str]
) -> dict[str, dict[str, Any]]:
    cat_ids = np.array(sorted(groups), np.int64)
    group_of = np.array([GROUPS.index(groups[int(c)]) for c in cat_ids], np.int64)
    counts = np.zeros((len(GROUPS), len(COUNT_KEYS)), np.int64)
    np.add.at(counts, (group_of[np.searchsorted(cat_ids, det_cats)], det_types), 1)
    missed_group = group_of[np.searchsorted(cat_ids, missed_cats)]
    counts[:, COUNT_KEYS.index("missed")] = np.bincount(missed_group, minlength=len(GROUPS))
    out = {g: _group_summary(counts[i]) for i, g in enumerate(GROUPS)}
    out["all"] = _group_summary(counts.sum(0))
    return out


def error_breakdown(
    gt: str | os.PathLike | dict,
    dets: str | os.PathLike | list,
    train_ann: str | os.PathLike | dict | None = None,
    t_f: float = 0.5,
    t_b: float = 0.1,
    max_dets: int = 300,
    min_score: float = 0.0,
) -> dict[str, Any]:
    """Error breakdown per frequency group (definitions in the module docstring).

    Args:
        gt: ground-truth json (LVIS or COCO format), path or dict.
        dets: detections in COCO results format (``bbox`` xywh), path or list.
        train_ann: training json for categories without a ``frequency`` field.
        t_f: foreground IoU threshold.
        t_b: background IoU threshold.
        max_dets: detections kept per image (highest scores; LVIS: 300).
        min_score: detections scoring below this are left out (after the top-``max_dets`` cap).

    Returns:
        ``{"groups": {"r"|"c"|"f"|"all": {"counts": {correct, classification, location,
        background, other, missed}, "shares": {5 detection types -> fraction}, "num_detections",
        "num_gt", "missed_share"}}, "ignored": {rule: detections left out}, "params": {...}}``.

    Raises:
        ValueError: malformed input, naming the file, the record and the field.
    """
    _check_params(t_f, t_b, max_dets)
    gt_data, gt_source = _load(gt, "gt")
    gts = _gt_arrays(gt_data, gt_source)
    _check_ids(gts, gt_data, gt_source, "annotation")
    det_list, det_source = _load(dets, "dets")
    det_arrays = _detection_arrays(det_list, det_source)
    _check_ids(det_arrays, gt_data, det_source, "detection")
    groups = category_groups(gt_data["categories"], train_ann)
    params = {"t_f": t_f, "t_b": t_b, "max_dets": max_dets, "min_score": min_score}
    cats, types, missed, ignored = _assign_all(gt_data, det_arrays, gts, params)
    return {"groups": _summarise(cats, types, missed, groups), "ignored": ignored, "params": params}


# ----------------------------------------------------------------------------- output


def _pie(ax: Any, summary: dict[str, Any], title: str) -> None:
    n = summary["num_detections"]
    missed = f"missed {summary['counts']['missed']}/{summary['num_gt']} GT"
    ax.set_title(f"{title}\n{n} dets, {missed}", fontsize=9)
    if n == 0:
        ax.text(0.5, 0.5, "no detections", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    shares = [summary["shares"][k] for k in ERROR_TYPES]
    ax.pie(
        shares,
        colors=[TYPE_COLORS[k] for k in ERROR_TYPES],
        autopct=lambda p: f"{p:.0f}%" if p >= 3 else "",
        startangle=90,
        counterclock=False,
        textprops={"fontsize": 8},
    )
    ax.set_aspect("equal")


def plot_error_breakdown(
    results: Mapping[str, Mapping[str, Any]], out_png: str | os.PathLike
) -> Path:
    """Pie charts of the detection error types: rows = runs, columns = rare / common / frequent.

    Args:
        results: ``{run name: error_breakdown(...) result}`` (e.g. baseline vs 2DRCL).
        out_png: PNG path, written atomically.

    Returns:
        The written path.
    """
    if not results:
        raise ValueError("plot_error_breakdown: no results to plot")
    fig = new_figure(3.0 * len(GROUPS), 2.8 * len(results) + 0.6)
    axes = fig.subplots(len(results), len(GROUPS), squeeze=False)
    for row, (name, res) in enumerate(results.items()):
        for col, g in enumerate(GROUPS):
            _pie(axes[row, col], res["groups"][g], f"{name} / {GROUP_NAMES[g]}")
    handles = [Patch(color=TYPE_COLORS[k], label=k) for k in ERROR_TYPES]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(ERROR_TYPES), fontsize=8)
    return save_figure(fig, out_png)


def _share(value: float | None) -> str:
    return f"{'n/a':>9}" if value is None else f"{100 * value:8.1f}%"


def format_error_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Plain-text table: one row per run and group, shares in percent, missed as a GT fraction."""
    short = {"classification": "class", "location": "loc", "background": "bg"}
    labels = [short.get(k, k) for k in ERROR_TYPES] + ["missed/GT"]
    head = f"{'run':<16} {'group':<6} {'dets':>8} " + " ".join(f"{k:>9}" for k in labels)
    lines = [head, "-" * len(head)]
    for name, res in results.items():
        for g in (*GROUPS, "all"):
            s = res["groups"][g]
            shares = " ".join(_share(s["shares"][k]) for k in ERROR_TYPES)
            missed = _share(s["missed_share"])
            lines.append(f"{name[:16]:<16} {g:<6} {s['num_detections']:>8} {shares} {missed}")
    return "\n".join(lines)
