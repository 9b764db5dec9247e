"""The report document model rendered to Markdown and HTML, hand-checked on a tiny report."""

from __future__ import annotations

from drcl.report.doc import (
    NOT_AVAILABLE,
    Cell,
    Figure,
    Note,
    Section,
    Table,
    Text,
    render_html,
    render_markdown,
)


def _sections() -> list[Section]:
    table = Table(
        ["run", "AP"],
        [[Cell("a|b"), Cell("12.5", bold=True, delta="+1.0")], [Cell("c"), Cell("11.5")]],
        caption="box AP",
    )
    return [
        Section("res", "Results", [table, Figure("plots/f.png", "curve"), Text("plain")]),
        Section("miss", "Missing", [Note("no run has eval/metrics_bbox.json")]),
    ]


def test_markdown_hand_checked():
    md = render_markdown("Report", "intro", _sections())
    assert md.splitlines() == [
        "# Report",
        "",
        "intro",
        "",
        "- [Results](#res)",
        "- [Missing](#miss)",
        "",
        '<a id="res"></a>',
        "",
        "## Results",
        "",
        "*box AP*",
        "",
        "| run | AP |",
        "|:---|---:|",
        "| a\\|b | **12.5** (+1.0) |",
        "| c | 11.5 |",
        "",
        "![curve](plots/f.png)",
        "",
        "plain",
        "",
        "",
        '<a id="miss"></a>',
        "",
        "## Missing",
        "",
        f"> {NOT_AVAILABLE}: no run has eval/metrics_bbox.json",
    ]


def test_html_holds_the_same_content():
    html = render_html("Report", "intro", _sections())
    assert html.startswith("<!DOCTYPE html>") or "<html" in html
    for piece in ("Report", "box AP", "12.5", "+1.0", 'src="plots/f.png"', "plain", NOT_AVAILABLE):
        assert piece in html, piece
    assert html.index('id="res"') < html.index('id="miss"')
