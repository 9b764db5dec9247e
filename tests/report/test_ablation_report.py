import json

from drcl.ablation.results import summarize
from drcl.cli.main import main


def _ablation_dir(tmp_path):
    per_seed = {
        "generic": {0: {"AP": 0.20}, 1: {"AP": 0.22}},
        "hcl": {0: {"AP": 0.21}, 1: {"AP": 0.21}},
        "full": {0: {"AP": 0.25}, 1: {"AP": 0.27}},
    }
    results = {**summarize(per_seed, [0, 1], "generic"), "baseline": "generic", "seeds": [0, 1]}
    d = tmp_path / "abl"
    d.mkdir()
    (d / "results.json").write_text(json.dumps(results))
    return d


def test_report_shows_the_ablation_table_and_marks_ci_excluding_zero(tmp_path):
    out = tmp_path / "rep"
    assert main(["report", "--ablation", str(_ablation_dir(tmp_path)), "--out", str(out)]) == 0
    md = (out / "README.md").read_text()
    assert "| generic | generic |" in md and "21.00 ± 1.41" in md
    assert "| full | **+5.00 [+5.00, +5.00]** |" in md  # CI excludes 0: bold
    assert "| hcl | +0.00 [-12.71, +12.71] |" in md  # CI covers 0: plain
    assert "Ablation over seeds" in (out / "index.html").read_text()


def test_report_without_results_or_runs_fails_cleanly(tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", "--ablation", str(tmp_path), "--out", str(out)]) == 1
    assert "no results.json" in capsys.readouterr().err and not out.exists()
    assert main(["report", "--out", str(out)]) == 1
    assert "no runs given" in capsys.readouterr().err


def test_ablation_section_hand_checked_and_load_errors(tmp_path):
    import pytest

    from drcl.report.ablation import ablation_section, load_ablation

    stat = {"mean": 21.0, "std": 1.5}
    none = {"mean": None}
    entry = {"init": "generic", "components": ["hcl", "sr"], "box_stage": True, "seeds_done": [0]}
    results = {
        "rows": {
            "r1": {**entry, **{m: stat for m in ("AP", "AP50", "APr", "APc", "APf")}},
            "r2": {
                "init": "random",
                **{m: none for m in ("AP", "AP50", "APr", "APc", "APf")},
                "diff_vs_baseline": {
                    m: {"mean": 1.0, "ci95": [0.5, 1.5]}
                    for m in ("AP", "AP50", "APr", "APc", "APf")
                },
            },
        },
        "baseline": "r1",
        "seeds": [0],
    }
    table, diffs, text = ablation_section(results)
    assert [c.text for c in table.rows[0]] == [
        "r1", "generic", "✓", "", "", "", "✓", "✓", "1", *["21.00 ± 1.50"] * 5
    ]  # fmt: skip
    assert [c.text for c in table.rows[1]][-5:] == ["n/a"] * 5
    assert [(c.text, c.bold) for c in diffs.rows[0]][:2] == [
        ("r2", False),
        ("+1.00 [+0.50, +1.50]", True),
    ]
    assert "seeds [0]" in text.text
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert load_ablation(tmp_path) == results == load_ablation(tmp_path / "results.json")
    with pytest.raises(ValueError, match="no results.json"):
        load_ablation(tmp_path / "nowhere")
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(ValueError, match="not an ablation results file"):
        load_ablation(tmp_path / "bad.json")
