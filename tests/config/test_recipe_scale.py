"""No shipped paper-scale recipe silently inherits a demo-scale value."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from drcl.config import load_config
from drcl.config.schema import Config
from drcl.proposals.job import ProposalsJob, detector_changes

ROOT = Path(__file__).resolve().parents[2] / "configs"
DEMOS = [ROOT / "pretrain" / "demo.yaml", ROOT / "finetune" / "demo.yaml"]
RECIPES = sorted(
    p
    for p in ROOT.rglob("*.yaml")
    if "_base_" not in p.parts and "ablate" not in p.parts and "demo" not in p.stem
)
# keys that set the scale of a run; a value a demo recipe uses must not reappear here
SCALE_KEYS = [
    "data.train_ann",
    "data.min_size",
    "data.max_size",
    "model.depth",
    "model.fpn_channels",
    "model.box_head_dim",
    "train.batch_size",
    "train.max_iters",
    "train.warmup_iters",
]
PRETRAIN_KEYS = ["pretrain.views.size"]
DETECTOR_KEYS = ["pretrain.proposals.detector_iters"]


def _get(cfg, key: str):
    return OmegaConf.select(cfg, key)


@functools.cache
def _demo_configs() -> tuple[Config, ...]:
    return tuple(load_config(p) for p in DEMOS)


def _demo_values(keys: list[str]) -> dict[str, set]:
    return {k: {_get(c, k) for c in _demo_configs()} for k in keys}


def _is_pretrain(path: Path) -> bool:
    return "pretrain" in path.parts


def _effective(cfg: Config, key: str):
    """train.max_iters 0 means 'from epochs'; the detector budget is its epochs when set."""
    if key == "pretrain.proposals.detector_iters" and cfg.pretrain.proposals.detector_epochs > 0:
        return ("epochs", cfg.pretrain.proposals.detector_epochs)
    return _get(cfg, key)


def test_there_are_paper_scale_recipes() -> None:
    assert len([p for p in RECIPES if _is_pretrain(p)]) >= 3 and len(RECIPES) >= 48


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_recipe_inherits_no_demo_scale_value(path: Path) -> None:
    cfg = load_config(path)
    keys = SCALE_KEYS + (PRETRAIN_KEYS if _is_pretrain(path) else [])
    if _is_pretrain(path) and cfg.pretrain.proposals.source == "detector":
        keys += DETECTOR_KEYS
    demo = _demo_values(keys)
    demo["train.max_iters"].discard(0)  # 0 = "use epochs", the paper-scale way
    inherited = {k: _effective(cfg, k) for k in keys if _effective(cfg, k) in demo[k]}
    assert not inherited, f"{path.relative_to(ROOT)} keeps demo-scale values {inherited}"


def test_detector_budget_is_dataset_proportional() -> None:
    detector = ["pretrain.proposals.source=detector"]
    cfg = load_config(ROOT / "pretrain" / "lvis_v1_r50_1x.yaml", detector)
    det = ProposalsJob.from_config(cfg, "p.json").detector
    assert (det.train.max_iters, det.train.epochs) == (0, 12)  # engine: epochs * ceil(N / 16)
    demo = load_config(ROOT / "pretrain" / "demo.yaml", detector)
    det = ProposalsJob.from_config(demo, "p.json").detector
    assert det.train.max_iters == demo.pretrain.proposals.detector_iters == 200
    with pytest.raises(ValueError, match="detector_epochs': got -1, must be >= 0"):
        load_config(None, ["pretrain.proposals.detector_epochs=-1"])  # refused at load time
    # and by the proposal stage itself, for a config built without the loader
    bad = OmegaConf.merge(
        OmegaConf.structured(Config), {"pretrain": {"proposals": {"detector_epochs": -1}}}
    )
    with pytest.raises(ValueError, match="detector_epochs"):
        detector_changes(bad.pretrain.proposals, Path("agnostic.json"))


def test_the_check_catches_a_demo_value() -> None:
    """The test above can fail: a paper recipe with the demo's detector budget is caught."""
    cfg = load_config(
        ROOT / "pretrain" / "lvis_v1_r50_1x.yaml", ["pretrain.proposals.detector_epochs=0"]
    )
    demo = _demo_values(DETECTOR_KEYS)
    assert _effective(cfg, "pretrain.proposals.detector_iters") in demo[DETECTOR_KEYS[0]]
