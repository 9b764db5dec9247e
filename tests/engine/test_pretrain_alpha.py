"""Pre-training with the per-iteration DRB alpha: what metrics.jsonl logs is what the sampler drew
each batch with, and resuming mid-epoch gives the uninterrupted run bit for bit."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from drcl.cli.main import main
from drcl.config import load_config
from drcl.engine.distributed import DistInfo
from drcl.pretrain.loop import build_pretrain_data
from drcl.sampling.drb import DynamicRebalancingSampler, alpha_at
from drcl.utils.run_dir import read_metrics

RUN = ["train.max_iters=6", "train.checkpoint_every=3", "train.keep_checkpoints=3"]


def _pretrain(work, overrides, resume=False) -> None:
    argv = ["pretrain", "configs/pretrain/demo.yaml", "--work-dir", str(work), *overrides]
    assert main(argv + (["--resume"] if resume else [])) == 0


def test_logged_alpha_is_the_alpha_of_each_iterations_batch(tiny_overrides, tmp_path):
    _pretrain(tmp_path / "run", [*tiny_overrides, "train.max_iters=3"])
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    # iteration `iter` (1-based) ran on batch g = iter - 1, drawn with alpha(g / (max_iters - 1))
    assert [r["alpha"] for r in rows] == [alpha_at(g / 2, "cosine") for g in range(3)]
    assert rows[-1]["alpha"] == 1.0  # reaches alpha_end
    for r in rows:  # the mechanism figure's data: composition of the contrasted boxes
        shares = r["box_share_r"] + r["box_share_c"] + r["box_share_f"]
        assert shares == pytest.approx(1.0) and 0 < r["box_entropy"] <= 1 and r["boxes_known"] > 0


@pytest.mark.slow  # resume of the per-iteration stream: test_progressive_sampler + sigkill test
def test_mid_epoch_resume_with_per_iteration_alpha_is_exact(tiny_overrides, tmp_path):
    over = [*tiny_overrides, *RUN]
    _pretrain(tmp_path / "ref", over)
    rows = read_metrics(tmp_path / "ref" / "metrics.jsonl")
    assert [r["iter"] for r in rows] == [1, 2, 3, 4, 5, 6]
    want = [alpha_at(g / 5, "cosine") for g in range(6)]
    assert [r["alpha"] for r in rows] == want

    # resume from the mid-epoch checkpoint at iteration 3 (an epoch here is 20 iterations)
    work = tmp_path / "resumed"
    shutil.copytree(tmp_path / "ref", work)
    for p in work.glob("ckpt_0000006.pt*"):
        p.unlink()
    (work / "pretrained.safetensors").unlink()
    _pretrain(work, over, resume=True)
    a = load_file(tmp_path / "ref" / "pretrained.safetensors")
    b = load_file(work / "pretrained.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    resumed = read_metrics(work / "metrics.jsonl")
    assert [r["alpha"] for r in resumed] == want
    assert [r["loss"] for r in resumed] == [r["loss"] for r in rows]


def test_epoch_mode_keeps_one_alpha_per_sampler_epoch(tiny_overrides, tmp_path):
    over = [*tiny_overrides, "train.max_iters=3", "pretrain.drb.alpha_update=epoch"]
    cfg = load_config(None, over)
    data = build_pretrain_data(cfg.data, cfg.train, cfg.pretrain, tmp_path, DistInfo())
    assert isinstance(data.sampler, DynamicRebalancingSampler)
    assert data.schedule.alpha_per == "epoch"
    it = data.batches()  # the epoch begins at iteration 0: alpha(0 / 3) for all its batches
    for _ in range(3):
        next(it)
        assert data.logs()["alpha"] == alpha_at(0.0, "cosine") == data.sampler.alpha
