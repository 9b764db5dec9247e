"""The crop probe (``drcl.analysis.probe``): classifiers against hand-computed cases, collapse
monitors against analytic values, crops, weights loading, determinism, bad input, the CLI."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from drcl.analysis.probe import (
    ProbeNet,
    backbone_features,
    effective_rank,
    extract_crops,
    group_accuracy,
    knn_predict,
    load_probe_net,
    ncm_predict,
    per_class_accuracy,
    prepare_probe_data,
    run_probe,
    std_of_l2_normalized,
    twin_ids,
)
from drcl.cli.main import main

# rare / common / frequent by the json's frequency field; "b2" is the twin of "b"
CATS = [
    {"id": 4, "name": "r", "frequency": "r"},
    {"id": 2, "name": "b", "frequency": "c"},
    {"id": 9, "name": "g", "frequency": "f"},
    {"id": 5, "name": "b2", "frequency": "r", "twin": "b"},
]
COLOURS = {4: (220, 30, 30), 2: (30, 30, 220), 9: (30, 200, 30), 5: (30, 30, 160)}


def write_split(root, name, n_images, seed, cats=CATS):
    """``n_images`` 48x48 grey images, each with two solid squares of a class's colour."""
    rng = np.random.default_rng(seed)
    (root / name).mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(1, n_images + 1):
        img = np.full((48, 48, 3), 128, np.uint8)
        for x0 in (4, 26):
            cid = cats[(len(anns) + seed) % len(cats)]["id"]  # every class in every split
            y0, s = int(rng.integers(2, 26)), int(rng.integers(10, 18))
            img[y0 : y0 + s, x0 : x0 + s] = COLOURS[cid]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cid,
                         "bbox": [x0, y0, s, s], "area": s * s, "iscrowd": 0})  # fmt: skip
        Image.fromarray(img).save(root / name / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "height": 48, "width": 48})
    ann = root / f"{name}.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return str(ann), str(root / name)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe_toy")
    train = write_split(root, "train", 10, 0)
    val = write_split(root, "val", 6, 1)
    return {"root": root, "train": train, "val": val}


@pytest.fixture(scope="module")
def toy_data(toy):
    return prepare_probe_data(*toy["train"], *toy["val"], size=32)


# ----------------------------------------------------------------------------- classifiers


def test_ncm_is_cosine_to_normalised_class_means():
    # Euclidean nearest mean would say class 2 for [5, 0.5] (4.92 vs 5.02 away); cosine: class 1
    train = torch.tensor([[10.0, 0.0], [0.1, 0.1]])
    labels = torch.tensor([1, 2])
    assert ncm_predict(train, labels, torch.tensor([[5.0, 0.5]])).tolist() == [1]
    # means of *normalised* features: class 7 = {[10, 0], [0, 1]} -> direction [1, 1]/sqrt 2
    # (the raw mean [5, 0.5] points elsewhere); class 3 at [1, 0.3]. Test [0.5, 1]:
    # cos to [1,1]/sqrt2 = 0.949; cos to [1, 0.3] = 0.702 -> 7 (the raw mean would give 0.572).
    train = torch.tensor([[10.0, 0.0], [0.0, 1.0], [1.0, 0.3]])
    labels = torch.tensor([7, 7, 3])
    assert ncm_predict(train, labels, torch.tensor([[0.5, 1.0], [1.0, 0.2]])).tolist() == [7, 3]


