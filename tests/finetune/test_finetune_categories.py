"""`drcl finetune` records its training categories; its own evaluation and `drcl evaluate
--checkpoint` go through that record (issue 26: a train file with an extra category crashed with
KeyError, a renumbered val category moved every detection)."""

from __future__ import annotations

import json

from safetensors import safe_open

from drcl.cli.main import main
from drcl.data.categories import CATEGORIES_FILE, METADATA_KEY, CategoryTable


def _renumber(path, out, old, new):
    data = json.loads(path.read_text())
    for c in data["categories"]:
        c["id"] = new if c["id"] == old else c["id"]
    for a in data["annotations"]:
        a["category_id"] = new if a["category_id"] == old else a["category_id"]
    for im in data["images"]:
        for key in ("neg_category_ids", "not_exhaustive_category_ids"):
            im[key] = [new if c == old else c for c in im.get(key, [])]
    out.write_text(json.dumps(data))


def test_train_file_with_extra_category_then_renumbered_val(
    tiny_demo, tiny_overrides, fast_overrides, tmp_path, capsys
):
    train = json.loads(tiny_demo["train_ann"].read_text())
    extra = {"id": 900, "name": "only_in_train", "frequency": "r"}
    train["categories"].append(extra)
    first = dict(train["annotations"][0], id=10**6, category_id=900)
    train["annotations"].append(first)
    (tmp_path / "train_extra.json").write_text(json.dumps(train))

    work = tmp_path / "ft"
    over = [*tiny_overrides, *fast_overrides, f"data.train_ann={tmp_path / 'train_extra.json'}"]
    assert main(["finetune", "configs/finetune/demo.yaml", "--work-dir", str(work), *over]) == 0
    err = capsys.readouterr().err
    assert "1 only in the model (detections dropped): 900 'only_in_train'" in err

    record = CategoryTable.load(work / CATEGORIES_FILE)
    assert record.num_classes == 49 and record.cat_ids[-1] == 900
    final = work / "model_final.safetensors"
    with safe_open(str(final), framework="pt") as fh:
        meta = json.loads(fh.metadata()[METADATA_KEY])
    assert CategoryTable.from_json(meta) == record
    dets = json.loads((work / "eval" / "detections_bbox.json").read_text())
    assert 900 not in {d["category_id"] for d in dets}

    # the demo check of the issue: one val category renumbered; only its detections go
    _renumber(tiny_demo["val_ann"], tmp_path / "val_renum.json", 5, 500)
    argv = ["evaluate", "--config", str(work / "config.yaml"), "--checkpoint", str(final)]
    ev = tmp_path / "ev"
    over = [f"data.val_ann={tmp_path / 'val_renum.json'}"]
    assert main([*argv, "--work-dir", str(ev), *over]) == 0
    renum = json.loads((ev / "detections_bbox.json").read_text())

    def key(d):
        return (d["image_id"], d["category_id"], tuple(d["bbox"]), d["score"])

    assert sorted(map(key, renum)) == sorted(key(d) for d in dets if d["category_id"] != 5)
    metrics = json.loads((ev / "metrics.json").read_text())["bbox"]
    before = json.loads((work / "eval" / "metrics_bbox.json").read_text())
    ap_before = {c["id"]: c["AP"] for c in before["per_class"]}
    ap_after = {c["id"]: c["AP"] for c in metrics["per_class"]}
    assert {k: v for k, v in ap_after.items() if k != 500} == {
        k: v for k, v in ap_before.items() if k != 5
    }
