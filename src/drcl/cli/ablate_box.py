"""The box-domain stage rows of ``drcl ablate`` (issue 13): ``box_only`` and ``2drcl_box``.

- ``2drcl``: the full 2DRCL pre-training (an ordinary row of :data:`drcl.cli.ablate.ROWS`);
- ``box_only``: the box stage on a random, frozen backbone (AlignDet without its image stage);
- ``2drcl_box``: the box stage on the ``2drcl`` row's checkpoint (2DRCL, then AlignDet's stage).

``2drcl_box`` reuses the ``2drcl`` row's pre-training folder (``WORK_DIR/2drcl/pretrain``), so the
two rows share one image stage and differ only by the box stage; the cost table follows the chain
(fine-tuning -> box stage -> 2DRCL) through each ``cost.json``'s ``init``. The box stage's recipe
is the ablation file's ``box_config`` (with ``overrides`` and ``box_overrides``); fine-tuning is
the same recipe as every other row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drcl.config import load_config

# row -> whether the box stage starts from the 2DRCL checkpoint (else from a random backbone)
BOX_ROWS: dict[str, bool] = {"box_only": False, "2drcl_box": True}


def image_stage_weights(cfg: Any, work_dir: Path) -> Path:
    """The ``2drcl`` row's checkpoint, pre-training it first when the row has not run yet."""
    from drcl.cli.ablate import COMPONENTS, component_overrides
    from drcl.pretrain.runner import run_pretrain

    pre_dir = work_dir / "2drcl" / "pretrain"
    weights = pre_dir / "pretrained.safetensors"
    if weights.is_file():
        return weights
    over = [*cfg.overrides, *cfg.pretrain_overrides, *component_overrides(COMPONENTS)]
    return run_pretrain(load_config(cfg.pretrain_config, over), pre_dir, True)


def box_row_init(name: str, cfg: Any, work_dir: Path) -> Path:
    """Run (or resume, or reuse) the box stage of row ``name``; returns its checkpoint."""
    from drcl.pretrain.runner import run_pretrain

    backbone = image_stage_weights(cfg, work_dir) if BOX_ROWS[name] else None
    box_dir = work_dir / name / "box"
    weights = box_dir / "pretrained.safetensors"
    if weights.is_file():
        return weights
    over = [*cfg.overrides, *cfg.box_overrides, f"pretrain.box.init={backbone or 'null'}"]
    return run_pretrain(load_config(cfg.box_config, over), box_dir, True)
