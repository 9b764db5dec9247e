"""The numbers of the report's tables: values, best-in-column bold, deltas, rarest classes."""

from __future__ import annotations

import json
import math
from pathlib import Path

from drcl.report.build import build_report
from drcl.report.runs import metric_value
from drcl.report.tables import best_flags, fmt_delta, rarest_order, shown_delta

from .fake_runs import BOX, CLASSES, MASK, PER_CLASS
from .html_tables import parse_html, table_with_caption

COLUMNS = ["AP", "AP50", "AP75", "APr", "APc", "APf"]


def _expected_rows(
    values: dict[str, dict], columns: list[str], noise: float | None = None
) -> list[list[tuple]]:
    """Reference: percent with one decimal; with a seed noise, bold = the column max when it
    beats every other value by more than the noise, delta vs the first run beyond the noise;
    without one, neither."""
    names = list(values)
    shown = {
        n: [None if values[n].get(c) is None else round(values[n][c] * 100, 1) for c in columns]
        for n in names
    }
    rows = []
    for r, n in enumerate(names):
        row = [(n, False, "")]
        for k in range(len(columns)):
            col = [shown[m][k] for m in names if shown[m][k] is not None]
            v = shown[n][k]
            text = "n/a" if v is None else f"{v:.1f}"
            top = sorted(col, reverse=True)
            margin = top[0] - top[1] if len(top) > 1 else 0.0
            bold = noise is not None and v is not None and v == top[0] and margin > noise + 1e-9
            ref = shown[names[0]][k]
            delta = ""
            if noise is not None and r > 0 and v is not None and ref is not None:
                if abs(v - ref) > noise + 1e-9:
                    delta = f"{v - ref:+.1f}"
            row.append((text, bold, delta))
        rows.append(row)
    return rows


def test_single_runs_get_no_best_marks_or_deltas_without_a_seed_noise(full_report: Path) -> None:
    table = table_with_caption(parse_html(full_report / "index.html"), "box AP")
    header = [c[0] for c in table["rows"][0]]
    assert header == ["run", *COLUMNS]  # no AP1..AP4: no run has them
    assert table["rows"][1:] == _expected_rows(BOX, COLUMNS)
    assert not any(bold or delta for row in table["rows"][1:] for _, bold, delta in row)
    readme = (full_report / "README.md").read_text()
    assert "| drcl | 27.1 | 47.0 | 30.0 | 15.0 | n/a | 39.0 |" in readme
    assert "| baseline | 25.3 | 45.0 | 30.0 | 10.0 | 20.0 | 40.0 |" in readme
    assert "one run per row cannot rank them" in readme and "--seed-noise" in readme


def test_box_table_marks_only_beyond_the_stated_seed_noise(
    fake_runs: dict[str, Path], tmp_path: Path
) -> None:
    out = build_report(fake_runs, tmp_path / "out", seed_noise=1.0)
    table = table_with_caption(parse_html(out / "index.html"), "box AP")
    header = [c[0] for c in table["rows"][0]]
    assert table["rows"][1:] == _expected_rows(BOX, COLUMNS, noise=1.0)
    # hand-checked: AP +1.8 and APr +5.0 beat a noise of 1 point; APf -1.0 does not; AP75 tie
    base, drcl = (dict(zip(header, row, strict=True)) for row in table["rows"][1:])
    assert drcl["AP"] == ("27.1", True, "+1.8") and drcl["APr"] == ("15.0", True, "+5.0")
    assert base["APf"] == ("40.0", False, "") and drcl["APf"] == ("39.0", False, "")
    assert base["AP75"] == ("30.0", False, "") and drcl["AP75"] == ("30.0", False, "")
    assert drcl["APc"] == ("n/a", False, "")
    assert "exceeds the stated seed noise of 1 AP points" in (out / "README.md").read_text()
    wide = build_report(fake_runs, tmp_path / "wide", seed_noise=3.0)
    rows = table_with_caption(parse_html(wide / "index.html"), "box AP")["rows"][1:]
    assert [c for c in rows[1] if c[1] or c[2]] == [("15.0", True, "+5.0")]


def test_mask_table_single_run(full_report: Path) -> None:
    table = table_with_caption(parse_html(full_report / "index.html"), "mask AP")
    assert table["rows"][1:] == _expected_rows(MASK, COLUMNS)
    assert not any(bold for _, bold, _ in table["rows"][1])


