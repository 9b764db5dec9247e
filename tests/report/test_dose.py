"""The dose figure: probe keys found whatever their spelling, probe per group against epochs from
synthetic metrics.jsonl files, AP/APr per dose from results.json, and runs without a probe."""

import json

import pytest

from drcl.report.dose import dose_table, main, plot_dose, probe_keys, probe_series


def test_probe_keys_prefer_c5_and_ncm_and_cover_the_groups():
    rec = {"iter": 10, "loss": 1.0}
    for readout in ("C4", "C5"):
        for clf in ("knn", "ncm"):
            for g in ("all", "rare", "common", "frequent"):
                rec[f"probe/{readout}/{clf}/{g}"] = 1.0
    rec["probe/C5/std"] = 0.1  # a monitor, not a group accuracy
    assert probe_keys([rec]) == {
        g: f"probe/C5/ncm/{g}" for g in ("all", "rare", "common", "frequent")
    }


def test_probe_keys_flat_short_and_nested_spellings():
    flat = [{"iter": 1, "probe_c5_ncm_r": 3.0, "probe_c5_ncm_f": 4.0, "probe_c5_ncm_all": 5.0}]
    assert probe_keys(flat) == {"rare": "probe_c5_ncm_r", "frequent": "probe_c5_ncm_f",
                                "all": "probe_c5_ncm_all"}  # fmt: skip
    nested = [{"iter": 1, "probe": {"C5": {"ncm": {"rare": 3.0, "common": 4.0}}}}]
    assert probe_keys(nested) == {"rare": "probe/C5/ncm/rare", "common": "probe/C5/ncm/common"}
    assert probe_keys([{"iter": 1, "loss": 2.0, "box_share_r": 0.1}]) == {}  # no probe
    assert probe_keys([]) == {}


def test_probe_series_in_epochs():
    recs = [
        {"iter": 0, "probe/C5/ncm/rare": 10.0},
        {"iter": 5, "loss": 1.0},
        {"iter": 68, "probe/C5/ncm/rare": 14.0},
        {"iter": 136, "probe/C5/ncm/rare": float("nan")},  # a missing reading is skipped
    ]
    assert probe_series(recs, iters_per_epoch=68) == {"rare": [(0.0, 10.0), (1.0, 14.0)]}


def _row(epochs, iters, aps, seeds):
    mean = sum(aps) / len(aps)
    std = None if len(aps) < 2 else (sum((a - mean) ** 2 for a in aps) / (len(aps) - 1)) ** 0.5
    stat = {"mean": mean, "std": std, "values": aps}
    half = {k: (v / 2 if isinstance(v, float) else v) for k, v in stat.items()}
    return {"AP": stat, "APr": half, "components": [], "seeds_done": seeds,
            "pretrain_epochs": epochs, "pretrain_iters": iters}  # fmt: skip


@pytest.fixture()
def grid(tmp_path):
    """results.json of generic / full (2 ep) / full@12ep (12 ep); probes in full@12ep only."""
    results = {
        "baseline": "generic",
        "rows": {
            "generic": _row(0.0, 0, [20.0, 22.0], [0, 1]),
            "equal_compute": _row(0.0, 0, [30.0, 31.0], [0, 1]),
            "full": _row(2.0, 136, [21.0, 23.0], [0, 1]),
            "full@12ep": _row(12.0, 816, [25.0], [0]),
        },
    }
    (tmp_path / "results.json").write_text(json.dumps(results))
    run = tmp_path / "full@12ep" / "seed0" / "pretrain"
    run.mkdir(parents=True)
    lines = [{"iter": i, "loss": 1.0} for i in range(10, 816, 10)]
    for ep in range(0, 13, 2):
        groups = ("all", "rare", "common", "frequent")
        probe = {f"probe/C5/ncm/{g}": 30.0 + ep + k for k, g in enumerate(groups)}
        lines.append({"iter": ep * 68, **probe})
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    for s in (0, 1):  # full: no probe logged
        d = tmp_path / "full" / f"seed{s}" / "pretrain"
        d.mkdir(parents=True)
        (d / "metrics.jsonl").write_text(json.dumps({"iter": 10, "loss": 1.0}) + "\n")
    return tmp_path


def test_dose_figure_and_table(grid):
    png, notes = plot_dose(grid, grid / "out" / "dose.png")
    assert png.is_file() and png.stat().st_size > 5000 and notes == []
    table = dose_table(grid)
    lines = table.splitlines()
    assert lines[0] == ("| row | 2DRCL epochs | seeds | AP | APr | probe all | probe rare | "
                        "probe common | probe frequent |")  # fmt: skip
    assert lines[2] == "| generic | 0 | 2 | 21.00 ± 1.41 | 10.50 ± 0.71 | n/a | n/a | n/a | n/a |"
    assert lines[3] == "| full | 2 | 2 | 22.00 ± 1.41 | 11.00 ± 0.71 | n/a | n/a | n/a | n/a |"
    # the last probe of full@12ep (epoch 12): 30 + 12 + group index
    assert lines[4] == "| full@12ep | 12 | 1 | 25.00 | 12.50 | 42.0 | 43.0 | 44.0 | 45.0 |"
    assert len(lines) == 5  # equal_compute is not of the dose family


def test_dose_figure_without_any_probe_says_so(grid):
    (grid / "full@12ep" / "seed0" / "pretrain" / "metrics.jsonl").write_text('{"iter": 1}\n')
    _, notes = plot_dose(grid, grid / "dose.png")
    assert notes == ["no probe logged by the pre-training runs (pretrain.probe.every)"]
    assert "| full@12ep | 12 | 1 | 25.00 | 12.50 | n/a |" in dose_table(grid)


def test_dose_cli(grid, tmp_path, capsys):
    assert main([str(grid), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "dose.png").is_file()
    assert "| full@12ep | 12 |" in (tmp_path / "rep" / "dose.md").read_text()
    assert main([str(tmp_path / "nothing"), "--out", str(tmp_path / "rep2")]) == 1
    assert "no results.json" in capsys.readouterr().err