def _unit(deg):
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_knn_temperature_weighted_votes_by_hand():
    # test [1, 0]: one class-1 neighbour at cos 0.99, two class-2 ones at cos 0.5, far class 3
    train = torch.tensor([_unit(math.degrees(math.acos(0.99))), _unit(60), _unit(-60), _unit(180)])
    labels = torch.tensor([1, 2, 2, 3])
    test = torch.tensor([[1.0, 0.0]])
    # T = 0.07: exp(0.99/0.07) = 1.4e6 > 2 exp(0.5/0.07) = 2.5e3 -> 1
    assert knn_predict(train, labels, test, k=3, temperature=0.07).tolist() == [1]
    # T = 10: exp(0.099) = 1.10 < 2 exp(0.05) = 2.10 -> the two votes win
    assert knn_predict(train, labels, test, k=3, temperature=10.0).tolist() == [2]
    # k = 1: the nearest alone
    assert knn_predict(train, labels, test, k=1, temperature=10.0).tolist() == [1]
    # k larger than the train set: all four vote; class 3 adds exp(-0.1) -> still 2
    assert knn_predict(train, labels, test, k=50, temperature=10.0).tolist() == [2]
    with pytest.raises(ValueError, match="k >= 1 and temperature > 0"):
        knn_predict(train, labels, test, k=0)


def test_knn_chunks_give_the_same_answer():
    gen = torch.Generator().manual_seed(0)
    train, test = torch.randn(50, 8, generator=gen), torch.randn(23, 8, generator=gen)
    labels = torch.randint(0, 5, (50,), generator=gen)
    whole = knn_predict(train, labels, test, chunk=1000)
    assert torch.equal(whole, knn_predict(train, labels, test, chunk=4))
    assert len(knn_predict(train, labels, test[:0])) == 0


def test_group_accuracy_averages_classes_not_samples():
    pred = torch.tensor([1, 1, 1, 2, 3, 3])
    true = torch.tensor([1, 1, 1, 1, 3, 3])  # class 1: 3 of 4 right; class 3: 2 of 2
    per_class = per_class_accuracy(pred, true)
    assert per_class == {1: 0.75, 3: 1.0}
    acc = group_accuracy(per_class, {1: "r", 3: "f"}, twins={3})
    assert acc == {"all": 87.5, "rare": 75.0, "common": None, "frequent": 100.0, "twins": 100.0}
    # no twins given, no classes at all: every group empty
    assert group_accuracy({}, {})["all"] is None
    assert group_accuracy(per_class, {1: "r", 3: "f"})["twins"] is None


def test_twin_ids_from_field_or_pairs():
    assert twin_ids(CATS) == {2, 5}
    plain = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]
    assert twin_ids(plain) == set()
    assert twin_ids(plain, {"confusable_pairs": [[1, 3]]}) == {1, 3}
    assert twin_ids([{"id": 1, "name": "a", "twin": "gone"}]) == set()  # unknown partner


# ----------------------------------------------------------------------------- monitors


def test_collapse_monitors_analytic_values():
    d = 16
    healthy = torch.eye(d) * 3.0  # orthogonal rows: std of a one-hot column is 1/sqrt(d)
    assert std_of_l2_normalized(healthy) == pytest.approx(1 / math.sqrt(d), rel=1e-5)
    assert effective_rank(healthy) == pytest.approx(d, rel=1e-6)
    collapsed = torch.ones(10, d) * 0.3
    assert std_of_l2_normalized(collapsed) == pytest.approx(0.0, abs=1e-7)
    assert effective_rank(collapsed) == pytest.approx(1.0, abs=1e-6)
    # two equal singular values: erank 2
    assert effective_rank(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])) == pytest.approx(2.0)
    assert math.isnan(std_of_l2_normalized(torch.ones(1, d)))


# ----------------------------------------------------------------------------- crops


def test_crops_hold_the_box_with_context(toy, tmp_path):
    crops = extract_crops(*toy["train"], size=32, context=0.1)
    data = json.loads(open(toy["train"][0]).read())
    anns = data["annotations"]
    assert crops.images.shape == (len(anns), 3, 32, 32) and crops.images.dtype == torch.uint8
    assert crops.labels.tolist() == [a["category_id"] for a in anns]
    x, y, w, h = anns[0]["bbox"]
    assert crops.boxes[0].tolist() == [x, y, x + w, y + h]
    # the centre is the object's colour, the corner (10% context) is the grey background
    colour = COLOURS[anns[0]["category_id"]]
    assert crops.images[0, :, 16, 16].tolist() == list(colour)
    assert crops.images[0, :, 0, 0].tolist() == [128, 128, 128]
    cached = extract_crops(*toy["train"], size=32, context=0.1, cache_dir=tmp_path)
    again = extract_crops(*toy["train"], size=32, context=0.1, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("crops_*.safetensors"))) == 1
    assert torch.equal(cached.images, crops.images) and torch.equal(again.images, crops.images)
    assert torch.equal(again.labels, crops.labels)


