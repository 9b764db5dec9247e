"""Finding a fine-tuned checkpoint and where `drcl test` may write, without running a model."""

from __future__ import annotations

import pytest

from drcl.predict.runner import check_test_dir, default_test_dir, resolve_checkpoint
from drcl.utils.run_dir import RunDir


def _run(tmp_path):
    run = RunDir(tmp_path / "ft")
    run.path.mkdir()
    run.model_final.write_bytes(b"w")
    run.config.write_text("{}\n")
    return run


def test_a_run_folder_or_its_weights_file_resolve_to_the_same_checkpoint(tmp_path):
    run = _run(tmp_path)
    a = resolve_checkpoint(run.path, None)
    b = resolve_checkpoint(run.model_final, None)
    assert a == b
    assert (a.weights, a.config, a.run_dir) == (run.model_final, run.config, run.path)
    other = tmp_path / "other.yaml"
    other.write_text("{}\n")
    assert resolve_checkpoint(run.path, other).config == other


def test_missing_checkpoint_and_config_are_named(tmp_path):
    run = _run(tmp_path)
    with pytest.raises(ValueError, match="checkpoint .*nowhere does not exist"):
        resolve_checkpoint(tmp_path / "nowhere", None)
    run.config.unlink()
    with pytest.raises(ValueError, match="config .*config.yaml does not exist \\(pass the run's"):
        resolve_checkpoint(run.path, None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no model_final.safetensors in it"):
        resolve_checkpoint(tmp_path / "empty", None)


def test_test_dir_is_beside_the_runs_eval_never_over_it(tmp_path):
    run = _run(tmp_path)
    ckpt = resolve_checkpoint(run.path, None)
    assert default_test_dir(ckpt, "data/annotations/val.json") == run.path / "eval-val"
    assert check_test_dir(run.path / "eval-val", ckpt) == run.path / "eval-val"
    for bad in (run.eval_dir, run.path):
        with pytest.raises(ValueError, match="choose another folder"):
            check_test_dir(bad, ckpt)
