"""``drcl report RUN... --out DIR``: one folder comparing runs, as ``index.html`` and ``README.md``.

The folder holds the metrics tables side by side (box and mask; best per column in bold, deltas
vs the first run), the cost table (memory, time, throughput, AP per method), training curves,
the long tail of the training set, error breakdown,
classifier weight norms, attention maps and the AP of the rarest classes, plus the PNGs they
reference and ``report.json`` (what was compared). It is built in a temporary sibling folder and
renamed onto ``--out`` only when complete, so a failure never leaves a half-written report.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from drcl.report.ablation import ablation_section, load_ablation
from drcl.report.cost import cost_table
from drcl.report.curves import curves_section
from drcl.report.doc import (
    Block,
    Cell,
    Note,
    Section,
    Table,
    Text,
    render_html,
    render_markdown,
)
from drcl.report.figures import (
    attention_section,
    box_composition_section,
    error_section,
    long_tail_section,
    weight_norm_section,
)
from drcl.report.pictures import forest_section, gallery_section, per_class_ap_section
from drcl.report.runs import RunInfo, check_run_dir, load_run
from drcl.report.tables import metrics_table, rarest_table

MARKER = "report.json"  # identifies a folder that a previous `drcl report` wrote
TITLE = "drcl report"
SECTION_TITLES = {
    "runs": "Runs",
    "box": "Box metrics",
    "mask": "Mask metrics",
    "curves": "Training curves",
    "cost": "Cost",
    "box-composition": "Boxes contrasted by LCL (mechanism)",
    "long-tail": "Long tail of the training set",
    "gallery": "Detection gallery",
    "per-class-ap": "Per-class AP vs training instances",
    "errors": "Error breakdown",
    "weight-norms": "Classifier weight norms",
    "attention": "Attention maps",
    "rarest": "Rarest classes",
}
ABLATION_TITLE = "Ablation over seeds"  # first section when --ablation is given


def build_report(
    runs: dict[str, Path],
    out_dir: str | os.PathLike,
    gt: str | os.PathLike | None = None,
    train_ann: str | os.PathLike | None = None,
    ablation: str | os.PathLike | None = None,
    seed_noise: float | None = None,
) -> Path:
    """Write the report folder comparing ``runs`` (and/or an ablation's results).

    Args:
        runs: ``{display name: run folder}``, in table order (the first is the delta reference).
        out_dir: the report folder; replaced atomically if it holds a previous report.
        gt: validation json for the error breakdown; default: the first run's ``data.val_ann``.
        train_ann: training json (long tail, class counts); default: ``data.train_ann``.
        ablation: a ``drcl ablate`` folder; its table over seeds becomes the first section.
            ``runs`` may then be empty.
        seed_noise: AP points a seed alone moves a single run; best marks and deltas only
            beyond it (None: none, with a note; :mod:`drcl.report.tables`).

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ValueError: a run folder is missing / not a run, a given json is missing, or ``out_dir``
            cannot be replaced safely. Raised before anything is written.
    """
    out = Path(out_dir)
    if seed_noise is not None and not (math.isfinite(seed_noise) and seed_noise >= 0):
        raise ValueError(f"--seed-noise {seed_noise}: must be a finite number >= 0 (AP points)")
    ablation_results = load_ablation(ablation) if ablation is not None else None
    _check_inputs(runs, out, gt, train_ann, allow_no_runs=ablation_results is not None)
    taken: set[str] = set()
    infos = [load_run(name, Path(path), taken) for name, path in runs.items()]
    gt_path = Path(gt) if gt is not None else _from_configs(infos, "data.val_ann")
    train_path = (
        Path(train_ann) if train_ann is not None else _from_configs(infos, "data.train_ann")
    )
    target = out.resolve()  # "." or "x/.." must not put the temporary folder inside --out
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        _write_report(infos, tmp, gt_path, train_path, ablation_results, seed_noise)
        _make_readable(tmp)
        _publish(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _check_inputs(
    runs: dict[str, Path],
    out: Path,
    gt: str | os.PathLike | None,
    train_ann: str | os.PathLike | None,
    allow_no_runs: bool = False,
) -> None:
    """Every check that can fail, done before the first byte is written."""
    out = out.resolve()
    if not runs and not allow_no_runs:
        raise ValueError("no runs given")
    for name, path in runs.items():
        check_run_dir(name, Path(path))
        if _inside(out, Path(path)):
            raise ValueError(f"--out {out} would replace run '{name}' ({path})")
    for what, path in (("gt", gt), ("train_ann", train_ann)):
        if path is not None and not Path(path).is_file():
            raise ValueError(f"{what}: {path} does not exist")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise ValueError(
            f"--out {out} is a non-empty folder that is not a drcl report; not replacing it"
        )


def _inside(out: Path, run: Path) -> bool:
    """True when replacing ``out`` would delete ``run`` (same folder, or run inside out)."""
    out_r, run_r = out.resolve(), run.resolve()
    return out_r == run_r or out_r in run_r.parents


def _from_configs(runs: list[RunInfo], key: str) -> Path | None:
    """The first existing path named by ``key`` in the runs' config.yaml files."""
    for run in runs:
        path = run.config_path(key)
        if path is not None and path.is_file():
            return path
    return None


def _make_readable(root: Path) -> None:
    """Give the folder the usual umask modes (mkdtemp / mkstemp create owner-only 0700 / 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    root.chmod(0o777 & ~umask)
    for path in root.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _publish(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` onto ``out``; a previous report is swapped out, then removed."""
    if not out.exists():
        os.rename(tmp, out)
        return
    old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)  # put the previous report back
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write_report(
    runs: list[RunInfo],
    out: Path,
    gt: Path | None,
    train_ann: Path | None,
    ablation: dict | None = None,
    seed_noise: float | None = None,
) -> None:
    sections = _sections(runs, out, gt, train_ann, seed_noise) if runs else []
    if ablation is not None:
        blocks = ablation_section(ablation) + forest_section(ablation, out)
        sections.insert(0, Section("ablation", ABLATION_TITLE, blocks))
    names = ", ".join(r.name for r in runs)
    intro = (
        f"Comparison of {len(runs)} run(s): {names}. "
        "In the metrics tables, (deltas) are against the table's first run, shown only beyond "
        "the stated seed noise."
    )
    if ablation is not None:
        intro = f"Ablation over seeds {ablation.get('seeds')}. " + (intro if runs else "")
    (out / "index.html").write_text(render_html(TITLE, intro, sections))
    (out / "README.md").write_text(render_markdown(TITLE, intro, sections))
    meta = {
        "runs": {r.name: str(r.path) for r in runs},
        "gt": None if gt is None else str(gt),
        "train_ann": None if train_ann is None else str(train_ann),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "sections": {s.anchor: s.title for s in sections},
    }
    (out / MARKER).write_text(json.dumps(meta, indent=2) + "\n")


