"""Fine-tuning from a detector with other classes: class-specific layers skipped with a note, or
their rows copied by class name (issue 26, point 2)."""

from __future__ import annotations

import json

import pytest
import torch

from drcl.cli.main import main
from drcl.data.categories import CategoryRecord, CategoryTable
from drcl.detection.model import load_pretrained
from drcl.finetune.runner import detector_for, save_detector


def _table(names, source="x.json"):
    recs = [
        CategoryRecord(id=k + 1, name=n, frequency="f", label=k + 1) for k, n in enumerate(names)
    ]
    return CategoryTable(tuple(recs), source)


NAMES48 = [f"class{k}" for k in range(48)]
NAMES5 = ["class3", "new_a", "class40", "class7", "new_b"]  # 3 shared with the 48-class init


def _init_file(tmp_path, cfg, names=NAMES48, record=True):
    torch.manual_seed(1)
    src = detector_for(cfg, num_classes=len(names))
    path = tmp_path / "init" / "model_final.safetensors"
    save_detector(src, path, _table(names) if record else None)
    return src.state_dict(), path


ARCH_KEYS = {
    "faster_rcnn": [
        "roi_heads.box_predictor.cls_score.weight",
        "roi_heads.box_predictor.bbox_pred.weight",
    ],
    "mask_rcnn": ["roi_heads.mask_predictor.mask_fcn_logits.weight"],
    "fcos": ["head.classification_head.cls_logits.weight"],
}


