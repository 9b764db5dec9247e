"""Shared fixtures: fake run folders (built once per session) and a damageable copy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from drcl.report.build import build_report

from .fake_runs import make_fake_runs


@pytest.fixture(scope="session")
def fake_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three run folders (baseline, drcl, pretrain) + data/, made once per session."""
    return make_fake_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def full_report(fake_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the three fake runs (built once per session; do not modify it)."""
    return build_report(fake_runs, tmp_path_factory.mktemp("report") / "out")


@pytest.fixture
def runs_copy(fake_runs: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """A private copy of the fake runs that a test may damage."""
    root = next(iter(fake_runs.values())).parent
    shutil.copytree(root, tmp_path / "runs")
    return {name: tmp_path / "runs" / name for name in fake_runs}
