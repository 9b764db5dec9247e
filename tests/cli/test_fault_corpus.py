# ruff: noqa: E501  (the corpus reads best one case per line)
"""A fault corpus: the mistakes a user makes, each run through ``drcl`` in-process.

Every case asserts the exit code, that no traceback is printed, that the message names the
file, record or key at fault, and that every input file (the whole ``in/`` tree, run folders
included) is byte-for-byte unchanged and nothing was added to it. All of them fail before any
training: the corpus runs in seconds.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from drcl.cli.main import main
from drcl.config import load_config, save_config

GT = {
    "images": [
        {"id": 1, "height": 40, "width": 40, "file_name": "a.png"},
        {"id": 2, "height": 40, "width": 40, "file_name": "b.png"},
    ],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], "area": 100},
        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [5, 5, 20, 20], "area": 400},
    ],
    "categories": [
        {"id": 1, "name": "a", "frequency": "r"},
        {"id": 2, "name": "b", "frequency": "c"},
    ],
}
DETS = [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], "score": 0.9}]
POLY = [[1, 1, 11, 1, 11, 11, 1, 11]]


def _gt(change=None) -> dict:
    gt = json.loads(json.dumps(GT))
    if change is not None:
        change(gt)
    return gt


def _set(path: list, value):
    """``change(gt)`` that sets ``gt[path[0]][path[1]]...`` to ``value``."""

    def change(gt):
        node = gt
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


def _with_masks(gt: dict) -> None:
    for ann in gt["annotations"]:
        ann["segmentation"] = POLY


JSON_INPUTS = {
    "gt": _gt(),
    "dets": DETS,
    "gt_dup_image": _gt(lambda g: g["images"].append(dict(g["images"][0]))),
    "gt_dup_ann": _gt(lambda g: g["annotations"].append(dict(g["annotations"][0], image_id=2))),
    "gt_dup_cat": _gt(lambda g: g["categories"].append({"id": 1, "name": "again"})),
    "gt_nan_box": _gt(_set(["annotations", 1, "bbox"], [5, 5, float("nan"), 20])),
    "gt_huge_box": _gt(_set(["annotations", 1, "bbox"], [0, 0, 1e30, 1e30])),
    "gt_zero_box": _gt(_set(["annotations", 1, "bbox"], [5, 5, 0, 0])),
    "gt_unknown_image": _gt(_set(["annotations", 1, "image_id"], 99)),
    "gt_unknown_cat": _gt(_set(["annotations", 1, "category_id"], 77)),
    "gt_odd_polygon": _gt(
        lambda g: (_with_masks(g), _set(["annotations", 1, "segmentation"], [[1, 1, 9, 1, 9]])(g))
    ),
    "gt_rle_size": _gt(
        lambda g: (
            _with_masks(g),
            _set(["annotations", 1, "segmentation"], {"size": [20, 20], "counts": [400]})(g),
        )
    ),
    "gt_rle_counts": _gt(
        lambda g: (
            _with_masks(g),
            _set(["annotations", 1, "segmentation"], {"size": [40, 40], "counts": [3, 5]})(g),
        )
    ),
    "gt_rle_string": _gt(
        lambda g: (
            _with_masks(g),
            _set(["annotations", 1, "segmentation"], {"size": [40, 40], "counts": "0P"})(g),
        )
    ),
}


def _write_run(folder: Path, gt: str, images: str, extra: list[str]) -> None:
    """A finished-looking fine-tuning run folder (no real training needed to refuse it)."""
    folder.mkdir(parents=True)
    cfg = load_config(
        "configs/finetune/demo.yaml",
        [
            f"data.train_ann={gt}",
            f"data.val_ann={gt}",
            f"data.train_images={images}",
            f"data.val_images={images}",
            *extra,
        ],
    )
    save_config(cfg, folder / "config.yaml")
    (folder / "metrics.jsonl").write_text('{"iter": 40, "loss": 1.0}\n')
    (folder / "ckpt_0000040.pt").write_bytes(b"not really a checkpoint")
    (folder / "model_final.safetensors").write_bytes(b"weights of the old run")
    (folder / "eval").mkdir()
    (folder / "eval" / "metrics_bbox.json").write_text('{"AP": 0.25}')


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """The inputs, written once; each case gets a fresh copy (:func:`files`)."""
    src = tmp_path_factory.mktemp("corpus") / "in"
    src.mkdir()
    for name, obj in JSON_INPUTS.items():
        (src / f"{name}.json").write_text(json.dumps(obj))
    raw = json.dumps(GT).encode()
    (src / "gt_gz.json").write_bytes(gzip.compress(raw))
    (src / "gt_utf16.json").write_bytes(json.dumps(GT).encode("utf-16"))
    (src / "gt_twice.json").write_bytes(raw + b"\n" + raw)
    (src / "dets_twice.json").write_bytes(json.dumps(DETS).encode() * 2)
    (src / "ckpt.safetensors").write_bytes(b"\x00" * 64)
    (src / "images").mkdir()
    _write_configs(src)
    _write_run(src / "run", str(src / "gt.json"), str(src / "images"), ["train.max_iters=40"])
    (src / "busy").mkdir()
    (src / "busy" / "notes.txt").write_text("someone's notes\n")
    return src


@pytest.fixture()
def files(template: Path, tmp_path: Path) -> dict[str, str]:
    """Every input of the corpus, under ``in/`` (links and hard links too); outputs go to
    ``out/``. The run folder's config.yaml names the template's data, which no case reads."""
    src, out = tmp_path / "in", tmp_path / "out"
    shutil.copytree(template, src)
    out.mkdir()
    os.symlink(src / "gt.json", src / "gt_link.json")
    os.link(src / "gt.json", src / "gt_hard.json")
    os.link(src / "ckpt.safetensors", src / "ckpt_hard.pth")
    paths = {"in": str(src), "out": str(out)}
    for path in src.iterdir():
        paths[path.name.split(".")[0]] = str(path)
    return paths


def _write_configs(src: Path) -> None:
    texts = {
        "cfg_two_train": "train:\n  lr: 0.1\nmodel:\n  depth: 18\ntrain:\n  epochs: 3\n",
        "cfg_base_int": "_base_: 42\n",
        "cfg_base_list": "_base_: [cfg_ok.yaml, 3]\n",
        "cfg_two_docs": "train:\n  lr: 0.1\n---\ntrain:\n  lr: 0.2\n",
        "cfg_ok": "train:\n  lr: 0.1\n",
        "cfg_tab": "train:\n\tlr: 0.1\n",
    }
    for name, text in texts.items():
        (src / f"{name}.yaml").write_text(text)
    (src / "cfg_utf16.yaml").write_bytes("train:\n  lr: 0.1\n".encode("utf-16"))
    (src / "cfg_gz.yaml.gz").write_bytes(gzip.compress(b"train:\n  lr: 0.1\n"))
    latin1 = "# caf\xe9\ntrain:\n  lr: 0.1\n".encode("latin-1")
    (src / "cfg_latin1.yaml").write_bytes(latin1)


@dataclass
class Case:
    argv: list[str]
    names: tuple[str, ...]  # substrings of the message: the file, record or key at fault
    code: int = 1
    fault: str | None = None  # an injected environment fault: "enospc" or "readonly"
    tags: set[str] = field(default_factory=set)


FT = ["finetune", "configs/finetune/demo.yaml"]
PT = ["pretrain", "configs/pretrain/demo.yaml"]
EV = ["evaluate", "--gt", "{gt}", "--dets", "{dets}"]
DATA = [
    "data.train_ann={gt}",
    "data.val_ann={gt}",
    "data.train_images={images}",
    "data.val_images={images}",
]


def _ev(gt: str, *more: str) -> list[str]:
    return ["evaluate", "--gt", "{" + gt + "}", "--dets", "{dets}", *more]


CASES: dict[str, Case] = {
    # ---- outputs over inputs (data loss) -------------------------------------------------
    "check --fix-out = the input": Case(["data", "check", "{gt}", "--fix-out", "{gt}"], ("--fix-out", "{gt}", "input ANN")),
    "check --fix-out = a symlink to the input": Case(["data", "check", "{gt}", "--fix-out", "{gt_link}"], ("{gt_link}", "input ANN")),
    "check --fix-out = a hard link of the input": Case(["data", "check", "{gt}", "--fix-out", "{gt_hard}"], ("{gt_hard}", "input ANN")),
    "check --fix-out = input via ../": Case(["data", "check", "{gt}", "--fix-out", "{in}/images/../gt.json"], ("--fix-out", "input ANN")),
    "evaluate --out = --gt": Case([*EV, "--out", "{gt}"], ("--out", "{gt}", "input --gt")),
    "evaluate --out = --dets": Case([*EV, "--out", "{dets}"], ("--out", "{dets}", "input --dets")),
    "evaluate --out = symlink to --gt": Case(["evaluate", "--gt", "{gt_link}", "--dets", "{dets}", "--out", "{gt}"], ("input --gt",)),
    "evaluate --out = hard link of --train-ann": Case([*EV, "--train-ann", "{gt}", "--out", "{gt_hard}"], ("{gt_hard}", "input --gt")),
    "evaluate --out = a glob-matched --dets": Case(["evaluate", "--gt", "{gt}", "--dets", "{in}/det*.json", "--out", "{dets}"], ("input --dets",)),
    "evaluate --out stats.txt": Case([*EV, "--out", "{out}/metrics.txt"], ("--out", "'.txt'", ".json")),
    "export --out = the checkpoint": Case(["export", "{ckpt}", "--to", "mmdet", "--out", "{ckpt}"], ("--out", "{ckpt}", "input CHECKPOINT")),
    "export --out = hard link of the checkpoint": Case(["export", "{ckpt}", "--to", "torchvision", "--out", "{ckpt_hard}"], ("{ckpt_hard}", "input CHECKPOINT")),
    "stats --out stats.txt (a PNG)": Case(["data", "stats", "{gt}", "--out", "{out}/stats.txt"], ("'.txt'", ".png")),
    "stats --out = the input": Case(["data", "stats", "{gt}", "--out", "{gt}"], ("input ANN",)),
    "proposals --out = data.train_ann": Case(["proposals", "configs/pretrain/demo.yaml", "--out", "{gt}", *DATA], ("--out", "data.train_ann")),
    "report --out = a run folder": Case(["report", "{run}", "--out", "{run}"], ("--out", "{run}")),
    "evaluate --work-dir = the run's own eval/": Case(["evaluate", "--config", "{run}/config.yaml", "--checkpoint", "{run}/model_final.safetensors", "--work-dir", "{run}/eval"], ("{run}/eval", "run's own evaluation")),
    "evaluate checkpoint --out = its config": Case(["evaluate", "--config", "{run}/config.yaml", "--checkpoint", "{run}/model_final.safetensors", "--out", "{run}/config.yaml"], ("input --config",)),
    # ---- reused run folders ---------------------------------------------------------------
    "finetune into another run's folder": Case([*FT, "--work-dir", "{run}", *DATA], ("--work-dir", "{run}", "not empty")),
    "pretrain into another run's folder": Case([*PT, "--work-dir", "{run}", *DATA], ("--work-dir", "{run}", "not empty")),
    "finetune into a folder of other files": Case([*FT, "--work-dir", "{busy}", *DATA], ("{busy}", "notes.txt")),
    "finetune --resume, a changed max_iters": Case([*FT, "--work-dir", "{run}", "--resume", "train.max_iters=120"], ("train.max_iters=120", "40", "config.yaml")),
    "pretrain --resume, a changed max_iters": Case([*PT, "--work-dir", "{run}", "--resume", "train.max_iters=120"], ("train.max_iters=120", "40")),
    "finetune --resume, a changed model shape": Case([*FT, "--work-dir", "{run}", "--resume", "model.fpn_channels=32"], ("model.fpn_channels",)),
    "finetune --resume, another val split": Case([*FT, "--work-dir", "{run}", "--resume", "data.val_ann={gt_dup_image}"], ("data.val_ann",)),
    "pretrain --resume of a folder that is no run": Case([*PT, "--work-dir", "{busy}", "--resume", *DATA], ("{busy}", "no config.yaml")),
    "finetune --resume --overwrite": Case([*FT, "--work-dir", "{run}", "--resume", "--overwrite"], ("--overwrite", "--resume"), code=2),
    "finetune --overwrite with --init inside the run": Case([*FT, "--work-dir", "{run}", "--overwrite", "--init", "{run}/model_final.safetensors", *DATA], ("--work-dir", "--init")),
    "finetune --overwrite with the data inside the run": Case([*FT, "--work-dir", "{in}", "--overwrite", *DATA], ("--work-dir", "data.train_ann")),
    # ---- config values, files and encodings -------------------------------------------------
    "train.batch_size=0": Case([*FT, "--work-dir", "{out}/w", "train.batch_size=0"], ("train.batch_size", ">= 1")),
    "train.batch_size=-4 blames batch_size": Case([*FT, "--work-dir", "{out}/w", "train.batch_size=-4"], ("train.batch_size", "-4")),
    "train.lr=-0.02 names the key": Case([*PT, "--work-dir", "{out}/w", "train.lr=-0.02"], ("train.lr", "-0.02", "> 0")),
    "model.fpn_channels=0": Case([*PT, "--work-dir", "{out}/w", "model.fpn_channels=0"], ("model.fpn_channels", ">= 1")),
    "data.min_size=-64": Case([*FT, "--work-dir", "{out}/w", "data.min_size=-64"], ("data.min_size", "-64")),
    "train.max_iters=-5 in fine-tuning": Case([*FT, "--work-dir", "{out}/w", "train.max_iters=-5"], ("train.max_iters", ">= 0")),
    "train.accumulate=0 in fine-tuning": Case([*FT, "--work-dir", "{out}/w", "train.accumulate=0"], ("train.accumulate", ">= 1")),
    "pretrain.sr.ratio=1.5": Case([*PT, "--work-dir", "{out}/w", "pretrain.sr.ratio=1.5"], ("pretrain.sr.ratio", "[0,1]")),
    "finetune.nms_thresh=nan": Case([*FT, "--work-dir", "{out}/w", "finetune.nms_thresh=nan"], ("finetune.nms_thresh", "nan")),
    "model.depth=19": Case([*FT, "--work-dir", "{out}/w", "model.depth=19"], ("model.depth", "18, 34, 50, 101")),
    "views.crop_scale element > 1": Case([*PT, "--work-dir", "{out}/w", "pretrain.views.crop_scale=[0.5,2]"], ("pretrain.views.crop_scale",)),
    "YAML with two train: blocks": Case(["finetune", "{cfg_two_train}", "--work-dir", "{out}/w"], ("{cfg_two_train}", "duplicate key 'train'", "line 1")),
    "_base_: 42": Case(["finetune", "{cfg_base_int}", "--work-dir", "{out}/w"], ("{cfg_base_int}", "_base_", "42")),
    "_base_ list with a number": Case(["pretrain", "{cfg_base_list}", "--work-dir", "{out}/w"], ("{cfg_base_list}", "_base_")),
    "two YAML documents in one config": Case(["finetune", "{cfg_two_docs}", "--work-dir", "{out}/w"], ("{cfg_two_docs}", "YAML")),
    "a tab in a YAML config": Case(["finetune", "{cfg_tab}", "--work-dir", "{out}/w"], ("{cfg_tab}", "YAML")),
    "UTF-16 config": Case(["finetune", "{cfg_utf16}", "--work-dir", "{out}/w"], ("{cfg_utf16}", "UTF-16")),
    "latin-1 config": Case(["proposals", "{cfg_latin1}", "--out", "{out}/p.json"], ("{cfg_latin1}", "UTF-8", "0xe9")),
    "gzip-compressed config": Case(["pretrain", "{cfg_gz}", "--work-dir", "{out}/w"], ("{cfg_gz}", "gzip")),
    # ---- the ground truth of an evaluation gets data check's checks -----------------------
    "evaluate: repeated image id": Case(_ev("gt_dup_image"), ("{gt_dup_image}", "image 1", "duplicate id")),
    "evaluate: repeated annotation id": Case(_ev("gt_dup_ann"), ("{gt_dup_ann}", "annotation 1", "duplicate id")),
    "evaluate: repeated category id": Case(_ev("gt_dup_cat"), ("{gt_dup_cat}", "category 1", "duplicate id")),
    "evaluate: NaN box": Case(_ev("gt_nan_box"), ("{gt_nan_box}", "annotation 2", "NaN")),
    "evaluate: 1e30 box": Case(_ev("gt_huge_box"), ("{gt_huge_box}", "annotation 2", "outside")),
    "evaluate: zero-size box": Case(_ev("gt_zero_box"), ("{gt_zero_box}", "annotation 2", "positive")),
    "evaluate: unknown image id": Case(_ev("gt_unknown_image"), ("{gt_unknown_image}", "annotation 2", "unknown image id 99")),
    "evaluate: unknown category id": Case(_ev("gt_unknown_cat"), ("{gt_unknown_cat}", "annotation 2", "unknown category id 77")),
    "evaluate segm: odd polygon": Case(_ev("gt_odd_polygon", "--iou-type", "segm"), ("{gt_odd_polygon}", "annotation 2", "even number")),
    "evaluate segm: RLE size differs": Case(_ev("gt_rle_size", "--iou-type", "segm"), ("{gt_rle_size}", "annotation 2", "RLE size")),
    "evaluate segm: malformed RLE counts": Case(_ev("gt_rle_counts", "--iou-type", "segm"), ("{gt_rle_counts}", "annotation 2", "RLE counts")),
    "evaluate segm: malformed RLE string": Case(_ev("gt_rle_string", "--iou-type", "segm"), ("{gt_rle_string}", "annotation 2", "RLE 'counts' string is malformed")),
    "evaluate: gzip-compressed gt": Case(_ev("gt_gz"), ("{gt_gz}", "gzip")),
    "evaluate: UTF-16 gt": Case(_ev("gt_utf16"), ("{gt_utf16}", "UTF-16")),
    "evaluate: two gt documents concatenated": Case(_ev("gt_twice"), ("{gt_twice}", "Extra data")),
    "evaluate: two dets documents concatenated": Case(["evaluate", "--gt", "{gt}", "--dets", "{dets_twice}"], ("{dets_twice}", "Extra data")),
    "check: gzip-compressed json": Case(["data", "check", "{gt_gz}"], ("{gt_gz}", "gzip")),
    "check: UTF-16 json": Case(["data", "check", "{gt_utf16}"], ("{gt_utf16}", "UTF-16")),
    "stats: two documents concatenated": Case(["data", "stats", "{gt_twice}"], ("{gt_twice}", "Extra data")),
    "finetune: val gt with repeated ids": Case([*FT, "--work-dir", "{out}/w", "data.train_ann={gt}", "data.val_ann={gt_dup_ann}", "data.train_images={images}", "data.val_images={images}"], ("data.val_ann", "{gt_dup_ann}", "duplicate id")),
    # ---- full disks and read-only folders --------------------------------------------------
    "evaluate --out on a full disk": Case([*EV, "--out", "{out}/m.json"], ("{out}/m.json", "No space left"), fault="enospc"),
    "check --fix-out on a full disk": Case(["data", "check", "{gt}", "--fix-out", "{out}/fixed.json"], ("{out}", "No space left"), fault="enospc"),
    "stats --out on a full disk": Case(["data", "stats", "{gt}", "--out", "{out}/s.png"], ("{out}", "No space left"), fault="enospc"),
    "evaluate --out in a read-only folder": Case([*EV, "--out", "{out}/m.json"], ("--out", "{out}/m.json", "cannot write"), fault="readonly"),
    "check --fix-out in a read-only folder": Case(["data", "check", "{gt}", "--fix-out", "{out}/fixed.json"], ("--fix-out", "cannot write"), fault="readonly"),
    "export --out in a read-only folder": Case(["export", "{ckpt}", "--to", "mmdet", "--out", "{out}/x.pth"], ("--out", "cannot write"), fault="readonly"),
    "finetune --work-dir in a read-only folder": Case([*FT, "--work-dir", "{out}/w", *DATA], ("{out}/w", "not writable"), fault="readonly"),
}  # fmt: skip


def tree_hashes(root: str) -> dict[str, str]:
    """sha256 of every file under ``root`` (links by their target path), by relative name."""
    out = {}
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                out[rel] = "link:" + os.readlink(path)
            elif os.path.isfile(path):
                out[rel] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


def _inject(fault: str | None, monkeypatch, out_dir: str) -> None:
    if fault == "enospc":  # every file write under out/ fails as on a full disk

        def full_fsync(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fsync", full_fsync)
    elif fault == "readonly":  # the probe write fails as in a read-only folder (we run as root)
        real = tempfile.NamedTemporaryFile

        def refuse(*args, dir=None, **kwargs):
            if dir is not None and str(dir).startswith(out_dir):
                raise PermissionError(errno.EACCES, "Permission denied", str(dir))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)


def run_case(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse: usage line + one error line, exit 2
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException as err:  # would be a traceback at the command line
        pytest.fail(f"{argv}: exception escaped main(): {type(err).__name__}: {err}")
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_corpus_size():
    assert len(CASES) >= 40
    commands = {c.argv[0] for c in CASES.values()}
    assert {"data", "evaluate", "proposals", "pretrain", "finetune", "export", "report"} <= commands


@pytest.mark.parametrize("name", list(CASES))
def test_fault(name, files, capsys, monkeypatch):
    case = CASES[name]
    argv = [a.format(**files) for a in case.argv]
    before = tree_hashes(files["in"])
    _inject(case.fault, monkeypatch, files["out"])
    code, text = run_case(argv, capsys)
    assert code == case.code, f"{name}: exit {code}\n{text}"
    assert "Traceback" not in text, text
    for expected in case.names:
        assert expected.format(**files) in text, f"{name}: {expected!r} not in\n{text}"
    assert tree_hashes(files["in"]) == before, f"{name}: an input changed"
