"""drcl.sampling — Dynamic Rebalancing (DRB): repeat factors, alpha schedule, sampler, boxes."""

from drcl.sampling.drb import (
    ALPHA_SCHEDULES,
    DRBSample,
    DynamicRebalancingSampler,
    RepeatFactors,
    alpha_at,
    class_repeat_factors,
    labels_to_csr,
    repeat_factors_from_image_counts,
    select_boxes,
)

__all__ = [
    "ALPHA_SCHEDULES",
    "DRBSample",
    "DynamicRebalancingSampler",
    "RepeatFactors",
    "alpha_at",
    "class_repeat_factors",
    "labels_to_csr",
    "repeat_factors_from_image_counts",
    "select_boxes",
]
