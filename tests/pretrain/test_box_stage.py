"""2DRCL -> box-domain stage -> fine-tuning on the tiny demo data: what each stage loads and
writes (the load table, cost.json), and that the box stage resumes."""

import json
import re

import pytest

from drcl.config import load_config

COST_KEYS = {
    "stage",
    "init",
    "wall_time_s",
    "iterations",
    "images_seen",
    "images_per_s",
    "peak_rss_bytes",
    "peak_cuda_bytes",
    "device",
    "device_name",
    "world_size",
    "torch_version",
}


def load_table_counts(text: str) -> dict[str, tuple[int, int, int]]:
    """``{module: (loaded, random, unexpected)}`` from the printed load table."""
    rows = re.findall(r"^(\S+)\s+(\d+)\s+(\d+)\s+(\d+)$", text, flags=re.M)
    return {m: (int(a), int(b), int(c)) for m, a, b, c in rows}


def test_2drcl_then_box_stage_then_finetune(tiny_overrides, fast_overrides, tmp_path, caplog):
    from drcl.finetune.job import FinetuneJob
    from drcl.finetune.runner import train_detector
    from drcl.pretrain.job import PretrainJob
    from drcl.pretrain.runner import run_pretrain

    fast = [*tiny_overrides, *fast_overrides, "finetune.rpn_post_nms_top_n_train=50"]
    image_only = ["pretrain.lcl.weight=0", "pretrain.ar.weight=0", "pretrain.sr.weight=0"]
    first = run_pretrain(
        PretrainJob.from_config(
            load_config("configs/pretrain/demo.yaml", [*fast, *image_only]), tmp_path / "pre"
        )
    )
    box_over = [*fast, f"pretrain.box.init={first}", "pretrain.box.rois_per_image=16"]
    box_cfg = load_config("configs/pretrain/demo_box.yaml", box_over)
    caplog.set_level("INFO", logger="drcl")
    caplog.clear()
    box = run_pretrain(PretrainJob.from_config(box_cfg, tmp_path / "box"))
    # the box stage loaded the 2DRCL backbone (its FPN and box head too)
    counts = load_table_counts(caplog.text)
    assert counts["backbone.body"][0] > 0 and counts["backbone.body"][1] == 0
    assert counts["rpn.head"][0] == 0  # 2DRCL has no RPN

    ft_cfg = load_config("configs/finetune/demo.yaml", [*fast, "model.norm=frozen_bn"])
    caplog.clear()
    train_detector(FinetuneJob.from_config(ft_cfg, tmp_path / "ft", init=str(box)))
    counts = load_table_counts(caplog.text)
    for part in ("backbone.body", "backbone.fpn", "rpn.head", "roi_heads.box_head"):
        loaded, random, unexpected = counts[part]
        assert loaded > 0 and random == 0 and unexpected == 0, (part, counts[part])
    assert counts["roi_heads.box_predictor"] == (0, 4, 0)  # cls_score + bbox_pred, fresh

    for stage, run in (("pretrain", "pre"), ("box", "box"), ("finetune", "ft")):
        cost = json.loads((tmp_path / run / "cost.json").read_text())
        assert set(cost) == COST_KEYS and cost["stage"] == stage
        assert (cost["iterations"], cost["images_seen"], cost["world_size"]) == (2, 8, 1)
        assert cost["wall_time_s"] > 0 and cost["peak_rss_bytes"] > 10 * 2**20
        assert cost["peak_cuda_bytes"] is None and cost["device"] == "cpu"
    assert json.loads((tmp_path / "ft" / "cost.json").read_text())["init"] == str(box)
    assert json.loads((tmp_path / "box" / "cost.json").read_text())["init"] == str(first)


@pytest.mark.slow  # the engine's resume: tests/engine/test_cost.py, test_trainer.py
def test_box_stage_resumes_and_keeps_adding_cost(tiny_overrides, fast_overrides, tmp_path):
    from drcl.pretrain.job import PretrainJob
    from drcl.pretrain.runner import run_pretrain

    over = [*tiny_overrides, *fast_overrides, "pretrain.box.init=null"]
    over += ["finetune.rpn_post_nms_top_n_train=50", "pretrain.box.rois_per_image=16"]
    # the per-iteration DRB stream is tied to max_iters (it refuses an extended schedule), so
    # this extension of a finished run uses the epoch sampler
    over += ["train.checkpoint_every=1", "pretrain.drb.alpha_update=epoch"]
    run_pretrain(
        PretrainJob.from_config(load_config("configs/pretrain/demo_box.yaml", over), tmp_path)
    )
    first = json.loads((tmp_path / "cost.json").read_text())
    over[over.index("train.max_iters=2")] = "train.max_iters=3"
    run_pretrain(
        PretrainJob.from_config(
            load_config("configs/pretrain/demo_box.yaml", over), tmp_path, resume=True
        )
    )
    again = json.loads((tmp_path / "cost.json").read_text())
    assert (again["iterations"], again["images_seen"]) == (3, 12)
    assert again["wall_time_s"] > first["wall_time_s"]
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows] == [1, 2, 3]
    assert {"loss_box_contrast", "loss_box_reg", "loss_objectness"} <= set(rows[-1])


def test_unknown_stage_is_refused_with_the_choices():
    from drcl.config import ConfigError

    with pytest.raises(ConfigError, match="pretrain.stage.*allowed: image, box"):
        load_config("configs/pretrain/demo_box.yaml", ["pretrain.stage=boxes"])
