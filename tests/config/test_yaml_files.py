"""YAML config files: duplicate keys, ``_base_`` types and encodings are refused with the file
(and line) named; a UTF-8 byte-order mark is fine."""

from __future__ import annotations

import gzip

import pytest

from drcl.config import ConfigError, load_config


def _write(path, text: str):
    path.write_text(text)
    return path


def test_duplicate_top_level_key_names_both_lines(tmp_path):
    path = _write(
        tmp_path / "c.yaml", "train:\n  lr: 0.1\nmodel:\n  depth: 50\ntrain:\n  epochs: 3\n"
    )
    with pytest.raises(
        ConfigError, match=r"c\.yaml: line 5: duplicate key 'train' \(first at line 1\)"
    ):
        load_config(path)


def test_duplicate_nested_key_in_a_base_file(tmp_path):
    _write(tmp_path / "base.yaml", "train:\n  lr: 0.1\n  lr: 0.2\n")
    path = _write(tmp_path / "c.yaml", "_base_: base.yaml\n")
    with pytest.raises(ConfigError, match=r"base\.yaml: line 3: duplicate key 'lr'"):
        load_config(path)


def test_same_key_in_two_sections_is_fine(tmp_path):
    path = _write(
        tmp_path / "c.yaml", "pretrain:\n  hcl:\n    weight: 0.5\n  lcl:\n    weight: 0.5\n"
    )
    cfg = load_config(path)
    assert cfg.pretrain.hcl.weight == cfg.pretrain.lcl.weight == 0.5


@pytest.mark.parametrize("base", ["42", "[a.yaml, 3]", "{a: b}", "true"])
def test_base_must_be_a_string_or_a_list_of_strings(tmp_path, base):
    path = _write(tmp_path / "c.yaml", f"_base_: {base}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: _base_ must be a file name or a list"):
        load_config(path)


def test_utf16_config_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes("train:\n  lr: 0.1\n".encode("utf-16"))
    with pytest.raises(ConfigError, match=r"c\.yaml: not a YAML config file: UTF-16"):
        load_config(path)


def test_utf16_without_bom_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes("train:\n  lr: 0.1\n".encode("utf-16-le"))
    with pytest.raises(ConfigError, match=r"c\.yaml: not a UTF-8 YAML config file: NUL bytes"):
        load_config(path)


def test_latin1_config_names_file_and_offset(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes("# caf\xe9\ntrain:\n  lr: 0.1\n".encode("latin-1"))
    with pytest.raises(
        ConfigError, match=r"c\.yaml: not a UTF-8 YAML config file: byte 0xe9 at offset 5"
    ):
        load_config(path)


def test_gzip_config_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(gzip.compress(b"train:\n  lr: 0.1\n"))
    with pytest.raises(ConfigError, match=r"c\.yaml: not a YAML config file: gzip-compressed"):
        load_config(path)


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes("\ufefftrain:\n  lr: 0.1\n".encode())
    assert load_config(path).train.lr == 0.1


def test_two_documents_are_refused(tmp_path):
    path = _write(tmp_path / "c.yaml", "train:\n  lr: 0.1\n---\ntrain:\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: invalid YAML"):
        load_config(path)
