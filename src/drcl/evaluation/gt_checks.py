"""The ground truth of an evaluation gets the checks of ``drcl data check``.

Detections are checked record by record when they are read (``evaluation/detections.py``); the
ground truth must be held to the same standard, or an AP is printed for a file with repeated
ids, NaN boxes or masks of the wrong size. The errors that make the metrics meaningless refuse
the evaluation, naming the file and the record; the rest is one grouped warning line.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter

from drcl.data.check import Problem, check_annotations, group_problems
from drcl.utils.errors import UserError

log = logging.getLogger(__name__)

# Problems of ``data check`` that do not touch the metrics: metadata the evaluation does not
# read (image files, LVIS count fields, unknown ids in the federated lists, which are ignored).
# Heuristic format suspicions and loose boxes are warned about, not refused.
_HARMLESS_FIELDS = {
    "file_name",
    "coco_url",
    "image_count",
    "instance_count",
    "neg_category_ids",
    "not_exhaustive_category_ids",
}
_OUTSIDE = re.compile(r"^\[(?P<box>[^\]]*)\] extends outside the (?P<w>\d+)x(?P<h>\d+) image")


def _far_outside(message: str) -> bool:
    """A box "extending outside" its image by more than the image's own size (``1e30``) is
    garbage, not a loose box: it stays an error."""
    m = _OUTSIDE.match(message)
    if not m:
        return False
    x, y, w, h = (float(v) for v in m["box"].split(","))
    width, height = float(m["w"]), float(m["h"])
    return x < -width or y < -height or x + w > 2 * width or y + h > 2 * height


def is_fatal(p: Problem) -> bool:
    """Whether ``p`` makes the metrics meaningless (see the module docstring)."""
    if p.severity != "error" or p.field in _HARMLESS_FIELDS:
        return False
    if p.field == "bbox" and p.message.startswith("[") and "looks" in p.message:
        return False  # "looks normalised" / "looks like [x1, y1, x2, y2]": a suspicion
    if _OUTSIDE.match(p.message):
        return _far_outside(p.message)
    return True


def check_ground_truth(path: str | os.PathLike, what: str = "--gt") -> list[Problem]:
    """Run ``data check``'s checks on the ground-truth json ``path`` (no image files).

    Returns:
        The non-fatal warnings and errors (already logged as one grouped line).

    Raises:
        UserError: a fatal problem, naming ``what``, the file and the first records.
    """
    problems = check_annotations(path)
    fatal = [p for p in problems if is_fatal(p)]
    if fatal:
        lines = group_problems(fatal)
        more = f" (+{len(lines) - 1} more kinds of error)" if len(lines) > 1 else ""
        raise UserError(
            f"{what}: {lines[0]}{more}; refusing to evaluate against this ground truth",
            hint=f"`drcl data check {path}` lists every problem; its --fix-out writes a "
            "repaired copy",
        )
    soft = [
        p
        for p in problems
        if p.severity in ("error", "warning")
        and p.field not in _HARMLESS_FIELDS
        and "has no annotations" not in p.message  # not counted by AP; LVIS val has 1,040
    ]
    if soft:
        kinds = Counter(p.message if len(p.message) < 60 else p.field for p in soft)
        shown = "; ".join(f"{k} ({n})" for k, n in kinds.most_common(3))
        more = f"; +{len(kinds) - 3} more" if len(kinds) > 3 else ""
        log.warning(
            "warning: %s %s: %d problem(s) that leave the metrics meaningful: %s%s "
            "(drcl data check lists them)",
            what,
            path,
            len(soft),
            shown,
            more,
        )
    return soft
