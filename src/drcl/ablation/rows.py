"""The rows of the ablation grid: which 2DRCL terms are on, where the weights start, whether the
box-domain stage (AlignDet's, ``pretrain.stage=box``; issue 13) runs after them, and for how many
epochs of the training set 2DRCL pre-trains (the dose).

A row name is one of :data:`ROWS`, or ``ROW@Nep`` for a row of :data:`ROWS` with 2DRCL
pre-training run for N epochs of the training set (``full@12ep``: the paper's 1x in epochs;
``full@0.5ep``); :func:`row_spec` parses it. ``ROWS[name]`` and ``name in ROWS`` accept both forms.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

COMPONENTS = ("hcl", "lcl", "drb", "ar", "sr")
# "sup": LCL supervised by the box labels (pretrain.lcl.supervised=true; SupCon positives for boxes
# of the same known class), the paper's "supervised signal"; only together with "lcl"
SUPERVISED = "sup"
INITS = ("generic", "random")
DOSE_SEP = "@"
_DOSE = re.compile(r"^(?P<row>[A-Za-z0-9_]+)@(?P<epochs>[0-9]+(?:\.[0-9]+)?)ep$")


@dataclass(frozen=True)
class RowSpec:
    """One row of the grid.

    Attributes:
        components: 2DRCL terms switched on in pre-training; ``None``: no 2DRCL pre-training, the
            detector is fine-tuned straight from ``init``.
        init: the starting weights: ``generic`` (the supervised classification backbone, the
            ImageNet stand-in) or ``random``. For a pre-trained row, pre-training starts there.
        equal_compute: fine-tune for as many images as pre-training and fine-tuning of a full
            2DRCL row see together (the "is it just more training?" control).
        box_stage: run the box-domain stage (frozen backbone; FPN, RPN and box head learn) and
            fine-tune from its checkpoint: on the 2DRCL checkpoint of the row when
            ``components`` is set, else on the ``init`` backbone (AlignDet without 2DRCL).
        image_stage_of: reuse this row's 2DRCL pre-training (same seed) instead of running an
            own one, so that two rows differ only by the box stage.
        pretrain_epochs: 2DRCL pre-training length in epochs of the training set (the dose);
            ``None``: the grid's length (``pretrain_epochs`` of the ablation file, else the
            pre-training recipe's ``train.max_iters``).
    """

    components: tuple[str, ...] | None
    init: str = "generic"
    equal_compute: bool = False
    box_stage: bool = False
    image_stage_of: str | None = None
    pretrain_epochs: float | None = None

    @property
    def pretrained(self) -> bool:
        """Fine-tuning starts from a checkpoint of this grid (2DRCL and/or the box stage)."""
        return self.components is not None or self.box_stage


# The paper's question: generic init against generic -> 2DRCL (Table 5's rows, in order), the
# equal-compute control, and the secondary random-init pair.
ROWS: dict[str, RowSpec] = {
    "generic": RowSpec(None),
    "equal_compute": RowSpec(None, equal_compute=True),
    "hcl": RowSpec(("hcl",)),
    "hcl_lcl": RowSpec(("hcl", "lcl")),
    "hcl_lcl_drb": RowSpec(("hcl", "lcl", "drb")),
    "hcl_lcl_drb_ar": RowSpec(("hcl", "lcl", "drb", "ar")),
    "hcl_lcl_drb_sr": RowSpec(("hcl", "lcl", "drb", "sr")),
    "full": RowSpec(COMPONENTS),
    # issue 20: all terms, LCL supervised by the box labels (the paper's "synergistically combining
    # self-supervised and supervised learning"; docs/method.md)
    "full_sup": RowSpec((*COMPONENTS, SUPERVISED)),
    "random": RowSpec(None, init="random"),
    "random_full": RowSpec(COMPONENTS, init="random"),
    # issue 13, the box-domain stage (configs/ablate/demo_box.yaml): 2DRCL alone (the full row
    # under the name the box comparison uses), the box stage alone on the generic backbone, and
    # 2DRCL followed by the box stage (on the 2drcl row's own pre-training)
    "2drcl": RowSpec(COMPONENTS),
    "box_only": RowSpec(None, box_stage=True),
    "2drcl_box": RowSpec(COMPONENTS, box_stage=True, image_stage_of="2drcl"),
}
# rows run when an ablation file names none: the paper's grid (the box rows, full_sup and the
# doses are opt-in)
DEFAULT_ROWS = [r for r in ROWS if not (ROWS[r].box_stage or r in ("2drcl", "full_sup"))]


class RowTable(dict[str, RowSpec]):
    """The named rows; a name ``ROW@Nep`` (see :func:`row_spec`) is found too."""

    def __missing__(self, name: str) -> RowSpec:
        return row_spec(name, self)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            row_spec(name, self)
        except KeyError:
            return False
        return True


ROWS = RowTable(ROWS)


def row_spec(name: str, table: dict[str, RowSpec] | None = None) -> RowSpec:
    """The row ``name``: a key of ``ROWS``, or ``ROW@Nep`` (``ROW`` pre-trained N epochs).

    Raises:
        KeyError: an unknown row, a malformed dose, or a dose on a row without 2DRCL.
    """
    table = ROWS if table is None else table
    if dict.__contains__(table, name):
        return dict.__getitem__(table, name)
    match = _DOSE.match(name)
    if match is None or not dict.__contains__(table, match["row"]):
        raise KeyError(
            f"unknown row {name!r}: allowed {', '.join(table)}, or ROW{DOSE_SEP}Nep for a row "
            "with 2DRCL pre-training (e.g. full@12ep)"
        )
    base, epochs = dict.__getitem__(table, match["row"]), float(match["epochs"])
    if base.components is None or base.image_stage_of is not None:
        raise KeyError(f"row {name!r}: a dose needs a row with its own 2DRCL pre-training")
    if not (epochs > 0 and math.isfinite(epochs)):
        raise KeyError(f"row {name!r}: the dose must be > 0 epochs")
    return replace(base, pretrain_epochs=epochs)


def component_overrides(on: tuple[str, ...]) -> list[str]:
    """Config overrides that switch the 2DRCL terms not in ``on`` off (and LCL's supervision on
    for ``sup``)."""
    unknown = set(on) - {*COMPONENTS, SUPERVISED}
    if unknown or (SUPERVISED in on and "lcl" not in on):
        raise ValueError(f"components {on}: allowed {COMPONENTS} and '{SUPERVISED}' with 'lcl'")
    out = [f"pretrain.{term}.weight=0.0" for term in ("hcl", "lcl", "ar", "sr") if term not in on]
    out.append(f"pretrain.drb.enabled={'true' if 'drb' in on else 'false'}")
    if SUPERVISED in on:
        out.append("pretrain.lcl.supervised=true")
    return out