def test_max_per_class_caps_crops_and_rois_alike(toy, tmp_path):
    from drcl.analysis.probe import roi_features

    full = extract_crops(*toy["train"], size=16)
    capped = extract_crops(*toy["train"], size=16, max_per_class=2, cache_dir=tmp_path)
    counts = torch.bincount(full.labels)
    assert torch.equal(torch.bincount(capped.labels, minlength=len(counts)), counts.clamp(max=2))
    again = extract_crops(*toy["train"], size=16, max_per_class=2)
    assert torch.equal(again.boxes, capped.boxes)  # the same fixed choice every time
    # a crop is the full run's crop of the same box
    i = int((full.boxes == capped.boxes[0]).all(1).nonzero()[0])
    assert torch.equal(full.images[i], capped.images[0])
    net = load_probe_net("random", fpn_channels=16, box_head_dim=32)
    rois = roi_features(net, toy["train"][0], toy["train"][1], max_per_class=2)
    assert rois.shape == (len(capped), 32)
    with pytest.raises(ValueError, match="max_per_class >= 0"):
        extract_crops(*toy["train"], max_per_class=-1)


def test_crops_bad_input(toy, tmp_path):
    with pytest.raises(FileNotFoundError, match="annotation file not found: .*nope.json"):
        extract_crops(tmp_path / "nope.json", toy["train"][1])
    empty = tmp_path / "empty.json"
    images = [{"id": 1, "file_name": "1.png", "height": 48, "width": 48}]
    crowd = [{"id": 1, "image_id": 1, "category_id": 4, "bbox": [0, 0, 5, 5], "iscrowd": 1}]
    empty.write_text(json.dumps({"images": images, "annotations": crowd, "categories": CATS}))
    with pytest.raises(ValueError, match="empty.json: no usable box"):
        extract_crops(empty, toy["train"][1])
    with pytest.raises(FileNotFoundError, match="image 1: file not found"):
        extract_crops(toy["train"][0], tmp_path)
    with pytest.raises(ValueError, match="size >= 8"):
        extract_crops(*toy["train"], size=4)


# ----------------------------------------------------------------------------- networks


def collapsed_net() -> ProbeNet:
    """ResNet whose stem BN outputs a constant: every crop gives the same features."""
    net = load_probe_net("random", depth=18)
    with torch.no_grad():
        net.body.bn1.weight.zero_()
        net.body.bn1.bias.fill_(0.5)
    return net


def test_collapsed_encoder_gives_chance_and_zero_std(toy_data):
    result = run_probe(collapsed_net(), data=toy_data, readouts=["C5"])
    r = result["readouts"]["C5"]
    assert r["std"] == pytest.approx(0.0, abs=1e-6)
    assert r["erank"] == pytest.approx(1.0, abs=1e-3)
    n = result["classes"]["all"]
    assert n == 4
    # every crop is called one class: 1 of 4 classes right
    assert r["ncm"]["all"] == pytest.approx(100.0 / n)
    assert r["knn"]["all"] == pytest.approx(100.0 / n)


def test_random_init_separates_colours_and_is_deterministic(toy_data):
    a = run_probe("random", data=toy_data, readouts=["C4", "C5"], seed=3)
    b = run_probe("random", data=toy_data, readouts=["C4", "C5"], seed=3)
    a.pop("seconds"), b.pop("seconds")
    assert a == b
    r = a["readouts"]["C4"]
    assert r["ncm"]["all"] > 60 and r["erank"] > 1.5  # chance is 25
    assert set(r["ncm"]) == {"all", "rare", "common", "frequent", "twins"}
    assert a["trained"] == {"body": False, "fpn": False, "box_head": False}
    assert a["classes"] == {"all": 4, "rare": 2, "common": 1, "frequent": 1, "twins": 2}
    assert r["dim"] == 256 and a["readouts"]["C5"]["dim"] == 512


