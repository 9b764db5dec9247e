"""Tests of the embedded demo dataset generator (drcl.data.demo, drcl.data.demo_shapes).

The real ``small`` dataset is generated once per module, through the CLI; the determinism tests
use the ``num_train`` / ``num_val`` overrides to stay fast.
"""

from __future__ import annotations

import contextlib
import filecmp
import io
import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from drcl.cli.main import main
from drcl.data.demo import (
    SIZES,
    DemoSize,
    category_id_of_rank,
    make_demo_dataset,
    train_instance_targets,
)
from drcl.data.demo_shapes import (
    CLASS_TABLE,
    COLOURS,
    PATTERNS,
    SHAPES,
    class_table,
    confusable_pairs,
    pattern_texture,
    polygon_area,
    unit_polygon,
)

# pycocotools (the independent reference for masks) warns under numpy 2; harmless here
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The real ``small`` dataset, written by ``drcl data make-demo`` (rc and output kept)."""
    out = tmp_path_factory.mktemp("demo_small")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(["data", "make-demo", str(out), "--seed", "0", "--size", "small"])
    train = json.loads((out / "annotations" / "train.json").read_text())
    val = json.loads((out / "annotations" / "val.json").read_text())
    return {"out": out, "rc": rc, "printed": printed.getvalue(), "train": train, "val": val}


def _mask(ann: dict, height: int, width: int) -> np.ndarray:
    rles = mask_utils.frPyObjects(ann["segmentation"], height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def _by_image(data: dict) -> dict[int, list[dict]]:
    out = defaultdict(list)
    for a in data["annotations"]:
        out[a["image_id"]].append(a)
    return out


# ------------------------------------------------------------------------------ class table


def test_class_table_is_unique_and_covers_the_attributes():
    triples = [(c.shape, c.pattern, c.colour) for c in CLASS_TABLE]
    assert len(CLASS_TABLE) >= 40
    assert len(set(triples)) == len(triples)
    assert len({c.name for c in CLASS_TABLE}) == len(CLASS_TABLE)
    assert {c.pattern for c in CLASS_TABLE} == set(PATTERNS)
    assert {c.shape for c in CLASS_TABLE} == set(SHAPES)
    assert {c.colour for c in CLASS_TABLE} == set(COLOURS)
    rows = class_table()
    assert [r["name"] for r in rows] == [c.name for c in CLASS_TABLE]
    assert rows[0]["rank"] == 0 and set(rows[0]) >= {"shape", "pattern", "colour", "twin"}


def test_confusable_pairs_differ_in_exactly_one_attribute():
    by_name = {c.name: c for c in CLASS_TABLE}
    pairs = confusable_pairs()
    assert len(pairs) >= 4
    assert {d for _, _, d in pairs} == {"shape", "pattern"}
    for rare, frequent, differs in pairs:
        a, b = by_name[rare], by_name[frequent]
        assert a.colour == b.colour
        same = [a.shape == b.shape, a.pattern == b.pattern]
        assert sum(same) == 1
        assert (differs == "shape") == (a.shape != b.shape)


def test_unknown_shape_and_pattern_are_rejected():
    with pytest.raises(ValueError, match="unknown shape 'blob'.*allowed: disc"):
        unit_polygon("blob")
    u = np.zeros((2, 2))
    with pytest.raises(ValueError, match="unknown pattern 'plaid'.*allowed: solid"):
        pattern_texture("plaid", u, u, np.zeros(3), 5.0, 0.0)


def test_polygon_area_by_hand_and_ring_hole():
    assert polygon_area(unit_polygon("square")) == pytest.approx(1.6 * 1.6)
    assert polygon_area(unit_polygon("diamond")) == pytest.approx(2 * 0.62)  # d1 * d2 / 2
    # a regular n-gon of radius R has area n/2 R^2 sin(2 pi / n); the keyhole ring subtracts
    # the inner 32-gon
    n = 32
    ngon = n / 2 * math.sin(2 * math.pi / n)
    assert polygon_area(unit_polygon("ring")) == pytest.approx(ngon * (1 - 0.55**2))
    # rasterised by pycocotools, the keyhole keeps the hole empty and the area matches
    ring = unit_polygon("ring") * 50 + 64
    m = mask_utils.decode(
        mask_utils.merge(mask_utils.frPyObjects([ring.ravel().tolist()], 128, 128))
    )
    assert m[64, 64] == 0 and m[64, 64 + 40] == 1
    assert m.sum() == pytest.approx(polygon_area(ring), rel=0.03)


def test_pattern_textures_show_two_tones_except_solid():
    v, u = np.mgrid[-20:20, -20:20].astype(np.float64)
    base = np.array([200.0, 40.0, 40.0])
    for pattern in PATTERNS:
        tex = pattern_texture(pattern, u, v, base, radius=20.0, phase=0.3)
        assert tex.shape == (40, 40, 3) and tex.min() >= 0 and tex.max() <= 255
        tones = len(np.unique(tex.reshape(-1, 3), axis=0))
        assert (tones == 1) == (pattern == "solid"), pattern


# ------------------------------------------------------------------------------ long tail


def test_train_instance_targets_follow_the_geometric_formula():
    spec = DemoSize(64, max_train_instances=400, min_train_instances=4, val_instances_per_class=5)
    assert train_instance_targets(spec, 3).tolist() == [400, 40, 4]  # sqrt(400 * 4) = 40
    t = train_instance_targets(SIZES["small"])
    assert len(t) == len(CLASS_TABLE) and np.all(np.diff(t) <= 0)
    assert t[0] == SIZES["small"].max_train_instances and t[-1] == 2


def test_frequency_groups_match_the_annotations(small):
    train, val = small["train"], small["val"]
    images, instances = defaultdict(set), Counter()
    for a in train["annotations"]:
        images[a["category_id"]].add(a["image_id"])
        instances[a["category_id"]] += 1
    groups = Counter()
    for c in train["categories"]:
        n = len(images[c["id"]])
        assert c["image_count"] == n, c["name"]
        assert c["instance_count"] == instances[c["id"]], c["name"]
        assert n >= 1, f"{c['name']} has no training image"
        expected = "r" if n <= 10 else ("c" if n <= 100 else "f")
        assert c["frequency"] == expected, c["name"]
        groups[expected] += 1
    assert set(groups) == {"r", "c", "f"} and min(groups.values()) >= 5
    assert val["categories"] == train["categories"]  # val carries the training statistics


def test_twins_are_rare_and_their_partners_frequent(small):
    freq = {c["name"]: c["frequency"] for c in small["train"]["categories"]}
    for rare, frequent, _ in confusable_pairs():
        assert (freq[rare], freq[frequent]) == ("r", "f"), (rare, frequent)


def test_category_ids_are_contiguous_and_not_the_rank():
    ids = category_id_of_rank()
    assert sorted(ids) == list(range(1, len(CLASS_TABLE) + 1))
    assert ids != list(range(1, len(CLASS_TABLE) + 1))
    names = [CLASS_TABLE[r].name for r in sorted(range(len(ids)), key=ids.__getitem__)]
    assert names == sorted(names)


# ------------------------------------------------------------------------------ layout


def test_cli_wrote_the_small_layout(small):
    out, train, val = small["out"], small["train"], small["val"]
    assert small["rc"] == 0
    assert f"{len(train['images'])} train images" in small["printed"]
    assert "  r: " in small["printed"] and "  f: " in small["printed"]
    assert 800 <= len(train["images"]) <= 1200
    assert 200 <= len(val["images"]) <= 300
    for split, data in (("train", train), ("val", val)):
        files = sorted(p.name for p in (out / split).iterdir())
        assert files == sorted(im["file_name"] for im in data["images"])
        for im in data["images"][:50]:
            with Image.open(out / split / im["file_name"]) as pil:
                assert pil.format == "PNG" and pil.mode == "RGB"
                assert pil.size == (im["width"], im["height"]) == (128, 128)


def test_ids_are_unique_across_splits(small):
    train, val = small["train"], small["val"]
    image_ids = [im["id"] for im in train["images"] + val["images"]]
    ann_ids = [a["id"] for a in train["annotations"] + val["annotations"]]
    assert len(set(image_ids)) == len(image_ids)
    assert len(set(ann_ids)) == len(ann_ids)
    for data in (train, val):
        known = {im["id"] for im in data["images"]}
        assert {a["image_id"] for a in data["annotations"]} <= known


def test_objects_per_image(small):
    per_image = Counter(a["image_id"] for a in small["train"]["annotations"])
    counts = [per_image[im["id"]] for im in small["train"]["images"]]
    assert min(counts) >= 1 and max(counts) <= 7
    assert np.mean(np.array(counts) >= 2) > 0.98
    assert 3.5 < np.mean(counts) < 4.5


def test_boxes_polygons_and_masks_agree(small):
    for data in (small["train"], small["val"]):
        sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
        for a in data["annotations"]:
            h, w = sizes[a["image_id"]]
            x, y, bw, bh = a["bbox"]
            assert a["iscrowd"] == 0 and bw > 0 and bh > 0
            assert 0 <= x and 0 <= y and x + bw <= w + 1e-6 and y + bh <= h + 1e-6
            poly = np.asarray(a["segmentation"][0]).reshape(-1, 2)
            assert poly.min(axis=0) == pytest.approx([x, y], abs=0.011)
            assert poly.max(axis=0) == pytest.approx([x + bw, y + bh], abs=0.011)
            assert a["area"] == pytest.approx(polygon_area(poly), abs=0.01)
    # masks decoded by the reference library: non-empty, inside the box, area close
    for a in small["train"]["annotations"][:800]:
        m = _mask(a, 128, 128)
        ys, xs = np.nonzero(m)
        x, y, bw, bh = a["bbox"]
        assert len(ys) > 0
        assert xs.min() >= math.floor(x) and xs.max() <= math.ceil(x + bw)
        assert ys.min() >= math.floor(y) and ys.max() <= math.ceil(y + bh)
        assert 0.7 < m.sum() / a["area"] < 1.3


def test_no_object_is_more_than_70_percent_occluded(small):
    occluded = 0
    for anns in list(_by_image(small["train"]).values())[:300]:
        masks = [_mask(a, 128, 128) for a in anns]  # drawing order = annotation order
        for i, m in enumerate(masks):
            covered = np.zeros_like(m)
            for later in masks[i + 1 :]:
                covered |= later
            visible = (m & ~covered).sum() / m.sum()
            assert visible >= 0.3 - 1e-9, anns[i]["id"]
            occluded += visible < 1.0
    assert occluded > 50  # occlusion does happen


def test_pixels_show_the_annotated_colour(small):
    """The visible pixels of solid objects are nearest to their class's colour family."""
    cats = {c["id"]: c for c in small["train"]["categories"]}
    families = np.array(list(COLOURS.values()), dtype=np.float64)
    names = list(COLOURS)
    hits = total = 0
    for image in small["train"]["images"][:150]:
        anns = _by_image(small["train"])[image["id"]]
        pixels = np.asarray(Image.open(small["out"] / "train" / image["file_name"]), np.float64)
        masks = [_mask(a, 128, 128) for a in anns]
        for i, a in enumerate(anns):
            visible = masks[i] & ~np.any(masks[i + 1 :], axis=0) if i + 1 < len(masks) else masks[i]
            if cats[a["category_id"]]["pattern"] != "solid" or visible.sum() < 30:
                continue
            mean = pixels[visible].mean(axis=0)
            nearest = names[int(np.argmin(((families - mean) ** 2).sum(axis=1)))]
            hits += nearest == cats[a["category_id"]]["colour"]
            total += 1
    assert total > 30 and hits / total > 0.95


