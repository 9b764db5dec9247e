"""`drcl finetune` of the ATSS recipe from a 2DRCL file, evaluation, export, report; ablate/demo
overrides for one-stage detectors (tiny demo data, two iterations)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from drcl.ablation.runner import load_ablate_config
from drcl.cli.main import main
from drcl.config import load_config
from drcl.finetune.runner import detector_for
from drcl.models.backbone import build_resnet_fpn

ROOT = Path(__file__).resolve().parents[2] / "configs"


def _pretrained(path: Path, fpn: int) -> None:
    bb = build_resnet_fpn(18, fpn, "bn", 5)
    save_file({f"backbone.{k}": v for k, v in bb.state_dict().items()}, str(path))


def test_atss_finetune_from_2drcl_evaluate_export_report(
    tiny_overrides, fast_overrides, tmp_path, capsys
):
    pre = tmp_path / "pre.safetensors"
    _pretrained(pre, 16)
    work = tmp_path / "ft"
    over = [*tiny_overrides, *fast_overrides, "finetune.loss=efl", "finetune.head_convs=1"]
    argv = ["finetune", str(ROOT / "finetune/demo_atss.yaml"), "--work-dir", str(work)]
    assert main([*argv, "--init", str(pre), *over]) == 0
    out = capsys.readouterr().out
    assert "backbone.fpn_p2" in out and "head.regression_head" in out  # the load table
    metrics = json.loads((work / "eval" / "metrics_bbox.json").read_text())
    assert {"AP", "APr", "APc", "APf"} <= set(metrics)
    assert not (work / "eval" / "metrics_segm.json").exists()  # no masks for one-stage
    dets = json.loads((work / "eval" / "detections_bbox.json").read_text())
    per_image: dict[int, int] = {}
    for d in dets:
        per_image[d["image_id"]] = per_image.get(d["image_id"], 0) + 1
        assert "segmentation" not in d and d["score"] > 1e-4
    assert max(per_image.values(), default=0) <= 300

    ckpt = sorted(work.glob("ckpt_*.pt"))[-1]
    ev = tmp_path / "metrics.json"
    cfg_args = ["--config", str(ROOT / "finetune/demo_atss.yaml"), "--checkpoint", str(ckpt)]
    assert (
        main(["evaluate", *cfg_args, "--work-dir", str(tmp_path / "ev"), "--out", str(ev), *over])
        == 0
    )
    again = json.loads(ev.read_text())
    assert again.get("bbox", again)["AP"] == metrics["AP"]

    mm = tmp_path / "atss_mmdet.safetensors"
    assert (
        main(["export", str(work / "model_final.safetensors"), "--to", "mmdet", "--out", str(mm)])
        == 0
    )
    assert "bbox_head.atss_centerness.weight" in load_file(mm)

    report = tmp_path / "report"
    from drcl.report.build import build_report

    build_report({"atss": work}, report)
    html = (report / "index.html").read_text()
    assert "Box metrics" in html and "Error breakdown" in html


def test_ablate_and_demo_overrides_reach_a_one_stage_detector():
    abl = load_ablate_config(
        ROOT / "ablate/demo_atss.yaml",
        ["overrides=[train.log_every=2]", "finetune_overrides=[finetune.loss=ecm]"],
    )
    ft = load_config(abl.finetune_config, [*abl.overrides, *abl.finetune_overrides])
    assert (ft.finetune.arch, ft.finetune.loss, ft.train.log_every) == ("atss", "ecm", 2)
    assert list(abl.rows) == ["generic", "full"] and abl.baseline == "generic"
    # `drcl demo` / `drcl ablate` with the R-CNN demo recipe: arch and loss switched by overrides
    cfg = load_config(ROOT / "finetune/demo.yaml", ["finetune.arch=atss", "finetune.loss=focal"])
    model = detector_for(cfg, num_classes=3, class_freqs=torch.ones(3))
    assert type(model).__name__ == "ATSS"


def test_drcl_demo_passes_overrides_to_run_demo(monkeypatch, tmp_path):
    import drcl.cli.demo as demo

    seen = {}

    def fake(work, extra=None, with_random=False):
        seen.update(w=work, x=extra, r=with_random)

    monkeypatch.setattr(demo, "run_demo", fake)
    argv = ["demo", "--work-dir", str(tmp_path), "finetune.arch=atss", "finetune.loss=focal"]
    assert main(argv) == 0
    assert seen == {
        "w": str(tmp_path),
        "x": ["finetune.arch=atss", "finetune.loss=focal"],
        "r": False,
    }
    # issue 15's --with-random goes along with the overrides
    assert main(["demo", "--with-random", "--work-dir", str(tmp_path), "finetune.loss=efl"]) == 0
    assert seen == {"w": str(tmp_path), "x": ["finetune.loss=efl"], "r": True}
