"""Run logs: ``metrics.jsonl`` (one json line per logging step), TensorBoard, tqdm on rank 0."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tqdm import tqdm

from drcl.utils.run_dir import METRICS


class MetricLogger:
    """Writes scalar logs; a no-op on ranks other than 0."""

    def __init__(self, work_dir: str | Path, total: int, initial: int = 0, enabled: bool = True):
        self.enabled = enabled
        self._jsonl = None
        self._tb = None
        self._bar = None
        if not enabled:
            return
        work_dir = Path(work_dir)
        self._jsonl = open(work_dir / METRICS, "a", buffering=1)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(work_dir / "tb"))
        except ImportError:  # tensorboard is a dependency; stay usable without it
            self._tb = None
        self._bar = tqdm(total=total, initial=initial, dynamic_ncols=True, mininterval=1.0)

    def step(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in record.items()
        }
        self._jsonl.write(json.dumps(clean) + "\n")
        it = int(record["iter"])
        if self._tb is not None:
            for k, v in record.items():
                if k != "iter" and isinstance(v, int | float):
                    self._tb.add_scalar(f"train/{k}", v, it)
        if self._bar is not None:
            shown = {
                k: f"{v:.4g}" for k, v in record.items() if k.startswith("loss") and v is not None
            }
            self._bar.set_postfix(shown, refresh=False)

    def close(self) -> None:
        for h in (self._jsonl, self._tb, self._bar):
            if h is not None:
                h.close()
