"""Class-specific layers of a fine-tuning init whose classes differ from the training file's.

A detector trained on other classes (48 demo classes, COCO's 80, ...) is a good init for a new
dataset except for the layers whose rows are classes: the box predictor (``cls_score``,
``bbox_pred``), the mask predictor's last conv and a one-stage head's classification conv.
detectron2 and mmdetection skip those when their shapes differ and say so; we do the same
(``finetune.init_keep_classes=skip``), and also when the shapes agree but the init's category
record names other classes. ``match_by_name`` copies the rows of the classes both files have
(matched by name) and leaves the others at their initialisation.

Row layouts (torchvision): R-CNN predictors have C + 1 rows with background at 0
(``bbox_pred``: 4 rows per class); a one-stage head has A x C channels, anchor-major, class
``label - 1`` inside each anchor's block.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from drcl.data.categories import CategoryTable

# key prefix -> row layout
CLASS_SPECIFIC = {
    "roi_heads.box_predictor.cls_score.": "rcnn",
    "roi_heads.box_predictor.bbox_pred.": "rcnn_box",
    "roi_heads.mask_predictor.mask_fcn_logits.": "rcnn",
    "head.classification_head.cls_logits.": "dense",
}
SKIP, MATCH_BY_NAME = "skip", "match_by_name"


def layout_of(key: str) -> str | None:
    """The row layout of a class-specific key, or None for any other key."""
    return next((v for p, v in CLASS_SPECIFIC.items() if key.startswith(p)), None)


def _module(key: str) -> str:
    return key.rsplit(".", 1)[0]


def _rows(layout: str, label: int, num_classes: int, total_rows: int) -> list[int]:
    """Rows of ``label`` (0 = background, R-CNN layouts only) in a tensor of ``total_rows``."""
    if layout == "rcnn":
        return [label]
    if layout == "rcnn_box":
        return list(range(4 * label, 4 * label + 4))
    anchors = total_rows // num_classes  # dense: anchor-major blocks of C channels
    return [a * num_classes + label - 1 for a in range(anchors)]


def _names_differ(source: CategoryTable | None, target: CategoryTable | None) -> bool:
    if source is None or target is None:
        return False
    return [r.name for r in source.records] != [r.name for r in target.records]


def adapt_class_layers(
    own: Mapping[str, Tensor],
    state: dict[str, Tensor],
    target: CategoryTable | None,
    source: CategoryTable | None,
    mode: str = SKIP,
) -> tuple[dict[str, Tensor], list[str]]:
    """Skip or remap the class-specific tensors of ``state`` for a model of ``own``'s shapes.

    Args:
        own: the model's state dict (shapes and initial values).
        state: the init file's tensors (not modified).
        target: the training categories (the model's labels 1..C).
        source: the init's category record, or None when it has none.
        mode: ``skip`` or ``match_by_name``.

    Returns:
        ``(state, notes)``: the tensors to load, and sentences for the load table.

    Raises:
        ValueError: ``match_by_name`` without both category records.
    """
    keys = [k for k in state if k in own and layout_of(k)]
    if not keys:
        return state, []
    shapes_differ = any(state[k].shape != own[k].shape for k in keys)
    if not (shapes_differ or _names_differ(source, target)):
        if source is None:
            return state, [
                "class-specific layers loaded by position: the init has no category record; "
                "its classes must be data.train_ann's, in the same id order"
            ]
        return state, []
    why = _why(keys, state, own, source, target, shapes_differ)
    if mode == MATCH_BY_NAME:
        if source is None or target is None:
            raise ValueError(
                "finetune.init_keep_classes=match_by_name needs the init's category record "
                "(categories.json next to it, or 'drcl.categories' metadata); it has none"
            )
        return _match_by_name(own, state, keys, source, target, why)
    modules = sorted({_module(k) for k in keys})
    kept = {k: v for k, v in state.items() if k not in keys}
    note = (
        f"class-specific layers skipped ({why}): {', '.join(modules)}; they start from their "
        "initialisation, as in detectron2 / mmdetection (finetune.init_keep_classes="
        "match_by_name copies the rows of classes both have)"
    )
    return kept, [note]


def _why(keys, state, own, source, target, shapes_differ) -> str:
    if source is not None and target is not None and source.num_classes != target.num_classes:
        return f"the init has {source.num_classes} classes, the model {target.num_classes}"
    if shapes_differ:
        k = next(k for k in keys if state[k].shape != own[k].shape)
        return f"{k}: {tuple(state[k].shape)} in the init, {tuple(own[k].shape)} in the model"
    return "the init's category record names other classes"


def _match_by_name(
    own: Mapping[str, Tensor],
    state: dict[str, Tensor],
    keys: list[str],
    source: CategoryTable,
    target: CategoryTable,
    why: str,
) -> tuple[dict[str, Tensor], list[str]]:
    src_label = {r.name: r.label for r in source.records}
    pairs = [(r.label, src_label[r.name]) for r in target.records if r.name in src_label]
    out = dict(state)
    for k in keys:
        layout = layout_of(k)
        new = own[k].detach().clone()
        both = pairs if layout == "dense" else [(0, 0), *pairs]  # background row too
        for t, s in both:
            rows_t = _rows(layout, t, target.num_classes, new.shape[0])
            rows_s = _rows(layout, s, source.num_classes, state[k].shape[0])
            new[rows_t] = state[k][rows_s].to(new.dtype)
        out[k] = new
    missing = [r.name for r in target.records if r.name not in src_label]
    note = (
        f"class-specific layers matched by name ({why}): {len(pairs)} of {target.num_classes} "
        f"classes copied from the init"
    )
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
        )
        note += f"; {len(missing)} start from their initialisation: {shown}"
    return out, [note]
