"""safe_join: a json file_name must stay inside the image folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from drcl.data.paths import safe_join


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.png", "a.png"),
        ("sub/b.png", "sub/b.png"),
        ("sub/../c.png", "c.png"),
        ("./d.jpg", "d.jpg"),
    ],
)
def test_relative_names_join(tmp_path, name, expected):
    assert safe_join(tmp_path, name) == tmp_path / expected


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../../etc/passwd", "escapes the image folder"),
        ("sub/../../x.png", "escapes the image folder"),
        ("..", "escapes the image folder"),
        (".", "escapes the image folder"),
        ("..\\..\\secret.png", "escapes the image folder"),
        ("/etc/passwd", "is absolute"),
        ("C:/Windows/x.png", "is absolute"),
        ("\\\\server\\share\\x.png", "is absolute"),
        ("a\x00.png", "NUL byte"),
        ("", "non-empty string"),
        (None, "non-empty string"),
        (3, "non-empty string"),
    ],
)
def test_unsafe_names_rejected(name, why):
    with pytest.raises(ValueError, match=f"train.json: image 7: .*{why}"):
        safe_join(Path("/data/images"), name, "train.json: image 7")
