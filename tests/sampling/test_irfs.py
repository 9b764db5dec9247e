"""The instance-level class factor: IRFS exactly (Yaman et al. 2023) and instance_rfs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drcl.sampling.drb import labels_to_csr, repeat_factors_from_image_counts

# 10 images. Class 1: in 1 image with 6 instances; class 2: in 4 images, 1 instance each;
# class 3: in 5 images, 2 instances each. 6 + 4 + 10 = 20 labelled instances. Image 9 also holds
# an unlabeled proposal (0), which counts nowhere.
PER_IMAGE = [[1, 1, 1, 1, 1, 1, 3, 3]] + [[2, 3, 3]] * 4 + [[]] * 4 + [[0]]
T = 0.5


def hand_factors(mode: str) -> dict[int, float]:
    f_img = {1: 1 / 10, 2: 4 / 10, 3: 5 / 10}
    f_inst = {1: 6 / 20, 2: 4 / 20, 3: 10 / 20}
    if mode == "irfs":
        f = {c: math.sqrt(f_img[c] * f_inst[c]) for c in f_img}
    else:
        f = f_inst
    return {c: max(1.0, math.sqrt(T / f[c])) for c in f}


@pytest.mark.parametrize("mode", ["irfs", "instance_rfs"])
def test_class_factors_hand_computed(mode: str) -> None:
    assert len(PER_IMAGE) == 10
    r = repeat_factors_from_image_counts(labels_to_csr(PER_IMAGE), 10, T, 3, instance_factor=mode)
    want = hand_factors(mode)
    np.testing.assert_allclose(r.class_instance[1:], [want[1], want[2], want[3]], rtol=1e-12)
    assert r.class_instance[0] == 1.0
    # image factor = max over the image's classes; 1 for images without a labelled box
    np.testing.assert_allclose(r.instance[0], max(want[1], want[3]))
    np.testing.assert_allclose(r.instance[1:5], max(want[2], want[3]))
    assert r.instance[5:].tolist() == [1.0] * 5


def test_irfs_numbers() -> None:
    """Class 1: f_img = 0.1, f_inst = 0.3 -> sqrt(0.5 / sqrt(0.03)) = 1.6990..."""
    r = repeat_factors_from_image_counts(labels_to_csr(PER_IMAGE), 10, T, 3, instance_factor="irfs")
    assert r.class_instance[1] == pytest.approx(1.6990442, abs=1e-6)
    # instance_rfs on the same data: sqrt(0.5 / 0.3) = 1.2910
    r2 = repeat_factors_from_image_counts(labels_to_csr(PER_IMAGE), 10, T, 3)
    assert r2.class_instance[1] == pytest.approx(1.2909944, abs=1e-6)


def test_unknown_instance_factor_is_rejected() -> None:
    with pytest.raises(ValueError, match="pretrain.drb.instance_factor"):
        repeat_factors_from_image_counts(labels_to_csr(PER_IMAGE), 10, T, 3, instance_factor="x")
