"""The report renders in a real browser (headless Chromium; skipped where it is not installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "screenshot_report.sh"


@pytest.mark.skipif(
    shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
    reason="chromium not installed (Debian: apt-get install -y chromium)",
)
def test_screenshot_is_not_blank(full_report: Path, tmp_path: Path) -> None:
    png = tmp_path / "shot.png"
    proc = subprocess.run(
        [str(SCRIPT), str(full_report), str(png), "1000,1400"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    image = np.asarray(Image.open(png).convert("L"), dtype=np.float32)
    assert image.shape == (1400, 1000)
    # text, tables and plots make the page far from uniform; a broken page would be white
    assert (image < 128).mean() > 0.01 and image.std() > 20


def test_screenshot_script_usage_errors(tmp_path: Path) -> None:
    proc = subprocess.run([str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage" in proc.stderr
    proc = subprocess.run(
        [str(SCRIPT), str(tmp_path), str(tmp_path / "x.png")], capture_output=True, text=True
    )
    assert proc.returncode == 1 and "index.html not found" in proc.stderr