def _sections(
    runs: list[RunInfo],
    out: Path,
    gt: Path | None,
    train_ann: Path | None,
    seed_noise: float | None = None,
) -> list[Section]:
    counts = _instance_counts(train_ann)
    blocks = {
        "runs": runs_overview(runs, gt, train_ann),
        "box": metrics_table(runs, "bbox", seed_noise),
        "mask": metrics_table(runs, "segm", seed_noise),
        "curves": curves_section(runs, out),
        "cost": cost_table(runs),
        "box-composition": box_composition_section(runs, out),
        "long-tail": long_tail_section(train_ann, out),
        "gallery": gallery_section(runs, gt, train_ann, out),
        "per-class-ap": per_class_ap_section(runs, train_ann, out),
        "errors": error_section(runs, gt, train_ann, out),
        "weight-norms": weight_norm_section(runs, train_ann, out),
        "attention": attention_section(runs, out),
        "rarest": rarest_table(runs, counts, noise=seed_noise),
    }
    return [Section(key, SECTION_TITLES[key], list(b)) for key, b in blocks.items()]


def _instance_counts(train_ann: Path | None) -> dict[int, int] | None:
    """``{cat_id: training instances}``, or None when the training json is missing/unreadable."""
    if train_ann is None:
        return None
    from drcl.data.coco import load_coco

    try:
        index = load_coco(train_ann)
    except (OSError, ValueError):
        return None  # the long-tail section reports the reason
    return index.counts_by_cat_id(index.instance_counts())


def runs_overview(runs: list[RunInfo], gt: Path | None, train_ann: Path | None) -> list[Block]:
    """A table of the runs (kind, folder, last logged iteration) and what could not be read."""
    rows = []
    for r in runs:
        iters = [row.get("iter") for row in r.metrics if isinstance(row.get("iter"), int | float)]
        arch = r.config_value("finetune.arch") if r.kind == "fine-tuning" else None
        rows.append(
            [
                Cell(r.name),
                Cell(r.kind + (f" ({arch})" if arch else "")),
                Cell(str(r.path)),
                Cell(str(int(max(iters))) if iters else "n/a"),
                Cell(", ".join(sorted(r.evals)) or "none"),
            ]
        )
    header = ["run", "kind", "folder", "last iter", "eval"]
    blocks: list[Block] = [Table(header, rows, left_columns=len(header))]
    for what, path in (("ground truth", gt), ("training annotations", train_ann)):
        blocks.append(Text(f"{what}: {path}") if path else Note(f"{what}: none found"))
    for r in runs:
        blocks += [Note(f"{r.name}: {what}: {why}") for what, why in r.problems.items()]
    return blocks
