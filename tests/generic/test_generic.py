import hashlib
import json

import numpy as np
import pytest
import torch

from drcl.cli.main import main
from drcl.data.demo_shapes import PATTERNS, SHAPES
from drcl.generic.data import CLASSES, load_split, make_generic_dataset
from drcl.generic.recipe import GenericRecipe
from drcl.generic.train import make_generic_backbone
from drcl.models.backbone import build_resnet_fpn, load_resnet_weights


def _digest(folder):
    return {
        p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.png"))
    }


def test_set_is_balanced_deterministic_and_unlike_the_demo(tmp_path):
    make_generic_dataset(tmp_path / "a", seed=3, image_size=32, train_per_class=3, val_per_class=1)
    make_generic_dataset(tmp_path / "b", seed=3, image_size=32, train_per_class=3, val_per_class=1)
    make_generic_dataset(tmp_path / "c", seed=4, image_size=32, train_per_class=3, val_per_class=1)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")
    images, labels = load_split(tmp_path / "a", "train")
    assert images.shape == (3 * len(CLASSES), 32, 32, 3) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [3] * len(CLASSES)
    # no shape or texture word of the detection set's classes
    words = {w for name in CLASSES for w in name.split("_")}
    assert not words & (set(SHAPES) | set(PATTERNS)) and len(CLASSES) == 20


def test_bad_sizes_and_missing_set(tmp_path):
    with pytest.raises(ValueError, match="image_size >= 16"):
        make_generic_dataset(tmp_path, image_size=8)
    with pytest.raises(FileNotFoundError, match="make-generic"):
        load_split(tmp_path / "none", "train")


def test_backbone_trains_deterministically_and_loads_as_model_weights(tmp_path):
    recipe = GenericRecipe(image_size=32, train_per_class=2, val_per_class=1, iters=2, batch_size=8)
    a = make_generic_backbone(recipe, tmp_path / "a")
    b = make_generic_backbone(recipe, tmp_path / "b")
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    from safetensors.torch import load_file

    state = load_file(str(a))
    assert "conv1.weight" in state and "layer4.1.bn2.running_var" in state and "fc.weight" in state
    fpn = build_resnet_fpn(18, 16, "bn", 5, a)  # model.weights=PATH
    assert torch.equal(fpn.body.conv1.weight, state["conv1.weight"])
    missing, unexpected = load_resnet_weights(build_resnet_fpn(18, 16, "bn").body, a)
    assert missing == [] and unexpected == []
    cost = json.loads((tmp_path / "a" / "cost.json").read_text())  # every training run has one
    assert cost["stage"] == "generic" and cost["iterations"] == 2 and cost["images_seen"] == 16
    assert cost["wall_time_s"] > 0 and cost["peak_rss_bytes"] > 0 and cost["device"] == "cpu"


def test_make_generic_cli(tmp_path, capsys):
    out = tmp_path / "g"
    argv = ["data", "make-generic", str(out), "--image-size", "16", "--train-per-class", "1"]
    assert main([*argv, "--val-per-class", "1"]) == 0
    assert "20 classes" in capsys.readouterr().out
    assert len(list((out / "val").rglob("*.png"))) == 20
