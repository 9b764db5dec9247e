"""``drcl ablate``: the paper's ablation grid (HCL, LCL, DRB, AR, SR on and off), and the
box-domain stage rows ``2drcl`` / ``box_only`` / ``2drcl_box`` (:mod:`drcl.cli.ablate_box`).

Each row pre-trains with some components switched off, fine-tunes from the result and evaluates;
a row without any component is the no-pre-training baseline. Rows are resumable one by one:
a finished row (its metrics file exists) is skipped, an interrupted one resumes from its last
checkpoint. The table goes to ``WORK_DIR/ablation.md`` and ``ablation.csv``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from drcl.cli.ablate_box import BOX_ROWS, box_row_init
from drcl.config import ConfigError, load_config
from drcl.utils.io import atomic_write_text, ensure_writable_dir

log = logging.getLogger(__name__)

COMPONENTS = ("hcl", "lcl", "drb", "ar", "sr")
# The rows of the paper's ablation table, in order: components switched on per row.
ROWS: dict[str, tuple[str, ...]] = {
    "baseline": (),
    "hcl": ("hcl",),
    "hcl_lcl": ("hcl", "lcl"),
    "hcl_lcl_drb": ("hcl", "lcl", "drb"),
    "hcl_lcl_drb_ar": ("hcl", "lcl", "drb", "ar"),
    "hcl_lcl_drb_sr": ("hcl", "lcl", "drb", "sr"),
    "full": COMPONENTS,
    # issue 13, box-domain stage rows (drcl.cli.ablate_box): 2DRCL alone, the box stage alone,
    # and 2DRCL followed by the box stage
    "2drcl": COMPONENTS,
    "box_only": (),
    "2drcl_box": COMPONENTS,
}
METRICS = ("AP", "AP50", "APr", "APc", "APf")


@dataclass
class AblateConfig:
    """An ablation: which recipes to run, at what scale, and which rows."""

    pretrain_config: str = "../pretrain/demo.yaml"  # relative to the ablation file
    finetune_config: str = "../finetune/demo.yaml"
    overrides: list[str] = field(default_factory=list)  # applied to both stages
    pretrain_overrides: list[str] = field(default_factory=list)
    finetune_overrides: list[str] = field(default_factory=list)
    rows: list[str] = field(default_factory=lambda: list(ROWS)[:7])  # the paper's grid
    box_config: str = "../pretrain/demo_box.yaml"  # the box stage of rows box_only / 2drcl_box
    box_overrides: list[str] = field(default_factory=list)


def load_ablate_config(path: str | Path, overrides: list[str] | None = None) -> AblateConfig:
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(AblateConfig), OmegaConf.load(path))
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides or [])))
    except (OmegaConfBaseException, OSError) as err:
        raise ConfigError(f"{path}: {err}") from err
    unknown = [r for r in cfg.rows if r not in ROWS]
    if unknown:
        raise ConfigError(f"{path}: key 'rows': unknown {unknown}, allowed: {', '.join(ROWS)}")
    base = Path(path).parent
    cfg.pretrain_config = str(base / cfg.pretrain_config)
    cfg.finetune_config = str(base / cfg.finetune_config)
    cfg.box_config = str(base / cfg.box_config)
    return cfg  # type: ignore[return-value]


def component_overrides(on: tuple[str, ...]) -> list[str]:
    """Config overrides that switch the components not in ``on`` off."""
    out = []
    for term in ("hcl", "lcl", "ar", "sr"):
        if term not in on:
            out.append(f"pretrain.{term}.weight=0.0")
    out.append(f"pretrain.drb.enabled={'true' if 'drb' in on else 'false'}")
    return out


def run_row(name: str, cfg: AblateConfig, work_dir: Path) -> dict[str, Any]:
    """Pre-train (unless baseline), fine-tune, evaluate; returns the box metrics."""
    from drcl.finetune.runner import run_finetune
    from drcl.pretrain.runner import run_pretrain

    row_dir = work_dir / name
    metrics_file = row_dir / "finetune" / "eval" / "metrics_bbox.json"
    if metrics_file.is_file():
        return json.loads(metrics_file.read_text())
    init = None
    if name in BOX_ROWS:  # issue 13: the box-domain stage (drcl.cli.ablate_box)
        init = box_row_init(name, cfg, work_dir)
    elif ROWS[name]:
        pre = load_config(
            cfg.pretrain_config,
            [*cfg.overrides, *cfg.pretrain_overrides, *component_overrides(ROWS[name])],
        )
        weights = row_dir / "pretrain" / "pretrained.safetensors"
        init = weights if weights.is_file() else run_pretrain(pre, row_dir / "pretrain", True)
    ft = load_config(cfg.finetune_config, [*cfg.overrides, *cfg.finetune_overrides])
    run_finetune(ft, row_dir / "finetune", init=str(init) if init else None, resume=True)
    return json.loads(metrics_file.read_text())


def ablation_table(results: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """Markdown and csv of the grid: a check mark per component, AP columns in percent."""
    head = ["row", *[c.upper() for c in COMPONENTS], *METRICS]
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(head)
    for name, m in results.items():
        marks = ["✓" if c in ROWS[name] else "" for c in COMPONENTS]
        vals = [_pct(m.get(k)) for k in METRICS]
        md.append("| " + " | ".join([name, *marks, *vals]) + " |")
        writer.writerow([name, *[int(c in ROWS[name]) for c in COMPONENTS], *vals])
    return "\n".join(md) + "\n", buf.getvalue()


def _pct(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def run_ablation(config: str | Path, work_dir: str | Path, overrides=None) -> Path:
    cfg = load_ablate_config(config, overrides)
    work_dir = ensure_writable_dir(work_dir)
    results: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(cfg.rows):
        log.info("\n=== ablation row %d/%d: %s", i + 1, len(cfg.rows), name)
        results[name] = run_row(name, cfg, work_dir)
        md, table_csv = ablation_table(results)  # rewritten after every row
        atomic_write_text(work_dir / "ablation.md", md)
        atomic_write_text(work_dir / "ablation.csv", table_csv)
    log.info("\n%s", md)
    return work_dir / "ablation.md"


def cli_ablate(args: argparse.Namespace) -> int:
    out = run_ablation(args.config, args.work_dir, args.overrides)
    log.info("ablation table: %s", out)
    return 0