def test_features_eval_mode_and_restored(toy_data):
    net = load_probe_net("random")
    net.body.train()
    before = net.body.bn1.running_mean.clone()
    f1 = backbone_features(net, toy_data.train.images[:5], ["C5"])["C5"]
    f2 = backbone_features(net, toy_data.train.images, ["C5"], batch_size=3)["C5"][:5]
    assert net.body.training  # mode given back
    assert torch.equal(net.body.bn1.running_mean, before)  # eval mode: statistics untouched
    assert torch.allclose(f1, f2, atol=1e-5)  # batching does not change a crop's feature
    with pytest.raises(ValueError, match="allowed: C2, C3, C4, C5"):
        backbone_features(net, toy_data.train.images[:2], ["C6"])


def _detector_state(net: ProbeNet) -> dict:
    state = {f"backbone.body.{k}": v for k, v in net.body.state_dict().items()}
    state |= {f"backbone.fpn.{k}": v for k, v in net.fpn.state_dict().items()}
    state |= {f"roi_heads.box_head.{k}": v for k, v in net.box_head.state_dict().items()}
    state["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(5, 32)  # ignored
    return {k: v.contiguous() for k, v in state.items()}


def test_load_files_of_each_layout(toy_data, tmp_path):
    src = load_probe_net("random", depth=18, fpn_channels=16, box_head_dim=32, seed=1)
    det = tmp_path / "pretrained.safetensors"
    save_file(_detector_state(src), str(det))
    net = load_probe_net(det)  # architecture read from the file
    assert net.trained == {"body": True, "fpn": True, "box_head": True}
    assert net.box_head.fc6.out_features == 32 and net.fpn.inner_blocks[0][0].out_channels == 16
    ref = backbone_features(src, toy_data.eval.images, ["C5"])["C5"]
    assert torch.equal(backbone_features(net, toy_data.eval.images, ["C5"])["C5"], ref)
    # a bare torchvision ResNet (the generic backbone): body only, with fc dropped
    resnet = {k: v for k, v in src.body.state_dict().items()}
    resnet |= {"fc.weight": torch.zeros(20, 512), "fc.bias": torch.zeros(20)}
    generic = tmp_path / "generic.safetensors"
    save_file(resnet, str(generic))
    net = load_probe_net(generic)
    assert net.trained == {"body": True, "fpn": False, "box_head": False}
    assert torch.equal(backbone_features(net, toy_data.eval.images, ["C5"])["C5"], ref)
    # a trainer checkpoint of the 2DRCL model (online.* keys, under "model")
    online = {f"online.{k}": v for k, v in _detector_state(src).items() if k.startswith("backbone")}
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"model": online, "iteration": 3}, ckpt)
    assert load_probe_net(ckpt).trained == {"body": True, "fpn": True, "box_head": False}


