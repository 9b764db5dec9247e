"""Tests of the embedded demo dataset generator v2 (drcl.data.demo, drcl.data.demo_shapes).

The real ``small`` dataset is generated once per module, through the CLI; the determinism tests
use the ``num_train`` / ``num_val`` overrides to stay fast. Masks are checked with pycocotools,
an independent decoder.
"""

from __future__ import annotations

import colorsys
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

import drcl.data.demo as demo
from drcl.cli.main import main
from drcl.data.demo import (
    MIN_VISIBLE_FRACTION,
    SIZES,
    DemoSize,
    category_id_of_rank,
    make_demo_dataset,
    train_instance_targets,
)
from drcl.data.demo_shapes import (
    CLASS_TABLE,
    SHAPES,
    TEXTURES,
    class_table,
    confusable_pairs,
    shape_mask,
    texture_tone,
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
    tune = json.loads((out / "annotations" / "tune.json").read_text())
    return {
        "out": out, "rc": rc, "printed": printed.getvalue(), "train": train, "val": val,
        "tune": tune,
    }  # fmt: skip


def _mask(ann: dict) -> np.ndarray:
    rle = dict(ann["segmentation"])
    rle["counts"] = rle["counts"].encode("ascii")
    return mask_utils.decode(rle).astype(bool)


def _by_image(data: dict) -> dict[int, list[dict]]:
    out = defaultdict(list)
    for a in data["annotations"]:
        out[a["image_id"]].append(a)
    return out


def _unit_grid(n: int = 401) -> tuple[np.ndarray, np.ndarray, float]:
    v, u = np.mgrid[-1.2 : 1.2 : n * 1j, -1.2 : 1.2 : n * 1j]
    return u, v, (2.4 / (n - 1)) ** 2


# ------------------------------------------------------------------------------ class table


def test_class_table_is_shape_by_texture_and_no_attribute_alone_names_a_class():
    pairs = [(c.shape, c.texture) for c in CLASS_TABLE]
    assert len(CLASS_TABLE) >= 40 and len(set(pairs)) == len(pairs)
    assert len({c.name for c in CLASS_TABLE}) == len(CLASS_TABLE)
    ordinary = [c for c in CLASS_TABLE if c.twin is None]
    # every shape family of an ordinary class comes with >= 3 textures and vice versa
    for shape, n in Counter(c.shape for c in ordinary).items():
        assert n >= 3, shape
    for texture, n in Counter(c.texture for c in ordinary).items():
        assert n >= 3, texture
    assert {c.shape for c in CLASS_TABLE} == set(SHAPES)
    assert {c.texture for c in CLASS_TABLE} == set(TEXTURES)
    rows = class_table()
    assert [r["name"] for r in rows] == [c.name for c in CLASS_TABLE]
    assert set(rows[0]) == {"rank", "name", "shape", "texture", "twin"}


def test_twins_differ_in_exactly_one_attribute():
    by_name = {c.name: c for c in CLASS_TABLE}
    pairs = confusable_pairs()
    assert len(pairs) >= 6
    assert {d for _, _, d in pairs} == {"shape", "texture"}
    for rare, frequent, differs in pairs:
        a, b = by_name[rare], by_name[frequent]
        assert (a.shape == b.shape) != (a.texture == b.texture)
        assert (differs == "shape") == (a.shape != b.shape)


def test_unknown_shape_and_texture_are_rejected():
    u = np.zeros((2, 2))
    with pytest.raises(ValueError, match="unknown shape 'blob'.*allowed: disc"):
        shape_mask("blob", u, u)
    with pytest.raises(ValueError, match="unknown texture 'plaid'.*allowed: solid"):
        texture_tone("plaid", "disc", u, u, 0.5, 0.0)


def test_shape_areas_by_hand():
    u, v, cell = _unit_grid()
    area = {s: shape_mask(s, u, v).sum() * cell for s in ("disc", "square", "ring", "cross")}
    assert area["disc"] == pytest.approx(math.pi, rel=0.01)
    assert area["square"] == pytest.approx(1.6**2, rel=0.01)
    assert area["ring"] == pytest.approx(math.pi * (1 - 0.55**2), rel=0.02)
    assert area["cross"] == pytest.approx(2 * 2 * 0.66 - 0.66**2, rel=0.02)
    # the twins' shapes differ from their partners' in a detail, not in the whole
    for a, b in (("star", "star6"), ("square", "notched_square"), ("ring", "split_ring")):
        ma, mb = shape_mask(a, u, v), shape_mask(b, u, v)
        iou = (ma & mb).sum() / (ma | mb).sum()
        assert 0.6 < iou < 0.95, (a, b, iou)


def test_textures_show_two_tones_except_solid():
    u, v, _ = _unit_grid(81)
    for texture in TEXTURES:
        tone = texture_tone(texture, "disc", u, v, period=0.4, phase=0.3)
        assert tone.shape == u.shape and tone.min() >= 0 and tone.max() <= 1
        inside = shape_mask("disc", u, v)
        assert (len(np.unique(tone[inside])) == 1) == (texture == "solid"), texture


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
    assert set(groups) == {"r", "c", "f"} and min(groups.values()) >= 10
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
    assert 400 <= len(train["images"]) <= 700
    assert 70 <= len(val["images"]) <= 140
    for split, data in (("train", train), ("val", val)):
        files = sorted(p.name for p in (out / split).iterdir())
        assert files == sorted(im["file_name"] for im in data["images"])
        for im in data["images"][:30]:
            with Image.open(out / split / im["file_name"]) as pil:
                assert pil.format == "PNG" and pil.mode == "RGB"
                assert pil.size == (im["width"], im["height"]) == (128, 128)


def test_ids_are_unique_across_splits(small):
    splits = (small["train"], small["val"], small["tune"])
    image_ids = [im["id"] for d in splits for im in d["images"]]
    ann_ids = [a["id"] for d in splits for a in d["annotations"]]
    assert len(set(image_ids)) == len(image_ids)
    assert len(set(ann_ids)) == len(ann_ids)
    for data in splits:
        known = {im["id"] for im in data["images"]}
        assert {a["image_id"] for a in data["annotations"]} <= known


def test_density_is_lvis_like(small):
    """>= 8 objects per image on average, some images with 20 or more (LVIS v1: 12.7)."""
    per_image = Counter(a["image_id"] for a in small["train"]["annotations"])
    counts = np.array([per_image[im["id"]] for im in small["train"]["images"]])
    assert counts.min() >= 3 and counts.mean() >= 8
    assert (counts >= 20).sum() >= 10


def test_masks_are_the_visible_region_and_boxes_fit_them(small):
    """RLE decoded by pycocotools: the box is the mask's tight box, the area its pixel count,
    and the masks of one image never share a pixel (each is what the object shows)."""
    for data in (small["train"], small["val"]):
        for anns in list(_by_image(data).values())[:60]:
            union = np.zeros((128, 128), dtype=int)
            for a in anns:
                m = _mask(a)
                ys, xs = np.nonzero(m)
                assert a["iscrowd"] == 0 and len(ys) >= demo.MIN_VISIBLE_PIXELS
                assert a["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(),
                                     ys.max() + 1 - ys.min()]  # fmt: skip
                assert a["area"] == m.sum()
                union += m
            assert union.max() == 1


def test_occlusion_keeps_the_visible_minimum_and_does_happen(monkeypatch):
    """Against the full shapes the renderer placed: every visible mask lies inside its shape
    and keeps >= 40% of it, and some objects are partly hidden."""
    placed = []
    original = demo._place

    def recording(*args, **kwargs):
        found = original(*args, **kwargs)
        if found is not None:
            placed.append(found[0])
        return found

    monkeypatch.setattr(demo, "_place", recording)
    spec, hidden = SIZES["small"], 0
    for index in range(6):
        placed.clear()
        rng = np.random.default_rng([5, index])
        _, objects = demo._render_image(list(range(20)), spec, rng)
        full = [p for p in placed if p.label >= 0]
        assert len(full) == len(objects) >= 18
        for obj, (label, visible) in zip(full, objects, strict=True):
            shape = np.zeros_like(visible)
            h, w = obj.mask.shape
            shape[obj.top : obj.top + h, obj.left : obj.left + w] = obj.mask
            assert label == obj.label and not (visible & ~shape).any()
            assert visible.sum() >= MIN_VISIBLE_FRACTION * shape.sum() - 1e-9
            hidden += visible.sum() < shape.sum()
        assert len(placed) > len(full)  # unlabelled distractors were drawn too
    assert hidden >= 20


def test_colour_does_not_define_a_class(small):
    """Instances of one solid class come in many hues (colour is a nuisance, not a class)."""
    cats = {c["id"]: c for c in small["train"]["categories"]}
    hues = defaultdict(list)
    for image in small["train"]["images"][:200]:
        pixels = np.asarray(Image.open(small["out"] / "train" / image["file_name"]), np.float64)
        for a in _by_image(small["train"])[image["id"]]:
            m = _mask(a)
            if cats[a["category_id"]]["texture"] == "solid" and m.sum() >= 40:
                r, g, b = np.median(pixels[m], axis=0) / 255
                hues[a["category_id"]].append(colorsys.rgb_to_hsv(r, g, b)[0])
    spread = [np.histogram(h, bins=6, range=(0, 1))[0] for h in hues.values() if len(h) >= 20]
    assert spread and all((s > 0).sum() >= 5 for s in spread)


# ------------------------------------------------------------------------------ LVIS fields


def test_val_and_tune_cover_every_class_equally(small):
    counts = Counter(a["category_id"] for a in small["val"]["annotations"])
    assert set(counts) == {c["id"] for c in small["val"]["categories"]}
    assert set(counts.values()) == {SIZES["small"].val_instances_per_class}
    assert Counter(a["category_id"] for a in small["tune"]["annotations"]) == counts


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
    assert 0.003 * n_images < n_not_exhaustive < 0.06 * n_images


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


def test_lvis_evaluation_of_perfect_and_twin_confused_detections(small):
    """Ground truth as detections scores 1; labelling rare twins as their frequent partner
    costs AP through the federated negatives."""
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
    a = make_demo_dataset(tmp_path / "a", seed=3, num_train=20, num_val=6)
    make_demo_dataset(tmp_path / "b", seed=3, num_train=20, num_val=6)
    c = make_demo_dataset(tmp_path / "c", seed=4, num_train=20, num_val=6)
    files = _all_files(tmp_path / "a")
    assert files == _all_files(tmp_path / "b") and len(files) > 20
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", files, shallow=False)
    assert mismatch == [] and errors == []
    assert a["train_ann"].read_bytes() != c["train_ann"].read_bytes()
    img = a["train_images"] / "000001.png"
    assert img.read_bytes() != (c["train_images"] / "000001.png").read_bytes()


def test_overrides_scale_the_counts(tmp_path):
    paths = make_demo_dataset(tmp_path, seed=0, num_train=20, num_val=6)
    train = json.loads(paths["train_ann"].read_text())
    val = json.loads(paths["val_ann"].read_text())
    assert 14 <= len(train["images"]) <= 28 and 3 <= len(val["images"]) <= 10
    assert all(c["image_count"] >= 1 for c in train["categories"])  # every class kept


def test_bad_size_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown demo size 'huge'; allowed: small, medium"):
        make_demo_dataset(tmp_path, size="huge")
    with pytest.raises(SystemExit):
        main(["data", "make-demo", str(tmp_path), "--size", "huge"])


# sha256 over (relative path, bytes) of every file for seed 3, num_train=20, num_val=6 (v2
# generator): a change of any pixel or json byte shows here.
GOLDEN_ALL = "a704abbc33006b4ebb40fa585527f058fae7a66c42f23fe3c0995101afc4cd9f"


def test_golden_files_and_tune_balanced_like_val(tmp_path):
    import hashlib

    paths = make_demo_dataset(tmp_path, seed=3, num_train=20, num_val=6)
    h = hashlib.sha256()
    for f in sorted(tmp_path.rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(tmp_path)).encode())
            h.update(f.read_bytes())
    assert h.hexdigest() == GOLDEN_ALL
    val = json.loads(paths["val_ann"].read_text())
    tune = json.loads(paths["tune_ann"].read_text())
    per_class = [Counter(a["category_id"] for a in d["annotations"]) for d in (val, tune)]
    assert per_class[0] == per_class[1]  # same instances per class (the objects never fail)
    assert tune["categories"] == val["categories"] and tune["info"]["split"] == "tune"
    ids = [{i["id"] for i in d["images"]} for d in (val, tune)]
    train_ids = {i["id"] for i in json.loads(paths["train_ann"].read_text())["images"]}
    assert not ids[0] & ids[1] and not ids[1] & train_ids
    first = "000001.png"
    assert (paths["tune_images"] / first).read_bytes() != (paths["val_images"] / first).read_bytes()
