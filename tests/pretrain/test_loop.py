"""The shared pre-training loop: one schedule for sampler, data and trainer; the replay without
images draws what training draws; the two runners and the analysis do not reach into each
other."""

from __future__ import annotations

import ast
import math
import shutil
from pathlib import Path

import pytest
import torch

from drcl.config import load_config
from drcl.engine.distributed import DistInfo
from drcl.pretrain.loop import build_pretrain_data

SRC = Path(__file__).resolve().parents[2] / "src" / "drcl"


def _data(overrides, work, labels_only=False):
    cfg = load_config(None, overrides)
    return build_pretrain_data(cfg.data, cfg.train, cfg.pretrain, work, DistInfo(), labels_only)


def test_the_sampler_and_the_data_share_one_schedule(tiny_overrides, tmp_path):
    data = _data([*tiny_overrides, "train.max_iters=7", "train.accumulate=2"], tmp_path)
    s = data.schedule
    assert data.sampler.schedule is s
    assert (s.max_iters, s.accumulate, s.alpha_per) == (7, 2, "iteration")
    assert s.iters_per_epoch == math.ceil(len(data.dataset) / 4)  # batch 4


def test_the_replay_without_images_draws_the_training_boxes(tiny_overrides, tmp_path):
    over = [*tiny_overrides, "train.max_iters=4", "pretrain.drb.threshold=0.1"]
    train, replay = _data(over, tmp_path / "a"), _data(over, tmp_path / "b", labels_only=True)
    for batch, drawn in zip(train.batches(), replay.batches(), strict=False):
        # source=gt: every box has a class >= 1, so the padding (0) is what is not drawn
        chosen = torch.cat([row[row > 0] for row in batch.box_labels])
        assert torch.equal(chosen, drawn.labels)
        assert train.logs()["alpha"] == replay.logs()["alpha"]
        if train.position == 4:
            break
    assert replay.iteration == 4


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_runners_share_the_loop_and_the_analysis_does_not_replay_it():
    box = _imports(SRC / "pretrain" / "box" / "runner.py")
    assert "drcl.pretrain.runner" not in box
    image = _imports(SRC / "pretrain" / "runner.py")
    assert "drcl.pretrain.loop" in image
    analysis = _imports(SRC / "analysis" / "runner.py")
    internals = {"drcl.pretrain.dataset", "drcl.sampling.drb", "drcl.sampling.progressive"}
    assert not analysis & internals and "drcl.pretrain.loop" in analysis


@pytest.mark.slow  # the mechanism: test_epoch_data's RNG test; this is the end-to-end run
def test_box_stage_stopped_and_resumed_gives_the_uninterrupted_losses(tiny_overrides, tmp_path):
    """The box stage samples RPN / RoI boxes from the global RNG: a resume must leave it where
    the checkpoint put it (the DataLoader of a resumed epoch draws no seed from it)."""
    from drcl.pretrain.job import PretrainJob
    from drcl.pretrain.runner import run_pretrain
    from drcl.utils.run_dir import read_metrics

    over = [*tiny_overrides, "pretrain.box.init=null", "pretrain.box.rois_per_image=16"]
    over += ["train.max_iters=4", "train.checkpoint_every=2", "data.num_workers=0"]
    over += ["finetune.rpn_post_nms_top_n_train=50", "finetune.rpn_batch_size_per_image=32"]
    cfg = load_config("configs/pretrain/demo_box.yaml", over)
    run_pretrain(PretrainJob.from_config(cfg, tmp_path / "ref"))
    work = tmp_path / "resumed"
    shutil.copytree(tmp_path / "ref", work)
    for p in [*work.glob("ckpt_0000004.pt*"), work / "pretrained.safetensors"]:
        p.unlink()  # stopped after iteration 2's checkpoint
    run_pretrain(PretrainJob.from_config(cfg, work, resume=True))
    want = [r["loss"] for r in read_metrics(tmp_path / "ref" / "metrics.jsonl")]
    assert [r["loss"] for r in read_metrics(work / "metrics.jsonl")] == want
    assert len(want) == 4
