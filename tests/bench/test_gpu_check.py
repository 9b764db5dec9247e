"""bench/gpu_check.{sh,py}: options, plan, stage results, json and table — all without a GPU."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
gc = importlib.util.module_from_spec(_spec)
sys.modules["gpu_check"] = gc  # dataclasses resolve their module by name
_spec.loader.exec_module(gc)

BENCH = {
    "pretrain_s": 0.5,
    "pretrain_ckpt_s": 0.6,
    "detector_s": 0.25,
    "pretrain_images_per_s": 16.0,
    "pretrain_ckpt_images_per_s": 13.3,
    "detector_images_per_s": 32.0,
    "pretrain_time_ratio": 2.0,
    "pretrain_peak_mib": 12000.0,
    "pretrain_ckpt_peak_mib": 7000.0,
    "detector_peak_mib": 6000.0,
    "pretrain_memory_ratio": 2.0,
    "pretrain_ckpt_memory_ratio": 7000 / 6000,
}


def _sh(*args):
    env = {**os.environ, "VENV": str(Path(sys.executable).parents[1])}
    return subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_shell_help_and_dry_run_work_without_a_gpu():
    help_ = _sh("--help")
    assert help_.returncode == 0, help_.stderr
    assert "--skip {tests,bench,demo}" in help_.stdout and "--dry-run" in help_.stdout
    dry = _sh("--dry-run", "--skip", "demo", "--batches", "4")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.strip().splitlines()
    assert [ln.split(" [")[0] for ln in lines] == ["pytest -m cuda", "step cost b4"]
    assert "CUBLAS_WORKSPACE_CONFIG=:4096:8" in lines[0] and "-m cuda" in lines[0]


def test_plan_has_every_stage_with_budgeted_limits():
    args = gc.parse_args([])
    stages = gc.plan(args)
    names = [s.name for s in stages]
    assert names == [
        "pytest -m cuda",
        "step cost b2",
        "step cost b8",
        "demo data",
        "demo pretrain",
        "demo finetune",
    ]
    bench = stages[2].cmd
    for flag, value in (("--device", "cuda"), ("--amp", "bf16"), ("--depth", "50")):
        assert bench[bench.index(flag) + 1] == value
    assert bench[bench.index("--size") + 1] == "800" and bench[bench.index("--batch") + 1] == "8"
    assert "train.device=cuda" in stages[4].cmd and stages[3].clean == args.work_dir
    # the stage limits fit the 10-minute window
    assert sum(s.timeout_s for s in stages) <= 900 and args.budget_s <= 600
    assert [s.group for s in gc.plan(gc.parse_args(["--skip", "tests", "--skip", "demo"]))] == [
        "bench",
        "bench",
    ]


@pytest.mark.parametrize("bad", [["--batches", "0"], ["--reps", "0"], ["--skip", "all"]])
def test_bad_options_exit_2_naming_the_option(bad, capsys):
    with pytest.raises(SystemExit) as e:
        gc.parse_args(bad)
    assert e.value.code == 2
    assert bad[0] in capsys.readouterr().err


def test_without_cuda_nothing_is_run_or_written(tmp_path, capsys):
    ran = []
    out = tmp_path / "gpu.json"
    code = gc.main(
        ["--out", str(out)], runner=lambda s, t: ran.append(s), cuda_available=lambda: False
    )
    assert code == 2 and ran == [] and not out.exists()
    assert "no CUDA device" in capsys.readouterr().err


def test_results_go_to_json_and_table(tmp_path, capsys):
    def runner(stage, timeout):
        assert 0 < timeout <= stage.timeout_s
        if stage.group == "bench":
            return {"status": "pass", "rc": 0, "wall_s": 40.0, "result": BENCH}
        if stage.name == "demo finetune":
            return {"status": "timeout", "wall_s": timeout, "tail": "iter 120\niter 130"}
        return {"status": "pass", "rc": 0, "wall_s": 12.5, "pytest": {"passed": 5}}

    out = tmp_path / "sub" / "gpu.json"
    code = gc.main(["--out", str(out), "--work-dir", str(tmp_path / "w")], runner, lambda: True)
    assert code == 1  # the timed-out stage fails the check
    data = json.loads(out.read_text())
    assert list(data["stages"]) == [s.name for s in gc.plan(gc.parse_args([]))]
    assert data["stages"]["step cost b8"]["result"]["pretrain_memory_ratio"] == 2.0
    assert data["stages"]["demo finetune"]["status"] == "timeout"
    assert not list(out.parent.glob("*.tmp"))
    table = capsys.readouterr().out
    row = next(ln for ln in table.splitlines() if ln.startswith("| step cost b2"))
    assert "| pass | 40.0 |" in row
    assert "img/s 16.0 (ckpt 13.3) vs det 32.0" in row and "x2.00/x1.17" in row
    assert "| demo finetune | timeout |" in table and "iter 130" in table
    assert "| pytest -m cuda | pass | 12.5 | 5 passed |" in table


def test_parse_output_reads_pytest_counts_and_bench_json():
    r = gc.parse_output(0, "....\n4 passed, 2 skipped, 300 deselected in 3.1s\n", 3.2)
    assert r["status"] == "pass" and r["pytest"] == {"passed": 4, "skipped": 2, "deselected": 300}
    skipped = gc.parse_output(0, "6 skipped, 300 deselected in 1.0s", 1.0)
    assert skipped["status"] == "fail"  # nothing checked is not a pass
    bench = gc.parse_output(0, 'log\nBENCH_JSON {"pretrain_s": 1.5}\n', 9.0)
    assert bench["result"] == {"pretrain_s": 1.5} and "tail" not in bench
    failed = gc.parse_output(1, "Traceback\nRuntimeError: CUDA out of memory", 2.0)
    assert failed["status"] == "fail" and "out of memory" in failed["tail"]


def test_run_stage_runs_times_out_and_cleans_its_folder(tmp_path):
    owned = tmp_path / "owned"
    owned.mkdir()
    (owned / "stale.txt").write_text("from an earlier run")
    code = "import os; print('BENCH_JSON ' + '{\"x\": ' + os.environ['X'] + '}')"
    ok = gc.run_stage(
        gc.Stage("ok", "demo", [sys.executable, "-c", code], 30, {"X": "7"}, owned), 30
    )
    assert ok["status"] == "pass" and ok["result"] == {"x": 7} and not owned.exists()
    slow = gc.Stage("slow", "demo", [sys.executable, "-c", "import time; time.sleep(5)"], 30)
    assert gc.run_stage(slow, 0.5)["status"] == "timeout"


def test_stages_past_the_budget_are_not_started():
    stages = gc.plan(gc.parse_args(["--skip", "demo"]))
    res = gc.run_all(stages, 5.0, runner=lambda s, t: pytest.fail("must not run"))
    assert {r["status"] for r in res.values()} == {"not run"}


def test_make_bench_table_reads_the_gpu_json_or_says_not_measured(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import run_all

    missing = run_all.format_table(run_all.gpu_rows(tmp_path / "gpu.json"))
    assert "| - | - | not measured |" in missing
    out = tmp_path / "gpu.json"

    def runner(stage, timeout):
        res = {**BENCH, "depth": 50, "size": 800, "batch": 2, "amp": "bf16"}
        return {"status": "pass", "wall_s": 3.0, "result": res if stage.group == "bench" else {}}

    gc.main(["--out", str(out), "--skip", "demo", "--batches", "2"], runner, lambda: True)
    table = run_all.format_table(run_all.gpu_rows(out))
    assert "| 7. GPU peak memory, checkpointing pretrain / Faster R-CNN, R50 800px b2 bf16" in table
    assert "| 1.17 | <= 1.3 | pass |" in table and "| 7. GPU pytest -m cuda (3 s) | - |" in table
