"""The range or choice set of every numeric and enum key of the schema, in one table.

Kept apart from ``schema.py`` so that the ranges read as one table and adding a field to the
schema stays a one-line change there plus one line here (``tests/config/test_ranges.py`` fails
for a numeric or enum key without an entry). The vocabulary is small:

- ``>=a``, ``>a``, ``<=a``: a bound;
- ``[a,b]``, ``(a,b]``, ``[a,b)``, ``(a,b)``: an interval (square bracket = included);
- ``{a,b,c}``: a choice set of numbers;
- ``enum``: an :class:`~enum.StrEnum` field (its members are the choice set; OmegaConf checks
  it when the value is set, naming the allowed values);
- ``each SPEC``: a list whose every element satisfies ``SPEC``.

Every float must also be finite (NaN and inf are refused). :func:`check_ranges` is called by
:func:`drcl.config.loader.load_config` after the files and overrides are merged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

RANGES: dict[str, str] = {
    # data
    "data.on_error": "enum",
    "data.num_workers": ">=-1",  # -1 = chosen for the machine
    "data.min_size": ">=1",
    "data.max_size": ">=1",
    "data.groups.rare_max": ">=0",  # and < common_max (checked below)
    "data.groups.common_max": ">=1",
    # model
    "model.depth": "{18,34,50,101}",
    "model.fpn_channels": ">=1",
    "model.box_head_dim": ">=1",
    "model.norm": "enum",
    "model.trainable_layers": "[0,5]",
    # train
    "train.batch_size": ">=1",
    "train.lr": ">0",
    "train.optimizer": "enum",
    "train.momentum": "[0,1]",
    "train.weight_decay": ">=0",
    "train.schedule": "enum",
    "train.epochs": ">=0",  # 0 only with max_iters > 0 (checked below)
    "train.max_iters": ">=0",  # 0 = use epochs
    "train.steps": "each [0,1]",
    "train.gamma": ">0",
    "train.warmup_iters": ">=0",
    "train.warmup_factor": "(0,1]",
    "train.grad_clip": ">=0",
    "train.accumulate": ">=1",
    "train.threads": ">=-1",  # 0 = torch's default, -1 = the cores not taken by data workers
    "train.amp": "enum",
    "train.device": "enum",
    "train.seed": ">=0",
    "train.log_every": ">=1",
    "train.checkpoint_every": ">=0",
    "train.keep_checkpoints": ">=0",  # 0 = keep all
    "train.nonfinite": "enum",
    # pretrain
    "pretrain.stage": "enum",
    "pretrain.box.momentum": "[0,1]",
    "pretrain.box.momentum_end": "[0,1]",
    "pretrain.box.temperature": ">0",
    "pretrain.box.embed_dim": ">=1",
    "pretrain.box.match_iou": "[0,1]",
    "pretrain.box.rois_per_image": ">=1",
    "pretrain.box.contrast_weight": ">=0",
    "pretrain.box.reg_weight": ">=0",
    "pretrain.box.reg_norm": "enum",
    "pretrain.probe.every": ">=0",  # 0 = off
    "pretrain.probe.readout": "enum",
    "pretrain.probe.size": ">=8",
    "pretrain.probe.context": "[0,1]",
    "pretrain.probe.k": ">=1",
    "pretrain.probe.max_per_class": ">=0",  # 0 = all crops
    "pretrain.probe.temperature": ">0",
    "pretrain.proposals.source": "enum",
    "pretrain.proposals.top_n": ">=1",
    "pretrain.proposals.nms": "[0,1]",
    "pretrain.proposals.score_thresh": "[0,1]",
    "pretrain.proposals.min_size": ">=0",
    "pretrain.proposals.label_iou": "[0,1]",
    "pretrain.proposals.detector_iters": ">=1",
    "pretrain.proposals.detector_epochs": ">=0",
    "pretrain.views.size": ">=1",
    "pretrain.views.crop_scale": "each (0,1]",
    "pretrain.views.flip": "[0,1]",
    "pretrain.views.jitter": "each >=0",
    "pretrain.views.jitter_p": "[0,1]",
    "pretrain.views.grayscale_p": "[0,1]",
    "pretrain.views.blur_p": "each [0,1]",
    "pretrain.views.solarize_p": "each [0,1]",
    "pretrain.views.min_box_size": ">=0",
    "pretrain.views.min_box_visible": "[0,1]",
    "pretrain.hcl.weight": ">=0",
    "pretrain.hcl.loss": "enum",
    "pretrain.hcl.temperature": ">0",
    "pretrain.hcl.queue_size": ">=0",
    "pretrain.hcl.proj_dim": ">=1",
    "pretrain.hcl.hidden_dim": ">=1",
    "pretrain.lcl.weight": ">=0",
    "pretrain.lcl.temperature": ">0",
    "pretrain.lcl.boxes_per_image": ">=1",
    "pretrain.lcl.proj_dim": ">=1",
    "pretrain.lcl.hidden_dim": ">=1",
    "pretrain.drb.threshold": "(0,1]",
    "pretrain.drb.schedule": "enum",
    "pretrain.drb.alpha_start": "[0,1]",
    "pretrain.drb.alpha_end": "[0,1]",
    "pretrain.drb.step_at": "[0,1]",
    "pretrain.drb.alpha_update": "enum",
    "pretrain.drb.instance_factor": "enum",
    "pretrain.ar.weight": ">=0",
    "pretrain.ar.target": "enum",
    "pretrain.ar.input": "enum",
    "pretrain.ar.channels": ">=1",
    "pretrain.sr.weight": ">=0",
    "pretrain.sr.patch": ">=1",
    "pretrain.sr.ratio": "[0,1]",
    "pretrain.ema.momentum": "[0,1]",
    "pretrain.ema.momentum_end": "[0,1]",
    # finetune
    "finetune.arch": "enum",
    "finetune.loss": "enum",
    "finetune.init_keep_classes": "enum",
    "finetune.cosine_scale": ">0",
    "finetune.rfs_threshold": "(0,1]",
    "finetune.pretrained_lr_mult": ">0",
    "finetune.pretrained_wd_div": ">0",
    "finetune.rpn_batch_size_per_image": ">=1",
    "finetune.box_batch_size_per_image": ">=1",
    "finetune.rpn_pre_nms_top_n_train": ">=1",
    "finetune.rpn_post_nms_top_n_train": ">=1",
    "finetune.rpn_pre_nms_top_n_test": ">=1",
    "finetune.rpn_post_nms_top_n_test": ">=1",
    "finetune.score_thresh": "[0,1]",
    "finetune.detections_per_img": ">=1",
    "finetune.nms_thresh": "[0,1]",
    "finetune.federated_num_classes": ">=1",
    "finetune.federated_power": ">=0",
    "finetune.seesaw_p": ">=0",
    "finetune.seesaw_q": ">=0",
    "finetune.ecm_fg_bg_ratio": ">0",
    "finetune.focal_alpha": "[0,1]",
    "finetune.focal_gamma": ">=0",
    "finetune.efl_scale": ">=0",
    "finetune.giou_weight": ">=0",
    "finetune.atss_topk": ">=1",
    "finetune.atss_anchor_scale": ">0",
    "finetune.head_convs": ">=0",
    "finetune.topk_candidates": ">=1",
    "finetune.eval_batch_size": ">=1",
}

_BOUND = re.compile(r"^(>=|>|<=)(-?[\d.e+-]+)$")
_INTERVAL = re.compile(r"^([\[(])(-?[\d.e+-]+),(-?[\d.e+-]+)([\])])$")
_CHOICES = re.compile(r"^\{(.+)\}$")


def describe(spec: str) -> str:
    """The spec as a message says it: ``'>=1'`` -> ``'must be >= 1'``."""
    if spec.startswith("each "):
        return f"every element {describe(spec[5:])}"
    m = _BOUND.match(spec)
    if m:
        return f"must be {m[1]} {m[2]}"
    m = _CHOICES.match(spec)
    if m:
        return f"must be one of {', '.join(m[1].split(','))}"
    return f"must be in {spec}"


def satisfies(value: Any, spec: str) -> bool:
    """Whether ``value`` lies in ``spec`` (see the module docstring for the vocabulary)."""
    if spec == "enum" or value is None:
        return True
    if spec.startswith("each "):
        return all(satisfies(v, spec[5:]) for v in value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    m = _BOUND.match(spec)
    if m:
        bound = float(m[2])
        return {">=": value >= bound, ">": value > bound, "<=": value <= bound}[m[1]]
    m = _INTERVAL.match(spec)
    if m:
        lo, hi = float(m[2]), float(m[3])
        low_ok = value >= lo if m[1] == "[" else value > lo
        high_ok = value <= hi if m[4] == "]" else value < hi
        return low_ok and high_ok
    m = _CHOICES.match(spec)
    if m:
        return value in {float(c) for c in m[1].split(",")}
    raise ValueError(f"unknown range spec {spec!r}")


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def violations(cfg: Any) -> Iterator[tuple[str, Any, str]]:
    """``(key, value, message)`` for every key of ``cfg`` outside its range, in table order,
    then the checks that involve two keys."""
    for key, spec in RANGES.items():
        value = _get(cfg, key)
        if not satisfies(value, spec):
            shown = list(value) if spec.startswith("each ") else value
            yield key, shown, describe(spec)
    train = cfg.train
    if train.max_iters == 0 and train.epochs == 0:
        yield "train.epochs", 0, "must be >= 1 when train.max_iters = 0 (nothing would train)"
    groups = cfg.data.groups
    if groups.rare_max >= groups.common_max:
        yield (
            "data.groups.rare_max",
            groups.rare_max,
            f"must be < data.groups.common_max ({groups.common_max})",
        )
