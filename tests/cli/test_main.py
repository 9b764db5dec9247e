import subprocess
import sys

import pytest

from drcl.cli.main import build_parser, main


def test_every_subcommand_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert p.format_help(), name


def test_help_runs_as_console_script():
    out = subprocess.run(
        [sys.executable, "-m", "drcl.cli.main", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "pretrain" in out.stdout


def test_config_error_is_one_line_and_nonzero(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("nope: 1\n")
    with pytest.raises(SystemExit):
        main(["pretrain"])  # missing arguments: argparse exits 2
    code = main(["proposals", str(bad), "--out", str(tmp_path / "p.json")])
    assert code != 0
