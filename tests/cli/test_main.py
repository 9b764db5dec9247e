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


def _leaf_parsers(parser):
    """``(path, parser)`` of every runnable (sub)command: those without further subcommands."""
    import argparse

    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield (), parser
        return
    for name, child in subs[0].choices.items():
        for path, leaf in _leaf_parsers(child):
            yield (name, *path), leaf


def test_every_subcommand_has_an_imported_callable_handler():
    leaves = dict(_leaf_parsers(build_parser()))
    assert ("data", "check") in leaves and ("pretrain",) in leaves and ("finetune",) in leaves
    assert len(leaves) == 16  # + data make-generic, pretrain-generic, predict, test
    for path, parser in leaves.items():
        handler = parser.get_default("handler")
        assert callable(handler), f"drcl {' '.join(path)}: handler {handler!r} is not callable"
        # a handler lives in a light `cli` module, which imports its runner on use
        assert handler.__module__.endswith("cli") or handler.__module__.startswith("drcl.cli.")


def test_help_does_not_import_torch():
    code = "import sys, drcl.cli.main; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_quiet_and_verbose_set_the_log_level(tmp_path, capsys):
    import logging

    bad = tmp_path / "missing.yaml"
    assert main(["-q", "proposals", str(bad), "--out", str(tmp_path / "p.json")]) == 1
    assert logging.getLogger("drcl").level == logging.WARNING
    assert "config file not found" in capsys.readouterr().err
    main(["-v", "proposals", str(bad), "--out", str(tmp_path / "p.json")])
    assert logging.getLogger("drcl").level == logging.DEBUG


def test_only_rank_0_logs_below_error(monkeypatch):
    import logging

    from drcl.cli.main import setup_logging

    monkeypatch.setenv("RANK", "1")
    setup_logging()
    assert logging.getLogger("drcl").level == logging.ERROR
    monkeypatch.setenv("RANK", "0")
    setup_logging()
    assert logging.getLogger("drcl").level == logging.INFO
