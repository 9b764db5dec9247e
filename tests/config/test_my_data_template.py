"""configs/_base_/my_data.yaml: the template for one's own data carries no demo setting."""

from pathlib import Path

from drcl.config import load_config

ROOT = Path(__file__).resolve().parents[2] / "configs"


def test_my_data_template_has_torchvision_sizes_and_lvis_thresholds():
    mine = load_config(ROOT / "_base_" / "my_data.yaml")
    demo = load_config(ROOT / "finetune" / "demo.yaml")
    assert (mine.data.min_size, mine.data.max_size) == (800, 1333)  # torchvision's defaults
    assert (demo.data.min_size, demo.data.max_size) == (128, 128)
    assert mine.finetune.rfs_threshold == mine.pretrain.drb.threshold == 1e-3
    assert demo.finetune.rfs_threshold != mine.finetune.rfs_threshold
    assert (mine.data.groups.rare_max, mine.data.groups.common_max) == (10, 100)
    assert mine.pretrain.views.size > 128
