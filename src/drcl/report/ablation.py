"""The ablation section of a report, read from ``drcl ablate``'s ``results.json``.

The same two tables as ``ablation.md``: ``mean ± std`` per row and metric, and the paired
differences to the baseline with their 95% intervals (bold: the interval excludes 0).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from drcl.ablation.results import METRICS
from drcl.ablation.rows import COMPONENTS
from drcl.evaluation.compare import excludes_zero
from drcl.report.doc import Block, Cell, Table, Text


def load_ablation(path: str | Path) -> dict[str, Any]:
    """``results.json`` of an ablation folder (or the file itself).

    Raises:
        ValueError: no results.json there, or it lacks ``rows``.
    """
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"--ablation {path}: no results.json (run `drcl ablate` first)")
    results = json.loads(file.read_text())
    if not isinstance(results, dict) or not isinstance(results.get("rows"), dict):
        raise ValueError(f"{file}: not an ablation results file (no 'rows')")
    return results


def _stat(s: dict[str, Any]) -> str:
    if s.get("mean") is None:
        return "n/a"
    return f"{s['mean']:.2f}" + ("" if s.get("std") is None else f" ± {s['std']:.2f}")


def _diff(d: dict[str, Any]) -> Cell:
    if d.get("mean") is None:
        return Cell("n/a")
    ci = d.get("ci95")
    text = f"{d['mean']:+.2f}" + ("" if ci is None else f" [{ci[0]:+.2f}, {ci[1]:+.2f}]")
    return Cell(text, bold=excludes_zero(ci))


def ablation_section(results: dict[str, Any]) -> list[Block]:
    """Blocks: the mean ± std table, the difference table, and how the intervals are computed."""
    rows = results["rows"]
    head = ["row", "init", *[c.upper() for c in COMPONENTS], "BOX", "seeds", *METRICS]
    body = []
    for name, e in rows.items():
        marks = ["✓" if c in e.get("components", []) else "" for c in COMPONENTS]
        marks.append("✓" if e.get("box_stage") else "")
        cells = [name, e.get("init", ""), *marks, str(len(e.get("seeds_done", [])))]
        body.append([Cell(c) for c in cells] + [Cell(_stat(e[m])) for m in METRICS])
    blocks: list[Block] = [
        Table(head, body, caption="AP points, mean ± std over seeds", left_columns=9)
    ]
    diffs = [[Cell(n)] + [_diff(e["diff_vs_baseline"][m]) for m in METRICS]
             for n, e in rows.items() if "diff_vs_baseline" in e]  # fmt: skip
    if diffs:
        caption = (
            f"difference to {results.get('baseline')} (AP points) with its 95% interval; "
            "bold: the interval excludes 0"
        )
        blocks.append(Table(["row", *[f"Δ{m}" for m in METRICS]], diffs, caption=caption))
    blocks.append(
        Text(
            f"seeds {results.get('seeds')}; intervals: {results.get('ci_method', 'n/a')}; "
            f"fine-tuning recipe sha256 {results.get('finetune_recipe_sha256', 'n/a')}"
        )
    )
    return blocks
