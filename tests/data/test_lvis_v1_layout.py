"""LVIS v1 files (``coco_url``, no ``file_name``) on a COCO 2017 folder layout."""

from __future__ import annotations

import json

import pytest
from lvis_v1_layout import REAL_V1_IMAGES, to_v1_json

from drcl.cli.main import main
from drcl.data.check import check_annotations
from drcl.data.dataset import DetectionDataset
from drcl.data.paths import image_path, image_relpath


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (REAL_V1_IMAGES[0], "val2017/000000397133.jpg"),
        (REAL_V1_IMAGES[1], "val2017/000000037777.jpg"),
        (
            {"id": 1, "coco_url": "http://images.cocodataset.org/train2017/000000155379.jpg"},
            "train2017/000000155379.jpg",
        ),
        ({"id": 1, "file_name": "a/b.png", "coco_url": "http://x/val2017/c.jpg"}, "a/b.png"),
    ],
)
def test_relpath_like_detectron2(record, expected):
    # detectron2 lvis.py: split_folder, file_name = img_dict["coco_url"].split("/")[-2:]
    assert image_relpath(record) == expected
    assert image_path("/data/coco", record).as_posix() == f"/data/coco/{expected}"


@pytest.mark.parametrize("url", [None, 3, "nofolder", "http://x/a/../.."])
def test_bad_coco_url_is_refused(url):
    with pytest.raises(ValueError, match="image 7"):
        image_path("/data/coco", {"id": 7, "coco_url": url}, "image 7")


@pytest.fixture(scope="module")
def v1_layout(tiny_demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    (root / "annotations").mkdir()
    train = to_v1_json(
        tiny_demo["train_ann"],
        tiny_demo["train_images"],
        root,
        "train2017",
        root / "annotations" / "lvis_v1_train.json",
        16,
    )
    val = to_v1_json(
        tiny_demo["val_ann"],
        tiny_demo["val_images"],
        root,
        "val2017",
        root / "annotations" / "lvis_v1_val.json",
        8,
    )
    return root, train, val


def test_v1_json_has_no_file_name(v1_layout):
    _, train, val = v1_layout
    for path in (train, val):
        images = json.loads(path.read_text())["images"]
        assert images and all("file_name" not in im and "coco_url" in im for im in images)


def test_data_check_passes_on_v1_layout(v1_layout, capsys):
    root, train, val = v1_layout
    for ann in (train, val):
        errors = [p for p in check_annotations(ann, root) if p.severity == "error"]
        assert errors == []
        assert main(["data", "check", str(ann), "--images", str(root)]) == 0
    assert "0 errors" in capsys.readouterr().out


def test_data_check_names_missing_v1_image(v1_layout, tmp_path):
    root, _, val = v1_layout
    data = json.loads(val.read_text())
    data["images"][0]["coco_url"] = "http://images.cocodataset.org/val2017/000000999999.jpg"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    errors = [p for p in check_annotations(bad, root) if p.severity == "error"]
    assert len(errors) == 1 and "val2017/000000999999.jpg" in errors[0].message


def test_dataset_reads_v1_images(v1_layout):
    root, train, val = v1_layout
    for ann, n in ((train, 16), (val, 8)):
        ds = DetectionDataset(ann, root)
        assert len(ds) == n
        image, target = ds[0]
        assert ds.image_path(0).parent.name in ("train2017", "val2017")
        assert image.shape[0] == 3 and target["boxes"].shape[1] == 4


def test_proposals_pretrain_finetune_on_v1_layout(
    v1_layout, tiny_overrides, fast_overrides, tmp_path
):
    root, train, val = v1_layout
    over = [o for o in tiny_overrides if not o.startswith("data.")]
    over += [
        f"data.train_ann={train}",
        f"data.val_ann={val}",
        f"data.train_images={root}",
        f"data.val_images={root}",
    ]
    out = tmp_path / "props.json"
    assert main(["proposals", "configs/pretrain/demo.yaml", "--out", str(out), *over]) == 0
    assert len(json.loads(out.read_text())) > 0
    pre = tmp_path / "pre"
    argv = ["pretrain", "configs/pretrain/demo.yaml", "--work-dir", str(pre), *over]
    assert main([*argv, "train.max_iters=1", "train.checkpoint_every=1"]) == 0
    work = tmp_path / "ft"
    argv = ["finetune", "configs/finetune/demo.yaml", "--work-dir", str(work), *over]
    assert main([*argv, *fast_overrides, "train.max_iters=1", "train.checkpoint_every=1"]) == 0
    assert (work / "model_final.safetensors").is_file()
    assert (work / "eval" / "metrics_bbox.json").is_file()
