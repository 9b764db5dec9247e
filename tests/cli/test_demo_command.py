import shutil
from pathlib import Path

import pytest


@pytest.mark.slow  # fast: each stage's own tests, tests/ablation (the fair configs of the demo)
def test_demo_pipeline_end_to_end(tiny_demo, tiny_overrides, fast_overrides, tmp_path, capsys):
    from drcl.cli.demo import run_demo

    work = tmp_path / "demo"
    shutil.copytree(Path(tiny_demo["train_images"]).parent, work / "data")
    keep = [o for o in tiny_overrides if not o.startswith("data.")]
    from drcl.generic.recipe import GenericRecipe

    tiny = GenericRecipe(image_size=32, train_per_class=2, val_per_class=1, iters=2, batch_size=8)
    report = run_demo(work, extra=[*keep, *fast_overrides], generic_recipe=tiny)
    out = capsys.readouterr().out
    html = (report / "index.html").read_text()
    assert "Box metrics" in html and "Training curves" in html
    for stage in ("generic backbone", "2DRCL pre-training", "from generic_init", "from 2drcl"):
        assert stage in out
    assert "APr" in out and "generic_init" in out and "2drcl" in out
    # one recipe: the fine-tunings differ in their init only
    from drcl.config import load_config

    g, f = (load_config(work / f"finetune_{n}" / "config.yaml") for n in ("generic_init", "2drcl"))
    cached = tmp_path / "cache" / f"generic-{tiny.key()}" / "generic.safetensors"
    assert g.model.weights == str(cached) and g.finetune.init is None
    assert f.finetune.init == str(work / "pretrain" / "pretrained.safetensors")
    assert (g.model.norm, g.finetune.rfs, g.train.lr) == (f.model.norm, f.finetune.rfs, f.train.lr)
