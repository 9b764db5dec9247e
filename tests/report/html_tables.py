"""A small parser of the report's HTML: tables (text, bold, delta per cell), images, h2."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path


class TableParser(HTMLParser):
    """Collects every <table>: caption, and rows of (text, bold, delta) per cell.

    Attributes:
        tables: list of {"caption": str, "rows": [[(text, bold, delta), ...], ...]}; the header
            row is the first row.
        images: every <img src>.
        headings: text of every <h2>.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self.images: list[str] = []
        self.headings: list[str] = []
        self._cell: list[str] | None = None
        self._bold = self._in_delta = self._in_caption = self._in_h2 = False
        self._delta: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append({"caption": "", "rows": []})
        elif tag == "tr":
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell, self._bold, self._delta = [], False, []
        elif tag == "b" and self._cell is not None:
            self._bold = True
        elif tag == "span" and "delta" in (attrs.get("class") or ""):
            self._in_delta = True
        elif tag == "caption":
            self._in_caption = True
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "h2":
            self._in_h2 = True
            self.headings.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            delta = "".join(self._delta).strip("()")
            self.tables[-1]["rows"][-1].append(("".join(self._cell), self._bold, delta))
            self._cell = None
        elif tag == "span":
            self._in_delta = False
        elif tag == "caption":
            self._in_caption = False
        elif tag == "h2":
            self._in_h2 = False

    def handle_data(self, data: str) -> None:
        if self._in_delta:
            self._delta.append(data)
        elif self._cell is not None:
            self._cell.append(data)
        elif self._in_caption:
            self.tables[-1]["caption"] += data
        elif self._in_h2:
            self.headings[-1] += data


def parse_html(path: Path) -> TableParser:
    parser = TableParser()
    parser.feed(path.read_text())
    return parser


def table_with_caption(parser: TableParser, start: str) -> dict:
    """The one table whose caption starts with ``start``."""
    found = [t for t in parser.tables if t["caption"].startswith(start)]
    assert len(found) == 1, [t["caption"] for t in parser.tables]
    return found[0]
