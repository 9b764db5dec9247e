"""cost.json: written by the engine at every checkpoint, exact counts, totals across resumes."""

import json
import resource

import pytest
import torch

from drcl.engine import cost as cost_mod
from drcl.engine.cost import CostMeter, device_name

from .toy import make_trainer


def test_engine_writes_cost_json(tmp_path):
    tr = make_trainer(tmp_path, max_iters=6, overrides=["train.batch_size=4"])
    tr.fit()
    cost = json.loads((tmp_path / "cost.json").read_text())
    assert (cost["iterations"], cost["images_seen"], cost["world_size"]) == (6, 24, 1)
    assert cost["images_per_s"] == pytest.approx(24 / cost["wall_time_s"], rel=1e-2)
    own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert 0 < cost["peak_rss_bytes"] <= own_peak
    assert cost["peak_cuda_bytes"] is None and cost["device"] == "cpu"
    assert cost["torch_version"] == torch.__version__


def test_wall_time_adds_up_across_a_resume(tmp_path, monkeypatch):
    clock = iter(float(t) for t in range(0, 1000, 10))  # every reading is 10 s later
    monkeypatch.setattr(cost_mod.time, "perf_counter", lambda: next(clock))
    meter = CostMeter(torch.device("cpu"), world_size=2, images_per_step=8, info={"stage": "x"})
    meter.start(0)  # t = 0
    state = meter.state_dict()  # t = 10: 10 s trained
    resumed = CostMeter(torch.device("cpu"), 2, 8)
    resumed.load_state_dict(state)
    resumed.start(5)  # t = 20
    record = resumed.record(7)  # t = 30: 10 s earlier + 10 s now
    assert record["wall_time_s"] == 20.0 and record["images_seen"] == 56
    assert record["images_per_s"] == pytest.approx(56 / 20)
    assert record["world_size"] == 2 and "stage" not in record
    assert meter.record(1)["stage"] == "x"


def test_resumed_trainer_restores_cost_state(tmp_path):
    part = make_trainer(tmp_path, max_iters=3)
    part.fit()
    resumed = make_trainer(tmp_path, max_iters=6)
    assert resumed.resume()
    assert resumed.hooks[0].meter.wall_s > 0  # the CostHook's state came back
    resumed.fit()
    assert json.loads((tmp_path / "cost.json").read_text())["iterations"] == 6


def test_cpu_device_name_names_the_processor_and_cores():
    import os

    name = device_name(torch.device("cpu"))
    assert name.endswith(f"({os.cpu_count()} cores)") and len(name) > len(" (2 cores)")


@pytest.mark.skipif(not cost_mod.reset_peak_rss(), reason="no /proc/self/clear_refs (not Linux)")
def test_peak_rss_is_the_runs_own_when_runs_share_a_process(tmp_path):
    """drcl ablate / drcl demo run many trainings in one process: a small run after a large
    allocation reports its own peak, not the process's largest so far."""
    import numpy as np

    big = np.ones(1_500_000_000 // 8)  # 1.5 GB touched: the process peak is now far above
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    del big
    tr = make_trainer(tmp_path, max_iters=2)
    tr.fit()
    run_peak = json.loads((tmp_path / "cost.json").read_text())["peak_rss_bytes"]
    assert 0 < run_peak < peak_before - 1_000_000_000


def test_peak_rss_survives_a_resume():
    meter = CostMeter(torch.device("cpu"), 1, 8)
    meter.load_state_dict({"wall_s": 1.0, "peak_rss": 10**15})  # an earlier session's peak
    meter.start(3)
    assert meter.record(4)["peak_rss_bytes"] == 10**15
    assert meter.state_dict()["peak_rss"] == 10**15
