"""The report renders in a real browser (headless Chromium).

Skipped where Chromium is not installed, except under ``DRCL_REQUIRE_BROWSER=1`` (``.ci/run``
installs Chromium and sets it), where a missing browser is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "screenshot_report.sh"


BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = os.environ.get("DRCL_REQUIRE_BROWSER") == "1"
needs_browser = pytest.mark.skipif(
    BROWSER is None and not REQUIRED,
    reason="chromium not installed (Debian: apt-get install -y chromium)",
)
# The same isolation as scripts/screenshot_report.sh: nothing may reach the network.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
# Marks every <img> with whether it decoded (a broken image has naturalWidth 0), after load.
PROBE = """<script>window.addEventListener('load', () => { for (const im of document.images) {
  im.setAttribute('data-loaded', im.complete && im.naturalWidth > 0 ? 'yes' : 'no'); } });
</script>"""


def _dump_dom(report: Path, tmp_path: Path) -> str:
    """The DOM of the report's page after load, with the image probe added to a copy."""
    assert BROWSER is not None, "DRCL_REQUIRE_BROWSER=1 but chromium is not installed"
    page = tmp_path / "page"
    shutil.copytree(report, page)
    html = (page / "index.html").read_text()
    (page / "index.html").write_text(html.replace("</body>", PROBE + "</body>"))
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [BROWSER, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000",
             "--dump-dom", (page / "index.html").as_uri()],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@needs_browser
def test_page_shows_metrics_table_and_loaded_images(full_report: Path, tmp_path: Path) -> None:
    dom = _dump_dom(full_report, tmp_path)
    tables = re.findall(r"<table>.*?</table>", dom, flags=re.S)
    assert any("APr" in t and "<td" in t for t in tables), "no metrics table with APr"
    loaded = re.findall(r"<img[^>]*data-loaded=\"yes\"", dom)
    broken = re.findall(r"<img[^>]*data-loaded=\"no\"", dom)
    assert len(loaded) >= 3 and broken == [], (len(loaded), broken[:3])


@needs_browser
def test_detection_pictures_load(full_report: Path, tmp_path: Path) -> None:
    """The gallery, the per-class AP scatter and an ablation's forest plot decode in the page."""
    import json

    from drcl.ablation.results import summarize
    from drcl.report.build import build_report

    dom = _dump_dom(full_report, tmp_path / "runs")
    for png in ("gallery.png", "per_class_ap.png"):
        assert re.search(rf'<img src="{png}"[^>]*data-loaded="yes"', dom), png
    per_seed = {"generic": {0: {"AP": 0.2}, 1: {"AP": 0.22}}, "full": {0: {"AP": 0.3}, 1: {}}}
    (tmp_path / "abl").mkdir()
    results = {**summarize(per_seed, [0, 1], "generic"), "baseline": "generic", "seeds": [0, 1]}
    (tmp_path / "abl" / "results.json").write_text(json.dumps(results))
    report = build_report({}, tmp_path / "rep", ablation=tmp_path / "abl")
    dom = _dump_dom(report, tmp_path / "abl_dom")
    assert re.search(r'<img src="ablation_forest.png"[^>]*data-loaded="yes"', dom)


def test_probe_detects_a_broken_image(tmp_path: Path) -> None:
    """The image probe can fail: a missing PNG is reported as not loaded."""
    if BROWSER is None and not REQUIRED:
        pytest.skip("chromium not installed")
    report = tmp_path / "rep"
    report.mkdir()
    Image.new("RGB", (20, 10), (200, 30, 30)).save(report / "ok.png")
    (report / "index.html").write_text(
        '<html><body><img src="ok.png"><img src="missing.png"></body></html>'
    )
    dom = _dump_dom(report, tmp_path / "dom")
    assert re.search(r'<img src="ok.png" data-loaded="yes"', dom)
    assert re.search(r'<img src="missing.png" data-loaded="no"', dom)


@needs_browser
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
    # the plots' colours are on screen (broken-image icons and text are grey or black)
    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    colourful = (rgb.max(axis=2) - rgb.min(axis=2)) > 60
    assert colourful.mean() > 0.005, colourful.mean()


def test_screenshot_script_usage_errors(tmp_path: Path) -> None:
    proc = subprocess.run([str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage" in proc.stderr
    proc = subprocess.run(
        [str(SCRIPT), str(tmp_path), str(tmp_path / "x.png")], capture_output=True, text=True
    )
    assert proc.returncode == 1 and "index.html not found" in proc.stderr
