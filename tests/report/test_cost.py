"""The cost table: chains of stages through ``init``, sums and maxima, the report section."""

import json

import pytest

from drcl.report.build import build_report
from drcl.report.cost import cost_row, cost_text, fmt_seconds, pretrain_chain
from drcl.report.runs import load_run

GIB = 2**30


def _cost(stage, init, wall, images, rss_gib, cuda_gib=None):
    return {
        "stage": stage,
        "init": init,
        "wall_time_s": wall,
        "iterations": images // 8,
        "images_seen": images,
        "images_per_s": images / wall,
        "peak_rss_bytes": int(rss_gib * GIB),
        "peak_cuda_bytes": None if cuda_gib is None else int(cuda_gib * GIB),
        "device": "cpu" if cuda_gib is None else "cuda",
        "world_size": 1,
    }


def _run(root, name, cost, ap=None):
    d = root / name
    (d / "eval").mkdir(parents=True)
    (d / "cost.json").write_text(json.dumps(cost))
    if ap is not None:
        (d / "eval" / "metrics_bbox.json").write_text(json.dumps({"AP": ap, "APr": ap / 2}))
    return d


@pytest.fixture()
def runs(tmp_path):
    pre = _run(tmp_path, "pre", _cost("pretrain", None, 100.0, 800, 2.0))
    box_init = str(pre / "pretrained.safetensors")
    box = _run(tmp_path, "box", _cost("box", box_init, 50.0, 400, 3.0))
    ft_init = str(box / "pretrained.safetensors")
    ft_box = _run(tmp_path, "ft_box", _cost("finetune", ft_init, 30.0, 240, 1.0), ap=0.25)
    ft_rand = _run(tmp_path, "ft_random", _cost("finetune", None, 40.0, 240, 1.5), ap=0.1)
    return {"2drcl_box": ft_box, "random": ft_rand, "box_stage": box}


def test_a_chain_adds_time_and_takes_the_highest_memory(runs):
    taken = set()
    row = cost_row(load_run("2drcl_box", runs["2drcl_box"], taken))
    assert row.stages == "pretrain -> box"
    assert row.pretrain_seconds() == 150.0
    assert row.pretrain_images_per_s() == pytest.approx(1200 / 150)
    assert row.memory() == (pytest.approx(3.0, rel=1e-6), "RSS")
    assert (row.ap, row.apr) == (pytest.approx(25.0), pytest.approx(12.5))
    random = cost_row(load_run("random", runs["random"], taken))
    assert random.stages == "none" and random.pretrain_seconds() is None
    assert random.memory()[1] == "RSS"  # no pre-training: the fine-tuning's own peak
    stage = cost_row(load_run("box_stage", runs["box_stage"], taken))
    assert stage.stages == "pretrain -> box" and stage.finetune is None


def test_cuda_memory_wins_and_missing_links_stop_the_chain(tmp_path):
    pre = _run(tmp_path, "pre", _cost("pretrain", "missing/w.safetensors", 10.0, 80, 9.0, 4.0))
    ft = _run(tmp_path, "ft", _cost("finetune", str(pre / "w.safetensors"), 5.0, 40, 1.0))
    row = cost_row(load_run("ft", ft, set()))
    assert row.stages == "pretrain" and row.memory() == (pytest.approx(4.0), "VRAM")
    assert pretrain_chain(None) == [] and pretrain_chain(str(tmp_path / "x" / "w")) == []


def test_a_loop_of_inits_terminates(tmp_path):
    a = tmp_path / "a"
    _run(tmp_path, "a", _cost("box", str(a / "w.safetensors"), 1.0, 8, 1.0))
    assert len(pretrain_chain(str(a / "w.safetensors"))) == 1


def test_report_and_text_show_the_table(runs, tmp_path):
    out = build_report(runs, tmp_path / "report")
    md = (out / "README.md").read_text()
    assert "## Cost" in md and "pretrain -> box" in md and "3.00 RSS" in md
    text = cost_text([load_run(n, p, set()) for n, p in runs.items()])
    lines = text.splitlines()
    assert lines[0].startswith("method") and len(lines) == 4
    assert "2.5 min" in lines[1] and "25.0" in lines[1]  # 150 s of pre-training


def test_runs_without_cost_json(tmp_path):
    d = tmp_path / "old"
    d.mkdir()
    (d / "config.yaml").write_text("model: {depth: 18}\n")
    assert cost_row(load_run("old", d, set())) is None
    assert cost_text([load_run("old", d, set())]) == "cost: no run has cost.json"
    assert fmt_seconds(59.6) == "60 s" and fmt_seconds(7300) == "2.0 h"


def test_demo_prints_the_cost_table(runs, capsys):
    from drcl.cli.demo import _print_cost

    _print_cost({"random": runs["random"], "2drcl_box": runs["2drcl_box"]})
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("method") and out[1].startswith("random")
    assert out[2].startswith("2drcl_box") and "pretrain -> box" in out[2]
