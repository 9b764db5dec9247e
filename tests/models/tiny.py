"""The tiny pre-training batch and model shared by the model and loss tests (64 px views,
K = 8 boxes). Import as ``from .tiny import ...`` in tests/models, ``from models.tiny import ...``
elsewhere (tests/ is on the path through its conftest)."""

import torch

from drcl.models.batch import PretrainBatch
from drcl.models.drcl import DRCLModel

B, K, S = 2, 8, 64
TINY = dict(depth=18, fpn_channels=32, box_head_dim=64, norm="bn")


def make_batch(seed=0, valid=None):
    """Two 64 px views, K=8 boxes (view 2 = view 1 shifted), image 0 has no valid box."""
    g = torch.Generator().manual_seed(seed)
    v1, v2 = torch.randn(B, 3, S, S, generator=g), torch.randn(B, 3, S, S, generator=g)
    xy = torch.rand(B, K, 2, generator=g) * 40
    boxes1 = torch.cat([xy, xy + 8 + torch.rand(B, K, 2, generator=g) * 16], dim=-1)
    if valid is None:
        valid = torch.ones(B, K, dtype=torch.bool)
        valid[0], valid[1, 6:] = False, False
    boxes1 = torch.where(valid[..., None], boxes1, torch.zeros(4))  # padding, as the data path
    grid = torch.tensor([[[1, 0], [0, 1]], [[0, 1], [0, 0]]], dtype=torch.bool)
    pixels = grid.repeat_interleave(32, 1).repeat_interleave(32, 2)
    return PretrainBatch(
        view1=v1,
        view2=v2,
        boxes1=boxes1,
        boxes2=(boxes1 + 2).clamp(max=S),
        box_valid=valid,
        box_labels=torch.tensor([[0] * K, [1, 2, 1, 0, 2, 3, 0, 0]]),
        mask=grid,
        masked_view1=v1.masked_fill(pixels[:, None], 0.0),
        clean_view1=0.5 * v1,  # stand-in for view 1 before photometric augmentation
    )


def make_model(seed=0, **terms):
    """The tiny DRCLModel (ResNet-18, FPN 32, box head 64), seeded; ``terms`` as DRCLModel's."""
    torch.manual_seed(seed)
    return DRCLModel(**TINY, **terms)
