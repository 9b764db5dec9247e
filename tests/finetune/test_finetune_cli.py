"""`drcl finetune` -> `drcl evaluate --checkpoint` -> `drcl export`, on the tiny demo data."""

import json

from safetensors.torch import load_file

from drcl.cli.main import main
from drcl.config import load_config
from drcl.finetune.job import EvaluateJob, FinetuneJob
from drcl.finetune.runner import evaluate_checkpoint, run_finetune
from drcl.utils.run_dir import RunDir, read_metrics

DEMO = "configs/finetune/demo.yaml"


def test_finetune_evaluate_export(tiny_overrides, fast_overrides, tmp_path, capsys):
    work = tmp_path / "ft"
    over = [*tiny_overrides, *fast_overrides, "model.norm=frozen_bn", "finetune.loss=ecm"]
    over.append("finetune.rfs=true")
    assert main(["finetune", "configs/finetune/demo.yaml", "--work-dir", str(work), *over]) == 0
    assert "APr" in capsys.readouterr().out
    ckpt = work / "ckpt_0000002.pt"
    final = load_file(work / "model_final.safetensors")
    assert any(k.startswith("roi_heads.box_predictor") for k in final)  # torchvision keys

    out = tmp_path / "metrics.json"
    argv = ["evaluate", "--config", "configs/finetune/demo.yaml", "--checkpoint", str(ckpt)]
    assert main([*argv, "--work-dir", str(tmp_path / "ev"), "--out", str(out), *over]) == 0
    again = json.loads(out.read_text())
    first = json.loads((work / "eval" / "metrics_bbox.json").read_text())
    bbox = again.get("bbox", again)
    assert bbox["AP"] == first["AP"] and bbox["APr"] == first["APr"]  # checkpoint = final model
    _runner_on_a_job_equals_the_command_line(work, over, tmp_path / "job", bbox)

    for target in ("torchvision", "detectron2", "mmdet"):
        dest = tmp_path / f"{target}.safetensors"
        assert (
            main(
                [
                    "export",
                    str(work / "model_final.safetensors"),
                    "--to",
                    target,
                    "--out",
                    str(dest),
                ]
            )
            == 0
        )
        assert load_file(dest)


def _runner_on_a_job_equals_the_command_line(cli_run, over, job_dir, cli_eval):
    """The runners driven by jobs (what the ablation and the demo do) give the numbers of the
    command line: losses, evaluation, config.yaml; and `drcl evaluate --checkpoint`'s."""
    cfg = load_config(DEMO, over)
    run = run_finetune(FinetuneJob.from_config(cfg, job_dir))
    assert run == RunDir(job_dir)
    losses = [[{k: v for k, v in r.items() if k.startswith("loss")} for r in read_metrics(d)]
              for d in (RunDir(cli_run).metrics, run.metrics)]  # fmt: skip
    assert losses[0] and losses[0] == losses[1]
    assert json.loads(run.eval_metrics().read_text()) == json.loads(
        RunDir(cli_run).eval_metrics().read_text()
    )
    assert run.config.read_text() == RunDir(cli_run).config.read_text()
    ckpt = cli_run / "ckpt_0000002.pt"
    result = evaluate_checkpoint(EvaluateJob.from_config(cfg, ckpt, job_dir / "ev"))
    assert result["bbox"]["AP"] == cli_eval["AP"] and result["bbox"]["APr"] == cli_eval["APr"]
