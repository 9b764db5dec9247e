"""Convert weights from our torchvision key layout to detectron2 and mmdetection, and back.

What is converted: the ResNet (``backbone.body.*``), the FPN (``backbone.fpn.*``) and the
two-layer box head (``roi_heads.box_head.fc6/fc7``) — the parts 2DRCL pre-trains. Other detector
keys (RPN, class/box predictors, mask head) are kept for the torchvision target only: their
layouts differ between the libraries (background index, anchor order), and they are re-trained on
the downstream classes anyway. Every key that has no rule is reported, never silently dropped.

Key maps, checked against the libraries' sources (full table and sources in ``docs/export.md``):

- detectron2: ``backbone.body.conv1/bn1`` -> ``backbone.bottom_up.stem.conv1[.norm]``;
  ``layerL.i.convK/bnK/downsample.0/downsample.1`` -> ``res{L+1}.i.convK/convK.norm/shortcut/
  shortcut.norm``; ``fpn.inner_blocks.j.0`` -> ``fpn_lateral{s}``, ``fpn.layer_blocks.j.0`` ->
  ``fpn_output{s}`` with s = log2(stride) = j + 2 for a C2-C5 FPN, j + 3 for a one-stage C3-C5
  FPN; ``fpn.extra_blocks.p6/p7`` -> ``top_block.p6/p7``; ``box_head.fc6/fc7`` ->
  ``box_head.fc1/fc2``.
- mmdetection: ``backbone.body.X`` -> ``backbone.X`` (same ResNet names);
  ``fpn.inner_blocks.j.0`` -> ``neck.lateral_convs.j.conv``; ``fpn.layer_blocks.j.0`` ->
  ``neck.fpn_convs.j.conv`` (mmdet numbers them by position from ``start_level``: 0 for
  two-stage models, 1 for one-stage ones); one-stage ``fpn.extra_blocks.p6/p7`` ->
  ``neck.fpn_convs.3/4.conv``; ``roi_heads.box_head.fc6/fc7`` ->
  ``roi_head.bbox_head.shared_fcs.0/1``.

Which FPN a file has decides the levels (:func:`fpn_first_level`); a pre-trained C2-C5 file is
exported for a one-stage model with ``arch="one-stage"`` (``drcl export --for one-stage``).

A norm layer's tensors are ``weight, bias, running_mean, running_var`` (detectron2's
``FrozenBatchNorm2d`` holds exactly these); ``num_batches_tracked`` of ``nn.BatchNorm2d`` is
dropped for detectron2 (its default FrozenBN has none; with BN it is re-created at 0) and kept for
mmdetection (``nn.BatchNorm2d`` there too). Basic blocks (R18/34) have conv1-2/bn1-2, bottlenecks
(R50/101) conv1-3/bn1-3; both names map the same way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from drcl.utils.weights import save_state_dict

__all__ = [
    "TARGETS",
    "ConversionResult",
    "export_state",
    "import_state",
    "save_exported",
]

TARGETS = ("torchvision", "detectron2", "mmdet")

Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], str]]
_NORM = r"(weight|bias|running_mean|running_var)"
_NORM_MM = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_PARAM = r"(weight|bias)"


def _rules(table: list[tuple[str, Callable[[re.Match[str]], str]]]) -> list[Rule]:
    return [(re.compile(pattern), fn) for pattern, fn in table]


def _stage(m: re.Match[str], group: int = 1, offset: int = 1) -> int:
    return int(m[group]) + offset


# torchvision -> detectron2 (detectron2/modeling/backbone/resnet.py, fpn.py, roi_heads/box_head.py;
# the torchvision-ResNet names as in detectron2/tools/convert-torchvision-to-d2.py).
_TV_TO_D2 = _rules(
    [
        (r"backbone\.body\.conv1\.weight", lambda m: "backbone.bottom_up.stem.conv1.weight"),
        (rf"backbone\.body\.bn1\.{_NORM}", lambda m: f"backbone.bottom_up.stem.conv1.norm.{m[1]}"),
        (
            r"backbone\.body\.layer(\d)\.(\d+)\.conv(\d)\.weight",
            lambda m: f"backbone.bottom_up.res{_stage(m)}.{m[2]}.conv{m[3]}.weight",
        ),
        (
            rf"backbone\.body\.layer(\d)\.(\d+)\.bn(\d)\.{_NORM}",
            lambda m: f"backbone.bottom_up.res{_stage(m)}.{m[2]}.conv{m[3]}.norm.{m[4]}",
        ),
        (
            r"backbone\.body\.layer(\d)\.(\d+)\.downsample\.0\.weight",
            lambda m: f"backbone.bottom_up.res{_stage(m)}.{m[2]}.shortcut.weight",
        ),
        (
            rf"backbone\.body\.layer(\d)\.(\d+)\.downsample\.1\.{_NORM}",
            lambda m: f"backbone.bottom_up.res{_stage(m)}.{m[2]}.shortcut.norm.{m[3]}",
        ),
        (rf"roi_heads\.box_head\.fc6\.{_PARAM}", lambda m: f"roi_heads.box_head.fc1.{m[1]}"),
        (rf"roi_heads\.box_head\.fc7\.{_PARAM}", lambda m: f"roi_heads.box_head.fc2.{m[1]}"),
    ]
)


def _d2_fpn_rules(first_level: int) -> list[Rule]:
    """FPN block j reads C{first_level + j}; detectron2 names it by its stage log2(stride).

    Two-stage and pre-trained FPNs start at C2 (``fpn_lateral2..5``), one-stage FPNs at C3
    (``fpn_lateral3..5``). P6/P7 (one-stage) are detectron2's ``top_block.p6/p7``
    (``LastLevelP6P7``).
    """
    return _rules(
        [
            (
                rf"backbone\.fpn\.inner_blocks\.(\d)\.0\.{_PARAM}",
                lambda m: f"backbone.fpn_lateral{_stage(m, 1, first_level)}.{m[2]}",
            ),
            (
                rf"backbone\.fpn\.layer_blocks\.(\d)\.0\.{_PARAM}",
                lambda m: f"backbone.fpn_output{_stage(m, 1, first_level)}.{m[2]}",
            ),
            (
                rf"backbone\.fpn\.extra_blocks\.p([67])\.{_PARAM}",
                lambda m: f"backbone.top_block.p{m[1]}.{m[2]}",
            ),
        ]
    )


_D2_TO_TV = _rules(
    [
        (r"backbone\.bottom_up\.stem\.conv1\.weight", lambda m: "backbone.body.conv1.weight"),
        (
            rf"backbone\.bottom_up\.stem\.conv1\.norm\.{_NORM}",
            lambda m: f"backbone.body.bn1.{m[1]}",
        ),
        (
            r"backbone\.bottom_up\.res(\d)\.(\d+)\.conv(\d)\.weight",
            lambda m: f"backbone.body.layer{_stage(m, 1, -1)}.{m[2]}.conv{m[3]}.weight",
        ),
        (
            rf"backbone\.bottom_up\.res(\d)\.(\d+)\.conv(\d)\.norm\.{_NORM}",
            lambda m: f"backbone.body.layer{_stage(m, 1, -1)}.{m[2]}.bn{m[3]}.{m[4]}",
        ),
        (
            r"backbone\.bottom_up\.res(\d)\.(\d+)\.shortcut\.weight",
            lambda m: f"backbone.body.layer{_stage(m, 1, -1)}.{m[2]}.downsample.0.weight",
        ),
        (
            rf"backbone\.bottom_up\.res(\d)\.(\d+)\.shortcut\.norm\.{_NORM}",
            lambda m: f"backbone.body.layer{_stage(m, 1, -1)}.{m[2]}.downsample.1.{m[3]}",
        ),
        (
            rf"backbone\.fpn_lateral(\d)\.{_PARAM}",
            lambda m: f"backbone.fpn.inner_blocks.{_stage(m, 1, -2)}.0.{m[2]}",
        ),
        (
            rf"backbone\.fpn_output(\d)\.{_PARAM}",
            lambda m: f"backbone.fpn.layer_blocks.{_stage(m, 1, -2)}.0.{m[2]}",
        ),
        (rf"roi_heads\.box_head\.fc1\.{_PARAM}", lambda m: f"roi_heads.box_head.fc6.{m[1]}"),
        (rf"roi_heads\.box_head\.fc2\.{_PARAM}", lambda m: f"roi_heads.box_head.fc7.{m[1]}"),
    ]
)

# torchvision -> mmdetection (mmdet/models/backbones/resnet.py: conv1/bn1/layerN with bnK and
# downsample.0/1 as torchvision; necks/fpn.py: ConvModule ``.conv``; bbox_heads/
# convfc_bbox_head.py: Shared2FCBBoxHead ``shared_fcs.0/1``; detector attributes backbone / neck
# / roi_head.bbox_head).
_TV_TO_MM = _rules(
    [
        (r"backbone\.body\.(conv1\.weight)", lambda m: f"backbone.{m[1]}"),
        (rf"backbone\.body\.(bn1\.{_NORM_MM})", lambda m: f"backbone.{m[1]}"),
        (r"backbone\.body\.(layer\d\.\d+\.conv\d\.weight)", lambda m: f"backbone.{m[1]}"),
        (rf"backbone\.body\.(layer\d\.\d+\.bn\d\.{_NORM_MM})", lambda m: f"backbone.{m[1]}"),
        (r"backbone\.body\.(layer\d\.\d+\.downsample\.0\.weight)", lambda m: f"backbone.{m[1]}"),
        (
            rf"backbone\.body\.(layer\d\.\d+\.downsample\.1\.{_NORM_MM})",
            lambda m: f"backbone.{m[1]}",
        ),
        (
            rf"backbone\.fpn\.inner_blocks\.(\d)\.0\.{_PARAM}",
            lambda m: f"neck.lateral_convs.{m[1]}.conv.{m[2]}",
        ),
        (
            rf"backbone\.fpn\.layer_blocks\.(\d)\.0\.{_PARAM}",
            lambda m: f"neck.fpn_convs.{m[1]}.conv.{m[2]}",
        ),
        (
            rf"roi_heads\.box_head\.fc6\.{_PARAM}",
            lambda m: f"roi_head.bbox_head.shared_fcs.0.{m[1]}",
        ),
        (
            rf"roi_heads\.box_head\.fc7\.{_PARAM}",
            lambda m: f"roi_head.bbox_head.shared_fcs.1.{m[1]}",
        ),
    ]
)

_MM_TO_TV = _rules(
    [
        (r"backbone\.(conv1\.weight)", lambda m: f"backbone.body.{m[1]}"),
        (rf"backbone\.(bn1\.{_NORM_MM})", lambda m: f"backbone.body.{m[1]}"),
        (r"backbone\.(layer\d\.\d+\.conv\d\.weight)", lambda m: f"backbone.body.{m[1]}"),
        (rf"backbone\.(layer\d\.\d+\.bn\d\.{_NORM_MM})", lambda m: f"backbone.body.{m[1]}"),
        (r"backbone\.(layer\d\.\d+\.downsample\.0\.weight)", lambda m: f"backbone.body.{m[1]}"),
        (
            rf"backbone\.(layer\d\.\d+\.downsample\.1\.{_NORM_MM})",
            lambda m: f"backbone.body.{m[1]}",
        ),
        (
            rf"neck\.lateral_convs\.(\d)\.conv\.{_PARAM}",
            lambda m: f"backbone.fpn.inner_blocks.{m[1]}.0.{m[2]}",
        ),
        (
            rf"neck\.fpn_convs\.(\d)\.conv\.{_PARAM}",
            lambda m: f"backbone.fpn.layer_blocks.{m[1]}.0.{m[2]}",
        ),
        (
            rf"roi_head\.bbox_head\.shared_fcs\.0\.{_PARAM}",
            lambda m: f"roi_heads.box_head.fc6.{m[1]}",
        ),
        (
            rf"roi_head\.bbox_head\.shared_fcs\.1\.{_PARAM}",
            lambda m: f"roi_heads.box_head.fc7.{m[1]}",
        ),
    ]
)

# One-stage FPN (C3-C5 + P6/P7 from P5) -> mmdetection's FPN with start_level=1: lateral_convs /
# fpn_convs are numbered by position from C3 (the rules above), and P6/P7 are the extra convs
# fpn_convs.3/4 (add_extra_convs='on_output'; relu_before_extra_convs=True matches torchvision's
# ReLU before P7).
_ONE_STAGE_TO_MM = _rules(
    [
        (
            rf"backbone\.fpn\.extra_blocks\.p([67])\.{_PARAM}",
            lambda m: f"neck.fpn_convs.{int(m[1]) - 3}.conv.{m[2]}",
        ),
    ]
)

# ATSS (drcl.detection.one_stage) -> mmdetection's atss_r50_fpn head,
# mmdet/models/dense_heads/atss_head.py: cls_convs/reg_convs.i = ConvModule(conv, gn) (no conv
# bias, as ours), atss_cls, atss_reg, atss_centerness. torchvision's FCOSHead Sequential holds
# [conv, GroupNorm, ReLU] per block.
_ATSS_TO_MM = _rules(
    [
        (
            r"head\.(classification|regression)_head\.conv\.(\d+)\.(weight|bias)",
            lambda m: _atss_conv(m),
        ),
        (
            rf"head\.classification_head\.cls_logits\.{_PARAM}",
            lambda m: f"bbox_head.atss_cls.{m[1]}",
        ),
        (rf"head\.regression_head\.bbox_reg\.{_PARAM}", lambda m: f"bbox_head.atss_reg.{m[1]}"),
        (
            rf"head\.regression_head\.bbox_ctrness\.{_PARAM}",
            lambda m: f"bbox_head.atss_centerness.{m[1]}",
        ),
    ]
)


def _atss_conv(m: re.Match[str]) -> str:
    branch = "cls_convs" if m[1] == "classification" else "reg_convs"
    block, kind = divmod(int(m[2]), 3)  # [conv, gn, relu] per block; ATSS convs have no bias
    return f"bbox_head.{branch}.{block}.{'conv' if kind == 0 else 'gn'}.{m[3]}"


def _is_atss(state: dict[str, Tensor]) -> bool:
    # drcl's ATSS: FCOS-shaped head whose convs have no bias (FCOS keeps torchvision's biases).
    return "head.regression_head.bbox_ctrness.weight" in state and (
        "head.classification_head.conv.0.bias" not in state
    )


_IMPORT_RULES = {"detectron2": _D2_TO_TV, "mmdet": _MM_TO_TV}
# Keys of drcl-only modules (e.g. the Seesaw loss's class counters): no library has them.
_DRCL_ONLY = ("roi_heads.cls_loss.", "head.cls_loss.", "head.classification_head.cls_loss.")
# ``--for``: the kind of model the exported FPN must fit. Two-stage (Faster / Mask R-CNN): C2-C5;
# one-stage (RetinaNet / FCOS / ATSS): C3-C5 plus P6/P7, as torchvision, detectron2 and mmdet.
ARCH_KINDS = ("two-stage", "one-stage")
_FPN_BLOCK = re.compile(r"backbone\.fpn\.(inner_blocks|layer_blocks)\.(\d+)\.(.*)")
_LAYER_CONV = re.compile(r"backbone\.body\.layer([1-4])\.0\.conv(\d)\.weight")


@dataclass
class ConversionResult:
    """Converted state dict; ``unmapped``: source keys without a rule (not written);
    ``dropped``: keys deliberately left out (``num_batches_tracked`` for detectron2, the P2
    blocks for a one-stage model); ``warnings``: what the user must set or know downstream."""

    state: dict[str, Tensor]
    unmapped: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _apply(rules: list[Rule], state: dict[str, Tensor]) -> ConversionResult:
    result = ConversionResult({})
    for key, value in state.items():
        for pattern, rename in rules:
            m = pattern.fullmatch(key)
            if m:
                result.state[rename(m)] = value
                break
        else:
            if key.endswith("num_batches_tracked"):
                result.dropped.append(key)
            else:
                result.unmapped.append(key)
    return result


def fpn_first_level(state: dict[str, Tensor]) -> int | None:
    """The ResNet stage the FPN's first lateral conv reads: 2 (C2-C5) or 3 (C3-C5, one-stage).

    Read from the channels: ``inner_blocks.0`` takes as many input channels as the last conv of
    ``layer{L}`` gives out, and C{L+1} = ``layer{L}``. Falls back to the block count (4 -> C2,
    3 -> C3). None when the state has no FPN.
    """
    lateral = state.get("backbone.fpn.inner_blocks.0.0.weight")
    if lateral is None:
        return None
    last_conv: dict[int, tuple[int, int]] = {}  # layer -> (conv index, out channels)
    for key, value in state.items():
        m = _LAYER_CONV.fullmatch(key)
        if m and int(m[2]) > last_conv.get(int(m[1]), (0, 0))[0]:
            last_conv[int(m[1])] = (int(m[2]), value.shape[0])
    for layer, (_, channels) in sorted(last_conv.items()):
        if channels == lateral.shape[1]:
            return layer + 1
    blocks = {int(m[2]) for k in state if (m := _FPN_BLOCK.fullmatch(k))}
    return 2 if len(blocks) >= 4 else 3


def _fpn_without_p2(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """A C2-C5 FPN as the C3-C5 FPN of a one-stage model: blocks 1..3 -> 0..2, block 0 left out.

    The top-down path from C5 to C3 never reads C2, so P3-P5 are unchanged (the rule of
    :func:`drcl.detection.one_stage.adapt_pretrained_state`).
    """
    out: dict[str, Tensor] = {}
    left_out: list[str] = []
    for key, value in state.items():
        m = _FPN_BLOCK.fullmatch(key)
        if m is None:
            out[key] = value
        elif m[2] == "0":
            left_out.append(key)
        else:
            out[f"backbone.fpn.{m[1]}.{int(m[2]) - 1}.{m[3]}"] = value
    return out, left_out


def _has_rcnn_heads(state: dict[str, Tensor]) -> bool:
    return any(k.startswith(("rpn.", "roi_heads.box_predictor.")) for k in state)


def _resolve_arch(state: dict[str, Tensor], arch: str | None, target: str) -> tuple[str, list[str]]:
    """The model kind to export for, and a warning when the file alone cannot tell."""
    first = fpn_first_level(state)
    if arch is not None and arch not in ARCH_KINDS:
        raise ValueError(f"--for: got {arch!r}, allowed: {', '.join(ARCH_KINDS)}")
    if arch == "two-stage" and first == 3:
        raise ValueError(
            "--for two-stage: this checkpoint's FPN starts at C3 (a one-stage detector's); a "
            "two-stage model needs a P2 level it does not have"
        )
    if arch is not None:
        return arch, []
    if first != 2:  # C3-C5 is one-stage; no FPN at all: nothing to place
        return ("one-stage" if first == 3 else "two-stage"), []
    if _has_rcnn_heads(state) or target == "detectron2":
        # an R-CNN checkpoint is two-stage; detectron2 names FPN convs by stride, so a C2-C5
        # export loads at the right levels into a one-stage model too (fpn_*2 are unused there)
        return "two-stage", []
    return "two-stage", [
        f"exported for two-stage models (FPN on C2-C5: Faster / Mask R-CNN). For a one-stage "
        f"{target} model (RetinaNet / FCOS / ATSS, FPN from C3) export again with --for "
        f"one-stage: that FPN starts at C3, and this file's FPN blocks would load there one "
        f"level off"
    ]


def _one_stage_notes(state: dict[str, Tensor], target: str) -> list[str]:
    """What the target must be configured with for the one-stage FPN to compute the same."""
    p6p7 = "backbone.fpn.extra_blocks.p6.weight" in state
    if target == "mmdet":
        extra = (
            "add_extra_convs='on_output', relu_before_extra_convs=True (torchvision applies a "
            "ReLU before the P7 conv; mmdet's default does not, so P7 would differ)"
            if p6p7
            else "P6/P7 are not in this file and start fresh"
        )
        return [f"mmdet neck: FPN(start_level=1, num_outs=5, {extra})"]
    if target == "detectron2" and p6p7:
        return [
            "detectron2: top_block.p6/p7 are computed from P5 here; they fit a LastLevelP6P7 "
            "with in_feature='p5' and in_channels = the FPN width (detectron2's FCOS config). "
            "detectron2's RetinaNet computes P6 from C5 (res5): there p6 does not fit (shape "
            "mismatch) and p7 would follow a fresh p6, so P6/P7 do not transfer"
        ]
    return []


def export_state(
    state: dict[str, Tensor], target: str, arch: str | None = None
) -> ConversionResult:
    """Rename our torchvision-layout ``state`` for ``target`` (``torchvision``, ``detectron2``,
    ``mmdet``). ``torchvision`` is the identity on every key except drcl-only modules.

    Args:
        arch: the model kind the FPN must fit, ``two-stage`` or ``one-stage``; None = from the
            checkpoint (an FPN from C3 is one-stage, from C2 two-stage, with a warning when a
            pre-trained file could be meant for either). ``one-stage`` on a C2-C5 file (2DRCL
            pre-training) leaves out the P2 blocks and renumbers the rest from C3.
    """
    if target not in TARGETS:
        raise ValueError(f"export target: got {target!r}, allowed: {', '.join(TARGETS)}")
    arch, warnings = _resolve_arch(state, arch, target)
    left_out: list[str] = []
    if arch == "one-stage" and fpn_first_level(state) == 2:
        state, left_out = _fpn_without_p2(state)
    if target == "torchvision":
        kept = {k: v for k, v in state.items() if not k.startswith(_DRCL_ONLY)}
        result = ConversionResult(kept, [k for k in state if k not in kept])
    else:
        result = _apply(_export_rules(state, target, arch), state)
    result.dropped += left_out
    result.warnings += warnings + (_one_stage_notes(state, target) if arch == "one-stage" else [])
    return result


def _export_rules(state: dict[str, Tensor], target: str, arch: str) -> list[Rule]:
    if target == "detectron2":
        return _TV_TO_D2 + _d2_fpn_rules(3 if arch == "one-stage" else 2)
    rules = _TV_TO_MM + (_ONE_STAGE_TO_MM if arch == "one-stage" else [])
    return rules + (_ATSS_TO_MM if _is_atss(state) else [])


def import_state(state: dict[str, Tensor], source: str) -> ConversionResult:
    """Rename a detectron2 / mmdetection ``state`` (backbone, FPN, box head) to our layout."""
    if source not in _IMPORT_RULES:
        raise ValueError(f"import source: got {source!r}, allowed: {', '.join(_IMPORT_RULES)}")
    return _apply(_IMPORT_RULES[source], state)


def _read_state(path: str | os.PathLike) -> dict[str, Tensor]:
    from drcl.utils.weights import read_state_dict

    state = read_state_dict(path)  # unwraps 'model'/'state_dict' and a DDP 'module.' prefix
    if not any(k.startswith("backbone.body.") for k in state):
        raise ValueError(
            f"{path}: no 'backbone.body.*' key; expected weights in torchvision's detector layout "
            f"(drcl pretrain's .safetensors or a drcl finetune checkpoint), got e.g. "
            f"{', '.join(list(state)[:3]) or 'no keys'}"
        )
    return state


TORCH_SUFFIXES = (".pth", ".pt", ".pkl")
EXPORT_SUFFIXES = (*TORCH_SUFFIXES, ".safetensors")


def export_format(out: str | os.PathLike) -> str:
    """``'torch'`` for ``.pth`` / ``.pt`` / ``.pkl``, ``'safetensors'`` for ``.safetensors``.

    The suffix decides, because the loaders decide by it too: detectron2 and mmengine pass
    ``.pth`` / ``.pt`` to ``torch.load``, which cannot read a safetensors file (the error then
    depends on the file's header bytes; with torch 2.15, UnpicklingError or KeyError), and
    detectron2 reads ``.pkl`` with ``pickle``.

    Raises:
        ValueError: any other suffix.
    """
    suffix = Path(out).suffix.lower()
    if suffix in TORCH_SUFFIXES:
        return "torch"  # .pkl: a plain pickle, detectron2's convention (_save_detectron2_pkl)
    if suffix == ".safetensors":
        return "safetensors"
    raise ValueError(
        f"--out {out}: unknown suffix {suffix or '(none)'!r}; use .pth or .pt (torch "
        f"file of plain tensors, for detectron2 / mmdet / torchvision), .pkl (detectron2's "
        f"pickle) or .safetensors"
    )


def save_exported(state: dict[str, Tensor], target: str, out: str | os.PathLike) -> Path:
    """Write ``state`` atomically in the format of ``out``'s suffix (see ``export_format``).

    torch files: detectron2 ``{'model': state, '__author__': 'drcl'}`` (read by
    ``DetectionCheckpointer``), mmdetection ``{'state_dict': state, 'meta': {...}}`` (read by
    mmengine's ``load_checkpoint``), torchvision the plain state dict.
    """
    from drcl.utils.io import atomic_write

    out = Path(out)
    # safetensors refuses shared or non-contiguous storage; torch.save keeps views' storage.
    state = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    if out.suffix.lower() == ".pkl":
        return _save_detectron2_pkl(state, target, out)
    if export_format(out) == "torch":
        wrapped = {
            "detectron2": lambda s: {"model": s, "__author__": "drcl"},
            "mmdet": lambda s: {"state_dict": s, "meta": {"converted_from": "drcl/torchvision"}},
            "torchvision": lambda s: s,
        }[target](state)
        return atomic_write(out, lambda tmp: torch.save(wrapped, tmp))
    return save_state_dict(state, out, {"layout": target})


def _save_detectron2_pkl(state: dict[str, Tensor], target: str, out: Path) -> Path:
    """detectron2's ``.pkl`` convention (its model zoo): a plain pickle of
    ``{'model': {name: numpy array}, '__author__': ...}``, read by ``DetectionCheckpointer`` with
    ``pickle.load``; torch's zip format would fail there, and mmengine reads only torch files."""
    import pickle

    from drcl.utils.io import atomic_write

    if target != "detectron2":
        raise ValueError(f"--out {out}: .pkl is detectron2's format; for {target} use .pth or .pt")
    arrays = {k: v.numpy() for k, v in state.items()}

    def _write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            pickle.dump({"model": arrays, "__author__": "drcl"}, fh, protocol=4)

    return atomic_write(out, _write)
