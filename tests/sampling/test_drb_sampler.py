"""DRB: repeat factors, alpha schedules, the sampler and box selection."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from drcl.config.schema import DRBConfig
from drcl.sampling import (
    DRBSample,
    DynamicRebalancingSampler,
    alpha_at,
    labels_to_csr,
    repeat_factors_from_image_counts,
    select_boxes,
)


def to_csr(per_image: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    offsets, labels = labels_to_csr(per_image)
    assert offsets.tolist() == [0] + list(itertools.accumulate(len(x) for x in per_image))
    assert labels.tolist() == [c for x in per_image for c in x]
    return offsets, labels


def random_images(rng: np.random.Generator, n: int, c: int, max_boxes: int = 6) -> list[list[int]]:
    """Long-tailed labels (Zipf-like), some empty images, some unlabeled boxes (0 / -1)."""
    p = 1.0 / np.arange(1, c + 1) ** 1.5
    p /= p.sum()
    out = []
    for _ in range(n):
        labels = rng.choice(np.arange(1, c + 1), size=rng.integers(0, max_boxes + 1), p=p)
        unlabeled = rng.choice([0, -1], size=rng.integers(0, 2))
        out.append([int(x) for x in np.concatenate([labels, unlabeled])])
    return out


def reference_factors(per_image: list[list[int]], t: float) -> tuple[list[float], list[float]]:
    """Direct per-image loops: r_c = max(1, sqrt(t / f_c)), r_i = max over the image."""
    n = len(per_image)
    img_count: dict[int, int] = {}
    inst_count: dict[int, int] = {}
    for labels in per_image:
        for c in {x for x in labels if x > 0}:
            img_count[c] = img_count.get(c, 0) + 1
        for c in labels:
            if c > 0:
                inst_count[c] = inst_count.get(c, 0) + 1
    total = sum(inst_count.values())
    r_img, r_inst = [], []
    for labels in per_image:
        a, b = 1.0, 1.0
        for c in labels:
            if c > 0:
                a = max(a, max(1.0, math.sqrt(t / (img_count[c] / n))))
                b = max(b, max(1.0, math.sqrt(t / (inst_count[c] / total))))
        r_img.append(a)
        r_inst.append(b)
    return r_img, r_inst


# -- repeat factors ------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [1e-3, 0.05, 0.5])
def test_factors_match_loop_reference(t: float) -> None:
    rng = np.random.default_rng(1)
    per_image = random_images(rng, 2500, 300)  # rare classes: f_c^img < 1e-3
    f = repeat_factors_from_image_counts(to_csr(per_image), len(per_image), t)
    r_img, r_inst = reference_factors(per_image, t)
    np.testing.assert_allclose(f.image, r_img, rtol=1e-12)
    np.testing.assert_allclose(f.instance, r_inst, rtol=1e-12)
    assert f.image.max() > 1 and f.instance.max() > 1  # the test data is long-tailed


def test_factors_hand_computed() -> None:
    # f^img: c1 1/4, c2 2/4, c3 1/4; f^inst over 5 labelled instances: c1 2/5, c2 2/5, c3 1/5
    per_image = [[1, 1, 2], [2], [], [3, -1]]
    f = repeat_factors_from_image_counts(to_csr(per_image), 4, t=0.5)
    np.testing.assert_allclose(f.class_image, [1, math.sqrt(2), 1, math.sqrt(2)])
    np.testing.assert_allclose(f.image, [math.sqrt(2), 1, 1, math.sqrt(2)])
    np.testing.assert_allclose(f.class_instance, [1, math.sqrt(1.25), math.sqrt(1.25), 2.5**0.5])
    np.testing.assert_allclose(f.instance, [math.sqrt(1.25), math.sqrt(1.25), 1, 2.5**0.5])


def test_factors_lvis_threshold() -> None:
    # 2000 images, class 1 only in image 0: f^img = 1/2000 -> sqrt(0.001 * 2000) = sqrt(2);
    # instances: 1 of class 1 among 1 + 3 + 1999 -> sqrt(2.003); class 2 is everywhere -> 1
    per_image = [[1, 2, 2, 2]] + [[2]] * 1999
    f = repeat_factors_from_image_counts(to_csr(per_image), 2000, t=1e-3)
    assert f.image[0] == pytest.approx(math.sqrt(2))
    assert f.instance[0] == pytest.approx(math.sqrt(2.003))
    assert np.all(f.image[1:] == 1) and np.all(f.instance[1:] == 1)


def test_factors_no_labels_and_num_classes() -> None:
    f = repeat_factors_from_image_counts(to_csr([[], [0, -1], []]), 3, 1e-3, num_classes=5)
    assert np.all(f.image == 1) and np.all(f.instance == 1)
    assert f.class_instance.shape == (6,)


@pytest.mark.parametrize(
    ("csr", "n", "message"),
    [
        ((np.array([0, 1]), np.array([1])), 2, "expected num_images \\+ 1"),
        ((np.array([0, 2, 1]), np.array([1])), 2, "non-decreasing"),
        ((np.array([0, 1]), np.array([1.5])), 1, "must be integers"),
    ],
)
def test_factors_bad_input(csr: tuple, n: int, message: str) -> None:
    with pytest.raises(ValueError, match=f"image_labels_csr.*{message}"):
        repeat_factors_from_image_counts(csr, n, 1e-3)


def test_factors_bad_label_and_threshold() -> None:
    with pytest.raises(ValueError, match="label 7 exceeds num_classes = 3"):
        repeat_factors_from_image_counts(to_csr([[7]]), 1, 1e-3, num_classes=3)
    with pytest.raises(ValueError, match="pretrain.drb.threshold"):
        repeat_factors_from_image_counts(to_csr([[1]]), 1, 0.0)


# -- alpha schedule ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("linear", [0.2, 0.6, 1.0]),
        ("cosine", [0.2, 0.6, 1.0]),
        ("step", [0.2, 1.0, 1.0]),  # switches at p >= step_at
        ("none", [0.2, 0.2, 0.2]),
    ],
)
def test_alpha_schedules(schedule: str, expected: list[float]) -> None:
    got = [alpha_at(p, schedule, 0.2, 1.0, 0.5) for p in (0.0, 0.5, 1.0)]
    assert got == pytest.approx(expected)


def test_alpha_shapes_between_endpoints() -> None:
    assert alpha_at(0.25, "cosine") == pytest.approx((1 - math.cos(math.pi / 4)) / 2)
    assert alpha_at(0.25, "linear") == pytest.approx(0.25)
    assert alpha_at(0.49, "step", step_at=0.5) == 0.0
    assert alpha_at(1.7, "linear") == 1.0 and alpha_at(-1, "linear") == 0.0  # clipped
    with pytest.raises(ValueError, match="pretrain.drb.schedule.*'exp'.*allowed"):
        alpha_at(0.5, "exp")


# -- sampler ---------------------------------------------------------------------------------------


def make_sampler(**kwargs) -> DynamicRebalancingSampler:
    rng = np.random.default_rng(0)
    img = 1 + 2.5 * rng.random(40)
    inst = 1 + 4.0 * rng.random(40)
    img[:5] = 1.0  # integer weights: exactly one copy every epoch
    return DynamicRebalancingSampler(img, inst, **kwargs)


def test_empirical_image_frequencies_match_weights() -> None:
    s = make_sampler(dynamic=False, alpha_start=0.3, seed=3)
    epochs = 500
    counts = np.zeros(40)
    for e in range(epochs):
        s.set_epoch(e)
        counts += np.bincount(list(s), minlength=40)
    w = 0.7 * s.image_factors + 0.3 * s.instance_factors
    frac = w - np.floor(w)
    sigma = np.sqrt(epochs * frac * (1 - frac))  # Bernoulli rounding is the only randomness
    z = np.abs(counts - epochs * w) / np.maximum(sigma, 1e-12)
    assert np.all(z[sigma > 0] < 5), z.max()
    assert np.all(counts[sigma == 0] == epochs * w[sigma == 0])


def test_class_frequencies_in_stream() -> None:
    rng = np.random.default_rng(5)
    per_image = random_images(rng, 150, 12, max_boxes=4)
    f = repeat_factors_from_image_counts(to_csr(per_image), 150, t=0.3)
    s = DynamicRebalancingSampler(f.image, f.instance, seed=1, schedule="none", alpha_start=0.5)
    per_class = np.zeros((150, 13))
    for i, labels in enumerate(per_image):
        for c in labels:
            per_class[i, max(c, 0)] += 1
    got = np.zeros(13)
    epochs = 200
    for e in range(epochs):
        s.set_epoch(e)
        got += per_class[list(s)].sum(0)
    expected = epochs * (s.weights(0.5) @ per_class)
    present = expected > 0
    np.testing.assert_allclose(got[present], expected[present], rtol=0.05)
    # rebalancing raised the rare classes' share above their share in the data
    rare = f.class_instance > 1.5
    assert got[rare].sum() / got.sum() > per_class.sum(0)[rare].sum() / per_class.sum()


def test_same_seed_same_stream_other_seed_or_epoch_differs() -> None:
    a, b, c = make_sampler(seed=7), make_sampler(seed=7), make_sampler(seed=8)
    assert list(a) == list(b)
    assert list(a) != list(c)
    epoch0 = list(a)
    a.set_epoch(1)
    assert list(a) != epoch0


class IndexDataset(Dataset):
    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> int:
        return i


def test_dataloader_workers_do_not_change_stream() -> None:
    streams = []
    for workers in (0, 2):
        s = make_sampler(seed=11)
        loader = DataLoader(IndexDataset(), batch_size=4, sampler=s, num_workers=workers)
        stream = []
        for epoch in range(2):
            s.set_epoch(epoch)
            stream += [int(x) for batch in loader for x in batch]
        streams.append(stream)
    assert streams[0] == streams[1] and len(streams[0]) > 80


def test_resume_mid_epoch_continues_exact_stream() -> None:
    ref = make_sampler(seed=2)
    ref.set_progress(0.4)
    ref.set_epoch(3)
    full = list(ref)
    ref.set_progress(0.6)
    ref.set_epoch(4)
    next_epoch = list(ref)

    run = make_sampler(seed=2)
    run.set_progress(0.4)
    run.set_epoch(3)
    it = iter(run)
    head = [next(it) for _ in range(37)]
    state = run.state_dict()
    assert state["consumed"] == 37 and state["alpha"] == pytest.approx(alpha_at(0.4))

    resumed = make_sampler(seed=2)  # fresh process: progress 0, epoch 0
    resumed.load_state_dict(state)
    resumed.set_epoch(3)  # the loop calls set_epoch again for the same epoch: position kept
    assert len(resumed) == len(full) - 37
    assert head + list(resumed) == full
    resumed.set_progress(0.6)
    resumed.set_epoch(4)
    assert list(resumed) == next_epoch


def test_resume_with_explicit_consumed_count() -> None:
    s = make_sampler(seed=4)
    full = list(s)
    loader = DataLoader(IndexDataset(), batch_size=4, sampler=s, num_workers=2)
    it = iter(loader)
    used = [int(x) for _ in range(3) for x in next(it)]  # workers have prefetched more
    state = s.state_dict(consumed=12)
    del it
    resumed = make_sampler(seed=4)
    resumed.load_state_dict(state)
    assert used + list(resumed) == full


def test_load_state_dict_rejects_other_seed() -> None:
    state = make_sampler(seed=1).state_dict()
    with pytest.raises(ValueError, match="seed = 1 in the checkpoint, 2 here"):
        make_sampler(seed=2).load_state_dict(state)


@pytest.mark.parametrize("drop_last", [False, True])
def test_rank_shards(drop_last: bool) -> None:
    shards = [
        list(make_sampler(seed=5, num_replicas=3, rank=r, drop_last=drop_last)) for r in range(3)
    ]
    whole = make_sampler(seed=5, num_replicas=3, rank=0, drop_last=drop_last).epoch_indices()
    single = make_sampler(seed=5).epoch_indices()  # the unpadded epoch list
    assert len({len(x) for x in shards}) == 1
    for r in range(3):
        assert shards[r] == whole[r::3].tolist()  # disjoint by position, together the whole list
    assert len(whole) % 3 == 0
    if drop_last:
        assert whole.tolist() == single[: len(single) // 3 * 3].tolist()
    else:
        assert whole[: len(single)].tolist() == single.tolist()
        assert whole[len(single) :].tolist() == single[: len(whole) - len(single)].tolist()


def test_alpha_fixed_within_epoch_and_dynamic_off() -> None:
    s = make_sampler(seed=0)
    s.set_epoch(0)
    first = list(s)
    s.set_progress(1.0)  # mid-epoch progress updates do not change the running epoch
    assert s.alpha == 0.0 and list(s) == first
    s.set_epoch(1)
    assert s.alpha == 1.0
    np.testing.assert_allclose(s.weights(s.alpha), s.instance_factors)

    rfs = make_sampler(seed=0, dynamic=False)
    rfs.set_progress(1.0)
    rfs.set_epoch(1)
    plain = DynamicRebalancingSampler(rfs.image_factors, seed=0)
    plain.set_epoch(1)
    assert rfs.alpha == 0.0 and list(rfs) == list(plain)


def test_context_samples_and_config() -> None:
    plain, ctx = make_sampler(seed=9), make_sampler(seed=9, with_context=True)
    samples = list(ctx)
    assert all(isinstance(x, DRBSample) for x in samples)
    assert [x.index for x in samples] == list(plain)
    assert len({x.seed for x in samples}) == len(samples)
    assert list(make_sampler(seed=9, with_context=True)) == samples

    f = repeat_factors_from_image_counts(to_csr([[1], [2], [2], [2]]), 4, t=0.9)
    off = DynamicRebalancingSampler.from_config(f, DRBConfig(enabled=False), seed=1)
    assert sorted(off) == [0, 1, 2, 3]  # every factor 1: a plain shuffled epoch
    on = DynamicRebalancingSampler.from_config(f, DRBConfig(), seed=1)
    assert on.schedule == "cosine" and on.expected_len() == pytest.approx(f.image.sum())


def test_sampler_bad_input() -> None:
    with pytest.raises(ValueError, match="equal length"):
        DynamicRebalancingSampler(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="pretrain.drb.schedule"):
        DynamicRebalancingSampler(np.ones(3), schedule="bogus")
    with pytest.raises(ValueError, match="rank 2 / num_replicas 2"):
        DynamicRebalancingSampler(np.ones(3), num_replicas=2, rank=2)


@pytest.mark.slow  # a timing bound; correctness at small n is tested above
def test_epoch_time_100k_images_1203_classes() -> None:
    rng = np.random.default_rng(0)
    n, c = 100_000, 1203
    counts = rng.poisson(8, n)
    p = 1.0 / np.arange(1, c + 1)
    labels = rng.choice(np.arange(1, c + 1), size=int(counts.sum()), p=p / p.sum())
    offsets = np.concatenate([[0], np.cumsum(counts)])
    f = repeat_factors_from_image_counts((offsets, labels), n, 1e-3)
    s = DynamicRebalancingSampler(f.image, f.instance, seed=0)
    times = []
    for epoch in range(3):
        s.set_progress(epoch / 2)
        s.set_epoch(epoch)
        start = time.perf_counter()
        stream = list(s)
        times.append(time.perf_counter() - start)
        assert len(stream) == len(s)
    assert min(times) < 0.5, times  # typically ~0.01 s


# -- box selection -------------------------------------------------------------------------------


def test_select_boxes_k1_probabilities_match_formula() -> None:
    factors = torch.tensor([1.0, 1.0, 2.0, 4.0])  # label 0 unused
    labels = torch.tensor([1, 2, 3, -1, 0, 3])
    alpha = 0.7
    r = torch.tensor([1.0, 2.0, 4.0, 1.0, 1.0, 4.0])
    expected = (r**alpha / (r**alpha).sum()).numpy()
    g = torch.Generator().manual_seed(0)
    draws = 20000
    hits = np.bincount(
        [int(select_boxes(labels, 1, alpha, factors, g)[0]) for _ in range(draws)], minlength=6
    )
    sigma = np.sqrt(draws * expected * (1 - expected))
    assert np.all(np.abs(hits - draws * expected) < 5 * sigma)


def inclusion_reference(w: list[float], k: int) -> np.ndarray:
    """Exact inclusion probabilities of successive draws without replacement, P ∝ w."""
    incl = np.zeros(len(w))
    for order in itertools.permutations(range(len(w)), k):
        p, left = 1.0, sum(w)
        for i in order:
            p *= w[i] / left
            left -= w[i]
        incl[list(order)] += p
    return incl


def test_select_boxes_k2_matches_sequential_draw_reference() -> None:
    factors = np.array([1.0, 3.0, 1.5])
    labels = torch.tensor([1, 2, 1, -1, 2])
    alpha = 1.0
    w = [3.0, 1.5, 3.0, 1.0, 1.5]
    expected = inclusion_reference(w, 2)
    g = torch.Generator().manual_seed(1)
    draws = 10000
    hits = np.zeros(5)
    for _ in range(draws):
        idx = select_boxes(labels, 2, alpha, factors, g)
        assert len(set(idx.tolist())) == 2 and idx.tolist() == sorted(idx.tolist())
        hits[idx.numpy()] += 1
    np.testing.assert_allclose(hits / draws, expected, atol=0.02)


def test_select_boxes_edge_cases() -> None:
    factors = torch.tensor([1.0, 5.0])
    empty = select_boxes(torch.zeros(0, dtype=torch.long), 8, 1.0, factors)
    assert empty.shape == (0,) and empty.dtype == torch.int64
    assert select_boxes(torch.tensor([1, -1, 1]), 8, 1.0, factors).tolist() == [0, 1, 2]
    labels = torch.ones(20, dtype=torch.long)
    a = select_boxes(labels, 8, 1.0, factors, torch.Generator().manual_seed(3))
    b = select_boxes(labels, 8, 1.0, factors, torch.Generator().manual_seed(3))
    assert a.tolist() == b.tolist() and len(a) == 8
    with pytest.raises(ValueError, match="box label 4 has no class factor"):
        select_boxes(torch.tensor([4] * 9), 8, 1.0, factors)
