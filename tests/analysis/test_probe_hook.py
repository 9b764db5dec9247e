"""``pretrain.probe.every``: the probe hook logs at the right iterations, restores the train mode
and leaves training unchanged."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torchvision.models import resnet18

from drcl.cli.main import main
from drcl.config import load_config
from drcl.pretrain.probe_hook import ProbeHook, probe_row
from drcl.utils.run_dir import read_metrics

from .test_probe import write_split


def test_hook_schedule_and_modes(tmp_path):
    train = write_split(tmp_path, "train", 4, 0)
    val = write_split(tmp_path, "tune", 3, 1)
    model = resnet18()
    model.train()
    hook = ProbeHook(model, 3, 7, tmp_path, *train, *val, size=32)
    hook.before_train()
    rng = torch.get_rng_state()
    for it in range(1, 8):
        hook.after_step(it, it / 7)
    hook.after_train()
    assert torch.equal(torch.get_rng_state(), rng)  # the probe draws no random number
    assert model.training and model.layer4.training
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["iter"] for r in rows] == [3, 6, 7]  # every 3 and the last
    for r in rows:
        assert 0 <= r["probe/ncm/all"] <= 100 and 0 <= r["probe/knn/rare"] <= 100
        assert r["probe/std"] > 0 and r["probe/erank"] >= 1
    readings = [{k: v for k, v in r.items() if k != "iter"} for r in rows]
    assert readings[0] == readings[1] == readings[2]  # weights unchanged: same readings
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    with pytest.raises(ValueError, match="pretrain.probe.every: got 0"):
        ProbeHook(model, 0, 7, tmp_path, *train, *val)


def test_probe_row_keys_and_empty_groups():
    result = {
        "ncm": {"all": 50.0, "rare": None},
        "knn": {"all": 40.0, "rare": None},
        "std": 0.01,
        "erank": 3.0,
    }
    assert probe_row(5, result) == {
        "iter": 5,
        "probe/ncm/all": 50.0,
        "probe/ncm/rare": None,
        "probe/knn/all": 40.0,
        "probe/knn/rare": None,
        "probe/std": 0.01,
        "probe/erank": 3.0,
    }


PROBE = ["pretrain.probe.every=2", "pretrain.probe.size=32"]


def _pretrain(overrides, work) -> None:
    argv = ["pretrain", "configs/pretrain/demo.yaml", *overrides, "--work-dir", str(work)]
    assert main(argv) == 0


def test_pretraining_logs_probe_rows(tiny_overrides, tmp_path):
    _pretrain([*tiny_overrides, "train.max_iters=3", *PROBE], tmp_path / "on")
    rows = read_metrics(tmp_path / "on" / "metrics.jsonl")
    probed = [r for r in rows if "probe/ncm/all" in r]
    assert [r["iter"] for r in probed] == [2, 3]
    assert {"probe/knn/rare", "probe/std", "probe/erank"} <= set(probed[0])
    assert [r["iter"] for r in rows if "loss" in r] == [1, 2, 3]  # the trainer's rows as before


@pytest.mark.slow  # two runs; test_hook_schedule_and_modes checks the mechanism (RNG, modes)
def test_probe_changes_nothing_in_training(tiny_overrides, tmp_path):
    over = [*tiny_overrides, "train.max_iters=3"]
    _pretrain(over, tmp_path / "off")
    _pretrain([*over, *PROBE], tmp_path / "on")
    a = load_file(tmp_path / "off" / "pretrained.safetensors")
    b = load_file(tmp_path / "on" / "pretrained.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_probe_config_checks(tiny_overrides, tmp_path):
    cfg = load_config("configs/pretrain/demo.yaml", ["pretrain.probe.readout=roi"])
    assert cfg.pretrain.probe.every == 0 and str(cfg.pretrain.probe.readout) == "roi"
    with pytest.raises(ValueError, match="readout"):
        load_config("configs/pretrain/demo.yaml", ["pretrain.probe.readout=C6"])
    argv = ["pretrain", "configs/pretrain/demo.yaml", *tiny_overrides, "train.max_iters=1",
            "pretrain.probe.every=1", f"pretrain.probe.ann={tmp_path / 'x.json'}",
            "--work-dir", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) != 0  # ann without images
