"""AttentionJob: the attention maps' one reading of the root config, checked by hand against
configs/finetune/demo.yaml; the runner on a job writes what ``drcl analyze attention`` writes."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from drcl.analysis.job import AttentionJob
from drcl.analysis.runner import run_attention
from drcl.cli.main import main
from drcl.config import ConfigError, load_config
from drcl.finetune.runner import detector_for

from .test_analysis_cli import attention_setup

DEMO = Path(__file__).resolve().parents[2] / "configs" / "finetune" / "demo.yaml"


def test_attention_job_of_the_demo_recipe():
    job = AttentionJob.from_config(load_config(DEMO), {"a": "a.safetensors"}, [3, 1], "out")
    assert (job.ann, job.image_dir) == ("work/demo/data/annotations/val.json", "work/demo/data/val")
    assert (job.model.fpn_channels, job.model.box_head_dim, job.data.min_size) == (64, 256, 128)
    assert job.finetune.arch == "faster_rcnn" and job.image_ids == (3, 1)
    assert (job.layer, job.device, job.category_id, job.out) == (
        "backbone.fpn",
        "cpu",
        None,
        Path("out"),
    )
    given = AttentionJob.from_config(
        load_config(None), {"a": "a"}, [1], "o", ann="g.json", image_dir="im"
    )
    assert (given.ann, given.image_dir) == ("g.json", "im")  # no data.val_* needed then


def test_bad_values_are_named():
    cfg = load_config(DEMO)
    with pytest.raises(ConfigError, match="at least one checkpoint and one image"):
        AttentionJob.from_config(cfg, {}, [1], "o")
    with pytest.raises(ConfigError, match="at least one checkpoint and one image"):
        AttentionJob.from_config(cfg, {"a": "a"}, [], "o")
    with pytest.raises(ConfigError, match=r"^data\.val_ann is required"):
        AttentionJob.from_config(load_config(None), {"a": "a"}, [1], "o")
    with pytest.raises(ConfigError, match=r"^data\.val_images is required"):
        AttentionJob.from_config(load_config(None), {"a": "a"}, [1], "o", ann="g.json")


def test_runner_on_a_job_equals_the_command_line(tmp_path):
    cfg_path = attention_setup(tmp_path)
    torch.manual_seed(0)
    ckpt = tmp_path / "m0.safetensors"
    save_file(detector_for(load_config(cfg_path), 3).state_dict(), ckpt)
    argv = ["analyze", "attention", "--config", str(cfg_path), "--ckpt", f"base={ckpt}",
            "--images", "1", "--out", str(tmp_path / "cli")]  # fmt: skip
    assert main(argv) == 0
    job = AttentionJob.from_config(
        load_config(cfg_path), {"base": str(ckpt)}, [1], tmp_path / "job", config_name=str(cfg_path)
    )
    assert run_attention(job) == tmp_path / "job" / "attention.png"
    cli, ours = (np.load(tmp_path / d / "attention.npz") for d in ("cli", "job"))
    np.testing.assert_array_equal(cli["base/1"], ours["base/1"])
    meta = [json.loads((tmp_path / d / "attention.json").read_text()) for d in ("cli", "job")]
    assert meta[0] == meta[1]
