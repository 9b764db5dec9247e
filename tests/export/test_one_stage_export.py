"""One-stage exports (RetinaNet / FCOS / ATSS, FPN on C3-C5 + P6/P7) and pre-trained (C2-C5)
exports into one-stage models, for detectron2 and mmdetection, without the libraries installed.

Expected key/shape tables and the FPN computations below are written from the libraries'
sources (read from facebookresearch/detectron2 and open-mmlab/mmdetection):

- detectron2 ``modeling/backbone/fpn.py``: ``FPN`` adds ``fpn_lateral{s}`` (1x1, C_s -> W, bias)
  and ``fpn_output{s}`` (3x3, W -> W, bias) for each input feature, with s = log2(stride);
  top-down: nearest x2 upsampling + sum, then the output conv. ``LastLevelP6P7``: ``top_block.p6``
  (3x3 stride 2, in -> W) and ``top_block.p7`` (3x3 stride 2, W -> W) on ``relu(p6)``; its input
  is ``res5`` (C5) in ``build_retinanet_resnet_fpn_backbone`` and ``configs/common/models/
  retinanet.py`` (``in_channels=2048``), ``p5`` with ``in_channels=256`` in
  ``configs/common/models/fcos.py``.
- mmdetection ``mmdet/models/necks/fpn.py``: ``lateral_convs`` / ``fpn_convs`` are ModuleLists of
  ``ConvModule`` (conv under ``.conv``) numbered by position from ``start_level``; extra levels
  (``num_outs`` beyond the inputs) append stride-2 3x3 convs to ``fpn_convs``, the first on the
  last input (``on_input``) or the last output (``on_output``); ``relu_before_extra_convs``
  applies a ReLU before every extra conv after the first. ``configs/atss/atss_r50_fpn_1x_coco.py``:
  ``in_channels=[256, 512, 1024, 2048], start_level=1, add_extra_convs='on_output',
  num_outs=5``. Faster R-CNN: ``start_level=0``, no extra convs (max-pool P6).
"""

from __future__ import annotations

import argparse
import logging

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from drcl.detection.one_stage import build_resnet_fpn_p3p7
from drcl.export.cli import cli_export
from drcl.export.convert import export_state, fpn_first_level
from drcl.models.backbone import build_resnet_fpn

W = 16  # FPN width of the test models
R18 = {2: 64, 3: 128, 4: 256, 5: 512}  # ResNet-18 output channels of C2..C5


