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