# ------------------------------------------------------------------------------ LVIS fields


def test_val_covers_every_class(small):
    counts = Counter(a["category_id"] for a in small["val"]["annotations"])
    assert set(counts) == {c["id"] for c in small["val"]["categories"]}
    assert min(counts.values()) >= 5


def test_negative_and_not_exhaustive_ids(small):
    n_not_exhaustive = 0
    for data in (small["train"], small["val"]):
        cat_ids = {c["id"] for c in data["categories"]}
        anns = _by_image(data)
        for im in data["images"]:
            present = {a["category_id"] for a in anns[im["id"]]}
            neg, ne = set(im["neg_category_ids"]), set(im["not_exhaustive_category_ids"])
            assert neg and neg <= cat_ids and not (neg & present), im["id"]
            assert ne <= present, im["id"]
            n_not_exhaustive += len(ne)
    n_images = len(small["train"]["images"]) + len(small["val"]["images"])
    assert 0.005 * n_images < n_not_exhaustive < 0.05 * n_images


def test_absent_twins_are_listed_as_negatives(small):
    cat_of = {c["name"]: c["id"] for c in small["train"]["categories"]}
    pairs = [(cat_of[r], cat_of[f]) for r, f, _ in confusable_pairs()]
    anns = _by_image(small["val"])
    checked = 0
    for im in small["val"]["images"]:
        present = {a["category_id"] for a in anns[im["id"]]}
        for a, b in pairs + [(b, a) for a, b in pairs]:
            if a in present and b not in present:
                assert b in im["neg_category_ids"], (im["id"], a, b)
                checked += 1
    assert checked > 20


