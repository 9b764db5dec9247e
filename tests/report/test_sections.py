"""Sections fed by other stages, and what happens when their inputs are missing or broken."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from drcl.report.build import build_report
from drcl.report.curves import curve_keys, series
from drcl.report.runs import RunInfo

from .html_tables import parse_html, table_with_caption


def _section(readme: str, title: str) -> str:
    """The README text of one section (up to the next ``## ``)."""
    start = readme.index(f"\n## {title}\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end > 0 else None]


def _has(module: str, *names: str) -> str:
    """'' when ``module`` provides ``names``, else why not (a skip reason)."""
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        return f"{module} not importable yet ({err})"
    missing = [n for n in names if not callable(getattr(mod, n, None))]
    return f"{module} lacks {', '.join(missing)}" if missing else ""


def test_bare_run_gives_notes_not_crashes(tmp_path: Path) -> None:
    run = tmp_path / "bare"
    run.mkdir()
    rows = [{"iter": 10, "lr": 0.01, "loss": 2.0}, {"iter": 20, "lr": 0.02, "loss": None}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = build_report({"bare": run}, tmp_path / "out")
    readme = (out / "README.md").read_text()
    expect = {
        "Box metrics": "box metrics: no run has eval/metrics_bbox.json",
        "Mask metrics": "mask metrics: no run has eval/metrics_segm.json",
        "Long tail of the training set": "no training annotations",
        "Error breakdown": "no run has eval/detections_bbox.json",
        "Classifier weight norms": "no fine-tuning run has model_final.safetensors",
        "Attention maps": "no run has PNGs under attention/",
        "Rarest classes": "no run has 'per_class'",
    }
    for title, reason in expect.items():
        assert f"> not available: {reason}" in _section(readme, title), title
    assert "![" in _section(readme, "Training curves")
    html = (out / "index.html").read_text()
    assert html.count('class="note"') >= len(expect)


def test_broken_files_are_named(runs_copy: dict[str, Path], tmp_path: Path) -> None:
    drcl = runs_copy["drcl"]
    (drcl / "eval" / "metrics_bbox.json").write_text('{"AP": 0.3,')
    lines = (drcl / "metrics.jsonl").read_text().splitlines()
    (drcl / "metrics.jsonl").write_text("\n".join([lines[0], "{oops", *lines[1:]]) + "\n")
    base = runs_copy["baseline"]
    with open(base / "metrics.jsonl", "a") as fh:  # a torn last line (killed run) is fine
        fh.write('{"iter": 999, "lo')
    out = build_report(runs_copy, tmp_path / "out")
    readme = (out / "README.md").read_text()
    runs = _section(readme, "Runs")
    assert "drcl: bbox:" in runs and "metrics_bbox.json: invalid JSON" in runs
    assert "metrics.jsonl: invalid JSON at line 2" in _section(readme, "Training curves")
    # the box table still shows the run whose file is fine; drcl is listed as missing
    table = table_with_caption(parse_html(out / "index.html"), "box AP")
    assert [row[0][0] for row in table["rows"][1:]] == ["baseline"]
    assert "200 |" in runs  # baseline's last good iteration, torn line ignored


def test_gt_and_train_ann_from_config_or_arguments(
    runs_copy: dict[str, Path], tmp_path: Path
) -> None:
    data = runs_copy["baseline"].parent / "data"
    for run in runs_copy.values():
        (run / "config.yaml").write_text("data: {train_ann: gone.json}\n")
    out = build_report(runs_copy, tmp_path / "a")
    readme = (out / "README.md").read_text()
    assert "> not available: ground truth: none found" in readme
    assert "> not available: no training annotations" in _section(
        readme, "Long tail of the training set"
    )
    assert "by frequency group (no training counts)" in _section(readme, "Rarest classes")
    out = build_report(
        runs_copy, tmp_path / "b", gt=data / "val.json", train_ann=data / "train.json"
    )
    readme = (out / "README.md").read_text()
    assert "![" in _section(readme, "Long tail of the training set")
    assert f"ground truth: {data / 'val.json'}" in readme


def test_long_tail_section(full_report: Path) -> None:
    readme = (full_report / "README.md").read_text()
    assert "(long_tail.png)" in _section(readme, "Long tail of the training set")


def test_error_breakdown_section(full_report: Path, fake_runs: dict[str, Path]) -> None:
    why = _has("drcl.analysis.errors", "error_breakdown", "plot_error_breakdown")
    assert not why, why  # the analysis module is part of drcl: its absence is a failure
    from drcl.analysis.errors import error_breakdown

    readme = (full_report / "README.md").read_text()
    assert "(error_breakdown.png)" in _section(readme, "Error breakdown")
    assert (full_report / "error_breakdown.png").stat().st_size > 0
    table = table_with_caption(parse_html(full_report / "index.html"), "share (%)")
    header = [c[0] for c in table["rows"][0]]
    val = fake_runs["baseline"].parent / "data" / "val.json"
    for row in table["rows"][1:]:
        run, group = row[0][0], row[1][0]
        ref = error_breakdown(str(val), str(fake_runs[run] / "eval" / "detections_bbox.json"))
        summary = ref["groups"][{"rare": "r", "common": "c", "frequent": "f"}.get(group, group)]
        cells = dict(zip(header, (c[0] for c in row), strict=True))
        assert cells["detections"] == str(summary["num_detections"])
        for kind, share in summary["shares"].items():
            assert cells[kind] == f"{share * 100:.1f}"


def test_weight_norm_section(full_report: Path) -> None:
    why = _has("drcl.analysis.weight_norms", "classifier_weight_norms", "plot_weight_norms")
    section = _section((full_report / "README.md").read_text(), "Classifier weight norms")
    assert not why, why  # the analysis module is part of drcl: its absence is a failure
    assert "(weight_norms.png)" in section
    assert (full_report / "weight_norms.png").stat().st_size > 0


def test_attention_pngs_copied(full_report: Path, fake_runs: dict[str, Path]) -> None:
    src = fake_runs["drcl"] / "attention" / "image 1.png"
    copied = full_report / "attention" / "drcl" / "001_image_1.png"
    assert copied.read_bytes() == src.read_bytes()
    assert "drcl (2 maps)" in (full_report / "README.md").read_text()


def test_curve_keys_and_series_skip_missing_values() -> None:
    rows = [
        {"iter": 1, "loss": 3.0, "loss_b": 1.0, "lr": 0.1, "step_time": 0.2},
        {"iter": 2, "loss": None, "loss_a": 2.0, "alpha": 0.5},
        {"iter": 3, "loss": float("nan"), "loss_a": True},
        {"loss": 1.0},  # no iteration: not plotted
        {"iter": 4, "loss": 1.5},
    ]
    run = RunInfo(name="x", path=Path("."), metrics=rows)
    assert curve_keys([run]) == ["loss", "loss_a", "loss_b", "lr", "alpha"]
    assert series(rows, "loss") == ([1.0, 4.0], [3.0, 1.5])
    assert series(rows, "loss_a") == ([2.0], [2.0])
    assert series([], "loss") == ([], [])


def test_bad_detections_of_one_run_keep_the_others(
    runs_copy: dict[str, Path], tmp_path: Path
) -> None:
    why = _has("drcl.analysis.errors", "error_breakdown", "plot_error_breakdown")
    assert not why, why  # the analysis module is part of drcl: its absence is a failure
    dets = runs_copy["baseline"] / "eval" / "detections_bbox.json"
    dets.write_text(json.dumps([{"image_id": 1, "category_id": 1, "score": 0.5}]))  # no bbox
    runs = {k: runs_copy[k] for k in ("baseline", "drcl")}
    out = build_report(runs, tmp_path / "out")
    section = _section((out / "README.md").read_text(), "Error breakdown")
    assert "> not available: error breakdown of baseline failed: ValueError" in section
    assert "(error_breakdown.png)" in section  # drcl's breakdown is still drawn
    table = table_with_caption(parse_html(out / "index.html"), "share (%)")
    assert {row[0][0] for row in table["rows"][1:]} == {"drcl"}


def test_broken_train_json(runs_copy: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "train.json"
    bad.write_text('{"images": [')
    out = build_report({"drcl": runs_copy["drcl"]}, tmp_path / "out", train_ann=bad)
    readme = (out / "README.md").read_text()
    section = _section(readme, "Long tail of the training set")
    assert f"> not available: long-tail curve of {bad} failed: ValueError: {bad}: invalid JSON" in (
        section
    )
    assert "by frequency group (no training counts)" in _section(readme, "Rarest classes")