def test_cocolt_columns_when_known(runs_copy: dict[str, Path], tmp_path: Path) -> None:
    path = runs_copy["drcl"] / "eval" / "metrics_bbox.json"
    metrics = json.loads(path.read_text())
    metrics.update(AP1=0.05, AP2=0.12, AP3=0.3, AP4=None)
    path.write_text(json.dumps(metrics))
    out = build_report(runs_copy, tmp_path / "out")
    table = table_with_caption(parse_html(out / "index.html"), "box AP")
    header = [c[0] for c in table["rows"][0]]
    assert header[-4:] == ["AP1", "AP2", "AP3", "AP4"]
    base, drcl = (dict(zip(header, row, strict=True)) for row in table["rows"][1:])
    assert base["AP1"] == ("n/a", False, "")
    assert drcl["AP1"] == ("5.0", False, "") and drcl["AP4"] == ("n/a", False, "")


def test_rarest_table_order_and_values(full_report: Path) -> None:
    table = table_with_caption(parse_html(full_report / "index.html"), "6 rarest classes")
    header = [c[0] for c in table["rows"][0]]
    assert header == ["class", "id", "group", "train inst.", "box AP baseline", "box AP drcl"]
    by_count = sorted(CLASSES, key=lambda c: CLASSES[c][2])
    assert [int(row[1][0]) for row in table["rows"][1:]] == by_count
    for row in table["rows"][1:]:
        cid = int(row[1][0])
        assert row[0][0] == CLASSES[cid][0] and row[3][0] == str(CLASSES[cid][2])
        aps = [PER_CLASS[n][cid] for n in ("baseline", "drcl")]
        shown = [None if a is None else round(a * 100, 1) for a in aps]
        for cell, v in zip(row[4:], shown, strict=True):
            assert cell[0] == ("n/a" if v is None else f"{v:.1f}")
            assert not cell[1]  # single runs: no best mark without a stated seed noise


def test_rarest_order_without_counts_uses_groups() -> None:
    classes = {c: {"group": g} for c, g in [(1, "f"), (2, "r"), (3, "c"), (4, "r"), (5, "")]}
    assert rarest_order(classes, None) == [2, 4, 3, 1, 5]
    assert rarest_order(classes, {1: 0, 2: 9, 3: 4}) == [1, 4, 5, 3, 2]  # unknown count = 0


def test_best_flags_and_delta_edge_cases() -> None:
    assert best_flags([None, None], 0.0) == [False, False]
    assert best_flags([1.04, 1.0, None], 0.0) == [False, False, False]  # tie as shown
    assert best_flags([0.0, -0.0], 0.0) == [False, False]  # a tie at 0.0 is no best
    assert best_flags([3.0, 1.0], None) == [False, False]  # no stated noise: no ranking
    assert best_flags([3.0, 1.0], 1.0) == [True, False]
    assert best_flags([3.0, 2.0], 1.0) == [False, False]  # margin 1.0 is not beyond 1.0
    assert best_flags([3.0], 0.0) == [False]  # one value: nothing to beat
    assert shown_delta(27.1, 25.3, 1.0) == "+1.8" and shown_delta(39.0, 40.0, 1.0) == ""
    assert shown_delta(27.1, 25.3, None) == ""
    assert fmt_delta(25.31, 25.34) == "+0.0"  # 25.3 vs 25.3 as shown, not "-0.0"
    assert fmt_delta(24.96, 25.04) == "+0.0"  # 25.0 vs 25.0 as shown
    assert fmt_delta(25.04, 24.96) == "+0.0"
    assert fmt_delta(25.26, 25.14) == "+0.2"  # 25.3 - 25.1, not round(0.12) = 0.1
    assert fmt_delta(None, 1.0) == "" and fmt_delta(1.0, None) == ""
    assert fmt_delta(20.0, 25.3) == "-5.3"


def test_metric_value_scale_and_missing() -> None:
    fractions = {"AP": 0.25, "AP50": 0.5, "APr": -1, "APc": None, "APf": math.nan}
    assert metric_value(fractions, "AP") == 25.0
    assert [metric_value(fractions, k) for k in ("APr", "APc", "APf", "AP1")] == [None] * 4
    percents = {"AP": 25.0, "AP50": 0.5}  # a value above 1: the file is in percent
    assert metric_value(percents, "AP") == 25.0 and metric_value(percents, "AP50") == 0.5
    assert metric_value({"AP": True}, "AP") is None
