"""`drcl predict` / `drcl test` on a tiny fine-tuned run: the same detections and metrics as the
run's own evaluation, drawings, and every bad input ending in one line and a non-zero exit."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drcl.cli.main import main

TOL = 1e-9


@pytest.fixture(scope="module")
def run(tiny_demo, tmp_path_factory) -> Path:
    """A Faster R-CNN fine-tuned for 2 iterations on the tiny demo (64 px), evaluated on val."""
    d = tiny_demo
    work = tmp_path_factory.mktemp("predict") / "ft"
    overrides = [
        f"data.train_ann={d['train_ann']}",
        f"data.train_images={d['train_images']}",
        f"data.val_ann={d['val_ann']}",
        f"data.val_images={d['val_images']}",
        "data.min_size=64",
        "data.max_size=64",
        "model.depth=18",
        "model.fpn_channels=16",
        "model.box_head_dim=32",
        "model.norm=bn",
        "train.batch_size=4",
        "train.warmup_iters=1",
        "train.max_iters=2",
        "train.checkpoint_every=2",
        "train.deterministic=true",
        "finetune.eval_batch_size=8",
        "finetune.rpn_batch_size_per_image=32",
        "finetune.box_batch_size_per_image=32",
    ]
    argv = ["finetune", "configs/finetune/demo.yaml", "--work-dir", str(work), *overrides]
    assert main(argv) == 0
    return work


def _assert_same_metrics(a: dict, b: dict) -> None:
    """Every AP (and every class's AP) equal to ``TOL``; NaN matches NaN / None."""

    def same(x, y) -> bool:
        if x is None or y is None or (isinstance(x, float) and math.isnan(x)):
            return (x is None or math.isnan(x)) and (y is None or math.isnan(y))
        return abs(x - y) <= TOL

    keys = [k for k in a if k.startswith("AP")]
    assert keys and set(keys) == {k for k in b if k.startswith("AP")}
    for k in keys:
        assert same(a[k], b[k]), (k, a[k], b[k])
    assert [c["id"] for c in a["per_class"]] == [c["id"] for c in b["per_class"]]
    for ca, cb in zip(a["per_class"], b["per_class"], strict=True):
        assert same(ca["AP"], cb["AP"]), (ca, cb)
    assert a["num_detections"] == b["num_detections"] > 0


def test_predict_then_evaluate_equals_training_evaluation(run, tiny_demo, tmp_path, capsys):
    d = tiny_demo
    out, draw = tmp_path / "preds.json", tmp_path / "drawn"
    argv = ["predict", str(run), "--ann", str(d["val_ann"]), "--images", str(d["val_images"])]
    assert main([*argv, "--out", str(out), "--draw", str(draw), "--draw-score-thr", "0"]) == 0
    assert "images/s" in capsys.readouterr().out
    # the very records training's evaluation wrote
    own_records = json.loads((run / "eval/detections_bbox.json").read_text())
    assert json.loads(out.read_text()) == own_records
    metrics = tmp_path / "m.json"
    argv = ["evaluate", "--gt", str(d["val_ann"]), "--dets", str(out)]
    assert main([*argv, "--train-ann", str(d["train_ann"]), "--out", str(metrics)]) == 0
    own = json.loads((run / "eval/metrics_bbox.json").read_text())
    _assert_same_metrics(json.loads(metrics.read_text()), own)
    # one drawing per image, the image's size, with boxes on it (score >= 0 draws them all)
    val = json.loads(Path(d["val_ann"]).read_text())["images"]
    drawn = sorted(p.name for p in draw.iterdir())
    assert drawn == sorted(Path(im["file_name"]).with_suffix(".png").name for im in val)
    first = val[0]
    original = np.asarray(Image.open(Path(d["val_images"]) / first["file_name"]).convert("RGB"))
    picture = np.asarray(Image.open(draw / Path(first["file_name"]).with_suffix(".png").name))
    assert picture.shape == original.shape and (picture != original).any()
    listing = json.loads((tmp_path / "preds.images.json").read_text())
    assert [im["id"] for im in listing["images"]] == [im["id"] for im in val]


def test_test_command_gives_the_same_numbers(run, tiny_demo, capsys):
    d = tiny_demo
    before = (run / "eval/metrics_bbox.json").read_bytes()
    argv = ["test", str(run / "model_final.safetensors"), "--gt", str(d["val_ann"])]
    assert main([*argv, "--images", str(d["val_images"])]) == 0
    assert "APr" in capsys.readouterr().out  # the per-class / per-group table is printed
    tested = json.loads((run / "eval-val/metrics_bbox.json").read_text())
    _assert_same_metrics(tested, json.loads(before))
    assert (run / "eval-val/detections_bbox.json").is_file()
    assert (run / "eval/metrics_bbox.json").read_bytes() == before  # the run's eval/ untouched
    # the run's own eval/ is refused as an output folder
    code = main([*argv, "--images", str(d["val_images"]), "--out", str(run / "eval")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "own evaluation" in err[0], err


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in err if ": error: " in line]
    assert len(errors) == 1, err
    assert not any("Traceback" in line for line in err), err
    return errors[0]


def _small_folder(tiny_demo, folder: Path, n: int = 2) -> Path:
    folder.mkdir()
    for src in sorted(Path(tiny_demo["val_images"]).iterdir())[:n]:
        shutil.copyfile(src, folder / src.name)
    return folder


def test_missing_checkpoint(tmp_path, tiny_demo, capsys):
    images = _small_folder(tiny_demo, tmp_path / "im", 1)
    out = tmp_path / "x.json"
    code = main(["predict", str(tmp_path / "nope"), "--images", str(images), "--out", str(out)])
    assert code == 1 and "does not exist" in _one_error_line(capsys)
    assert not out.exists()


def test_config_not_matching_weights(run, tiny_demo, tmp_path, capsys):
    images = _small_folder(tiny_demo, tmp_path / "im", 1)
    out = tmp_path / "p.json"
    argv = ["predict", str(run), "--images", str(images), "--out", str(out)]
    assert main([*argv, "model.box_head_dim=64"]) == 1
    line = _one_error_line(capsys)
    assert "shape" in line and "box_head" in line, line
    assert not out.exists()


def test_unreadable_image_is_named_skipped_and_fails_the_run(run, tiny_demo, tmp_path, capsys):
    images = _small_folder(tiny_demo, tmp_path / "im", 2)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "p.json"
    assert main(["predict", str(run), "--images", str(images), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "broken.jpg: skipped" in captured.err
    errors = [line for line in captured.err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "1 of 3 images" in errors[0] and "broken.jpg" in errors[0]
    listing = json.loads((tmp_path / "p.images.json").read_text())
    assert [im["file_name"] for im in listing["images"]] == sorted(
        p.name for p in images.iterdir() if p.name != "broken.jpg"
    )
    assert {r["image_id"] for r in json.loads(out.read_text())} <= {1, 2, 3}


def test_empty_folder(run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    out = str(tmp_path / "x.json")
    argv = ["predict", str(run), "--images", str(tmp_path / "empty"), "--out", out]
    assert main(argv) == 1
    assert "no image files" in _one_error_line(capsys)


def test_outputs_never_overwrite_inputs(run, tiny_demo, tmp_path, capsys):
    d = tiny_demo
    ann = tmp_path / "val.json"
    shutil.copyfile(d["val_ann"], ann)
    argv = ["predict", str(run), "--ann", str(ann), "--images", str(d["val_images"])]
    assert main([*argv, "--out", str(ann)]) == 1
    assert "is the input --ann" in _one_error_line(capsys)
    assert ann.read_bytes() == Path(d["val_ann"]).read_bytes()
    images = _small_folder(d, tmp_path / "im", 1)
    argv = ["predict", str(run), "--images", str(images), "--out", str(tmp_path / "p.json")]
    assert main([*argv, "--draw", str(images)]) == 1
    assert "inside the image folder" in _one_error_line(capsys)
    # with an annotation file, drawings named like the inputs (PNG) would replace them
    val = shutil.copytree(d["val_images"], tmp_path / "val")
    before = {p.name: p.read_bytes() for p in val.iterdir()}
    argv = ["predict", str(run), "--ann", str(d["val_ann"]), "--images", str(val)]
    assert main([*argv, "--out", str(tmp_path / "q.json"), "--draw", str(val)]) == 1
    assert "would overwrite the input image" in _one_error_line(capsys)
    assert {p.name: p.read_bytes() for p in val.iterdir()} == before


def test_labels_are_named_by_the_checkpoint_record_alone(run, tiny_demo, tmp_path, capsys):
    """A model_final.safetensors copied away from its run and its training json (another
    machine): the category record in its metadata names the labels; same records."""
    images = _small_folder(tiny_demo, tmp_path / "im", 2)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copyfile(run / "model_final.safetensors", elsewhere / "model.safetensors")
    shutil.copyfile(run / "config.yaml", elsewhere / "config.yaml")
    ref, out = tmp_path / "ref.json", tmp_path / "out.json"
    assert main(["predict", str(run), "--images", str(images), "--out", str(ref)]) == 0
    argv = ["predict", str(elsewhere / "model.safetensors"), "--images", str(images)]
    assert main([*argv, "--out", str(out), f"data.train_ann={tmp_path / 'gone.json'}"]) == 0
    assert json.loads(out.read_text()) == json.loads(ref.read_text())
    listing = json.loads((tmp_path / "out.images.json").read_text())
    train_cats = json.loads(Path(tiny_demo["train_ann"]).read_text())["categories"]
    assert [c["id"] for c in listing["categories"]] == sorted(c["id"] for c in train_cats)


def test_test_matches_renumbered_categories_by_id(run, tiny_demo, tmp_path, capsys):
    """A val file with one category renumbered: only that class changes; every other class
    keeps the AP of the run's own evaluation (labels are never mapped by position)."""
    d = tiny_demo
    gt = json.loads(Path(d["val_ann"]).read_text())
    old = gt["categories"][0]["id"]
    new = max(c["id"] for c in gt["categories"]) + 100
    gt["categories"][0]["id"] = new
    for a in gt["annotations"]:
        if a["category_id"] == old:
            a["category_id"] = new
    for im in gt["images"]:
        for key in ("neg_category_ids", "not_exhaustive_category_ids"):
            im[key] = [new if c == old else c for c in im.get(key, [])]
    moved = tmp_path / "val_moved.json"
    moved.write_text(json.dumps(gt))
    out = tmp_path / "t"
    argv = ["test", str(run), "--gt", str(moved), "--images", str(d["val_images"])]
    assert main([*argv, "--out", str(out), "--train-ann", str(d["train_ann"])]) == 0
    assert "only in" in capsys.readouterr().err  # the one-line category summary
    own = {c["id"]: c["AP"] for c in json.loads((run / "eval/metrics_bbox.json").read_text())[
        "per_class"]}  # fmt: skip
    got = {c["id"]: c["AP"] for c in json.loads((out / "metrics_bbox.json").read_text())[
        "per_class"]}  # fmt: skip
    assert any(ap for cid, ap in own.items() if cid != old)  # a shift would change these
    for cid, ap in own.items():
        if cid != old and ap is not None:
            assert got[cid] is not None and abs(got[cid] - ap) <= TOL, (cid, got[cid], ap)
