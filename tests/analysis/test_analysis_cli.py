"""``drcl analyze``: each analysis run through the real entry point writes its files."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from drcl.analysis.cli import parse_named
from drcl.analysis.errors import error_breakdown
from drcl.cli.main import main

CATS = [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}, {"id": 7, "name": "c"}]


def write(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


def gt_and_train(tmp_path):
    """Val json with one object per class; train json: class 1 rare, 3 common, 7 frequent."""
    anns = [{"id": k + 1, "image_id": 1, "category_id": c["id"], "bbox": [20 * k, 0, 10, 10]}
            for k, c in enumerate(CATS)]  # fmt: skip
    gt = {"images": [{"id": 1, "file_name": "1.png", "height": 48, "width": 64}],
          "annotations": anns, "categories": CATS}  # fmt: skip
    train_anns = []
    for cid, n in ((1, 3), (3, 40), (7, 150)):
        train_anns += [{"id": len(train_anns) + 1, "image_id": i, "category_id": cid,
                        "bbox": [0, 0, 5, 5]} for i in range(n)]  # fmt: skip
    train = {
        "images": [{"id": i} for i in range(150)],
        "annotations": train_anns,
        "categories": CATS,
    }
    return write(tmp_path / "val.json", gt), write(tmp_path / "train.json", train)


def attention_setup(tmp_path):
    """One random 48 x 64 val image with ``gt_and_train``'s objects, and a tiny detector config
    reading it (``tmp_path/tiny.yaml``, returned)."""
    gt, _ = gt_and_train(tmp_path)
    (tmp_path / "images").mkdir()
    pixels = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "images" / "1.png")
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(
        "model: {depth: 18, fpn_channels: 32, box_head_dim: 64}\n"
        f"data: {{min_size: 64, max_size: 96, val_ann: {gt}, val_images: {tmp_path / 'images'}}}\n"
        "finetune: {rpn_pre_nms_top_n_test: 50, rpn_post_nms_top_n_test: 20}\n"
    )
    return cfg_path


def test_parse_named():
    assert parse_named(["a=x.json", "dir/run1/", "y.json"], "--dets") == {
        "a": "x.json", "run1": "dir/run1/", "y": "y.json"
    }  # fmt: skip
    with pytest.raises(ValueError, match="name 'x' given twice"):
        parse_named(["x=a.json", "x.json"], "--dets")
    with pytest.raises(ValueError, match="expected NAME=PATH"):
        parse_named(["=a.json"], "--dets")


def test_errors_command(tmp_path, capsys):
    gt, train = gt_and_train(tmp_path)
    base = [{"image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "score": 0.9}]
    run = tmp_path / "run2" / "eval"
    run.mkdir(parents=True)
    rare_hit = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.95}
    write(run / "detections_bbox.json", [*base, rare_hit])
    dets = write(tmp_path / "base.json", base)
    out = tmp_path / "out"
    argv = ["analyze", "errors", "--gt", gt, "--dets", f"baseline={dets}", str(tmp_path / "run2")]
    assert main([*argv, "--train-ann", train, "--out", str(out)]) == 0
    saved = json.loads((out / "errors.json").read_text())
    assert list(saved["runs"]) == ["baseline", "run2"]
    assert saved["runs"]["baseline"] == error_breakdown(gt, dets, train)
    assert saved["runs"]["run2"]["groups"]["r"]["counts"]["correct"] == 1  # a rare class hit
    assert saved["runs"]["baseline"]["groups"]["c"]["counts"]["classification"] == 1
    assert (out / "errors.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "baseline" in printed and "run2" in printed and "errors.png" in printed


def test_errors_command_bad_input_is_one_clear_line(tmp_path, capsys):
    gt, _ = gt_and_train(tmp_path)
    dets = write(tmp_path / "d.json", [{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1]}])
    code = main(["analyze", "errors", "--gt", gt, "--dets", dets, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1
    assert "d.json: detection 0: missing field 'score'" in err
    # val.json has no 'frequency' and no --train-ann: the message says what to pass
    good = write(tmp_path / "g.json", [])
    assert main(["analyze", "errors", "--gt", gt, "--dets", good, "--out", str(tmp_path)]) == 1
    assert "pass the training json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["analyze", "errors", "--gt", gt])  # missing --dets / --out: argparse usage error


def cls_state(weight):
    return {"roi_heads.box_predictor.cls_score.weight": weight}


def test_weight_norms_command(tmp_path, capsys):
    _, train = gt_and_train(tmp_path)
    w = torch.tensor([[1.0, 1.0], [3.0, 4.0], [0.0, 2.0], [6.0, 8.0]])  # bg, then 5, 2, 10
    save_file(cls_state(w), tmp_path / "a.safetensors")
    torch.save({"model": cls_state(2 * w)}, tmp_path / "b.pth")
    out = tmp_path / "norms"
    argv = ["analyze", "weight-norms", "--ckpt", str(tmp_path / "a.safetensors"),
            f"double={tmp_path / 'b.pth'}", "--train-ann", train, "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    saved = json.loads((out / "weight_norms.json").read_text())
    np.testing.assert_allclose(saved["runs"]["a"]["norms"], [5, 2, 10])
    np.testing.assert_allclose(saved["runs"]["double"]["norms"], [10, 4, 20])
    assert saved["runs"]["a"]["group_means"] == {"r": 5.0, "c": 2.0, "f": 10.0}
    assert [c["instances"] for c in saved["classes"]] == [3, 40, 150]
    assert [c["group"] for c in saved["classes"]] == ["r", "c", "f"]
    assert (out / "weight_norms.png").exists()
    assert "double" in capsys.readouterr().out
    save_file(cls_state(w[:3]), tmp_path / "short.safetensors")
    argv[3:5] = [str(tmp_path / "short.safetensors")]
    assert main(argv) == 1
    assert "short.safetensors: classifier has 3 rows, expected 3 classes" in capsys.readouterr().err


def test_attention_command(tmp_path, capsys):
    from drcl.config import load_config
    from drcl.finetune.runner import detector_for

    cfg_path = attention_setup(tmp_path)
    cfg = load_config(cfg_path)
    torch.manual_seed(0)
    save_file(detector_for(cfg, 3).state_dict(), tmp_path / "m0.safetensors")
    out = tmp_path / "att"
    argv = ["analyze", "attention", "--config", str(cfg_path), "--ckpt",
            f"base={tmp_path / 'm0.safetensors'}", "--images", "1", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    maps = np.load(out / "attention.npz")
    cam = maps["base/1"]
    assert cam.shape == (48, 64) and 0 <= cam.min() and cam.max() <= 1
    meta = json.loads((out / "attention.json").read_text())
    assert meta["labels"] == [1]  # largest object: all equal, the first (category 1 -> label 1)
    assert (out / "attention.png").read_bytes()[:4] == b"\x89PNG"
    assert main([*argv[:-4], "--images", "5", "--out", str(out)]) == 1
    assert "no image with id 5" in capsys.readouterr().err
    save_file({"x": torch.zeros(1)}, tmp_path / "bad.safetensors")
    argv[5] = f"bad={tmp_path / 'bad.safetensors'}"
    assert main(argv) == 1
    assert "bad.safetensors: does not match the model" in capsys.readouterr().err