def _prefixed(module, prefix="backbone."):
    return {f"{prefix}{k}": v for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def one_stage():
    torch.manual_seed(0)
    return build_resnet_fpn_p3p7(18, W, "bn", 5, None).eval()


@pytest.fixture(scope="module")
def pretrained():
    torch.manual_seed(1)
    return build_resnet_fpn(18, W, "bn").eval()


# ---- tables from the sources ---------------------------------------------------------------------


def d2_fpn_table(stages, p6_in=None):
    """detectron2 FPN keys -> shapes; ``p6_in``: LastLevelP6P7's in_channels (None: none)."""
    table = {}
    for s in stages:
        table[f"backbone.fpn_lateral{s}.weight"] = (W, R18[s], 1, 1)
        table[f"backbone.fpn_output{s}.weight"] = (W, W, 3, 3)
        table[f"backbone.fpn_lateral{s}.bias"] = table[f"backbone.fpn_output{s}.bias"] = (W,)
    if p6_in is not None:
        table["backbone.top_block.p6.weight"] = (W, p6_in, 3, 3)
        table["backbone.top_block.p7.weight"] = (W, W, 3, 3)
        table["backbone.top_block.p6.bias"] = table["backbone.top_block.p7.bias"] = (W,)
    return table


def mmdet_fpn_table(start_level, num_outs, extra=None):
    """mmdet FPN (in_channels C2..C5) keys -> shapes; ``extra``: 'on_input' / 'on_output'."""
    ins = [R18[s] for s in (2, 3, 4, 5)]
    table = {}
    for i in range(start_level, len(ins)):
        j = i - start_level
        table[f"neck.lateral_convs.{j}.conv.weight"] = (W, ins[i], 1, 1)
        table[f"neck.fpn_convs.{j}.conv.weight"] = (W, W, 3, 3)
    used = len(ins) - start_level
    for k in range(num_outs - used if extra else 0):
        c_in = ins[-1] if k == 0 and extra == "on_input" else W
        table[f"neck.fpn_convs.{used + k}.conv.weight"] = (W, c_in, 3, 3)
    for key in list(table):
        table[key.replace(".weight", ".bias")] = (W,)
    return table


def load_report(exported, table, prefix):
    """What a loader reports: (unexpected, shape mismatches, missing) for keys under ``prefix``."""
    got = {k: tuple(v.shape) for k, v in exported.items() if k.startswith(prefix)}
    unexpected = sorted(set(got) - set(table))
    mismatch = sorted(k for k in set(got) & set(table) if got[k] != table[k])
    missing = sorted(set(table) - set(got))
    return unexpected, mismatch, missing


ATSS_MM = mmdet_fpn_table(1, 5, "on_output")
RETINA_MM = mmdet_fpn_table(1, 5, "on_input")
FASTER_MM = mmdet_fpn_table(0, 5)
D2_FCOS = d2_fpn_table((3, 4, 5), p6_in=W)
D2_RETINA = d2_fpn_table((3, 4, 5), p6_in=R18[5])
D2_FASTER = d2_fpn_table((2, 3, 4, 5))


# ---- the libraries' FPN computations, from the sources ------------------------------------------


def _conv(x, state, key, stride=1):
    w = state[f"{key}.weight"]
    return F.conv2d(x, w, state[f"{key}.bias"], stride, w.shape[-1] // 2)


def d2_fpn(c, state, stages):
    """detectron2 ``FPN.forward`` + ``LastLevelP6P7`` on P5 -> {stage: feature}."""
    top = max(stages)
    prev = _conv(c[top], state, f"backbone.fpn_lateral{top}")
    out = {top: _conv(prev, state, f"backbone.fpn_output{top}")}
    for s in sorted(stages, reverse=True)[1:]:
        prev = _conv(c[s], state, f"backbone.fpn_lateral{s}") + F.interpolate(
            prev, scale_factor=2, mode="nearest"
        )
        out[s] = _conv(prev, state, f"backbone.fpn_output{s}")
    if "backbone.top_block.p6.weight" in state:
        out[6] = _conv(out[5], state, "backbone.top_block.p6", 2)
        out[7] = _conv(F.relu(out[6]), state, "backbone.top_block.p7", 2)
    return out


def mmdet_fpn(c, state, start_level, relu_before_extra_convs):
    """mmdet ``FPN.forward`` (inputs C2..C5, add_extra_convs='on_output') -> list of outputs."""
    inputs = [c[s] for s in (2, 3, 4, 5)]
    lat = [
        _conv(inputs[i + start_level], state, f"neck.lateral_convs.{i}.conv")
        for i in range(4 - start_level)
    ]
    for i in range(len(lat) - 1, 0, -1):
        lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[2:], mode="nearest")
    outs = [_conv(x, state, f"neck.fpn_convs.{i}.conv") for i, x in enumerate(lat)]
    i = len(outs)
    while f"neck.fpn_convs.{i}.conv.weight" in state:
        x = F.relu(outs[-1]) if relu_before_extra_convs and i > len(lat) else outs[-1]
        outs.append(_conv(x, state, f"neck.fpn_convs.{i}.conv", 2))
        i += 1
    return outs


def _features(body_model, x):
    """ResNet C2..C5 of ``x`` and the drcl FPN's outputs, by stride exponent."""
    body = body_model.body
    h = body.maxpool(body.relu(body.bn1(body.conv1(x))))
    c = {}
    for s, layer in zip(
        (2, 3, 4, 5), (body.layer1, body.layer2, body.layer3, body.layer4), strict=True
    ):
        h = layer(h)
        c[s] = h
    return c


# ---- tests ---------------------------------------------------------------------------------------


def test_fpn_first_level_reads_the_channels(one_stage, pretrained):
    assert fpn_first_level(_prefixed(one_stage)) == 3
    assert fpn_first_level(_prefixed(pretrained)) == 2
    assert fpn_first_level({"backbone.body.conv1.weight": torch.zeros(1)}) is None


def test_one_stage_to_detectron2_at_stages_3_to_7(one_stage):
    out = export_state(_prefixed(one_stage), "detectron2")
    fpn = {k: v for k, v in out.state.items() if k.startswith(("backbone.fpn", "backbone.top"))}
    # detectron2's FCOS config (P6 from P5): every FPN tensor loads, nothing left over
    assert load_report(fpn, D2_FCOS, "backbone.") == ([], [], [])
    # detectron2's RetinaNet (P6 from C5): only top_block.p6 does not fit; the warning says so
    assert load_report(fpn, D2_RETINA, "backbone.") == ([], ["backbone.top_block.p6.weight"], [])
    assert any("RetinaNet computes P6 from C5" in w for w in out.warnings)
    # the features detectron2 computes from these weights are drcl's P3-P7, exactly
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        ours = list(one_stage(x).values())
        theirs = d2_fpn(_features(one_stage, x), out.state, (3, 4, 5))
    for s, feature in zip((3, 4, 5, 6, 7), ours, strict=True):
        torch.testing.assert_close(theirs[s], feature, rtol=0, atol=1e-6)


def test_one_stage_to_mmdet_needs_relu_before_extra_convs(one_stage):
    out = export_state(_prefixed(one_stage), "mmdet")
    assert load_report(out.state, ATSS_MM, "neck.") == ([], [], [])
    # mmdet's RetinaNet neck (on_input: P6 from C5) cannot take P6
    assert load_report(out.state, RETINA_MM, "neck.")[1] == ["neck.fpn_convs.3.conv.weight"]
    assert any("relu_before_extra_convs=True" in w for w in out.warnings)
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        ours = list(one_stage(x).values())
        c = _features(one_stage, x)
        exact = mmdet_fpn(c, out.state, 1, relu_before_extra_convs=True)
        stock = mmdet_fpn(c, out.state, 1, relu_before_extra_convs=False)
    for a, b in zip(exact, ours, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    for a, b in zip(stock[:4], ours[:4], strict=True):  # P3-P6 agree either way
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert (stock[4] - ours[4]).abs().max() > 1e-3  # P7 differs without the setting


def test_pretrained_into_mmdet_one_stage_needs_for_one_stage(pretrained, caplog):
    state = _prefixed(pretrained)
    auto = export_state(state, "mmdet")  # two-stage layout, as before, with a warning
    assert load_report(auto.state, FASTER_MM, "neck.") == ([], [], [])
    unexpected, mismatch, _ = load_report(auto.state, ATSS_MM, "neck.")
    assert unexpected == ["neck.lateral_convs.3.conv.bias", "neck.lateral_convs.3.conv.weight"]
    assert len(mismatch) == 3  # lateral_convs.0-2 hold C2-C4 where mmdet expects C3-C5
    assert any("--for one-stage" in w for w in auto.warnings)
    out = export_state(state, "mmdet", "one-stage")
    unexpected, mismatch, missing = load_report(out.state, ATSS_MM, "neck.")
    assert (unexpected, mismatch) == ([], [])
    assert missing == [f"neck.fpn_convs.{i}.conv.{t}" for i in (3, 4) for t in ("bias", "weight")]
    assert sorted(out.dropped) == sorted(
        k for k in state if k.startswith(("backbone.fpn.inner_blocks.0.", "backbone.fpn.layer_"
                                          "blocks.0."))
    )  # fmt: skip
    # mmdet's P3-P5 from the exported weights are the pre-trained P3-P5
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        ours = list(pretrained(x).values())  # P2, P3, P4, P5, pool
        theirs = mmdet_fpn(_features(pretrained, x), out.state, 1, True)
    for a, b in zip(theirs, ours[1:4], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_pretrained_into_detectron2_lands_by_stride_either_way(pretrained):
    state = _prefixed(pretrained)
    auto = export_state(state, "detectron2")
    assert load_report(auto.state, D2_FASTER, "backbone.fpn") == ([], [], [])
    assert auto.warnings == []  # stage names: fpn_*3-5 fit a one-stage model too
    one = export_state(state, "detectron2", "one-stage")
    fcos_fpn = {k: v for k, v in D2_FCOS.items() if "top_block" not in k}
    assert load_report(one.state, fcos_fpn, "backbone.fpn") == ([], [], [])
    for s in (3, 4, 5):
        for kind in ("lateral", "output"):
            key = f"backbone.fpn_{kind}{s}.weight"
            assert torch.equal(one.state[key], auto.state[key])
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        ours = list(pretrained(x).values())
        theirs = d2_fpn(_features(pretrained, x), one.state, (3, 4, 5))
    for s, feature in zip((3, 4, 5), ours[1:4], strict=True):
        torch.testing.assert_close(theirs[s], feature, rtol=0, atol=1e-6)


def test_two_stage_export_of_a_one_stage_checkpoint_is_refused(one_stage):
    with pytest.raises(ValueError, match="starts at C3.*needs a P2 level"):
        export_state(_prefixed(one_stage), "mmdet", "two-stage")
    with pytest.raises(ValueError, match="--for: got 'x', allowed: two-stage, one-stage"):
        export_state(_prefixed(one_stage), "mmdet", "x")


def test_cli_for_one_stage_prints_the_settings(pretrained, tmp_path, caplog):
    src = tmp_path / "pretrained.safetensors"
    save_file({k: v.contiguous() for k, v in _prefixed(pretrained).items()}, str(src))
    out = tmp_path / "mm.pth"
    args = argparse.Namespace(checkpoint=str(src), to="mmdet", out=str(out), arch="one-stage")
    with caplog.at_level(logging.INFO):
        assert cli_export(args) == 0
    text = caplog.text
    assert "left out 4 P2 FPN tensors" in text and "start_level=1" in text
    saved = torch.load(out, weights_only=True)["state_dict"]
    assert "neck.lateral_convs.3.conv.weight" not in saved
    assert saved["neck.lateral_convs.0.conv.weight"].shape == (W, R18[3], 1, 1)
    caplog.clear()
    args = argparse.Namespace(checkpoint=str(src), to="mmdet", out=str(tmp_path / "a.pth"))
    with caplog.at_level(logging.INFO):
        assert cli_export(args) == 0
    assert "export again with --for one-stage" in caplog.text


def test_drcl_export_for_one_stage_from_the_command_line(pretrained, tmp_path, capsys):
    from drcl.cli.main import main

    src = tmp_path / "pretrained.safetensors"
    save_file({k: v.contiguous() for k, v in _prefixed(pretrained).items()}, str(src))
    out = tmp_path / "d2.pth"
    assert (
        main(["export", str(src), "--to", "detectron2", "--out", str(out), "--for", "one-stage"])
        == 0
    )
    saved = torch.load(out, weights_only=True)["model"]
    assert "backbone.fpn_lateral2.weight" not in saved and "backbone.fpn_lateral3.weight" in saved
    with pytest.raises(SystemExit):  # argparse names the allowed values
        main(["export", str(src), "--to", "mmdet", "--out", str(out), "--for", "retinanet"])
    assert "invalid choice: 'retinanet'" in capsys.readouterr().err
