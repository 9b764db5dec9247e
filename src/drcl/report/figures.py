"""Figure sections that come from other stages: the training set's long tail (``drcl.data.stats``),
error breakdown and classifier weight norms (``drcl.analysis``), attention maps (PNG folders).

Each builder returns the section's blocks. The producing modules are imported only here, lazily:
when one is missing, or its inputs are, the section says "not available: why" instead of failing
the whole report. When the inputs exist, the figure is made.
"""

from __future__ import annotations

import importlib
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from drcl.data.groups import GROUP_NAMES
from drcl.report.doc import Cell, Figure, Note, Table, Text
from drcl.report.runs import RunInfo
from drcl.utils.run_dir import RunDir

log = logging.getLogger(__name__)

ATTENTION_DIR = "attention"
MAX_ATTENTION_PER_RUN = 12
# error_breakdown's detection outcomes (SPEC order) and groups; missed GT are a separate share
ERROR_KINDS = ("correct", "classification", "location", "background", "other")
ERROR_GROUPS = GROUP_NAMES | {"all": "all"}


def _module(name: str) -> tuple[ModuleType | None, str]:
    """(module, "") or (None, why it cannot be imported)."""
    try:
        return importlib.import_module(name), ""
    except ImportError as err:
        return None, f"{name} cannot be imported ({err})"


def _attr(module_name: str, attr: str) -> tuple[Callable[..., Any] | None, str]:
    module, why = _module(module_name)
    if module is None:
        return None, why
    func = getattr(module, attr, None)
    return (func, "") if callable(func) else (None, f"{module_name} has no {attr}()")


def _failed(what: str, err: Exception) -> Note:
    """A figure whose producer raised: keep the report, say what happened (also on stderr)."""
    log.warning("drcl report: %s failed: %s: %s", what, type(err).__name__, err)
    return Note(f"{what} failed: {type(err).__name__}: {err}")


def long_tail_section(train_ann: Path | None, out_dir: Path) -> list[Figure | Note]:
    """Instances per class of the training set, sorted, coloured by frequency group."""
    if train_ann is None:
        return [Note("no training annotations (pass train_ann, or data.train_ann in config.yaml)")]
    plot, why = _attr("drcl.data.stats", "plot_long_tail")
    if plot is None:
        return [Note(why)]
    try:
        from drcl.data.coco import load_coco

        plot(load_coco(train_ann), out_dir / "long_tail.png")
    except (OSError, ValueError) as err:
        return [_failed(f"long-tail curve of {train_ann}", err)]
    return [Figure("long_tail.png", f"Training instances per class, {train_ann}")]


def error_section(
    runs: list[RunInfo], gt: Path | None, train_ann: Path | None, out_dir: Path
) -> list[Figure | Note | Table | Text]:
    """Error breakdown (Correct/Location/Background/Classification/Other/Missed) per group."""
    have = [r for r in runs if RunDir(r.path).detections().exists()]
    if not have:
        return [Note("no run has eval/detections_bbox.json")]
    if gt is None:
        return [Note("no ground truth (pass gt, or data.val_ann in config.yaml)")]
    breakdown, why = _attr("drcl.analysis.errors", "error_breakdown")
    plot, why_plot = _attr("drcl.analysis.errors", "plot_error_breakdown")
    if breakdown is None or plot is None:
        return [Note(why or why_plot)]
    results: dict[str, dict] = {}
    blocks: list[Figure | Note | Table | Text] = []
    for run in have:
        dets = RunDir(run.path).detections()
        try:
            results[run.name] = breakdown(str(gt), str(dets), train_ann=_opt_str(train_ann))
        except (OSError, ValueError, KeyError, TypeError) as err:
            blocks.append(_failed(f"error breakdown of {run.name}", err))
    if not results:
        return blocks
    try:
        plot(results, out_dir / "error_breakdown.png")
    except (OSError, ValueError, KeyError, TypeError) as err:
        return [*blocks, _failed("error breakdown plot", err)]
    caption = f"Error breakdown per frequency group ({', '.join(results)}), detections vs {gt}"
    blocks.insert(0, Figure("error_breakdown.png", caption))
    table = shares_table(results)
    return blocks + ([table] if table else [])


def _opt_str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _pct(x: Any) -> str:
    return f"{float(x) * 100:.1f}" if isinstance(x, int | float) else "n/a"


