import hashlib
import json
import math

import numpy as np
import pytest
import torch

from drcl.cli.main import main
from drcl.data.demo_shapes import SHAPES, TEXTURES
from drcl.generic import data as generic_data
from drcl.generic.data import CLASSES, load_split, make_generic_dataset, shape_overlap
from drcl.generic.recipe import GenericRecipe
from drcl.generic.train import cached_generic_backbone, make_generic_backbone
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
    # many classes, none named by a shape or texture of the detection set's classes
    words = {w for name in CLASSES for w in name.split("_", 1)}
    assert not words & (set(SHAPES) | set(TEXTURES)) and len(CLASSES) >= 100


def test_every_generic_shape_is_drawn_and_differs_from_the_detection_shapes():
    g = np.linspace(-1.5, 1.5, 121)
    u, v = np.meshgrid(g, g)
    for name, fn in generic_data.SHAPES.items():
        assert fn(u, v).mean() > 0.05, name  # a convex-polygon orientation bug once gave none
    pairs = shape_overlap(angles=12, grid=81)
    assert len(pairs) == len(generic_data.SHAPES) * len(SHAPES)
    assert [p[2] for p in pairs] == sorted((p[2] for p in pairs), reverse=True)
    assert pairs[0][2] < 0.95  # no generic shape is a detection shape at some pose


def test_shape_overlap_finds_a_shared_shape(monkeypatch):
    """A detection square put into the generic set, turned and mirrored, matches at IoU ~1."""
    from drcl.data.demo_shapes import SHAPE_MASKS

    def turned_square(u, v):
        c, s = np.cos(0.5), np.sin(0.5)  # the overlap search must undo the rotation
        return SHAPE_MASKS["square"](c * u - s * v, s * u + c * v)

    monkeypatch.setattr(generic_data, "SHAPES", {"square_copy": turned_square})
    best = {det: iou for _, det, iou in shape_overlap(angles=72, grid=81)}
    assert best["square"] > 0.95 and best["disc"] < best["square"]


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
    assert f"{len(CLASSES)} classes" in capsys.readouterr().out
    assert len(list((out / "val").rglob("*.png"))) == len(CLASSES)


def test_cached_backbone_is_reused_and_keyed_by_the_recipe(tmp_path):
    recipe = GenericRecipe(image_size=16, train_per_class=1, val_per_class=1, iters=1, batch_size=4)
    first = cached_generic_backbone(recipe, tmp_path)
    stamp = first.stat().st_mtime_ns
    assert cached_generic_backbone(recipe, tmp_path) == first  # reused, not retrained
    assert first.stat().st_mtime_ns == stamp and first.parent.name == f"generic-{recipe.key()}"
    other = GenericRecipe(image_size=16, train_per_class=1, val_per_class=1, iters=2, batch_size=4)
    assert other.key() != recipe.key()
    assert GenericRecipe(weights="x").key() == GenericRecipe().key()  # weights is not a recipe


def test_factorised_head_loss_and_prediction_by_hand(tmp_path):
    """head=factors: texture logits then shape logits; loss = CE(texture) + CE(shape); a class is
    predicted when both of its factors are."""
    from drcl.generic.train import _loss, _predict, class_factors

    make_generic_dataset(tmp_path, image_size=16, train_per_class=1, val_per_class=1)
    factors = class_factors(tmp_path)
    n_tex, n_shape = len(generic_data.TEXTURES), len(generic_data.SHAPES)
    assert factors.shape == (len(CLASSES), 2) and factors.max(0).tolist() == [
        n_tex - 1,
        n_shape - 1,
    ]
    label = 5
    tex, shape = factors[label]
    logits = torch.zeros(1, n_tex + n_shape)
    logits[0, tex], logits[0, n_tex + shape] = 3.0, 2.0
    expected = -math.log(math.exp(3) / (math.exp(3) + n_tex - 1)) - math.log(
        math.exp(2) / (math.exp(2) + n_shape - 1)
    )
    assert _loss(logits, torch.tensor([label]), factors).item() == pytest.approx(expected)
    assert _predict(logits, factors).tolist() == [label]
    with pytest.raises(ValueError, match="allowed: sgd, adamw"):
        from drcl.generic.train import _optimizer

        _optimizer(torch.nn.Linear(2, 2), GenericRecipe(optimizer="lbfgs"))
