"""``drcl evaluate``: exit codes, the printed table and the metrics json."""

import json

from drcl.cli.main import main
from drcl.evaluation import evaluate_detections, json_safe

from .cases import lvis_case, train_json


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


def test_evaluate_files_prints_table_and_writes_json(tmp_path, capsys):
    gt, dets = lvis_case(seed=0, frequency=False)
    ids = sorted(c["id"] for c in gt["categories"])
    train = train_json({cid: (1 + 20 * i, 1 + 60 * i) for i, cid in enumerate(ids)})
    args = ["evaluate", "--gt", _write(tmp_path / "gt.json", gt)]
    args += ["--dets", _write(tmp_path / "dets.json", dets)]
    args += ["--train-ann", _write(tmp_path / "train.json", train)]
    out = tmp_path / "sub" / "metrics.json"
    assert main([*args, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "APr" in text and "AP4" in text and "rarest classes (by train instances)" in text
    written = json.loads(out.read_text())
    want = json_safe(evaluate_detections(gt, dets, train_ann=train))
    assert written == want
    assert written["AP4"] is None  # no class reaches 8000 instances: NaN -> null
    assert not list(out.parent.glob(".*tmp"))  # atomic write leaves no temporary file


def test_evaluate_bad_dets_exit_1(tmp_path, capsys):
    gt, dets = lvis_case(seed=0)
    dets[3]["score"] = None
    args = ["evaluate", "--gt", _write(tmp_path / "gt.json", gt)]
    args += ["--dets", _write(tmp_path / "dets.json", dets)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "dets.json: record 3: field 'score': not a finite number" in err


def test_evaluate_missing_arguments_exit_2(tmp_path, capsys):
    assert main(["evaluate", "--gt", "gt.json"]) == 2
    assert "give --gt and --dets" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", "m.safetensors"]) == 2


def test_checkpoint_mode_delegates(tmp_path, monkeypatch, capsys):
    calls = []
    gt, dets = lvis_case(seed=0)
    metrics = evaluate_detections(gt, dets)

    def evaluate_checkpoint(job):
        calls.append((job.finetune.arch, str(job.checkpoint), str(job.out_dir), job.iou_types))
        return {t: metrics for t in job.iou_types}

    monkeypatch.setattr("drcl.finetune.runner.evaluate_checkpoint", evaluate_checkpoint)
    data = {"val_ann": _write(tmp_path / "gt.json", gt), "val_images": str(tmp_path)}
    cfg = _write(tmp_path / "cfg.yaml", {"data": data})
    out = tmp_path / "m.json"
    argv = ["evaluate", "--config", cfg, "--checkpoint", "ck.safetensors", "--out", str(out)]
    assert main([*argv, "--work-dir", str(tmp_path / "w"), "finetune.arch=mask_rcnn"]) == 0
    assert calls == [("mask_rcnn", "ck.safetensors", str(tmp_path / "w"), ("bbox", "segm"))]
    assert json.loads(out.read_text()) == json_safe({"bbox": metrics, "segm": metrics})
    assert capsys.readouterr().out.count("frequency groups") == 2
    # without --out, the metrics go to WORK_DIR/metrics.json
    assert main(argv[:-2] + ["--work-dir", str(tmp_path / "w2")]) == 0
    assert (tmp_path / "w2" / "metrics.json").exists()


def test_evaluate_without_groups_says_so(tmp_path, capsys):
    gt, dets = lvis_case(seed=0, frequency=False)
    for c in gt["categories"]:
        c["image_count"] = 1  # the evaluation file's own counts: never turned into groups
    args = ["evaluate", "--gt", _write(tmp_path / "gt.json", gt)]
    assert main([*args, "--dets", _write(tmp_path / "dets.json", dets)]) == 0
    out = capsys.readouterr().out
    assert "frequency groups: unavailable (APr/APc/APf not computed)" in out
    assert "note: APr/APc/APf and AP1..AP4 unavailable" in out and "--train-ann" in out
    assert "APr" not in out.split("note:")[0] and "r/c/f =" not in out


def test_evaluate_labels_counts_from_the_evaluation_file(tmp_path, capsys):
    gt, dets = lvis_case(seed=0)
    for c in gt["categories"]:
        c["instance_count"] = 1
    args = ["evaluate", "--gt", _write(tmp_path / "gt.json", gt)]
    assert main([*args, "--dets", _write(tmp_path / "dets.json", dets)]) == 0
    out = capsys.readouterr().out
    assert "COCO-LT bins by counts from the evaluation file, not training" in out
    assert "rarest classes (by counts from the evaluation file, not training)" in out
    assert "training instances" not in out
