"""``drcl demo``: the whole pipeline on the embedded dataset, on CPU, in minutes.

make data -> stats -> generic backbone (the ImageNet stand-in) -> 2DRCL pre-training from it ->
fine-tuning from the generic backbone and from generic -> 2DRCL, with one recipe (trainable BN,
RFS) -> LVIS evaluation -> report. Each finished stage is kept, so a second run resumes where
it stopped.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from drcl.generic.recipe import GenericRecipe
from drcl.utils.run_dir import RunDir

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


# The demo's generic backbone: GenericRecipe's defaults (v2: 112 shape x texture classes at 48 px).
# Cached in WORK_DIR/../cache/generic-<recipe key>/, so a second demo (or a fresh work dir next
# to it) reuses it.
DEMO_GENERIC = GenericRecipe()


def _demo_rows(with_random: bool) -> dict[str, str]:
    """Demo run name -> ablation row: generic init vs generic -> 2DRCL (the paper's question)."""
    rows = {"generic_init": "generic", "2drcl": "full"}
    return {**rows, "random_init": "random"} if with_random else rows


def run_demo(
    work_dir: str | Path,
    extra: list[str] | None = None,
    with_random: bool = False,
    generic_recipe: GenericRecipe | None = None,
) -> Path:
    """Run every stage; returns the report folder.

    Args:
        work_dir: everything goes here; finished stages are kept and skipped on a second run.
        extra: config overrides for pre-training and every fine-tuning.
        with_random: also fine-tune from random init (secondary row).
        generic_recipe: the generic backbone's recipe (default :data:`DEMO_GENERIC`).

    Every fine-tuning uses the same recipe (``configs/finetune/demo.yaml``) and differs only in
    its initial weights: the fair protocol of ``drcl ablate``, checked the same way.
    """
    from drcl.ablation.runner import AblateConfig, check_fair, finetune_config, pretrain_config
    from drcl.data.demo import make_demo_dataset
    from drcl.data.stats import write_stats
    from drcl.finetune.job import FinetuneJob
    from drcl.finetune.runner import run_finetune
    from drcl.generic.train import cached_generic_backbone
    from drcl.pretrain.job import PretrainJob
    from drcl.pretrain.runner import run_pretrain
    from drcl.report.build import build_report

    t0 = time.perf_counter()
    work_dir = Path(work_dir)
    data_dir = work_dir / "data"
    over = _data_overrides(data_dir) + list(extra or [])
    _stage("1/6 embedded demo dataset", t0)
    if not (data_dir / "annotations" / "tune.json").is_file():
        make_demo_dataset(data_dir, seed=0, size="small")
    write_stats(data_dir / "annotations" / "train.json", work_dir / "long_tail.png")

    _stage("2/6 generic backbone (supervised, class-balanced; the ImageNet stand-in)", t0)
    generic = cached_generic_backbone(generic_recipe or DEMO_GENERIC, work_dir.parent / "cache")

    rows = _demo_rows(with_random)
    cfg = AblateConfig(
        pretrain_config=str(_config("pretrain/demo.yaml")),
        finetune_config=str(_config("finetune/demo.yaml")),
        overrides=over,
        rows=list(rows.values()),
    )
    _stage("3/6 2DRCL pre-training from the generic backbone", t0)
    pre_dir = work_dir / "pretrain"
    weights = RunDir(pre_dir).pretrained
    if not weights.is_file():
        pre_cfg = pretrain_config(cfg, "full", 0, str(generic))
        run_pretrain(PretrainJob.from_config(pre_cfg, pre_dir, resume=True))

    jobs = {
        name: FinetuneJob.from_config(
            finetune_config(cfg, row, 0, str(weights) if row == "full" else None, str(generic)),
            work_dir / f"finetune_{name}",
            resume=True,
        )
        for name, row in rows.items()
    }
    check_fair({rows[n]: job for n, job in jobs.items()})  # only the init differs
    runs = {}
    for i, (name, job) in enumerate(jobs.items()):
        # finetune.arch may be overridden (e.g. `drcl demo finetune.arch=atss finetune.loss=focal`)
        _stage(f"{4 + min(i, 1)}/6 fine-tuning {job.finetune.arch} from {name}", t0)
        if not RunDir(job.work_dir).eval_metrics().is_file():
            run_finetune(job)
        runs[name] = job.work_dir

    _stage("6/6 attention maps and report", t0)
    _attention(runs, data_dir, over)
    report = build_report({**runs, "2drcl_pretrain": pre_dir}, work_dir / "report")
    _print_table(runs)
    _print_cost(runs)
    log.info("\nreport: %s  (%.0f s in all)", report / "index.html", time.perf_counter() - t0)
    return report


def _attention(runs: dict[str, Path], data_dir: Path, over: list[str]) -> None:
    """Grad-CAM maps of both fine-tuned detectors on the first validation images."""
    from drcl.analysis.job import AttentionJob
    from drcl.analysis.runner import run_attention
    from drcl.config import load_config
    from drcl.utils.io import read_json

    out = runs["2drcl"] / "attention"
    if out.is_dir():
        return
    val = read_json(data_dir / "annotations" / "val.json")
    ids = [int(img["id"]) for img in val["images"][:3]]
    ckpts = {name: str(RunDir(run).model_final) for name, run in runs.items()}
    config = _config("finetune/demo.yaml")
    try:
        job = AttentionJob.from_config(
            load_config(config, over), ckpts, ids, out, config_name=str(config)
        )
        run_attention(job)
    except (FileNotFoundError, ValueError) as err:  # the same errors `drcl` reports in one line
        log.warning("attention maps failed (%s); the report goes on without them", err)


def _print_table(runs: dict[str, Path]) -> None:
    import json

    keys = ("AP", "AP50", "APr", "APc", "APf")
    lines = [f"\n{'run':<14}" + "".join(f"{k:>8}" for k in keys)]
    for name, run_dir in runs.items():
        m = json.loads(RunDir(run_dir).eval_metrics().read_text())
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
    run_demo(
        args.work_dir,
        extra=list(getattr(args, "overrides", None) or []),
        with_random=bool(getattr(args, "with_random", False)),
    )
    return 0
