"""Interrupted runs, broken images, environment faults, no network: the run fails early and
clearly, or continues exactly."""

from __future__ import annotations

import errno
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from drcl.cli.main import main
from drcl.config import load_config
from drcl.engine import checkpoint as ckpt


def _pretrain_cmd(work_dir: Path, overrides: list[str], resume: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "drcl.cli.main", "pretrain", "configs/pretrain/demo.yaml"]
    cmd += ["--work-dir", str(work_dir), *overrides]
    return cmd + (["--resume"] if resume else [])


RUN = ["train.max_iters=8", "train.checkpoint_every=2", "data.num_workers=1"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # fast: tests/engine/test_trainer.py::test_resume_is_bit_for_bit
def test_sigkill_then_resume_gives_the_uninterrupted_weights(tiny_overrides, tmp_path):
    over = [*tiny_overrides, *RUN]
    ref = subprocess.run(_pretrain_cmd(tmp_path / "ref", over), cwd=ROOT, capture_output=True)
    assert ref.returncode == 0, ref.stderr.decode()[-2000:]

    work = tmp_path / "killed"
    proc = subprocess.Popen(
        _pretrain_cmd(work, over), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(ckpt.list_checkpoints(work)) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = ckpt.list_checkpoints(work)
    assert done and not (work / "pretrained.safetensors").exists(), "killed too late"
    assert not [p for p in work.iterdir() if p.name.endswith(".tmp")]  # nothing half-written

    res = subprocess.run(_pretrain_cmd(work, over, resume=True), cwd=ROOT, capture_output=True)
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    assert b"resumed from" in res.stdout
    a = load_file(tmp_path / "ref" / "pretrained.safetensors")
    b = load_file(work / "pretrained.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    iters = [json.loads(x)["iter"] for x in (work / "metrics.jsonl").read_text().splitlines()]
    assert iters == list(range(1, 9))


@pytest.fixture()
def broken_demo(tiny_demo, tmp_path):
    """A copy of the tiny demo with one training image truncated."""
    root = tmp_path / "broken"
    shutil.copytree(Path(tiny_demo["train_images"]).parent, root)
    train = json.loads((root / "annotations" / "train.json").read_text())
    victim = train["images"][3]
    path = root / "train" / victim["file_name"]
    path.write_bytes(path.read_bytes()[:200])
    return root, victim


def _point_at(root: Path, overrides: list[str]) -> list[str]:
    keep = [o for o in overrides if not o.startswith(("data.train_", "data.val_"))]
    return keep + [
        f"data.train_ann={root / 'annotations' / 'train.json'}",
        f"data.train_images={root / 'train'}",
        f"data.val_ann={root / 'annotations' / 'val.json'}",
        f"data.val_images={root / 'val'}",
    ]


def test_broken_image_raise_names_the_file(broken_demo, tiny_overrides, tmp_path, capsys):
    root, victim = broken_demo
    over = _point_at(root, [*tiny_overrides, "train.max_iters=30", "data.num_workers=1"])
    code = main(
        ["pretrain", "configs/pretrain/demo.yaml", "--work-dir", str(tmp_path / "w"), *over]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert victim["file_name"] in err and f"image {victim['id']}" in err
    assert "Traceback" not in err  # one line, not the worker's traceback


def test_broken_image_skip_counts_and_reports(broken_demo, tiny_overrides, tmp_path, capsys):
    root, victim = broken_demo
    over = _point_at(root, [*tiny_overrides, "train.max_iters=25", "data.on_error=skip"])
    code = main(
        ["pretrain", "configs/pretrain/demo.yaml", "--work-dir", str(tmp_path / "w"), *over]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err[-1500:]
    err = captured.err  # the skip report is a warning (stderr)
    assert "skipped 1 unreadable image(s)" in err and victim["file_name"] in err
    rows = [json.loads(x) for x in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["skipped_images"] == 1


def test_unwritable_work_dir_fails_before_training(tiny_overrides, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(
        [
            "pretrain",
            "configs/pretrain/demo.yaml",
            "--work-dir",
            str(blocker / "run"),
            *tiny_overrides,
        ]
    )
    assert code == 1
    assert "not writable" in capsys.readouterr().err


def test_full_disk_during_checkpoint_leaves_no_partial_file(tmp_path, monkeypatch):
    ckpt.save_checkpoint({"x": torch.ones(3)}, tmp_path, 1)

    def full_disk(obj, path):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        ckpt.save_checkpoint({"x": torch.zeros(3)}, tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt_0000001.pt",
        "ckpt_0000001.pt.sha256",
    ]
    assert ckpt.latest_good_checkpoint(tmp_path).name == "ckpt_0000001.pt"


def test_pipeline_opens_no_network_connection(tiny_overrides, tmp_path, monkeypatch):
    from drcl.finetune.job import FinetuneJob
    from drcl.finetune.runner import run_finetune
    from drcl.pretrain.job import PretrainJob
    from drcl.pretrain.runner import run_pretrain

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    over = [*tiny_overrides, "train.max_iters=2"]
    weights = run_pretrain(PretrainJob.from_config(load_config(None, over), tmp_path / "pre"))
    ft = [*over, "model.norm=frozen_bn", "finetune.eval_batch_size=8"]
    run_dir = run_finetune(
        FinetuneJob.from_config(load_config(None, ft), tmp_path / "ft", init=str(weights))
    )
    assert "APr" in json.loads(run_dir.eval_metrics().read_text())
