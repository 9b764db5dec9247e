"""Classifier weight norms: hand-computed values, every checkpoint format, bad inputs, the plot."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from drcl.analysis.weight_norms import (
    CLS_KEY,
    classifier_weight_norms,
    group_means,
    plot_weight_norms,
)

# background row first, then classes with norms 5, 2, 3 (3-4-5 and 1-2-2 triangles)
W = torch.tensor([[9.0, 9.0, 9.0], [3.0, 4.0, 0.0], [0.0, 0.0, -2.0], [1.0, 2.0, 2.0]])
EXPECTED = np.array([5.0, 2.0, 3.0])


def state():
    return {CLS_KEY: W.clone(), "roi_heads.box_predictor.cls_score.bias": torch.zeros(4)}


def test_norms_of_a_hand_made_state_dict():
    np.testing.assert_allclose(classifier_weight_norms(state()), EXPECTED)
    np.testing.assert_allclose(classifier_weight_norms(state(), num_classes=3), EXPECTED)
    ddp = {"module." + k: v for k, v in state().items()}
    np.testing.assert_allclose(classifier_weight_norms(ddp), EXPECTED)


def test_every_checkpoint_format(tmp_path):
    save_file(state(), tmp_path / "w.safetensors")
    torch.save(state(), tmp_path / "plain.pth")
    torch.save({"model": state(), "iteration": 3}, tmp_path / "ckpt.pth")
    run = tmp_path / "run"
    run.mkdir()
    save_file(state(), run / "model_final.safetensors")
    for path in ("w.safetensors", "plain.pth", "ckpt.pth", "run"):
        np.testing.assert_allclose(classifier_weight_norms(tmp_path / path), EXPECTED)
        np.testing.assert_allclose(classifier_weight_norms(str(tmp_path / path)), EXPECTED)


def test_bad_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        classifier_weight_norms(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth: not a readable safetensors or torch"):
        classifier_weight_norms(tmp_path / "junk.pth")  # the reader's cases: tests/utils
    save_file({"backbone.body.conv1.weight": torch.zeros(1)}, tmp_path / "pre.safetensors")
    with pytest.raises(ValueError, match="pre.safetensors: no key 'roi_heads.box_predictor"):
        classifier_weight_norms(tmp_path / "pre.safetensors")
    with pytest.raises(ValueError, match="4 rows, expected 5 classes"):
        classifier_weight_norms(state(), num_classes=5)
    with pytest.raises(ValueError, match="expected 2-D"):
        classifier_weight_norms({CLS_KEY: torch.zeros(3)})


def test_group_means_and_plot(tmp_path):
    groups = ["r", "f", "f"]
    assert group_means(EXPECTED, groups) == {"r": 5.0, "f": 2.5}
    counts = np.array([0, 50, 4000])
    out = plot_weight_norms({"a": EXPECTED, "b": EXPECTED * 2}, counts, groups, tmp_path / "n.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in tmp_path.iterdir()] == ["n.png"]
    with pytest.raises(ValueError, match="run 'a': 2 norms, 3 class counts"):
        plot_weight_norms({"a": EXPECTED[:2]}, counts, groups, tmp_path / "m.png")
