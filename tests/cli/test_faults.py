# ruff: noqa: E501  (the fault table reads best one fault per line)
"""Hostile input at the command line: one clear line on stderr, a non-zero exit, no traceback.

Each fault runs ``drcl.cli.main.main(argv)`` in-process (fast); an exception escaping ``main``
is what would print a traceback, so it fails the test. The closed-pipe case needs a real pipe
and runs as a subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from drcl.analysis.cli import COMMANDS as ANALYSES
from drcl.cli.main import build_parser, main

GT = {
    "images": [{"id": 1, "height": 40, "width": 40}, {"id": 2, "height": 40, "width": 40}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], "area": 100},
        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [5, 5, 20, 20], "area": 400},
    ],
    "categories": [
        {"id": 1, "name": "a", "frequency": "r"},
        {"id": 2, "name": "b", "frequency": "c"},
    ],
}
DET = {"image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], "score": 0.9}


def _gt_with(change) -> dict:
    gt = json.loads(json.dumps(GT))
    change(gt)
    return gt


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, str]:
    """Paths used by the faults: good gt and dets, a folder, a text file, bad variants."""
    paths = {
        "gt": GT,
        "dets": [DET],
        "gt_nobbox": _gt_with(lambda g: g["annotations"][1].pop("bbox")),
        "gt_noid": _gt_with(lambda g: g["images"][0].pop("id")),
        "gt_list": [1, 2],
        "dets_str_id": [dict(DET, image_id="1")],
        "dets_str_score": [dict(DET, score="0.5")],
        "dets_bool_score": [dict(DET, score=True)],
        "dets_str_box": [dict(DET, bbox=["1", 1, 10, 10])],
        "dets_neg_box": [dict(DET, bbox=[1, 1, -10, 10])],
    }
    out = {}
    for name, obj in paths.items():
        out[name] = str(tmp_path / f"{name}.json")
        Path(out[name]).write_text(json.dumps(obj))
    (tmp_path / "folder").mkdir()
    out["dir"] = str(tmp_path / "folder")
    out["text"] = str(tmp_path / "notes.txt")
    Path(out["text"]).write_text("not json, not a checkpoint\n")
    out["binary"] = str(tmp_path / "blob.json")
    Path(out["binary"]).write_bytes(b"\xff\xfe\x00\x81garbage")
    out["under_file"] = str(tmp_path / "notes.txt" / "out.json")
    out["missing"] = str(tmp_path / "missing.json")
    out["cfg"] = "configs/finetune/demo.yaml"
    out["tmp"] = str(tmp_path)
    return out


EV = ["evaluate", "--gt", "{gt}", "--dets", "{dets}"]
FAULTS = {
    # data check
    "check: annotation path is a folder": ["data", "check", "{dir}"],
    "check: annotation file missing": ["data", "check", "{missing}"],
    "check: binary annotation file": ["data", "check", "{binary}"],
    "check: --fix-out is a folder": ["data", "check", "{gt}", "--fix-out", "{dir}"],
    "check: --fix-out under a file": ["data", "check", "{gt}", "--fix-out", "{under_file}"],
    "check: --images is a file": ["data", "check", "{gt}", "--images", "{text}"],
    "check: unknown option": ["data", "check", "{gt}", "--frobnicate"],
    "check: stray argument": ["data", "check", "{gt}", "extra=1"],
    # data stats / make-demo
    "stats: annotation path is a folder": ["data", "stats", "{dir}"],
    "stats: top level is a list": ["data", "stats", "{gt_list}"],
    "stats: --out is a folder": ["data", "stats", "{gt}", "--out", "{dir}"],
    "make-demo: out is a file": ["data", "make-demo", "{text}"],
    # evaluate
    "evaluate: --gt is a folder": ["evaluate", "--gt", "{dir}", "--dets", "{dets}"],
    "evaluate: --dets is a folder": ["evaluate", "--gt", "{gt}", "--dets", "{dir}"],
    "evaluate: --gt missing": ["evaluate", "--gt", "{missing}", "--dets", "{dets}"],
    "evaluate: --gt not json": ["evaluate", "--gt", "{text}", "--dets", "{dets}"],
    "evaluate: gt annotation without bbox": ["evaluate", "--gt", "{gt_nobbox}", "--dets", "{dets}"],
    "evaluate: gt image without id": ["evaluate", "--gt", "{gt_noid}", "--dets", "{dets}"],
    "evaluate: gt top level is a list": ["evaluate", "--gt", "{gt_list}", "--dets", "{dets}"],
    "evaluate: --out is a folder": [*EV, "--out", "{dir}"],
    "evaluate: --out under a file": [*EV, "--out", "{under_file}"],
    "evaluate: extra key=value": [*EV, "foo=bar"],
    "evaluate: extra positional": [*EV, "foo"],
    "evaluate: string image_id": ["evaluate", "--gt", "{gt}", "--dets", "{dets_str_id}"],
    "evaluate: string score": ["evaluate", "--gt", "{gt}", "--dets", "{dets_str_score}"],
    "evaluate: bool score": ["evaluate", "--gt", "{gt}", "--dets", "{dets_bool_score}"],
    "evaluate: string in bbox": ["evaluate", "--gt", "{gt}", "--dets", "{dets_str_box}"],
    "evaluate: negative width": ["evaluate", "--gt", "{gt}", "--dets", "{dets_neg_box}"],
    "evaluate: --max-dets 0": [*EV, "--max-dets", "0"],
    "evaluate: --iou-type mask": [*EV, "--iou-type", "mask"],
    "evaluate: no glob match": ["evaluate", "--gt", "{gt}", "--dets", "{tmp}/none_*.json"],
    "evaluate: --checkpoint without --config": ["evaluate", "--checkpoint", "{text}"],
    # proposals / pretrain / finetune
    "proposals: config is a folder": ["proposals", "{dir}", "--out", "{tmp}/p.json"],
    "proposals: config missing": ["proposals", "{missing}", "--out", "{tmp}/p.json"],
    "proposals: --out is a folder": ["proposals", "{cfg}", "--out", "{dir}"],
    "proposals: bad override": ["proposals", "{cfg}", "--out", "{tmp}/p.json", "nope.x=1"],
    "pretrain: --work-dir is a file": ["pretrain", "{cfg}", "--work-dir", "{text}"],
    "pretrain: unknown option": ["pretrain", "{cfg}", "--work-dir", "{tmp}/w", "--fast"],
    "finetune: --init is not a checkpoint": [
        "finetune", "{cfg}", "--work-dir", "{tmp}/w", "--init", "{text}"
    ],
    "finetune: --init is a folder": ["finetune", "{cfg}", "--work-dir", "{tmp}/w", "--init", "{dir}"],
    # export
    "export: checkpoint is a folder": ["export", "{dir}", "--to", "detectron2", "--out", "{tmp}/x.pth"],
    "export: not a checkpoint": ["export", "{text}", "--to", "detectron2", "--out", "{tmp}/x.pth"],
    "export: missing checkpoint": ["export", "{missing}", "--to", "mmdet", "--out", "{tmp}/x.pth"],
    "export: unknown suffix": ["export", "{text}", "--to", "mmdet", "--out", "{tmp}/x.bin"],
    "export: --out is a folder": ["export", "{text}", "--to", "mmdet", "--out", "{dir}"],
    "export: unknown target": ["export", "{text}", "--to", "caffe", "--out", "{tmp}/x.pth"],
    # report / analyze / top level
    "report: run folder missing": ["report", "{tmp}/no_run", "--out", "{tmp}/rep"],
    "report: --out is a file": ["report", "{dir}", "--out", "{text}"],
    "analyze: errors without --gt": ["analyze", "errors", "--out", "{tmp}/a"],
    "analyze: errors --gt folder": [
        "analyze", "errors", "--gt", "{dir}", "--dets", "a={dets}", "--out", "{tmp}/a"
    ],
    "unknown subcommand": ["frobnicate"],
}  # fmt: skip


def _run_in_process(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse: usage line + one error line, exit 2
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException as err:  # would be a traceback at the command line
        pytest.fail(f"{argv}: exception escaped main(): {type(err).__name__}: {err}")
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_at_least_25_faults():
    assert len(FAULTS) >= 25
    commands = {argv[0] for argv in FAULTS.values()}
    assert {"data", "evaluate", "proposals", "pretrain", "finetune", "export"} <= commands


@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_gives_one_clear_line(name, files, capsys):
    argv = [a.format(**files) for a in FAULTS[name]]
    code, out, err = _run_in_process(argv, capsys)
    assert code != 0, name
    assert "Traceback" not in err + out
    assert "weights_only=False" not in err + out
    if argv[:2] == ["data", "check"] and "error:" in out:
        return  # data check's report is its stdout: one line per problem, then a summary
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(" ")]
    assert any("error" in line for line in lines), err
    assert len(lines) <= 3, err  # usage + error at most; never a stack


def test_out_folder_is_refused_before_any_evaluation(files, capsys):
    argv = [*[a.format(**files) for a in EV], "--out", files["dir"]]
    code, out, err = _run_in_process(argv, capsys)
    assert code == 1 and "is a folder" in err
    assert out == ""  # no metrics were computed or printed first


def test_every_option_has_help():
    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                yield f"{path}: {action.dest}"

    missing = list(walk(build_parser(), "drcl"))
    for name, (make_parser, _) in ANALYSES.items():
        missing += walk(make_parser(), f"drcl analyze {name}")
    assert missing == []
    text = build_parser()._subparsers._group_actions[0].choices["evaluate"].format_help()
    assert "--max-dets" in text and "--iou-type" in text


def _pipe_closed_run(argv: list[str]) -> subprocess.CompletedProcess:
    """Run drcl with a stdout pipe whose reader has gone (as after ``| head -0``)."""
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    try:
        return subprocess.run(
            [sys.executable, "-m", "drcl.cli.main", *argv],
            stdout=write_fd,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=120,
        )
    finally:
        os.close(write_fd)


def test_closed_stdout_pipe_exits_quietly(files):
    done = _pipe_closed_run([a.format(**files) for a in EV])
    assert done.returncode == 141, done.stderr
    assert done.stderr == ""
