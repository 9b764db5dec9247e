"""The cost table (the paper's "VRAM / training time / AP" comparison), from ``cost.json``.

One row per method. A fine-tuning run's ``cost.json`` names the weights it started from
(``init``); the folder holding them is the pre-training run, whose own ``cost.json`` may name an
earlier stage (the box-domain stage names its 2DRCL checkpoint). The row adds up that chain:

- pre-training: the stages in order (``pretrain -> box``); memory = the highest peak of the
  chain (CUDA ``max_memory_allocated`` on GPU, else the process's peak RSS, marked ``RSS``);
  time = the sum of the stages' wall times; images/s = images seen / time over the chain;
- fine-tuning: its wall time; AP and APr (box) from its evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drcl.engine.cost import COST_FILE
from drcl.report.doc import Block, Cell, Note, Table
from drcl.report.runs import RunInfo, metric_value
from drcl.utils.io import read_json

MAX_CHAIN = 8  # stages followed through ``init`` (guards against a loop of files)
PRETRAIN_STAGES = ("pretrain", "box")


@dataclass
class CostRow:
    """One method: its pre-training chain, the fine-tuning run and the box metrics."""

    name: str
    pretrain: list[dict[str, Any]] = field(default_factory=list)  # cost records, first stage first
    finetune: dict[str, Any] | None = None
    ap: float | None = None
    apr: float | None = None

    @property
    def stages(self) -> str:
        return " -> ".join(str(c.get("stage", "?")) for c in self.pretrain) or "none"

    def memory(self) -> tuple[float | None, str]:
        """(peak GiB, "VRAM" | "RSS") over the pre-training chain, else of the fine-tuning."""
        recs = self.pretrain or ([self.finetune] if self.finetune else [])
        cuda = [c["peak_cuda_bytes"] for c in recs if c.get("peak_cuda_bytes")]
        if cuda:
            return max(cuda) / 2**30, "VRAM"
        rss = [c["peak_rss_bytes"] for c in recs if c.get("peak_rss_bytes")]
        return (max(rss) / 2**30, "RSS") if rss else (None, "")

    def pretrain_seconds(self) -> float | None:
        return sum(c.get("wall_time_s") or 0.0 for c in self.pretrain) if self.pretrain else None

    def pretrain_images_per_s(self) -> float | None:
        secs = self.pretrain_seconds()
        images = sum(c.get("images_seen") or 0 for c in self.pretrain)
        return images / secs if secs else None


def read_cost(run_dir: Path) -> dict[str, Any] | None:
    """``run_dir/cost.json`` as a dict, or None when missing or unreadable."""
    path = Path(run_dir) / COST_FILE
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def pretrain_chain(init: str | None) -> list[dict[str, Any]]:
    """Cost records of the pre-training stages behind the weights ``init``, first stage first."""
    chain: list[dict[str, Any]] = []
    seen: set[Path] = set()
    while init and len(chain) < MAX_CHAIN:
        run_dir = Path(init).resolve().parent
        cost = read_cost(run_dir)
        if run_dir in seen or cost is None or cost.get("stage") not in PRETRAIN_STAGES:
            break
        seen.add(run_dir)
        chain.insert(0, cost)
        init = cost.get("init")
    return chain


def cost_row(run: RunInfo) -> CostRow | None:
    """The row of one run folder, or None when it has no ``cost.json``."""
    cost = read_cost(run.path)
    if cost is None:
        return None
    if cost.get("stage") in PRETRAIN_STAGES:
        return CostRow(run.name, [*pretrain_chain(cost.get("init")), cost])
    box = run.evals.get("bbox", {})
    return CostRow(
        run.name,
        pretrain_chain(cost.get("init")),
        cost,
        metric_value(box, "AP"),
        metric_value(box, "APr"),
    )


def fmt_seconds(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "n/a"
    if s < 120:
        return f"{s:.0f} s"
    return f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def row_cells(row: CostRow) -> list[str]:
    """The shown values, in the order of :data:`HEADER`."""
    mem, kind = row.memory()
    ips = row.pretrain_images_per_s()
    return [
        row.name,
        row.stages,
        "n/a" if mem is None else f"{mem:.2f} {kind}",
        fmt_seconds(row.pretrain_seconds()) if row.pretrain else "-",
        "-" if ips is None else f"{ips:.1f}",
        fmt_seconds(row.finetune.get("wall_time_s")) if row.finetune else "-",
        "-" if row.ap is None else f"{row.ap:.1f}",
        "-" if row.apr is None else f"{row.apr:.1f}",
    ]


HEADER = [
    "method",
    "pre-training",
    "peak memory (GiB)",
    "pre-train time",
    "pre-train img/s",
    "fine-tune time",
    "AP",
    "APr",
]
CAPTION = (
    "Cost per method: memory is the highest peak of the pre-training stages (VRAM: CUDA "
    "max_memory_allocated; RSS: peak resident memory of the process on CPU), time the sum of "
    "their wall times; AP / APr (box, %) of the fine-tuned detector."
)


def cost_table(runs: list[RunInfo]) -> list[Block]:
    """The report's cost section: one row per run that has a ``cost.json``."""
    rows = [r for r in (cost_row(run) for run in runs) if r is not None]
    if not rows:
        return [Note("no run has cost.json (written by drcl pretrain / finetune since issue 13)")]
    cells = [[Cell(text) for text in row_cells(r)] for r in rows]
    return [Table(HEADER, cells, CAPTION, left_columns=2)]


def cost_text(runs: list[RunInfo]) -> str:
    """The same table as plain text (``drcl demo`` prints it)."""
    rows = [row_cells(r) for r in (cost_row(run) for run in runs) if r is not None]
    if not rows:
        return "cost: no run has cost.json"
    table = [HEADER, *rows]
    widths = [max(len(line[k]) for line in table) for k in range(len(HEADER))]

    def fmt_line(line: list[str]) -> str:
        cells = zip(line, widths, strict=True)
        return "  ".join(c.ljust(w) if k < 2 else c.rjust(w) for k, (c, w) in enumerate(cells))

    return "\n".join(fmt_line(line) for line in table)