@pytest.mark.parametrize("arch", ["faster_rcnn", "mask_rcnn", "fcos"])
def test_48_class_init_onto_5_classes_skips_the_class_layers(tiny_config, tmp_path, arch):
    cfg = tiny_config(arch, "focal" if arch == "fcos" else "ce")
    src, path = _init_file(tmp_path, cfg)
    torch.manual_seed(2)
    model = detector_for(cfg, num_classes=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_pretrained(model, path, verbose=False, categories=_table(NAMES5))
    after = model.state_dict()
    for key in ARCH_KEYS[arch]:
        assert torch.equal(after[key], before[key])  # left at their initialisation
        assert key in report.missing
    body = next(k for k in after if k.startswith("backbone.body") and k.endswith("weight"))
    assert torch.equal(after[body], src[body])
    table = report.table()
    assert "note: class-specific layers skipped (the init has 48 classes, the model 5)" in table
    assert "match_by_name" in table


def test_match_by_name_copies_rows_of_shared_classes(tiny_config, tmp_path):
    cfg = tiny_config()
    src, path = _init_file(tmp_path, cfg)
    torch.manual_seed(2)
    model = detector_for(cfg, num_classes=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_pretrained(
        model, path, verbose=False, categories=_table(NAMES5), keep_classes="match_by_name"
    )
    after = model.state_dict()
    cls, box = ARCH_KEYS["faster_rcnn"]
    # target label -> source label by name: class3 -> 4, class40 -> 41, class7 -> 8; bg 0 -> 0
    for t, s in [(0, 0), (1, 4), (3, 41), (4, 8)]:
        assert torch.equal(after[cls][t], src[cls][s])
        assert torch.equal(after[box][4 * t : 4 * t + 4], src[box][4 * s : 4 * s + 4])
    for t in (2, 5):  # new_a, new_b: not in the init
        assert torch.equal(after[cls][t], before[cls][t])
    assert "3 of 5 classes copied from the init; 2 start from their initialisation: new_a" in (
        report.table()
    )


def test_match_by_name_dense_head_rows(tiny_config, tmp_path):
    cfg = tiny_config("retinanet", "focal")
    src, path = _init_file(tmp_path, cfg)
    model = detector_for(cfg, num_classes=5)
    load_pretrained(
        model, path, verbose=False, categories=_table(NAMES5), keep_classes="match_by_name"
    )
    key = ARCH_KEYS["fcos"][0]
    anchors = src[key].shape[0] // 48
    assert anchors == 9 and model.state_dict()[key].shape[0] == 9 * 5
    for a in range(anchors):  # class40: label 41 (channel 40) -> label 3 (channel 2)
        assert torch.equal(model.state_dict()[key][a * 5 + 2], src[key][a * 48 + 40])


def test_same_count_other_names_is_skipped_and_no_record_is_noted(tiny_config, tmp_path):
    cfg = tiny_config()
    _, path = _init_file(tmp_path, cfg, names=["a", "b", "c", "d", "e"])
    model = detector_for(cfg, num_classes=5)
    report = load_pretrained(model, path, verbose=False, categories=_table(NAMES5))
    assert "skipped (the init's category record names other classes)" in report.table()
    # the same names: loaded, no note
    same = load_pretrained(model, path, verbose=False, categories=_table(list("abcde")))
    assert not same.notes and "roi_heads.box_predictor.cls_score.weight" in same.loaded

    _, plain = _init_file(tmp_path / "plain", cfg, names=list("abcde"), record=False)
    report = load_pretrained(model, plain, verbose=False, categories=_table(NAMES5))
    assert "loaded by position: the init has no category record" in report.table()
    with pytest.raises(ValueError, match="match_by_name needs the init's category record"):
        _, plain48 = _init_file(tmp_path / "p48", cfg, record=False)
        load_pretrained(
            model, plain48, verbose=False, categories=_table(NAMES5), keep_classes="match_by_name"
        )


def test_finetune_cli_from_a_48_class_detector_onto_5_classes(
    tiny_demo, tiny_overrides, fast_overrides, tmp_path, capsys
):
    """The demo's 48 classes -> a 5-class subset of it: the init loads, the predictor is
    skipped with a note in the printed load table, training and evaluation finish."""
    over = [*tiny_overrides, *fast_overrides]
    first = tmp_path / "ft48"
    assert main(["finetune", "configs/finetune/demo.yaml", "--work-dir", str(first), *over]) == 0
    subset = {}
    for split in ("train_ann", "val_ann"):
        data = json.loads(tiny_demo[split].read_text())
        keep = {c["id"] for c in data["categories"][:5]}
        data["categories"] = [c for c in data["categories"] if c["id"] in keep]
        data["annotations"] = [a for a in data["annotations"] if a["category_id"] in keep]
        for im in data["images"]:
            for key in ("neg_category_ids", "not_exhaustive_category_ids"):
                im[key] = [c for c in im.get(key, []) if c in keep]
        subset[split] = tmp_path / f"{split}5.json"
        subset[split].write_text(json.dumps(data))
    capsys.readouterr()
    over += [f"data.train_ann={subset['train_ann']}", f"data.val_ann={subset['val_ann']}"]
    init = str(first / "model_final.safetensors")
    argv = ["finetune", "configs/finetune/demo.yaml", "--work-dir", str(tmp_path / "ft5")]
    assert main([*argv, "--init", init, *over]) == 0
    out = capsys.readouterr().out
    assert "class-specific layers skipped (the init has 48 classes, the model 5)" in out
    assert "roi_heads.box_predictor" in out and "APr" in out


def test_row_layouts_and_skip_without_category_records():
    from drcl.detection.class_layers import _rows, adapt_class_layers, layout_of

    assert layout_of("roi_heads.box_predictor.cls_score.weight") == "rcnn"
    assert layout_of("roi_heads.box_predictor.bbox_pred.bias") == "rcnn_box"
    assert layout_of("head.classification_head.cls_logits.weight") == "dense"
    assert layout_of("backbone.body.conv1.weight") is None
    assert _rows("rcnn", 2, 5, 6) == [2]
    assert _rows("rcnn_box", 2, 5, 24) == [8, 9, 10, 11]
    assert _rows("dense", 2, 5, 15) == [1, 6, 11]  # 3 anchors x 5 classes, class label - 1
    own = {"roi_heads.box_predictor.cls_score.weight": torch.zeros(6, 4), "x": torch.zeros(2)}
    same = {"roi_heads.box_predictor.cls_score.weight": torch.ones(6, 4), "x": torch.ones(2)}
    kept, notes = adapt_class_layers(own, same, None, None)
    assert kept is same and "loaded by position" in notes[0]  # same shape, no record: a note
    other = {"roi_heads.box_predictor.cls_score.weight": torch.ones(9, 4), "x": torch.ones(2)}
    kept, notes = adapt_class_layers(own, other, None, None)
    assert list(kept) == ["x"] and "skipped" in notes[0]
    with pytest.raises(ValueError, match="match_by_name needs the init's category record"):
        adapt_class_layers(own, other, None, None, mode="match_by_name")
