"""The report folder: every section, images on disk, self-contained HTML, atomic output, CLI."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from drcl.cli.main import main
from drcl.report import build as build_mod
from drcl.report.build import MARKER, SECTION_TITLES, build_report

from .html_tables import parse_html


def _md_images(readme: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)


def test_every_section_in_html_and_readme(full_report: Path) -> None:
    parsed = parse_html(full_report / "index.html")
    readme = (full_report / "README.md").read_text()
    assert parsed.headings == list(SECTION_TITLES.values())
    for anchor, title in SECTION_TITLES.items():
        assert f'<h2 id="{anchor}">{title}</h2>' in (full_report / "index.html").read_text()
        assert f"\n## {title}\n" in readme
    assert json.loads((full_report / MARKER).read_text())["sections"] == SECTION_TITLES


def test_referenced_images_exist(full_report: Path) -> None:
    parsed = parse_html(full_report / "index.html")
    md = _md_images((full_report / "README.md").read_text())
    assert parsed.images and sorted(parsed.images) == sorted(md)
    for src in parsed.images:
        assert not Path(src).is_absolute() and ".." not in src
        assert (full_report / src).stat().st_size > 0, src
    # the figures every run set of the fake runs must give, whatever other helpers provide
    for name in ("curves_pretraining.png", "curves_finetuning.png", "long_tail.png"):
        assert name in parsed.images
    assert [s for s in parsed.images if s.startswith("attention/drcl/")] == [
        "attention/drcl/000_image_0.png",
        "attention/drcl/001_image_1.png",
    ]


def test_html_is_self_contained(full_report: Path) -> None:
    text = (full_report / "index.html").read_text()
    assert "<style>" in text and "<script" not in text.lower()
    assert not re.search(r"(src|href)=\"(https?:)?//", text)
    assert "<link" not in text  # no external stylesheet


def test_rename_with_name_equals_dir(fake_runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc = main(
        ["report", f"DRCL={fake_runs['drcl']}", str(fake_runs["baseline"]), "--out", str(out)]
    )
    assert rc == 0
    runs = json.loads((out / MARKER).read_text())["runs"]
    assert list(runs) == ["DRCL", "baseline"]
    assert "| DRCL | 27.1 |" in (out / "README.md").read_text()  # first run: no delta


def test_missing_run_dir_fails_before_writing(fake_runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    runs = {"baseline": fake_runs["baseline"], "ghost": tmp_path / "nope"}
    with pytest.raises(ValueError, match=r"run 'ghost'.*nope.*does not exist"):
        build_report(runs, out)
    assert list(tmp_path.iterdir()) == []  # no out, no temporary folder


def test_not_a_run_dir(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"run 'empty'.*not a drcl run folder"):
        build_report({"empty": tmp_path / "empty"}, tmp_path / "out")


def test_bad_explicit_gt_fails_early(fake_runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"gt: .*missing.json does not exist"):
        build_report(fake_runs, tmp_path / "out", gt=tmp_path / "missing.json")
    assert not (tmp_path / "out").exists()


def test_failure_keeps_previous_report(
    fake_runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    build_report({"baseline": fake_runs["baseline"]}, out)
    before = (out / "index.html").read_text()

    def boom(*args: object) -> str:
        raise RuntimeError("disk full")

    monkeypatch.setattr(build_mod, "render_markdown", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        build_report({"drcl": fake_runs["drcl"]}, out)
    assert (out / "index.html").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # temp folder removed


def test_replaces_previous_report(fake_runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    build_report({"drcl": fake_runs["drcl"]}, out)
    assert (out / "attention").is_dir()
    build_report({"baseline": fake_runs["baseline"]}, out)
    assert not (out / "attention").exists()  # nothing stale from the previous report
    assert list(json.loads((out / MARKER).read_text())["runs"]) == ["baseline"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_refuses_to_replace_other_folders(fake_runs: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a drcl report"):
        build_report(fake_runs, other)
    assert (other / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="would replace run 'baseline'"):
        build_report(fake_runs, fake_runs["baseline"])
    with pytest.raises(ValueError, match="would replace run"):
        build_report(fake_runs, fake_runs["baseline"].parent)
    with pytest.raises(ValueError, match="not a drcl report"):
        build_report(fake_runs, tmp_path / "notes" / "..")  # tmp_path, which holds notes/
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        build_report(fake_runs, tmp_path / "file")


def test_cli_exit_codes(
    fake_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["report", str(fake_runs["baseline"]), "--out", str(out)]) == 0
    assert str(out / "index.html") in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "o2")]) == 1
    err = capsys.readouterr().err
    assert "drcl report: error: run 'missing'" in err and "does not exist" in err
    assert not (tmp_path / "o2").exists()
    dup = [f"a={fake_runs['baseline']}", f"a={fake_runs['drcl']}", "--out", str(tmp_path / "o3")]
    assert main(["report", *dup]) == 1
    assert "'a' given twice" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse: --out is required
        main(["report", str(fake_runs["baseline"])])
    assert exc.value.code == 2


def test_report_has_umask_permissions(fake_runs: dict[str, Path], tmp_path: Path) -> None:
    # mkdtemp / mkstemp make owner-only 0700 / 0600 entries; the published report must not
    old = os.umask(0o022)
    try:
        out = build_report({"drcl": fake_runs["drcl"]}, tmp_path / "out")
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o755
    for path in out.rglob("*"):
        assert path.stat().st_mode & 0o777 == (0o755 if path.is_dir() else 0o644), path
