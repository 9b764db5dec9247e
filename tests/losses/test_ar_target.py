"""AR: L1 on the masked patches against the clean view 1, optional per-patch normalised target."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from drcl.config.schema import ARConfig, HCLConfig, LCLConfig, SRConfig
from drcl.losses.reconstruction import patch_normalize
from models.tiny import S, make_batch, make_model


def test_patch_normalize_hand_computed() -> None:
    # one channel, 2x4 image, 2-px patches: left cell [0, 1, 2, 3], right cell [4, 4, 4, 8]
    x = torch.tensor([[[[0.0, 1.0, 4.0, 4.0], [2.0, 3.0, 4.0, 8.0]]]])
    out = patch_normalize(x, 2, eps=0.0)
    left_std = (5 / 3) ** 0.5  # unbiased variance of 0..3 = 5/3
    want_left = (torch.tensor([[0.0, 1.0], [2.0, 3.0]]) - 1.5) / left_std
    want_right = (torch.tensor([[4.0, 4.0], [4.0, 8.0]]) - 5.0) / 2.0  # var = 12/3 = 4
    torch.testing.assert_close(out[0, 0, :, :2], want_left)
    torch.testing.assert_close(out[0, 0, :, 2:], want_right)


def test_patch_normalize_pools_channels_and_rejects_partial_patches() -> None:
    x = torch.randn(2, 3, 8, 8)
    out = patch_normalize(x, 4)
    cell = out[1, :, 4:, :4].reshape(-1)
    assert abs(float(cell.mean())) < 1e-5 and abs(float(cell.var()) - 1) < 1e-3
    with pytest.raises(ValueError, match="multiple of pretrain.sr.patch"):
        patch_normalize(torch.zeros(1, 3, 10, 8), 4)


def _ar_only(**ar) -> torch.nn.Module:
    off = {
        "hcl": HCLConfig(weight=0.0),
        "lcl": LCLConfig(weight=0.0),
        "sr": dataclasses.replace(SRConfig(), weight=0.0),
    }
    return make_model(ar=ARConfig(**ar), **off).eval()


def _reference(model, batch, target, masked_only: bool) -> torch.Tensor:
    """Direct L1: decode the masked view's P2, compare to ``target`` where counted."""
    with torch.no_grad():
        fpn = model.online.encode(batch.masked_view1, with_fpn=True)[1]
        pred = model.ar_decoder(fpn["0"], (S, S))
    total, count = 0.0, 0
    patch = model.sr_cfg.patch
    for b in range(pred.shape[0]):
        for y in range(S):
            for x in range(S):
                if masked_only and not batch.mask[b, y // patch, x // patch]:
                    continue
                total += float((pred[b, :, y, x] - target[b, :, y, x]).abs().sum())
                count += 3
    return torch.tensor(total / count)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_default_ar_is_masked_l1_to_the_clean_view(norm_pix: bool) -> None:
    model, batch = _ar_only(norm_pix=norm_pix), make_batch()
    with torch.no_grad():
        got = model(batch)["loss_ar"]
    target = batch.clean_view1
    target = patch_normalize(target, model.sr_cfg.patch) if norm_pix else target
    torch.testing.assert_close(got, _reference(model, batch, target, True), rtol=1e-5, atol=1e-6)


def test_previous_behaviour_options() -> None:
    model, batch = _ar_only(masked_only=False, clean_target=False), make_batch()
    with torch.no_grad():
        got = model(batch)["loss_ar"]
    want = _reference(model, batch, batch.view1, False)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="clean_view1"):
        _ar_only()(dataclasses.replace(batch, clean_view1=None))
