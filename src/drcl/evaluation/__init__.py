"""Evaluation: LVIS-style AP with frequency groups (APr/APc/APf) and COCO-LT bins (AP1..AP4)."""

from drcl.evaluation.detections import Detections, load_detections, save_detections
from drcl.evaluation.groups import class_info
from drcl.evaluation.lvis_eval import evaluate_detections, json_safe

__all__ = [
    "Detections",
    "class_info",
    "evaluate_detections",
    "json_safe",
    "load_detections",
    "save_detections",
]
