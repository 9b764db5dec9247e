"""MetricLogger: one json line per log call, non-finite numbers as null, nothing off rank 0."""

from __future__ import annotations

import math

from drcl.engine.logging import MetricLogger
from drcl.utils.run_dir import RunDir, read_metrics


def test_one_line_per_record_and_non_finite_as_null(tmp_path):
    log = MetricLogger(tmp_path, total=3)
    log.log({"iter": 1, "loss": 0.5, "lr": 0.01})
    log.log({"iter": 2, "loss": math.nan, "loss_hcl": math.inf, "note": "x"})
    log.close()
    assert read_metrics(RunDir(tmp_path).metrics) == [
        {"iter": 1, "loss": 0.5, "lr": 0.01},
        {"iter": 2, "loss": None, "loss_hcl": None, "note": "x"},
    ]


def test_appends_to_an_existing_log(tmp_path):
    for it in (1, 2):
        log = MetricLogger(tmp_path, total=2, initial=it - 1)
        log.log({"iter": it, "loss": float(it)})
        log.close()
    assert [r["iter"] for r in read_metrics(RunDir(tmp_path).metrics)] == [1, 2]


def test_disabled_logger_writes_nothing(tmp_path):
    log = MetricLogger(tmp_path, total=1, enabled=False)
    log.log({"iter": 1, "loss": 1.0})
    log.step()
    log.close()
    assert list(tmp_path.iterdir()) == []
