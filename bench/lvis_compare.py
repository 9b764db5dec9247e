"""``drcl.evaluation.lvis_eval.evaluate_detections`` vs the official LVIS API on a generated case.

The case has LVIS's shape: 1,203 classes (337 rare, 461 common, 405 frequent), ~10 boxes per
image of all sizes, federated fields (``neg_category_ids``, ``not_exhaustive_category_ids``),
and 300 scored detections per image (jittered ground truth with right or confused classes, plus
random boxes). Each evaluator runs in its own subprocess, which times itself from reading the
json files to the metrics and reports its peak RSS (``ru_maxrss``).

The LVIS API is installed into a throwaway venv, ``work/bench-venv`` (``lvis`` without its
plotting dependencies, ``numpy``, ``pycocotools``; network needed once), never into the
project's environment; see ``bench/lvis_reference.py`` for the numpy-2 shim.

Usage::

    python bench/lvis_compare.py --images 1000          # default scale of `make bench`
    python bench/lvis_compare.py --full                 # LVIS val size: 5,000 images
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import ROOT, WORK, emit, median, peak_rss_mib, run_json

VENV = ROOT / "work" / "bench-venv"
GROUPS = (("r", 337), ("c", 461), ("f", 405))  # LVIS v1 class counts per frequency group
KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")


# ------------------------------------------------------------------------------------- the case
def _categories(num_classes: int) -> list[dict[str, Any]]:
    total = sum(n for _, n in GROUPS)
    freqs = [g for g, n in GROUPS for _ in range(round(n * num_classes / total))]
    freqs = (freqs + ["f"] * num_classes)[:num_classes]
    return [{"id": i + 1, "name": f"c{i + 1}", "frequency": f} for i, f in enumerate(freqs)]


def _boxes(rng: np.random.Generator, n: int, w: int, h: int) -> np.ndarray:
    """(n, 4) xywh with log-uniform sizes from ~8 px to ~400 px (small, medium and large)."""
    size = np.exp(rng.uniform(np.log(8), np.log(400), (n, 2)))
    size = np.minimum(size, [w - 1, h - 1])
    xy = rng.uniform(0, 1, (n, 2)) * ([w, h] - size)
    return np.round(np.concatenate([xy, size], 1), 2)


def _image_case(rng, img_id: int, ann_id: int, num_classes: int, dets_per_image: int, p):
    """Ground truth and detections of one 640x480 image; returns (image, anns, dets)."""
    w, h, n = 640, 480, int(rng.integers(1, 20))
    cats = rng.choice(num_classes, size=n, p=p) + 1
    gt = _boxes(rng, n, w, h)
    anns = [
        {
            "id": ann_id + j,
            "image_id": img_id,
            "category_id": int(c),
            "bbox": [float(v) for v in b],
            "area": float(b[2] * b[3]),
            "iscrowd": 0,
        }
        for j, (c, b) in enumerate(zip(cats, gt, strict=True))
    ]
    present = sorted(set(int(c) for c in cats))
    others = np.setdiff1d(rng.choice(num_classes, size=12, replace=False) + 1, present)
    neg, rest = others[:8], others[8:]
    image = {
        "id": img_id,
        "width": w,
        "height": h,
        "file_name": f"{img_id:012d}.jpg",
        "neg_category_ids": [int(c) for c in neg],
        "not_exhaustive_category_ids": [int(c) for c in rest[:1]]
        + [present[0]] * int(rng.random() < 0.2),
    }
    return image, anns, _detections(rng, img_id, gt, cats, neg, num_classes, dets_per_image, w, h)


def _detections(rng, img_id, gt, cats, neg, num_classes, d, w, h) -> list[dict[str, Any]]:
    """40% jittered gt boxes (right class 2/3 of the time), 60% random boxes of any class."""
    near = int(0.4 * d)
    pick = rng.integers(0, len(gt), near)
    jitter = gt[pick] + rng.normal(0, 0.1, (near, 4)) * gt[pick][:, [2, 3, 2, 3]]
    jitter[:, 2:] = np.maximum(jitter[:, 2:], 1.0)
    right = rng.random(near) < 2 / 3
    pool = np.concatenate([cats, neg, rng.integers(1, num_classes + 1, 4)])
    near_cls = np.where(right, cats[pick], rng.choice(pool, near))
    far = d - near
    boxes = np.concatenate([jitter, _boxes(rng, far, w, h)])
    classes = np.concatenate([near_cls, rng.choice(pool, far)])
    scores = rng.random(d)
    return [
        {
            "image_id": img_id,
            "category_id": int(c),
            "bbox": [round(float(v), 2) for v in b],
            "score": round(float(s), 6),
        }
        for b, c, s in zip(boxes, classes, scores, strict=True)
    ]


def make_case(images: int, num_classes: int, dets_per_image: int, seed: int = 0) -> tuple:
    """Write (once, cached) ``gt.json`` and ``dets.json``; returns their paths."""
    out = WORK / "lvis_case" / f"i{images}_c{num_classes}_d{dets_per_image}_s{seed}"
    gt_path, dt_path = out / "gt.json", out / "dets.json"
    if gt_path.is_file() and dt_path.is_file():
        return gt_path, dt_path
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, num_classes + 1) ** 0.8  # long-tailed class frequencies
    p = p[rng.permutation(num_classes)] / p.sum()
    gt = {"images": [], "annotations": [], "categories": _categories(num_classes)}
    dets: list[dict[str, Any]] = []
    for i in range(1, images + 1):
        image, anns, d = _image_case(
            rng, i, len(gt["annotations"]) + 1, num_classes, dets_per_image, p
        )
        gt["images"].append(image)
        gt["annotations"] += anns
        dets += d
    gt_path.write_text(json.dumps(gt))
    dt_path.write_text(json.dumps(dets))
    return gt_path, dt_path


# ---------------------------------------------------------------------------------- evaluators
def ensure_lvis_venv() -> Path:
    """``work/bench-venv`` with lvis (no plotting deps), numpy and pycocotools; its python."""
    py = VENV / "bin" / "python"
    probe = [str(py), "-c", "import numpy, pycocotools.mask, lvis.eval"]
    if py.is_file() and subprocess.run(probe, capture_output=True).returncode == 0:
        return py
    if not py.is_file():
        subprocess.run(["python3.11", "-m", "venv", str(VENV)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "numpy", "pycocotools"], check=True)
    subprocess.run([*pip, "--no-deps", "lvis==0.5.3"], check=True)
    return py


def run_ours(gt: str, dets: str) -> None:
    """Subprocess body: our evaluator, timed from the json files to the metrics."""
    from drcl.evaluation.lvis_eval import evaluate_detections

    t0 = time.perf_counter()
    res = evaluate_detections(gt, dets, "bbox", max_dets=300, rules="lvis")
    seconds = time.perf_counter() - t0
    metrics = {k: float(res[k]) for k in KEYS}
    # class chunks run in forked workers: the largest of them counts too
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    emit({"metrics": metrics, "seconds": seconds, "peak_rss_mib": max(peak_rss_mib(), children)})


def compare(images: int, num_classes: int, dets_per_image: int, reps: int) -> dict[str, Any]:
    """Both evaluators, alternating, ``reps`` times each; metrics must agree to 1e-9."""
    gt, dets = make_case(images, num_classes, dets_per_image)
    lvis_py = ensure_lvis_venv()
    ours_cmd = [sys.executable, __file__, "--run-ours", str(gt), str(dets)]
    ref_cmd = [str(lvis_py), str(Path(__file__).with_name("lvis_reference.py")), str(gt), str(dets)]
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "lvis": []}
    for _ in range(reps):
        runs["ours"].append(run_json(ours_cmd, timeout=3600))
        runs["lvis"].append(run_json(ref_cmd, timeout=3600))
    ours, ref = runs["ours"][0]["metrics"], runs["lvis"][0]["metrics"]
    diff = max(abs(ours[k] - ref[k]) for k in KEYS)
    t = {name: median([r["seconds"] for r in rs]) for name, rs in runs.items()}
    rss = {name: max(r["peak_rss_mib"] for r in rs) for name, rs in runs.items()}
    return {
        "images": images,
        "classes": num_classes,
        "dets_per_image": dets_per_image,
        "reps": reps,
        "ours_s": t["ours"],
        "lvis_s": t["lvis"],
        "speedup": t["lvis"] / t["ours"],
        "ours_rss_mib": rss["ours"],
        "lvis_rss_mib": rss["lvis"],
        "max_abs_diff": diff,
        "metrics_ours": ours,
        "metrics_lvis": ref,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--classes", type=int, default=1203)
    p.add_argument("--dets", type=int, default=300, help="detections per image")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--full", action="store_true", help="LVIS val size: 5,000 images")
    p.add_argument("--run-ours", nargs=2, metavar=("GT", "DETS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.run_ours:
        run_ours(*args.run_ours)
        return
    emit(compare(5000 if args.full else args.images, args.classes, args.dets, args.reps))


if __name__ == "__main__":
    main()