def test_load_bad_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="probe weights: file not found"):
        load_probe_net(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    save_file({"something.weight": torch.zeros(2)}, str(bad))
    with pytest.raises(ValueError, match="bad.safetensors: no ResNet 'layer3.*' key"):
        load_probe_net(bad)


def test_roi_readout_and_module_weights(toy_data):
    from drcl.models.drcl import DRCLModel

    model = DRCLModel(depth=18, fpn_channels=16, box_head_dim=32, norm="bn")
    model.train()
    result = run_probe(model, data=toy_data, readouts=["C5", "roi"], classifiers=["ncm"])
    assert model.training and model.online.box_head.training  # modes restored
    assert result["readouts"]["roi"]["dim"] == 32
    assert result["trained"] == {"body": True, "fpn": True, "box_head": True}
    assert 0 <= result["readouts"]["roi"]["ncm"]["all"] <= 100
    with pytest.raises(ValueError, match="allowed: ncm, knn"):
        run_probe(model, data=toy_data, classifiers=["svm"])
    with pytest.raises(ValueError, match="allowed: C2, C3, C4, C5, roi"):
        run_probe(model, data=toy_data, readouts=["fc"])


def test_eval_class_without_train_crops_is_left_out(toy, tmp_path):
    only = [c for c in CATS if c["id"] != 9]
    train = write_split(tmp_path, "train_no_g", 6, 0, cats=only)
    train_json = json.loads(open(train[0]).read())
    train_json["categories"] = CATS  # the class exists but has no training box
    open(train[0], "w").write(json.dumps(train_json))
    data = prepare_probe_data(*train, *toy["val"], size=32)
    assert data.excluded == [9]
    result = run_probe("random", data=data, readouts=["C5"], classifiers=["ncm"])
    assert result["classes"]["all"] == 3 and result["readouts"]["C5"]["ncm"]["frequent"] is None


# ----------------------------------------------------------------------------- CLI


def test_cli_writes_json_and_prints_table(toy, tmp_path, capsys):
    out = tmp_path / "probe.json"
    argv = ["analyze", "probe", "--weights", "random", "--weights", "seed1=random",
            "--train-ann", toy["train"][0], "--train-images", toy["train"][1],
            "--eval-ann", toy["val"][0], "--eval-images", toy["val"][1],
            "--out", str(out), "--size", "32", "--readouts", "C5"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert set(result["runs"]) == {"random", "seed1"}
    assert result["runs"]["random"] == {**result["runs"]["seed1"], "seconds": ANY}
    assert result["inputs"]["options"]["readouts"] == ["C5"]
    text = capsys.readouterr().out
    assert "readout C5" in text and "frequent" in text and "erank" in text


def test_cli_reads_data_and_model_from_config(toy, tmp_path):
    out = tmp_path / "probe.json"
    sets = [
        f"data.train_ann={toy['train'][0]}",
        f"data.train_images={toy['train'][1]}",
        "data.val_ann=elsewhere.json",
        "data.val_images=elsewhere",
        "model.fpn_channels=64",
    ]
    argv = ["analyze", "probe", "--weights", "random", "--config", "configs/finetune/demo.yaml",
            "--set", *sets, "--eval-ann", toy["val"][0], "--eval-images", toy["val"][1],
            "--out", str(out), "--size", "32", "--readouts", "C3"]  # fmt: skip
    assert main(argv) == 0  # the eval flags win over data.val_*
    result = json.loads(out.read_text())
    assert result["inputs"]["train_ann"] == toy["train"][0]
    assert result["inputs"]["eval_ann"] == toy["val"][0]
    assert result["inputs"]["options"]["fpn_channels"] == 64


class _Any:
    def __eq__(self, other):
        return True


ANY = _Any()


def test_cli_bad_input(toy, tmp_path, capsys):
    base = ["analyze", "probe", "--train-images", toy["train"][1], "--size", "32",
            "--eval-ann", toy["val"][0], "--eval-images", toy["val"][1]]  # fmt: skip
    out = tmp_path / "x.json"
    missing = [*base, "--weights", "random", "--train-ann", str(tmp_path / "no.json"),
               "--out", str(out)]  # fmt: skip
    assert main(missing) != 0
    assert "annotation file not found" in capsys.readouterr().err
    assert not out.exists()
    overwrite = [*base, "--weights", "random", "--train-ann", toy["train"][0],
                 "--out", toy["val"][0]]  # fmt: skip
    assert main(overwrite) != 0
    assert "would overwrite the input" in capsys.readouterr().err
    no_file = [*base, "--weights", f"w={tmp_path / 'w.safetensors'}", "--train-ann",
               toy["train"][0], "--out", str(out)]  # fmt: skip
    assert main(no_file) != 0
    assert "--weights w=" in capsys.readouterr().err
    no_ann = ["analyze", "probe", "--weights", "random", "--out", str(out)]
    assert main(no_ann) != 0
    assert "--train-ann is required" in capsys.readouterr().err
