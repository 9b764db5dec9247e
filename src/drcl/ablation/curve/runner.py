"""The fine-tuning length curve's run: one fine-tuning as long as the longest point, each kept
checkpoint evaluated on the tune split (the curve itself is :mod:`drcl.ablation.curve`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from drcl.ablation.curve import (
    CurveConfig,
    check_curve,
    curve_overrides,
    pick_length,
)
from drcl.ablation.results import METRICS, _percent
from drcl.config import ConfigError, derive_config
from drcl.finetune.job import EvaluateJob, FinetuneJob
from drcl.utils.io import atomic_write_json, atomic_write_text
from drcl.utils.run_dir import EVAL, RunDir, metrics_name

log = logging.getLogger(__name__)


def eval_changes(curve: CurveConfig) -> dict[str, Any]:
    """How the curve's evaluation config differs from the fine-tuning one: the curve's split;
    no backbone file (the checkpoint holds every weight)."""
    changes = {"data.val_ann": curve.eval_ann, "data.val_images": curve.eval_images}
    return {**changes, "model.weights": None}


def _point(iteration: int, job: EvaluateJob) -> dict[str, Any]:
    from drcl.finetune.runner import evaluate_checkpoint

    metrics = job.out_dir / metrics_name()
    if not metrics.is_file():
        evaluate_checkpoint(job)
    m = json.loads(metrics.read_text())
    return {"iter": iteration, **{k: _percent(m.get(k)) for k in METRICS}}


def _checkpoints(run_dir: Path) -> dict[int, Path]:
    """``{iteration: checkpoint}`` of the complete ones (sha256 sidecar matches)."""
    from drcl.engine import checkpoint as ckpt

    return {int(p.stem.split("_")[1]): p for p in ckpt.list_checkpoints(run_dir) if ckpt.verify(p)}


def run_curve(config: str | Path, work_dir: str | Path, overrides: list[str] | None = None) -> Path:
    """Run the curve of ablation file ``config`` into ``WORK_DIR/curve``; returns curve.json."""
    from drcl.ablation.runner import (
        ensure_generic,
        finetune_config,
        load_ablate_config,
        row_init_path,
    )
    from drcl.finetune.runner import train_detector
    from drcl.utils.io import ensure_writable_dir

    cfg = load_ablate_config(config, overrides)
    points = check_curve(cfg.curve)
    work_dir = ensure_writable_dir(work_dir)
    if row_init_path(work_dir, cfg.baseline, 0) is not None:
        raise ConfigError(f"curve: the baseline row {cfg.baseline!r} must not need pre-training")
    generic = ensure_generic(cfg, work_dir)
    cfg.finetune_overrides = [*cfg.finetune_overrides, *curve_overrides(points)]
    ft = finetune_config(cfg, cfg.baseline, 0, None, generic)
    out = work_dir / "curve"
    run_dir = out / "finetune"
    ckpts = _checkpoints(run_dir)
    if not all(i in ckpts for i in points):
        train_detector(FinetuneJob.from_config(ft, run_dir, resume=True, stage="finetune_curve"))
        ckpts = _checkpoints(run_dir)
    missing = [i for i in points if i not in ckpts]
    if missing:
        raise RuntimeError(f"curve: no checkpoint at iterations {missing} in {run_dir}")
    ev = derive_config(ft, eval_changes(cfg.curve))
    rows = []
    for i in points:
        rows.append(
            _point(i, EvaluateJob.from_config(ev, ckpts[i], out / EVAL / f"{i:07d}", ["bbox"]))
        )
        log.info("curve: %d iterations: AP %s on %s", i, rows[-1]["AP"], cfg.curve.eval_ann)
    atomic_write_text(RunDir(out).metrics, "".join(json.dumps(r) + "\n" for r in rows))
    result = {
        "row": cfg.baseline,
        "eval_ann": cfg.curve.eval_ann,
        "points": rows,
        "picked": pick_length(rows, cfg.curve.tolerance, cfg.curve.max_iters),
        # without the budget's cap: how much AP the cap leaves on the table
        "uncapped": pick_length(rows, cfg.curve.tolerance),
        "rule": (
            f"shortest length within {cfg.curve.tolerance} AP of the best point"
            + (f", at most {cfg.curve.max_iters} iterations" if cfg.curve.max_iters > 0 else "")
        ),
        "caveat": (
            "one run with the lr schedule of the longest point: earlier points are read before "
            "their own lr decay, so the picked length errs long"
        ),
    }
    return atomic_write_json(out / "curve.json", result, indent=1)


def main(argv: list[str] | None = None) -> int:
    """``python -m drcl.ablation.curve CONFIG --work-dir DIR [key=value ...]``."""
    from drcl.utils.console import setup_logging

    parser = argparse.ArgumentParser(prog="python -m drcl.ablation.curve", description=__doc__)
    parser.add_argument("config", help="ablation YAML with a curve section")
    parser.add_argument("--work-dir", required=True, help="the grid's work dir (shares generic/)")
    parser.add_argument("overrides", nargs="*", help="key=value, as for drcl ablate")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        path = run_curve(args.config, args.work_dir, args.overrides)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    picked = json.loads(path.read_text())["picked"]
    print(json.dumps({"curve": str(path), "picked": picked}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