def test_lvis_evaluation_of_perfect_and_colour_confused_detections(small, tmp_path):
    """Ground truth as detections scores 1; labelling rare twins as their frequent partner
    (what a colour-only model does) costs AP through the federated negatives."""
    from faster_coco_eval import COCO, COCOeval_faster

    gt_path = small["out"] / "annotations" / "val.json"
    cat_of = {c["name"]: c["id"] for c in small["val"]["categories"]}
    partner = {cat_of[r]: cat_of[f] for r, f, _ in confusable_pairs()}

    def ap(dets: list[dict]) -> dict:
        gt = COCO(str(gt_path))
        ev = COCOeval_faster(
            gt, gt.loadRes(dets), "segm", lvis_style=True, print_function=lambda *_: None
        )
        ev.params.maxDets = [300]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        return ev.stats_as_dict

    perfect = [
        {k: a[k] for k in ("image_id", "category_id", "bbox", "segmentation")} | {"score": 1.0}
        for a in small["val"]["annotations"]
    ]
    stats = ap(perfect)
    assert stats["APr"] == stats["APc"] == stats["APf"] == 1.0
    confused = [
        d | {"category_id": partner.get(d["category_id"], d["category_id"])} for d in perfect
    ]
    stats = ap(confused)
    assert stats["APr"] < 0.8 and stats["APf"] < 1.0


