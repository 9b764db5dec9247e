"""What a grid will cost before it runs: iterations per (row, seed) and an estimate of CPU time.

    python -m drcl.ablation.plan configs/ablate/v2_grid.yaml --work-dir work/v2_grid
    python -m drcl.ablation.plan configs/ablate/v2_grid.yaml --train-images 540 --val-images 100

The iterations follow the grid exactly (doses in epochs of the training set, equal compute,
``row_seeds``, the curve). The seconds are a linear model of measured per-image costs
(:class:`Costs`; defaults from the demo's ``cost.json`` figures in ``docs/method.md``, 2 busy CPU
cores, ResNet-18-FPN 64 at 128 px), scaled by ``density`` for denser scenes. Measure the costs
on the real data (a few iterations of each stage, ``cost.json``) and pass them to re-plan.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from drcl.ablation.rows import ROWS
from drcl.config import ConfigError
from drcl.engine.trainer import iters_per_epoch


@dataclass(frozen=True)
class Costs:
    """Seconds per image (or per call) on the target machine.

    Defaults: ``docs/method.md`` ("Cost"): 2DRCL pre-training 163 s for 120 iterations of 8
    images (0.170 s/image), Faster R-CNN fine-tuning 70 s for 120 x 8 (0.073 s/image), on the
    2-core CPU under load, ResNet-18-FPN 64, 128 px, v1 demo scenes (2-6 objects per image).
    """

    pretrain_s_per_image: float = 0.170
    finetune_s_per_image: float = 0.073
    eval_s_per_image: float = 0.15  # inference + LVIS evaluation (v1 demo: ~40 s / 240 images)
    probe_s: float = 57.0  # one crop probe (docs/training.md: 57 s CPU, ~5,000 crops, 64 px)
    generic_s: float = 350.0  # the generic backbone, once (v1: 349 s); 0 when it is given
    # per-image cost of a row without the masked pass (no AR, no SR), relative to all terms
    no_masked_pass: float = 0.8
    density: float = 1.2  # v2 scenes hold ~10 objects per image, v1 ~4: more targets per step


@dataclass
class RowPlan:
    row: str
    seeds: int
    pretrain_epochs: float
    pretrain_iters: int
    finetune_iters: int
    pretrain_s: float
    finetune_s: float
    per_seed_s: float = field(init=False)
    total_s: float = field(init=False)

    def __post_init__(self) -> None:
        self.per_seed_s = self.pretrain_s + self.finetune_s
        self.total_s = self.per_seed_s * self.seeds


def _count(path: str | None, given: int | None, what: str) -> int:
    if given is not None:
        return given
    if not path or not Path(path).is_file():
        raise ConfigError(f"{what}: {path} not found; pass --{what.replace('_', '-')} N")
    return len(json.loads(Path(path).read_text())["images"])


def plan_grid(
    config: str | Path,
    costs: Costs,
    overrides: list[str] | None = None,
    train_images: int | None = None,
    val_images: int | None = None,
) -> dict[str, Any]:
    """Iterations and estimated seconds of every row, the curve and the one-off stages."""
    from drcl.ablation.runner import load_ablate_config, row_seed_count, stage_config

    cfg = load_ablate_config(config, overrides)
    pre = stage_config(cfg, "pretrain")
    ft = stage_config(cfg, "finetune")
    n_train = _count(pre.data.train_ann, train_images, "train_images")
    n_val = _count(ft.data.val_ann, val_images, "val_images")
    n_tune = _count(cfg.curve.eval_ann, val_images, "val_images") if cfg.curve.iters else 0
    pre_img = pre.train.batch_size * pre.train.accumulate
    ft_img = ft.train.batch_size * ft.train.accumulate
    ipe = iters_per_epoch(n_train, pre_img)
    grid_iters = pre.train.max_iters
    if cfg.pretrain_epochs:
        grid_iters = math.ceil(cfg.pretrain_epochs * ipe)
    eval_s = n_val * costs.eval_s_per_image * costs.density
    rows = []
    for row in cfg.rows:
        spec = ROWS[row]
        iters = 0
        if spec.components is not None:
            iters = math.ceil(spec.pretrain_epochs * ipe) if spec.pretrain_epochs else grid_iters
        ft_iters = ft.train.max_iters
        if spec.equal_compute:
            ft_iters = math.ceil((grid_iters * pre_img + ft.train.max_iters * ft_img) / ft_img)
        masked = spec.components is not None and {"ar", "sr"} & set(spec.components)
        per_img = costs.pretrain_s_per_image * (1.0 if masked else costs.no_masked_pass)
        probes = 0
        if iters and cfg.probe_every_epochs > 0:
            every = max(1, round(cfg.probe_every_epochs * ipe))
            probes = math.ceil(iters / every)  # at multiples of every and at the end
        pre_s = iters * pre_img * per_img * costs.density + probes * costs.probe_s
        ft_s = ft_iters * ft_img * costs.finetune_s_per_image * costs.density + eval_s
        seeds = row_seed_count(cfg, row)
        rows.append(RowPlan(row, seeds, round(iters / ipe, 2), iters, ft_iters, pre_s, ft_s))
    once = {"generic": 0.0 if cfg.generic.weights else costs.generic_s}
    if cfg.proposals.rows:
        det = stage_config(cfg, "pretrain", extra=cfg.proposals.overrides).pretrain.proposals
        det_iters = det.detector_epochs * ipe if det.detector_epochs else det.detector_iters
        once["proposals"] = (det_iters * pre_img * costs.finetune_s_per_image + n_train
                             * costs.eval_s_per_image) * costs.density  # fmt: skip
    if cfg.curve.iters:
        once["curve"] = (
            max(cfg.curve.iters) * ft_img * costs.finetune_s_per_image * costs.density
            + len(cfg.curve.iters) * n_tune * costs.eval_s_per_image * costs.density
        )
    total = sum(r.total_s for r in rows) + sum(once.values())
    return {
        "train_images": n_train,
        "iters_per_epoch": ipe,
        "rows": [asdict(r) for r in rows],
        "once_s": once,
        "total_s": total,
        "costs": asdict(costs),
    }


def plan_table(plan: dict[str, Any]) -> str:
    """The plan as a markdown table (minutes)."""
    lines = [
        f"train images {plan['train_images']}, {plan['iters_per_epoch']} pre-training "
        "iterations per epoch",
        "",
        "| row | seeds | 2DRCL epochs | 2DRCL iters | fine-tune iters | min / seed | min |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in plan["rows"]:
        lines.append(
            f"| {r['row']} | {r['seeds']} | {r['pretrain_epochs']:g} | {r['pretrain_iters']} | "
            f"{r['finetune_iters']} | {r['per_seed_s'] / 60:.1f} | {r['total_s'] / 60:.1f} |"
        )
    for name, s in plan["once_s"].items():
        lines.append(f"| {name} (once) | | | | | | {s / 60:.1f} |")
    lines.append(f"| **total** | | | | | | **{plan['total_s'] / 60:.0f}** |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m drcl.ablation.plan CONFIG [--train-images N] [--cost-KEY S ...]``."""
    parser = argparse.ArgumentParser(prog="python -m drcl.ablation.plan", description=__doc__)
    parser.add_argument("config")
    parser.add_argument("--train-images", type=int, help="instead of counting data.train_ann")
    parser.add_argument("--val-images", type=int, help="instead of counting val / tune")
    for name, value in asdict(Costs()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=value)
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args(argv)
    costs = Costs(**{k: getattr(args, k) for k in asdict(Costs())})
    try:
        plan = plan_grid(args.config, costs, args.overrides, args.train_images, args.val_images)
    except (ConfigError, OSError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(plan, indent=1) if args.json else plan_table(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
