"""Long-tail statistics: group tables against hand-computed counts, and the plot."""

from __future__ import annotations

import matplotlib
import matplotlib.axes
import numpy as np
import pytest
from PIL import Image

from drcl.data.coco import CocoIndex
from drcl.data.groups import GROUP_COLORS
from drcl.data.stats import (
    GroupRow,
    cocolt_table,
    default_plot_path,
    format_table,
    frequency_table,
    plot_long_tail,
)


def _long_tail_data() -> dict:
    """Category 40 ('D') in images 0..100 once each; 10 ('A') twice in images 0..11;
    20 ('B') in images 110 (twice) and 111; 30 ('C') never. 120 images."""
    anns = [(i, 40) for i in range(101)]
    anns += [(i, 10) for i in range(12) for _ in range(2)]
    anns += [(110, 20), (110, 20), (111, 20)]
    return {
        "images": [{"id": i} for i in range(120)],
        "categories": [
            {"id": c, "name": n} for c, n in [(10, "A"), (20, "B"), (30, "C"), (40, "D")]
        ],
        "annotations": [
            {"id": k, "image_id": i, "category_id": c, "bbox": [0, 0, 1, 1]}
            for k, (i, c) in enumerate(anns)
        ],
    }


def test_frequency_table_hand_computed():
    rows = frequency_table(CocoIndex(_long_tail_data()))
    # A: 12 images -> c; B: 2 images -> r; C: 0 -> r; D: 101 images -> f
    assert rows == [
        GroupRow("r", 2, 2, 3),
        GroupRow("c", 1, 12, 24),
        GroupRow("f", 1, 101, 101),
        GroupRow("all", 4, 103, 128),
    ]


def test_frequency_table_uses_json_frequency():
    data = _long_tail_data()
    for cat in data["categories"]:
        cat["frequency"] = "f"
    rows = frequency_table(CocoIndex(data))
    assert rows[:3] == [GroupRow("r", 0, 0, 0), GroupRow("c", 0, 0, 0), GroupRow("f", 4, 103, 128)]


def test_cocolt_table_hand_computed():
    rows = cocolt_table(CocoIndex(_long_tail_data()))
    # instances: A 24 -> bin 2, B 3 -> 1, C 0 -> no bin, D 101 -> 2
    assert rows == [
        GroupRow("1", 1, 2, 3),
        GroupRow("2", 2, 101, 125),
        GroupRow("3", 0, 0, 0),
        GroupRow("4", 0, 0, 0),
        GroupRow("none", 1, 0, 0),
        GroupRow("all", 4, 103, 128),
    ]
    data = _long_tail_data()
    data["categories"] = [c for c in data["categories"] if c["id"] != 30]  # C: no instance
    groups = [r.group for r in cocolt_table(CocoIndex(data))]
    assert groups == ["1", "2", "3", "4", "all"]  # every class in a bin: no 'none' row


def test_tables_match_direct_loop_on_random_data():
    rng = np.random.default_rng(0)
    cats = [{"id": c, "name": str(c)} for c in range(1, 31)]
    anns = [
        {"id": k, "image_id": int(rng.integers(300)), "category_id": int(rng.zipf(1.3) % 30 + 1)}
        for k in range(2000)
    ]
    data = {"images": [{"id": i} for i in range(300)], "categories": cats, "annotations": anns}
    index = CocoIndex(data)
    groups = index.frequency_groups()
    for row in frequency_table(index)[:3]:
        members = {c for c, g in groups.items() if g == row.group}
        mine = [a for a in anns if a["category_id"] in members]
        assert row == GroupRow(
            row.group, len(members), len({a["image_id"] for a in mine}), len(mine)
        )


def test_format_table():
    text = format_table([GroupRow("r", 2, 3, 4), GroupRow("all", 20, 300, 40000)], "group")
    assert text.splitlines() == [
        "group     classes   images  instances",
        "r               2        3          4",
        "all            20      300      40000",
    ]


def test_plot_long_tail(tmp_path, monkeypatch):
    recorded = {}
    original = matplotlib.axes.Axes.bar

    def spy(self, x, height, *args, **kwargs):
        recorded.update(height=list(height), color=list(kwargs["color"]))
        return original(self, x, height, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "bar", spy)
    out = plot_long_tail(CocoIndex(_long_tail_data()), tmp_path / "plots" / "lt.png")
    assert out == tmp_path / "plots" / "lt.png"
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (800, 350)
    assert sorted(p.name for p in out.parent.iterdir()) == ["lt.png"]  # no temp file left
    assert recorded["height"] == [101, 24, 3, 0]  # D, A, B, C: sorted descending
    g = GROUP_COLORS
    assert recorded["color"] == [g["f"], g["c"], g["r"], g["r"]]


@pytest.mark.parametrize(("name", "png"), [("train.json", "train_longtail.png")])
def test_default_plot_path(tmp_path, name, png):
    assert default_plot_path(tmp_path / name) == tmp_path / png


def test_write_stats_returns_text_and_png(tmp_path, capsys):
    import json

    from drcl.data.stats import write_stats

    data = _long_tail_data()
    data["categories"][0]["frequency"] = "f"  # one json frequency, the rest from the rule
    ann = tmp_path / "train.json"
    ann.write_text(json.dumps(data))
    text, png = write_stats(ann, echo=False)
    assert capsys.readouterr().out == ""
    assert png == tmp_path / "train_longtail.png" and png.is_file()
    lines = text.splitlines()
    assert (
        lines[1]
        == "frequency groups from json 'frequency' (1), LVIS rule on this json's image counts"
    )
    # A (12 images) now frequent: f holds A and D
    assert lines[3].split() == ["r", "2", "2", "3"]
    assert lines[5].split() == ["f", "2", "101", "125"]
