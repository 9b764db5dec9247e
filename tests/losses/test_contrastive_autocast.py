"""InfoNCE under autocast: the logits stay fp32, so fp16 cannot overflow on excluded keys."""

import pytest
import torch

from drcl.losses.contrastive import info_nce, multi_positive_info_nce


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_info_nce_under_autocast_equals_fp32(dtype):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(6, 16, generator=g), torch.randn(6, 16, generator=g)
    valid = torch.tensor([True, True, False, True, False, True])  # excluded keys: -1e9 logits
    labels = torch.tensor([1, 2, 1, 0, 2, 1])
    ref = info_nce(q, k, 0.2, valid)
    ref_mp = multi_positive_info_nce(q, k, labels, labels, 0.2, valid)
    with torch.autocast("cpu", dtype=dtype):
        got = info_nce(q, k, 0.2, valid)  # fp16 matmul used to overflow on -1e9
        got_mp = multi_positive_info_nce(q, k, labels, labels, 0.2, valid)
    assert got.dtype == torch.float32 and torch.isfinite(got)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got_mp, ref_mp, rtol=1e-6, atol=1e-6)
