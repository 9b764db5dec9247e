"""The report's pictures: detection gallery, per-class AP scatter, ablation forest plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from drcl.ablation.results import summarize
from drcl.data.groups import GROUP_COLORS
from drcl.report.build import build_report
from drcl.report.pictures import choose_gallery_images, forest_rows, per_class_points
from drcl.report.runs import load_run

from .fake_runs import CLASSES, PER_CLASS


def _ann(cat: int) -> dict:
    return {"category_id": cat, "bbox": [0, 0, 1, 1]}


def test_gallery_prefers_images_with_rare_objects_and_is_seeded():
    groups = {1: "f", 2: "c", 3: "r"}
    anns = {
        10: [_ann(1)],
        11: [_ann(1), _ann(3)],  # rare
        12: [_ann(2)],
        13: [_ann(3)],  # rare
        14: [],
        15: [_ann(2), _ann(1)],
        16: [_ann(99)],  # unknown class: never chosen
    }
    chosen = choose_gallery_images(anns, groups, k=3, seed=0)
    assert set(chosen[:2]) == {11, 13} and chosen[2] in {12, 15}
    assert chosen == choose_gallery_images(dict(reversed(anns.items())), groups, k=3, seed=0)
    assert sorted(choose_gallery_images(anns, groups, k=10)) == [10, 11, 12, 13, 15]
    seeds = {tuple(choose_gallery_images(anns, groups, k=3, seed=s)) for s in range(8)}
    assert len(seeds) > 1  # the seed does choose
    assert choose_gallery_images({}, groups) == []


def test_report_has_gallery_and_per_class_figures(full_report: Path):
    html = (full_report / "index.html").read_text()
    for png in ("gallery.png", "per_class_ap.png"):
        assert f'src="{png}"' in html
        assert Image.open(full_report / png).size[0] > 300
    gallery = np.asarray(Image.open(full_report / "gallery.png").convert("RGB"), np.int16)
    h, w, _ = gallery.shape
    assert h > w  # 4 images (rows) x ground truth + 2 runs (columns)
    # the fake runs' rare-class (ring) detections at score 0.3 are drawn in the rare colour,
    # in the runs' columns only (no rare object in the ground truth)
    red = np.array([int(GROUP_COLORS["r"][k : k + 2], 16) for k in (1, 3, 5)])
    is_red = (np.abs(gallery - red).sum(axis=2) < 30).any(axis=0)
    assert is_red[w // 3 :].any() and not is_red[: w // 3 - 5].any()


def test_per_class_points_take_counts_from_the_training_json(fake_runs):
    counts = {c: n for c, (_, _, n) in CLASSES.items()}
    groups = {c: g for c, (_, g, _) in CLASSES.items()}
    for name in ("baseline", "drcl"):
        run = load_run(name, fake_runs[name], set())
        got = per_class_points(run, counts, groups)
        want = [(c, counts[c], 100 * ap, groups[c]) for c, ap in PER_CLASS[name].items() if ap]
        assert [(c, n, g) for c, n, _, g in got] == [(c, n, g) for c, n, _, g in want]
        np.testing.assert_allclose([p[2] for p in got], [p[2] for p in want])
    pretrain = load_run("pretrain", fake_runs["pretrain"], set())
    assert per_class_points(pretrain, counts, groups) == []


def test_gallery_without_images_says_why(runs_copy: dict[str, Path], tmp_path: Path):
    for run in runs_copy.values():  # the copies' configs name the original data: point elsewhere
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["data"]["val_images"] = str(tmp_path / "missing")
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    out = build_report(runs_copy, tmp_path / "rep")
    md = (out / "README.md").read_text()
    assert "not available: no image folder" in md and not (out / "gallery.png").exists()
    assert (out / "per_class_ap.png").exists()


def _ablation(tmp_path: Path) -> Path:
    per_seed = {
        "generic": {0: {"AP": 0.20, "APr": 0.05}, 1: {"AP": 0.22, "APr": 0.07}},
        "hcl": {0: {"AP": 0.21, "APr": 0.06}, 1: {"AP": 0.21, "APr": 0.09}},
        "full": {0: {"AP": 0.25, "APr": 0.10}, 1: {"AP": 0.27, "APr": 0.12}},
    }
    results = {**summarize(per_seed, [0, 1], "generic"), "baseline": "generic", "seeds": [0, 1]}
    (tmp_path / "abl").mkdir()
    (tmp_path / "abl" / "results.json").write_text(json.dumps(results))
    return tmp_path / "abl"


def test_forest_rows_are_the_paired_differences(tmp_path: Path):
    results = json.loads((_ablation(tmp_path) / "results.json").read_text())
    rows = forest_rows(results, "AP")
    assert [r[0] for r in rows] == ["hcl", "full"]  # the baseline has no difference to itself
    (_, hcl, hcl_ci), (_, full, full_ci) = rows
    # differences per seed: hcl +1, -1 (mean 0); full +5, +5; in AP points
    assert abs(hcl) < 1e-9 and abs(full - 5.0) < 1e-9
    assert hcl_ci[0] < 0 < hcl_ci[1] and abs(full_ci[0] - 5.0) < 1e-9
    assert forest_rows(results, "APc") == []  # no values: no panel


def test_ablation_report_has_the_forest_plot(tmp_path: Path):
    out = build_report({}, tmp_path / "rep", ablation=_ablation(tmp_path))
    assert "ablation_forest.png" in (out / "index.html").read_text()
    image = Image.open(out / "ablation_forest.png")
    assert image.size[0] > image.size[1]  # panels side by side (AP, AP50, APr)
