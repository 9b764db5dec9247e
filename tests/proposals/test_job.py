"""ProposalsJob: the proposal stage's one reading of the root config, and the detector's job it
derives (derive_config), checked by hand against configs/pretrain/demo.yaml."""

import json
from pathlib import Path

import pytest

from drcl.cli.main import main
from drcl.config import ConfigError, load_config
from drcl.proposals.job import AGNOSTIC_ANN, ProposalsJob, detector_changes, detector_dir
from drcl.proposals.runner import run_proposals

DEMO = Path(__file__).resolve().parents[2] / "configs" / "pretrain" / "demo.yaml"


def test_gt_job_of_the_demo_recipe():
    job = ProposalsJob.from_config(load_config(DEMO), "out/p.json", clean_detector=True)
    assert job.data.train_ann == "work/demo/data/annotations/train.json"
    assert (job.proposals.source, job.proposals.top_n, job.proposals.label_iou) == ("gt", 50, 0.5)
    assert job.out == Path("out/p.json") and job.clean_detector and job.detector is None


def test_detector_job_is_derived_from_the_pretraining_recipe():
    cfg = load_config(DEMO, ["pretrain.proposals.source=detector", "pretrain.proposals.top_n=7"])
    job = ProposalsJob.from_config(cfg, "out/p.json")
    det = job.detector
    assert det.work_dir == detector_dir("out/p.json") == Path("out/p.detector")
    assert det.data.train_ann == str(Path("out/p.detector") / AGNOSTIC_ANN)
    assert det.data.train_images == "work/demo/data/train"  # the pre-training images
    # the budget: detector_iters (200, schema default) iterations, one checkpoint at the end
    assert (det.train.max_iters, det.train.checkpoint_every) == (200, 200)
    assert (det.train.batch_size, det.train.lr) == (8, 0.02)  # the pre-training recipe's
    ft = det.finetune
    assert (ft.arch, ft.loss, ft.rfs) == ("faster_rcnn", "ce", False)
    assert (ft.score_thresh, ft.nms_thresh, ft.detections_per_img) == (0.05, 0.5, 7)
    assert (det.stage, det.resume, det.evaluate) == ("proposal_detector", True, False)
    assert cfg.data.train_ann == "work/demo/data/annotations/train.json"  # cfg left alone
    epochs = load_config(
        DEMO, ["pretrain.proposals.source=detector", "pretrain.proposals.detector_epochs=3"]
    )
    det = ProposalsJob.from_config(epochs, "p.json").detector
    assert (det.train.max_iters, det.train.epochs, det.train.checkpoint_every) == (0, 3, 0)


def test_bad_values_are_named():
    with pytest.raises(ConfigError, match="source=file needs pretrain.proposals.file"):
        ProposalsJob.from_config(load_config(DEMO, ["pretrain.proposals.source=file"]), "p.json")
    with pytest.raises(ConfigError, match=r"^data\.train_ann is required"):
        ProposalsJob.from_config(load_config(None), "p.json")
    cfg = load_config(DEMO)
    cfg.pretrain.proposals.detector_iters = 0  # set in code: the loader's range check is passed
    with pytest.raises(ConfigError, match="detector_iters >= 1"):
        detector_changes(cfg.pretrain.proposals, "a.json")
    cfg.pretrain.proposals.source = "detector"
    with pytest.raises(ConfigError, match="detector_iters >= 1"):
        ProposalsJob.from_config(cfg, "p.json")


def test_runner_on_a_job_equals_the_command_line(tiny_overrides, tmp_path):
    cli_out, job_out = tmp_path / "cli.json", tmp_path / "job.json"
    assert main(["proposals", str(DEMO), "--out", str(cli_out), *tiny_overrides]) == 0
    path = run_proposals(ProposalsJob.from_config(load_config(DEMO, tiny_overrides), job_out))
    assert path == job_out
    records = json.loads(job_out.read_text())
    assert records and records == json.loads(cli_out.read_text())
