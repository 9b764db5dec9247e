"""A tiny document model for the report, rendered twice: self-contained HTML and Markdown.

Section builders return :class:`Section` objects made of blocks (text, tables, figures, notes);
the two renderers below turn the same blocks into ``index.html`` and ``README.md``, so the two
files always say the same thing. Figures are referenced by paths relative to the report folder.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

NOT_AVAILABLE = "not available"


@dataclass
class Cell:
    """One table cell: the shown text, whether it is the best of its column, a delta note."""

    text: str
    bold: bool = False
    delta: str = ""  # e.g. "+1.2" (vs the first run); empty when not applicable


@dataclass
class Table:
    header: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    left_columns: int = 1  # leading text columns (left-aligned); the rest are numbers


@dataclass
class Figure:
    src: str  # path relative to the report folder (always "/"-separated)
    caption: str


@dataclass
class Text:
    text: str


@dataclass
class Note:
    """A section (or part of one) that could not be produced, and why."""

    reason: str

    @property
    def text(self) -> str:
        return f"{NOT_AVAILABLE}: {self.reason}"


Block = Table | Figure | Text | Note


@dataclass
class Section:
    anchor: str
    title: str
    blocks: list[Block] = field(default_factory=list)


CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px auto;
       max-width: 1300px; padding: 0 16px; color: #1a1a1a; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: 4px; }
h2 { border-bottom: 1px solid #bbb; padding-bottom: 2px; margin-top: 36px; }
table { border-collapse: collapse; margin: 12px 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th { background: #f0f0f0; }
td.l, th.l { text-align: left; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: 4px; }
.delta { color: #666; font-size: 12px; margin-left: 4px; }
.delta.pos { color: #1a7f37; } .delta.neg { color: #c62828; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 6px 10px; }
figure { margin: 12px 0; display: inline-block; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figure.small img { min-width: 240px; max-width: 100%; }
figcaption { font-size: 13px; color: #444; }
nav ul { columns: 2; }
"""


def _html_cell(cell: Cell, tag: str, left: bool) -> str:
    body = html.escape(cell.text)
    if cell.bold:
        body = f"<b>{body}</b>"
    if cell.delta:
        sign = "pos" if cell.delta.startswith("+") else "neg" if cell.delta.startswith("-") else ""
        body += f'<span class="delta {sign}">({html.escape(cell.delta)})</span>'
    return f'<{tag} class="l">{body}</{tag}>' if left else f"<{tag}>{body}</{tag}>"


def _html_block(block: Block) -> str:
    if isinstance(block, Table):
        cap = f"<caption>{html.escape(block.caption)}</caption>" if block.caption else ""
        n = block.left_columns
        head = "".join(_html_cell(Cell(h), "th", k < n) for k, h in enumerate(block.header))
        rows = "".join(
            "<tr>" + "".join(_html_cell(c, "td", k < n) for k, c in enumerate(row)) + "</tr>"
            for row in block.rows
        )
        return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    if isinstance(block, Figure):
        src, cap = html.escape(block.src, quote=True), html.escape(block.caption)
        small = ' class="small"' if block.src.startswith("attention/") else ""
        return (
            f'<figure{small}><img src="{src}" alt="{cap}"><figcaption>{cap}</figcaption></figure>'
        )
    if isinstance(block, Note):
        return f'<p class="note">{html.escape(block.text)}</p>'
    return f"<p>{html.escape(block.text)}</p>"


def render_html(title: str, intro: str, sections: list[Section]) -> str:
    """A standalone HTML page: inline CSS, relative image paths, no script, no network."""
    toc = "".join(f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>",
        f"<nav><ul>{toc}</ul></nav>",
    ]
    for s in sections:
        parts.append(f'<h2 id="{s.anchor}">{html.escape(s.title)}</h2>')
        parts.extend(_html_block(b) for b in s.blocks)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_cell(cell: Cell) -> str:
    body = _md_escape(cell.text)
    if cell.bold and body:
        body = f"**{body}**"
    return f"{body} ({cell.delta})" if cell.delta else body


def _md_block(block: Block) -> str:
    if isinstance(block, Table):
        lines = [f"*{_md_escape(block.caption)}*", ""] if block.caption else []
        lines.append("| " + " | ".join(_md_escape(h) for h in block.header) + " |")
        n = block.left_columns
        lines.append("|" + "|".join([":---"] * n + ["---:"] * (len(block.header) - n)) + "|")
        lines.extend("| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows)
        return "\n".join(lines)
    if isinstance(block, Figure):
        return f"![{_md_escape(block.caption)}]({block.src})"
    if isinstance(block, Note):
        return f"> {block.text}"
    return block.text


def render_markdown(title: str, intro: str, sections: list[Section]) -> str:
    """The same content as :func:`render_html`, as GitHub-flavoured Markdown."""
    parts = [f"# {title}", "", intro, ""]
    parts.extend(f"- [{s.title}](#{s.anchor})" for s in sections)
    for s in sections:
        parts += ["", f'<a id="{s.anchor}"></a>', "", f"## {s.title}", ""]
        for b in s.blocks:
            parts += [_md_block(b), ""]
    return "\n".join(parts).rstrip() + "\n"
