"""Compressed COCO RLE strings are validated by decoding them (``rle_string_counts``), against
faster-coco-eval's encoder as the reference."""

from __future__ import annotations

import numpy as np
import pytest
from faster_coco_eval.core import mask as mask_utils

from drcl.data.check import rle_string_counts


def _runs(mask: np.ndarray) -> list[int]:
    """Run lengths of a mask in column-major order, starting with a run of zeros (slow, direct)."""
    runs, current, n = [], 0, 0
    for v in mask.flatten(order="F"):
        if v != current:
            runs.append(n)
            n, current = 0, v
        n += 1
    return [*runs, n]


def test_decoded_counts_match_the_reference_encoder():
    rng = np.random.default_rng(0)
    for trial in range(200):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        mask = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        if trial % 4 == 0:  # long runs: multi-group numbers and negative deltas
            mask[:] = 0
            mask[h // 3 :, w // 4 :] = 1
        rle = mask_utils.encode(np.asfortranarray(mask))
        text = rle["counts"].decode() if isinstance(rle["counts"], bytes) else rle["counts"]
        assert rle_string_counts(text) == _runs(mask), trial


@pytest.mark.parametrize(
    "text, message",
    [
        ("0000\x7f", "not RLE"),
        ("zzzz~~~~garbage", "not RLE"),
        ("0P", "early end"),
        ("@", "negative"),
    ],
)
def test_malformed_strings_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        rle_string_counts(text)
