"""Run the official LVIS API (``lvis`` on PyPI, 0.5.3) on a gt/detections pair; print metrics.

Runs in the throwaway venv ``work/bench-venv`` made by ``bench/lvis_compare.py`` (never in the
project's environment). Two shims, applied here only, before importing lvis:

- ``np.float`` was removed in numpy 1.24 and ``lvis.eval`` still uses it: set it to ``float``;
- ``lvis/__init__`` imports its visualiser (``cv2``, ``matplotlib``), which evaluation never
  calls: empty stand-in modules avoid installing OpenCV.

Usage (bench venv python)::

    work/bench-venv/bin/python bench/lvis_reference.py GT.json DETS.json
"""

from __future__ import annotations

import sys
import time
import types

import numpy as np
from common import emit, peak_rss_mib

KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")


def _shim() -> None:
    np.float = float  # type: ignore[attr-defined]  # lvis/eval.py: astype(dtype=np.float)
    for name in ("cv2", "matplotlib", "matplotlib.pyplot", "matplotlib.patches"):
        stub = types.ModuleType(name)
        stub.Polygon = object  # vis.py: from matplotlib.patches import Polygon
        sys.modules.setdefault(name, stub)


def main(gt: str, dets: str) -> None:
    _shim()
    import logging

    from lvis import LVIS, LVISEval, LVISResults

    logging.getLogger().setLevel(logging.ERROR)
    t0 = time.perf_counter()
    lvis_gt = LVIS(gt)
    lvis_dt = LVISResults(lvis_gt, dets, max_dets=300)
    ev = LVISEval(lvis_gt, lvis_dt, iou_type="bbox")
    ev.run()
    seconds = time.perf_counter() - t0
    metrics = {k: float(ev.results[k]) for k in KEYS}
    emit({"metrics": metrics, "seconds": seconds, "peak_rss_mib": peak_rss_mib()})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
