"""The guards behind the fault corpus, one behaviour each: the output guard, the run folder
(new, resumed, overwritten), evaluation on another split, the ground-truth check's warnings,
and how ``main`` reports user errors and bugs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from drcl.cli.main import main
from drcl.config import ConfigError, load_config, save_config
from drcl.config.run_folder import prepare_run
from drcl.utils.errors import NoBatchError, OutputOverInputError, RunFolderError
from drcl.utils.io import check_output_file, read_json, refuse_overwriting_inputs

GT = {
    "images": [{"id": 1, "height": 40, "width": 40}, {"id": 2, "height": 40, "width": 40}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], "area": 100},
        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [5, 5, 20, 20], "area": 400},
    ],
    "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
}
DETS = [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], "score": 0.9}]


def _json(path: Path, obj) -> str:
    path.write_text(json.dumps(obj))
    return str(path)


# ---- the output guard -------------------------------------------------------------------------


def test_output_guard_sees_links_and_relative_spellings(tmp_path, monkeypatch):
    src = Path(_json(tmp_path / "gt.json", GT))
    (tmp_path / "sub").mkdir()
    os.symlink(tmp_path, tmp_path / "sub" / "up")  # a linked folder, not a linked file
    monkeypatch.chdir(tmp_path / "sub")
    for out in ("../gt.json", "up/gt.json", str(tmp_path / "sub" / ".." / "gt.json")):
        with pytest.raises(OutputOverInputError, match="is the input ANN"):
            check_output_file(out, inputs={"ANN": src})
    check_output_file(tmp_path / "other.json", inputs={"ANN": src})  # a new path is fine
    check_output_file(tmp_path / "other.json", inputs=[None, ""])  # unset inputs are skipped


def test_folder_output_is_refused_when_it_holds_an_input(tmp_path):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    _json(run / "eval" / "metrics_bbox.json", {})
    with pytest.raises(OutputOverInputError, match="contains the input run a"):
        refuse_overwriting_inputs(tmp_path, {"run a": run}, "--out", folder=True)
    refuse_overwriting_inputs(tmp_path / "report", {"run a": run}, "--out", folder=True)


def test_suffix_guard_allows_no_suffix_and_any_case(tmp_path):
    check_output_file(tmp_path / "plot", suffixes=(".png",))
    check_output_file(tmp_path / "plot.PNG", suffixes=(".png",))
    with pytest.raises(ValueError, match="suffix '.txt' names another format; this writes .png"):
        check_output_file(tmp_path / "plot.txt", suffixes=(".png",))


def test_read_json_accepts_a_utf8_bom(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GT).encode())
    assert read_json(path) == GT


def test_stats_png_suffix_is_honoured(tmp_path, capsys):
    gt = _json(tmp_path / "gt.json", GT)
    out = tmp_path / "curve.png"
    assert main(["data", "stats", gt, "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- run folders -------------------------------------------------------------------------------

DATA = ["data.train_ann=t.json", "data.val_ann=v.json", "data.train_images=i", "data.val_images=i"]


def _run(folder: Path, *extra: str) -> Path:
    folder.mkdir(parents=True)
    cfg = load_config("configs/finetune/demo.yaml", [*DATA, "train.max_iters=40", *extra])
    save_config(cfg, folder / "config.yaml")
    (folder / "metrics.jsonl").write_text('{"iter": 40}\n')
    (folder / "ckpt_0000040.pt").write_bytes(b"x")
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_new_run_in_an_empty_or_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "missing"):
        cfg = prepare_run("configs/finetune/demo.yaml", DATA, folder)
        assert cfg.train.max_iters == 100  # the CONFIG's
    assert not (tmp_path / "missing").exists()  # checking writes nothing


def test_resume_keeps_the_run_config_and_writes_nothing(tmp_path, caplog):
    run = _run(tmp_path / "run")
    before = _snapshot(run)
    # CONFIG says max_iters 100, the run says 40: the run's value is kept, with a warning
    cfg = prepare_run("configs/finetune/demo.yaml", ["train.log_every=5"], run, resume=True)
    assert (cfg.train.max_iters, cfg.train.log_every) == (40, 5)
    assert "train.max_iters" in caplog.text and "the run's values are kept" in caplog.text
    assert _snapshot(run) == before
    cfg = prepare_run(str(run / "config.yaml"), [], run, resume=True)  # its own config: fine
    assert cfg.train.max_iters == 40


@pytest.mark.parametrize(
    "override", ["train.max_iters=120", "train.lr=0.5", "model.depth=50", "data.val_ann=o.json"]
)
def test_resume_refuses_what_the_checkpoint_fixes(tmp_path, override):
    run = _run(tmp_path / "run")
    before = _snapshot(run)
    key = override.split("=")[0]
    with pytest.raises(RunFolderError, match=f"{key}=.* here, .* in the run's config.yaml"):
        prepare_run("configs/finetune/demo.yaml", [override], run, resume=True)
    assert _snapshot(run) == before


def test_resume_accepts_a_moved_annotation_file_with_the_same_bytes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for name in ("a", "b"):
        _json(tmp_path / name / "v.json", GT)
    run = _run(tmp_path / "run", f"data.val_ann={tmp_path / 'a' / 'v.json'}")
    cfg = prepare_run(None, [f"data.val_ann={tmp_path / 'b' / 'v.json'}"], run, resume=True)
    assert cfg.data.val_ann == str(tmp_path / "b" / "v.json")
    _json(tmp_path / "b" / "v.json", {**GT, "images": GT["images"][:1]})  # now another file
    with pytest.raises(RunFolderError, match="data.val_ann="):
        prepare_run(None, [f"data.val_ann={tmp_path / 'b' / 'v.json'}"], run, resume=True)


def test_resume_before_the_first_checkpoint_restarts_the_log(tmp_path):
    run = _run(tmp_path / "run")
    (run / "ckpt_0000040.pt").unlink()  # died before its first checkpoint (a full disk)
    prepare_run(None, [], run, resume=True)
    assert not (run / "metrics.jsonl").exists()  # not appended to by the new attempt


def test_overwrite_moves_the_old_run_aside(tmp_path, caplog):
    run = _run(tmp_path / "run")
    before = _snapshot(run)
    prepare_run("configs/finetune/demo.yaml", DATA, run, overwrite=True)
    assert not run.exists()  # the new run starts in an empty folder, nothing mixed in
    (old,) = tmp_path.glob("run.old-*")
    assert _snapshot(old) == before
    assert str(old) in caplog.text
    _run(run)
    prepare_run("configs/finetune/demo.yaml", DATA, run, overwrite=True)
    assert len(list(tmp_path.glob("run.old-*"))) == 2  # same second: a -2 suffix, no clash


def test_a_bad_config_is_refused_before_the_folder_is_moved(tmp_path):
    run = _run(tmp_path / "run")
    with pytest.raises(ConfigError, match="train.batch_size"):
        prepare_run(
            "configs/finetune/demo.yaml", [*DATA, "train.batch_size=0"], run, overwrite=True
        )
    assert (run / "config.yaml").is_file() and not list(tmp_path.glob("run.old-*"))


# ---- evaluate a checkpoint on another split ----------------------------------------------------


def test_evaluating_another_split_never_touches_the_run_eval(tmp_path, monkeypatch, capsys):
    calls = []

    def evaluate_checkpoint(job):
        calls.append(str(job.out_dir))
        return {"bbox": {"AP": 0.5}}

    monkeypatch.setattr("drcl.finetune.runner.evaluate_checkpoint", evaluate_checkpoint)
    monkeypatch.setattr("drcl.evaluation.format.format_metrics", lambda m: "AP 50")
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "metrics_bbox.json").write_text('{"AP": 0.25}')
    train = _json(tmp_path / "train.json", GT)
    cfg = load_config("configs/finetune/demo.yaml", [f"data.train_ann={train}"])
    save_config(cfg, run / "config.yaml")
    ckpt = run / "model_final.safetensors"
    ckpt.write_bytes(b"w")
    argv = ["evaluate", "--config", str(run / "config.yaml"), "--checkpoint", str(ckpt)]
    assert main([*argv, f"data.val_ann={train}"]) == 0
    assert calls == [str(run / "eval-train")]
    assert json.loads((run / "eval-train" / "metrics.json").read_text()) == {"bbox": {"AP": 0.5}}
    assert (run / "eval" / "metrics_bbox.json").read_text() == '{"AP": 0.25}'


# ---- the ground truth of an evaluation ---------------------------------------------------------


def test_loose_gt_box_is_one_grouped_warning_and_evaluates(tmp_path, capsys):
    gt = json.loads(json.dumps(GT))
    gt["annotations"][0]["bbox"] = [35, 1, 10, 10]  # 5 px outside: loose, not garbage
    gt["annotations"][1]["bbox"] = [36, 5, 10, 20]
    code = main(
        [
            "evaluate",
            "--gt",
            _json(tmp_path / "g.json", gt),
            "--dets",
            _json(tmp_path / "d.json", DETS),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0 and "AP" in out
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "extends outside" in warnings[0] and "2 problem(s)" in warnings[0]


def test_metadata_problems_do_not_block_an_evaluation(tmp_path, capsys):
    gt = json.loads(json.dumps(GT))
    gt["images"][0]["neg_category_ids"] = [99]  # unknown ids in a federated list: ignored
    gt["categories"][0]["image_count"] = -1
    code = main(
        [
            "evaluate",
            "--gt",
            _json(tmp_path / "g.json", gt),
            "--dets",
            _json(tmp_path / "d.json", DETS),
        ]
    )
    assert code == 0, capsys.readouterr().err


# ---- how main reports errors -----------------------------------------------------------------


def _raising(monkeypatch, err: BaseException) -> None:
    def handler(args):
        raise err

    monkeypatch.setattr("drcl.data.cli.cli_stats", handler)
    import drcl.cli.main as m

    monkeypatch.setattr(m, "cli_stats", handler)


def test_a_bug_is_one_header_and_a_log_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    _raising(monkeypatch, ZeroDivisionError("division by zero"))
    assert main(["data", "stats", "x.json"]) == 70
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "internal error (this is a bug in drcl, not in your input): ZeroDivisionError" in err
    (log_file,) = tmp_path.glob("drcl-crash-*.log")
    assert str(log_file) in err
    assert "Traceback" in log_file.read_text() and "ZeroDivisionError" in log_file.read_text()


def test_verbose_prints_the_traceback_of_a_bug(monkeypatch, capsys):
    _raising(monkeypatch, TypeError("unsupported operand"))
    assert main(["-v", "data", "stats", "x.json"]) == 70
    err = capsys.readouterr().err
    assert "internal error" in err and "Traceback" in err and "TypeError" in err


def test_no_batch_is_a_user_error_with_a_hint(monkeypatch, capsys):
    _raising(monkeypatch, NoBatchError("the training data produced no batch", hint="check it"))
    assert main(["data", "stats", "x.json"]) == 1
    err = capsys.readouterr().err
    assert "error: the training data produced no batch" in err and "  hint: check it" in err
    assert "internal error" not in err


def test_interrupt_exits_130(monkeypatch, capsys):
    _raising(monkeypatch, KeyboardInterrupt())
    assert main(["data", "stats", "x.json"]) == 130
    assert "interrupted" in capsys.readouterr().err


# ---- a real run folder, end to end --------------------------------------------------------------


@pytest.mark.slow  # ~1 min on 2 busy cores; the prepare_run tests above cover each behaviour
def test_real_run_is_refused_resumed_and_overwritten(tiny_overrides, tmp_path, capsys):
    work = tmp_path / "pre"
    base = ["pretrain", "configs/pretrain/demo.yaml", "--work-dir", str(work)]
    over = [*tiny_overrides, "train.max_iters=2", "train.checkpoint_every=2"]
    assert main([*base, *over]) == 0
    first = _snapshot(work)
    capsys.readouterr()
    assert main([*base, *over]) == 1  # the same command again: refused, nothing touched
    assert "is not empty" in capsys.readouterr().err and _snapshot(work) == first
    assert main([*base, "--resume", "train.max_iters=4"]) == 1  # the sampler fixes max_iters
    assert "train.max_iters=4 here, 2 in the run's config.yaml" in capsys.readouterr().err
    assert _snapshot(work) == first
    # a resume that changes nothing the checkpoint fixes: runs (already finished: no step)
    assert main([*base, "--resume", "train.log_every=5"]) == 0
    assert (work / "ckpt_0000002.pt").read_bytes() == first["ckpt_0000002.pt"]
    assert main([*base, "--overwrite", *over]) == 0
    (old,) = tmp_path.glob("pre.old-*")
    names = {k for k in _snapshot(old) if not k.startswith("tb/")}  # (the resume logged to tb)
    assert names == {k for k in first if not k.startswith("tb/")}  # the first run, moved whole
    assert (old / "ckpt_0000002.pt").read_bytes() == first["ckpt_0000002.pt"]
    assert (work / "ckpt_0000002.pt").is_file()