# ------------------------------------------------------------------------------ determinism


def _all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_same_seed_gives_identical_files(tmp_path):
    a = make_demo_dataset(tmp_path / "a", seed=3, num_train=40, num_val=12)
    make_demo_dataset(tmp_path / "b", seed=3, num_train=40, num_val=12)
    c = make_demo_dataset(tmp_path / "c", seed=4, num_train=40, num_val=12)
    files = _all_files(tmp_path / "a")
    assert files == _all_files(tmp_path / "b") and len(files) > 40
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", files, shallow=False)
    assert mismatch == [] and errors == []
    assert a["train_ann"].read_bytes() != c["train_ann"].read_bytes()
    img = a["train_images"] / "000001.png"
    assert img.read_bytes() != (c["train_images"] / "000001.png").read_bytes()


def test_overrides_scale_the_counts(tmp_path):
    paths = make_demo_dataset(tmp_path, seed=0, num_train=40, num_val=12)
    train = json.loads(paths["train_ann"].read_text())
    val = json.loads(paths["val_ann"].read_text())
    assert 30 <= len(train["images"]) <= 50 and 8 <= len(val["images"]) <= 16
    assert all(c["image_count"] >= 1 for c in train["categories"])  # every class kept


def test_bad_size_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown demo size 'huge'; allowed: small, medium"):
        make_demo_dataset(tmp_path, size="huge")
    with pytest.raises(SystemExit):
        main(["data", "make-demo", str(tmp_path), "--size", "huge"])


# sha256 over (relative path, bytes) of every train/val file for seed 3, num_train=40, num_val=12,
# computed with the generator before the tune split existed: adding tune changed neither split.
GOLDEN_TRAIN_VAL = "c1f67aea0c3c0c49e428823f54b1ed30cd755e4b41c6399f5cf5751dcf241781"


def test_tune_split_is_balanced_like_val_and_leaves_train_val_unchanged(tmp_path):
    import hashlib
    from collections import Counter

    paths = make_demo_dataset(tmp_path, seed=3, num_train=40, num_val=12)
    h = hashlib.sha256()
    for f in sorted(tmp_path.rglob("*")):
        rel = f.relative_to(tmp_path)
        if f.is_file() and "tune" not in str(rel):
            h.update(str(rel).encode())
            h.update(f.read_bytes())
    assert h.hexdigest() == GOLDEN_TRAIN_VAL
    val = json.loads(paths["val_ann"].read_text())
    tune = json.loads(paths["tune_ann"].read_text())
    per_class = [Counter(a["category_id"] for a in d["annotations"]) for d in (val, tune)]
    assert per_class[0] == per_class[1]  # same instances per class (the objects never fail)
    assert tune["categories"] == val["categories"] and tune["info"]["split"] == "tune"
    ids = [{i["id"] for i in d["images"]} for d in (val, tune)]
    train_ids = {i["id"] for i in json.loads(paths["train_ann"].read_text())["images"]}
    assert not ids[0] & ids[1] and not ids[1] & train_ids
    ann_ids = [{a["id"] for a in d["annotations"]} for d in (val, tune)]
    assert not ann_ids[0] & ann_ids[1]
    first = "000001.png"
    assert (paths["tune_images"] / first).read_bytes() != (paths["val_images"] / first).read_bytes()
