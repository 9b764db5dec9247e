"""`drcl finetune` -> `drcl evaluate --checkpoint` -> `drcl export`, on the tiny demo data."""

import json

from safetensors.torch import load_file

from drcl.cli.main import main


def test_finetune_evaluate_export(tiny_overrides, fast_overrides, tmp_path, capsys):
    work = tmp_path / "ft"
    over = [*tiny_overrides, *fast_overrides, "model.norm=frozen_bn", "finetune.loss=ecm"]
    over.append("finetune.rfs=true")
    assert main(["finetune", "configs/finetune/demo.yaml", "--work-dir", str(work), *over]) == 0
    assert "APr" in capsys.readouterr().out
    ckpt = work / "ckpt_0000002.pt"
    final = load_file(work / "model_final.safetensors")
    assert any(k.startswith("roi_heads.box_predictor") for k in final)  # torchvision keys

    out = tmp_path / "metrics.json"
    argv = ["evaluate", "--config", "configs/finetune/demo.yaml", "--checkpoint", str(ckpt)]
    assert main([*argv, "--work-dir", str(tmp_path / "ev"), "--out", str(out), *over]) == 0
    again = json.loads(out.read_text())
    first = json.loads((work / "eval" / "metrics_bbox.json").read_text())
    bbox = again.get("bbox", again)
    assert bbox["AP"] == first["AP"] and bbox["APr"] == first["APr"]  # checkpoint = final model

    for target in ("torchvision", "detectron2", "mmdet"):
        dest = tmp_path / f"{target}.safetensors"
        assert (
            main(
                [
                    "export",
                    str(work / "model_final.safetensors"),
                    "--to",
                    target,
                    "--out",
                    str(dest),
                ]
            )
            == 0
        )
        assert load_file(dest)
