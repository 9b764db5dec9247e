"""The rows of the ablation grid: which 2DRCL terms are on, where the weights start, and whether
the box-domain stage (AlignDet's, ``pretrain.stage=box``; issue 13) runs after them."""

from __future__ import annotations

from dataclasses import dataclass

COMPONENTS = ("hcl", "lcl", "drb", "ar", "sr")
INITS = ("generic", "random")


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
    """

    components: tuple[str, ...] | None
    init: str = "generic"
    equal_compute: bool = False
    box_stage: bool = False
    image_stage_of: str | None = None

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
    "random": RowSpec(None, init="random"),
    "random_full": RowSpec(COMPONENTS, init="random"),
    # issue 13, the box-domain stage (configs/ablate/demo_box.yaml): 2DRCL alone (the full row
    # under the name the box comparison uses), the box stage alone on the generic backbone, and
    # 2DRCL followed by the box stage (on the 2drcl row's own pre-training)
    "2drcl": RowSpec(COMPONENTS),
    "box_only": RowSpec(None, box_stage=True),
    "2drcl_box": RowSpec(COMPONENTS, box_stage=True, image_stage_of="2drcl"),
}
# rows run when an ablation file names none: the paper's grid (the box rows are opt-in)
DEFAULT_ROWS = [r for r in ROWS if not (ROWS[r].box_stage or r == "2drcl")]


def component_overrides(on: tuple[str, ...]) -> list[str]:
    """Config overrides that switch the 2DRCL terms not in ``on`` off."""
    out = [f"pretrain.{term}.weight=0.0" for term in ("hcl", "lcl", "ar", "sr") if term not in on]
    out.append(f"pretrain.drb.enabled={'true' if 'drb' in on else 'false'}")
    return out
