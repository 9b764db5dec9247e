"""Shared plotting helpers: a pyplot-free figure saved atomically as PNG."""

from __future__ import annotations

from drcl.analysis.plotting import new_figure, save_figure


def test_save_figure_writes_a_png_and_leaves_no_temp_file(tmp_path):
    fig = new_figure(2.0, 1.5)
    fig.add_subplot().plot([0, 1], [1, 0])
    out = save_figure(fig, tmp_path / "sub" / "f.png", dpi=50)
    assert out == tmp_path / "sub" / "f.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["f.png"]
