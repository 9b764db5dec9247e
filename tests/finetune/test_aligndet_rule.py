"""AlignDet's lr x1.5 / wd /2 is an explicit option that ignores the init (every row or none)."""

import pytest

from drcl.config import load_config
from drcl.engine.schedule import scaled_lr


class _Stop(Exception):
    pass


@pytest.mark.parametrize("rule", [False, True])
def test_lr_and_wd_do_not_depend_on_the_init(rule, tiny_overrides, tmp_path, monkeypatch):
    from drcl.finetune import runner
    from drcl.finetune.job import FinetuneJob

    seen = {}

    def capture(train_cfg, model, data, work_dir, device, info, lr, wd, **kw):
        seen[str(work_dir)] = (lr, wd)
        raise _Stop

    monkeypatch.setattr(runner, "make_trainer", capture)
    monkeypatch.setattr("drcl.detection.model.load_pretrained", lambda *a, **k: None)
    cfg = load_config(None, [*tiny_overrides, f"finetune.aligndet_rule={str(rule).lower()}"])
    for name, init in (("random", None), ("pre", "any.safetensors")):
        with pytest.raises(_Stop):
            runner.train_detector(FinetuneJob.from_config(cfg, tmp_path / name, init=init))
    lr, wd = scaled_lr(cfg.train), cfg.train.weight_decay
    expected = (lr * 1.5, wd / 2.0) if rule else (lr, wd)
    assert seen[str(tmp_path / "random")] == pytest.approx(expected)
    assert seen[str(tmp_path / "pre")] == pytest.approx(expected)
