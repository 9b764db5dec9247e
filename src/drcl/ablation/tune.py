"""Choose between rows on the tune split, never on the reported one (issue 20: the default of
``pretrain.lcl.supervised`` is chosen from ``full`` vs ``full_sup`` this way).

Every finished (row, seed) of a grid has its fine-tuned detector
(``ROW/seed{s}/finetune/model_final.safetensors``); this evaluates it on the tune split of the
ablation file's ``curve`` section into ``ROW/seed{s}/tune_eval/metrics_bbox.json`` (kept:
resumable) and writes ``tune_results.json`` and ``tune.md``: the same statistics as
``results.json`` (mean ± std, paired 95% intervals against the baseline), on tune.

    python -m drcl.ablation.tune configs/ablate/v2_grid.yaml --work-dir work/v2_grid \
        --rows generic full full_sup
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from drcl.ablation.results import markdown_table, summarize
from drcl.config import ConfigError, derive_config, load_config
from drcl.utils.io import atomic_write_json, atomic_write_text
from drcl.utils.run_dir import RunDir, metrics_name

log = logging.getLogger(__name__)


def evaluate_on_tune(run_dir: Path, eval_ann: str, eval_images: str) -> dict[str, Any] | None:
    """Box metrics of the fine-tuned detector in ``run_dir`` on the tune split (None: no model)."""
    from drcl.finetune.job import EvaluateJob
    from drcl.finetune.runner import evaluate_checkpoint

    model = RunDir(run_dir / "finetune").model_final
    out = run_dir / "tune_eval"
    if not (out / metrics_name()).is_file():
        if not model.is_file():
            return None
        changes = {"data.val_ann": eval_ann, "data.val_images": eval_images}
        # no backbone or init file: the model file holds every weight
        changes |= {"model.weights": None, "finetune.init": None}
        cfg = derive_config(load_config(RunDir(run_dir / "finetune").config), changes)
        evaluate_checkpoint(EvaluateJob.from_config(cfg, model, out, ["bbox"]))
    return json.loads((out / metrics_name()).read_text())


def tune_results(config: str | Path, work_dir: str | Path, rows: list[str]) -> dict[str, Any]:
    """Evaluate ``rows`` (every finished seed) on the tune split; writes tune_results.json."""
    from drcl.ablation.runner import load_ablate_config, row_seed_count, seed_dir

    cfg = load_ablate_config(config)
    if not cfg.curve.eval_ann or not cfg.curve.eval_images:
        raise ConfigError(f"{config}: curve.eval_ann and curve.eval_images name the tune split")
    unknown = [r for r in rows if r not in cfg.rows]
    if unknown or cfg.baseline not in rows:
        raise ConfigError(f"--rows: {unknown or rows} must be rows of {config}, baseline included")
    work_dir, seeds = Path(work_dir), list(range(cfg.seeds))
    per_seed: dict[str, dict[int, Any]] = {r: {} for r in rows}
    for row in rows:
        for s in seeds[: row_seed_count(cfg, row)]:
            m = evaluate_on_tune(
                seed_dir(work_dir, row, s), cfg.curve.eval_ann, cfg.curve.eval_images
            )
            if m is not None:
                per_seed[row][s] = m
    results = {
        **summarize({r: v for r, v in per_seed.items() if v}, seeds, cfg.baseline),
        "baseline": cfg.baseline,
        "seeds": seeds,
        "split": cfg.curve.eval_ann,
    }
    atomic_write_json(work_dir / "tune_results.json", results, indent=1)
    atomic_write_text(
        work_dir / "tune.md", f"On {cfg.curve.eval_ann}:\n\n{markdown_table(results)}"
    )
    return results


def main(argv: list[str] | None = None) -> int:
    """``python -m drcl.ablation.tune CONFIG --work-dir DIR --rows ROW ...``."""
    from drcl.utils.console import setup_logging

    parser = argparse.ArgumentParser(prog="python -m drcl.ablation.tune", description=__doc__)
    parser.add_argument("config")
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--rows", nargs="+", required=True, help="rows to compare (baseline too)")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        tune_results(args.config, args.work_dir, args.rows)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print((Path(args.work_dir) / "tune.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
