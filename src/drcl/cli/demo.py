"""``drcl demo``: the whole pipeline on the embedded dataset, on CPU, in minutes.

make data -> stats -> 2DRCL pre-training -> fine-tuning from it and from random init ->
LVIS evaluation -> report. Each finished stage is kept, so a second run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

REPO_CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def _config(name: str) -> Path:
    path = REPO_CONFIGS / name
    if not path.is_file():
        raise FileNotFoundError(f"demo config {path} not found (run from a drcl checkout)")
    return path


def _data_overrides(data_dir: Path) -> list[str]:
    return [
        f"data.train_ann={data_dir / 'annotations' / 'train.json'}",
        f"data.train_images={data_dir / 'train'}",
        f"data.val_ann={data_dir / 'annotations' / 'val.json'}",
        f"data.val_images={data_dir / 'val'}",
    ]


def _stage(title: str, t0: float) -> None:
    log.info("\n=== [%6.0f s] %s", time.perf_counter() - t0, title)


def run_demo(work_dir: str | Path, extra: list[str] | None = None) -> Path:
    """Run every stage; returns the report folder."""
    from drcl.config import load_config
    from drcl.data.demo import make_demo_dataset
    from drcl.data.stats import write_stats
    from drcl.finetune.runner import run_finetune
    from drcl.pretrain.runner import run_pretrain
    from drcl.report.build import build_report

    t0 = time.perf_counter()
    work_dir = Path(work_dir)
    data_dir = work_dir / "data"
    over = _data_overrides(data_dir) + list(extra or [])
    _stage("1/5 embedded demo dataset", t0)
    if not (data_dir / "annotations" / "val.json").is_file():
        make_demo_dataset(data_dir, seed=0, size="small")
    write_stats(data_dir / "annotations" / "train.json", work_dir / "long_tail.png")

    _stage("2/5 2DRCL pre-training", t0)
    pre_dir = work_dir / "pretrain"
    weights = pre_dir / "pretrained.safetensors"
    if not weights.is_file():
        run_pretrain(load_config(_config("pretrain/demo.yaml"), over), pre_dir, resume=True)

    runs = {}
    arch = load_config(_config("finetune/demo.yaml"), over).finetune.arch  # may be overridden
    for i, (name, init) in enumerate([("random_init", None), ("2drcl", weights)]):
        _stage(f"{3 + i}/5 fine-tuning {arch} from {name}", t0)
        run_dir = work_dir / f"finetune_{name}"
        if not (run_dir / "eval" / "metrics_bbox.json").is_file():
            cfg = load_config(_config("finetune/demo.yaml"), over)
            run_finetune(cfg, run_dir, init=str(init) if init else None, resume=True)
        runs[name] = run_dir

    _stage("5/5 attention maps and report", t0)
    _attention(runs, data_dir, over)
    report = build_report({**runs, "2drcl_pretrain": pre_dir}, work_dir / "report")
    _print_table(runs)
    _print_cost(runs)
    log.info("\nreport: %s  (%.0f s in all)", report / "index.html", time.perf_counter() - t0)
    return report


def _attention(runs: dict[str, Path], data_dir: Path, over: list[str]) -> None:
    """Grad-CAM maps of both fine-tuned detectors on the first validation images."""
    from drcl.analysis.runner import run_attention
    from drcl.config import load_config
    from drcl.utils.io import read_json

    out = runs["2drcl"] / "attention"
    if out.is_dir():
        return
    val = read_json(data_dir / "annotations" / "val.json")
    ids = [int(img["id"]) for img in val["images"][:3]]
    ckpts = {name: str(run / "model_final.safetensors") for name, run in runs.items()}
    config = _config("finetune/demo.yaml")
    try:
        run_attention(load_config(config, over), ckpts, ids, out, config_name=str(config))
    except (FileNotFoundError, ValueError) as err:  # the same errors `drcl` reports in one line
        log.warning("attention maps failed (%s); the report goes on without them", err)


def _print_table(runs: dict[str, Path]) -> None:
    import json

    keys = ("AP", "AP50", "APr", "APc", "APf")
    lines = [f"\n{'run':<14}" + "".join(f"{k:>8}" for k in keys)]
    for name, run_dir in runs.items():
        m = json.loads((run_dir / "eval" / "metrics_bbox.json").read_text())
        cells = "".join(
            f"{100 * m[k]:8.2f}" if m.get(k) is not None else f"{'n/a':>8}" for k in keys
        )
        lines.append(f"{name:<14}{cells}")
    log.info("%s", "\n".join(lines))


def _print_cost(runs: dict[str, Path]) -> None:
    """The cost table (pre-training is found through each fine-tuning run's init)."""
    from drcl.report.cost import cost_text
    from drcl.report.runs import load_run

    taken: set[str] = set()
    log.info("\n%s", cost_text([load_run(name, path, taken) for name, path in runs.items()]))


def cli_demo(args: argparse.Namespace) -> int:
    run_demo(args.work_dir, extra=list(getattr(args, "overrides", None) or []))
    return 0