def shares_table(results: dict[str, dict]) -> Table | None:
    """Shares (%) of each detection outcome, and missed GT (%), one row per (run, group).

    ``results[run]["groups"][g]`` is ``error_breakdown``'s summary of group g: ``shares``
    (fractions of the group's detections), ``num_detections``, ``num_gt``, ``missed_share``.
    None when no result has that form.
    """
    rows = []
    for name, result in results.items():
        groups = result.get("groups") if isinstance(result, dict) else None
        for g in ERROR_GROUPS:
            summary = groups.get(g) if isinstance(groups, dict) else None
            if not isinstance(summary, dict) or not isinstance(summary.get("shares"), dict):
                continue
            cells = [Cell(name), Cell(ERROR_GROUPS[g]), Cell(str(summary.get("num_detections")))]
            cells += [Cell(_pct(summary["shares"].get(k))) for k in ERROR_KINDS]
            cells.append(Cell(_pct(summary.get("missed_share"))))
            rows.append(cells)
    if not rows:
        return None
    header = ["run", "group", "detections", *ERROR_KINDS, "missed (% of GT)"]
    return Table(header, rows, "share (%) of each group's detections per outcome", left_columns=2)


def weight_norm_section(
    runs: list[RunInfo], train_ann: Path | None, out_dir: Path
) -> list[Figure | Note]:
    """Per-class classifier weight norms of the fine-tuned detectors vs training frequency."""
    have = [r for r in runs if RunDir(r.path).model_final.exists()]
    if not have:
        return [Note("no fine-tuning run has model_final.safetensors")]
    if train_ann is None:
        return [Note("no training annotations for class counts (train_ann / data.train_ann)")]
    norms_of, why = _attr("drcl.analysis.weight_norms", "classifier_weight_norms")
    plot, why_plot = _attr("drcl.analysis.weight_norms", "plot_weight_norms")
    if norms_of is None or plot is None:
        return [Note(why or why_plot)]
    from drcl.data.coco import load_coco

    blocks: list[Figure | Note] = []
    norms = {}
    for run in have:
        try:
            norms[run.name] = norms_of(RunDir(run.path).model_final)
        except (OSError, ValueError, KeyError) as err:
            blocks.append(_failed(f"weight norms of {run.name}", err))
    if not norms:
        return blocks
    try:
        index = load_coco(train_ann)
        groups = index.frequency_groups()
        label_groups = [groups[cid] for cid in index.cat_ids]  # label order 1..C
        plot(norms, index.instance_counts(), label_groups, out_dir / "weight_norms.png")
    except (OSError, ValueError, KeyError, TypeError) as err:
        return [*blocks, _failed("weight norm plot", err)]
    caption = f"Classifier weight norm per class vs training instances ({', '.join(norms)})"
    return [Figure("weight_norms.png", caption), *blocks]


def attention_section(runs: list[RunInfo], out_dir: Path) -> list[Figure | Note | Text]:
    """PNGs found under ``RUN/attention/`` (``drcl analyze attention``), copied into the report."""
    blocks: list[Figure | Note | Text] = []
    for run in runs:
        pngs = sorted((run.path / ATTENTION_DIR).rglob("*.png"))
        if not pngs:
            continue
        dest = out_dir / ATTENTION_DIR / run.slug
        dest.mkdir(parents=True, exist_ok=True)
        blocks.append(Text(f"{run.name} ({len(pngs)} maps)"))
        for k, png in enumerate(pngs[:MAX_ATTENTION_PER_RUN]):
            name = f"{k:03d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', png.name)}"  # safe in a URL
            shutil.copyfile(png, dest / name)
            rel = png.relative_to(run.path / ATTENTION_DIR).as_posix()
            blocks.append(Figure(f"{ATTENTION_DIR}/{run.slug}/{name}", f"{run.name}: {rel}"))
        if len(pngs) > MAX_ATTENTION_PER_RUN:
            blocks.append(Text(f"... {len(pngs) - MAX_ATTENTION_PER_RUN} more in {run.path}"))
    if not blocks:
        hint = "run `drcl analyze attention` to make them"
        return [Note(f"no run has PNGs under {ATTENTION_DIR}/ ({hint})")]
    return blocks


def box_composition_section(runs: list[RunInfo], out_dir: Path) -> list[Figure | Note]:
    """The mechanism figure: class composition of the boxes LCL contrasted, runs side by side
    (pre-training runs that logged ``box_share_*``; e.g. uniform, image-level RFS and DRB)."""
    mod, why = _module("drcl.analysis.box_composition")
    if mod is None:
        return [Note(why)]
    rows = {r.name: mod.rows_from_metrics(r.metrics) for r in runs}
    rows = {name: r for name, r in rows.items() if r}
    if not rows:
        return [Note("no pre-training run logged box_share_* / box_entropy in metrics.jsonl")]
    try:
        mod.plot_box_composition(rows, out_dir / "box_composition.png")
    except (OSError, ValueError) as err:
        return [_failed("box composition", err)]
    caption = (
        "Share of rare / common / frequent boxes among the contrasted boxes with a known class, "
        "and the normalised entropy of their class histogram, per logging interval: "
        + ", ".join(rows)
    )
    return [Figure("box_composition.png", caption)]
