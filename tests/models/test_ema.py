"""EMA: momentum schedule endpoints and the update against the formula."""

import copy
import math

import pytest
import torch
from torch import nn

from drcl.models.ema import ema_momentum, ema_update


def test_momentum_schedule():
    assert ema_momentum(0.0, 0.99) == pytest.approx(0.99)
    assert ema_momentum(1.0, 0.99) == pytest.approx(1.0)
    assert ema_momentum(0.5, 0.99) == pytest.approx(0.995)
    p = 0.3  # BYOL: 1 - (1 - m0) (cos(pi p) + 1) / 2
    assert ema_momentum(p, 0.996) == pytest.approx(1 - 0.004 * (math.cos(math.pi * p) + 1) / 2)
    assert ema_momentum(-1.0) == ema_momentum(0.0) and ema_momentum(2.0) == ema_momentum(1.0)
    assert ema_momentum(1.0, 0.9, 0.99) == pytest.approx(0.99)


def _net():
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_update_matches_formula_for_params_and_copies_buffers():
    torch.manual_seed(0)
    online = _net()
    target = copy.deepcopy(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    online.train()(torch.randn(8, 3))  # moves running stats and num_batches_tracked
    before = {k: v.clone() for k, v in target.state_dict().items()}
    ema_update(target, online, 0.9)
    params = dict(online.named_parameters())
    for name, value in target.named_parameters():
        torch.testing.assert_close(value, 0.9 * before[name] + 0.1 * params[name])
    for name, buf in online.named_buffers():
        assert torch.equal(dict(target.named_buffers())[name], buf), name
    assert int(target[1].num_batches_tracked) == 1


def test_momentum_one_keeps_target_and_mismatch_raises():
    online, target = _net(), _net()
    before = copy.deepcopy(target.state_dict())
    ema_update(target, online, 1.0)
    for name, p in target.named_parameters():
        assert torch.equal(p, before[name])
    with pytest.raises(ValueError, match="differ"):
        ema_update(nn.Linear(2, 2), _net(), 0.9)
