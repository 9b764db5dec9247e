"""``drcl report`` draws the probe curves of runs that logged ``probe/*`` in metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

from drcl.report.build import build_report
from drcl.report.curves import PROBE_PNG, probe_panels
from drcl.report.runs import RunInfo


def _run(root: Path, name: str, probe: bool) -> Path:
    run = root / name
    run.mkdir()
    rows = [{"iter": i, "lr": 0.01, "loss": 2.0 / i} for i in range(1, 7)]
    if probe:
        rows += [
            {"iter": i, "probe/ncm/all": 30.0 + i, "probe/ncm/rare": None, "probe/knn/all": 25.0,
             "probe/knn/rare": 10.0 + i, "probe/std": 0.02, "probe/erank": 40.0}
            for i in (3, 6)
        ]  # fmt: skip
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_probe_panels_only_what_was_logged():
    rows = [{"iter": 2, "probe/ncm/all": 50.0, "probe/ncm/rare": None, "probe/std": 0.1}]
    assert probe_panels([RunInfo(name="x", path=Path("."), metrics=rows)]) == ["all", "probe/std"]
    rows[0]["probe/knn/rare"] = 20.0  # rare from kNN only
    assert probe_panels([RunInfo(name="x", path=Path("."), metrics=rows)]) == [
        "all", "rare", "probe/std"
    ]  # fmt: skip
    assert probe_panels([RunInfo(name="x", path=Path("."), metrics=[{"iter": 1}])]) == []


def test_report_draws_probe_curves(tmp_path):
    runs = {"probed": _run(tmp_path, "probed", True), "plain": _run(tmp_path, "plain", False)}
    out = build_report(runs, tmp_path / "out")
    assert (out / PROBE_PNG).stat().st_size > 1000
    readme = (out / "README.md").read_text()
    assert f"]({PROBE_PNG})" in readme and "Crop probe against the iteration (probed)" in readme


def test_report_without_probe_rows_has_no_probe_figure(tmp_path):
    out = build_report({"plain": _run(tmp_path, "plain", False)}, tmp_path / "out")
    assert not (out / PROBE_PNG).exists()
    assert PROBE_PNG not in (out / "README.md").read_text()
