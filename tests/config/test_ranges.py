"""Every numeric and enum key of the schema has a range (``drcl.config.ranges.RANGES``), and a
value outside it fails at load time naming the key, the value and the range."""

from __future__ import annotations

import dataclasses
import typing
from enum import Enum

import pytest

from drcl.config import ConfigError, load_config
from drcl.config.ranges import RANGES, describe, satisfies
from drcl.config.schema import Config


def schema_keys(cls=Config, prefix: str = "") -> dict[str, object]:
    """``{dotted key: type}`` of every leaf field of the schema."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            out.update(schema_keys(kind, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = kind
    return out


def _ranged(kind) -> bool:
    """int, float, an enum, or a list of numbers: these need a range."""
    if kind in (int, float):
        return True
    if isinstance(kind, type) and issubclass(kind, Enum):
        return True
    return typing.get_origin(kind) is list and typing.get_args(kind)[0] in (int, float)


def test_every_numeric_and_enum_key_has_a_range():
    """A new schema field must declare its range: add a line to RANGES in config/ranges.py."""
    keys = schema_keys()
    missing = sorted(k for k, kind in keys.items() if _ranged(kind) and k not in RANGES)
    assert not missing, f"keys without a range in drcl/config/ranges.py: {missing}"
    stale = sorted(k for k in RANGES if k not in keys)
    assert not stale, f"RANGES names keys the schema does not have: {stale}"


def test_enum_entries_are_enum_fields():
    keys = schema_keys()
    for key, spec in RANGES.items():
        is_enum = isinstance(keys[key], type) and issubclass(keys[key], Enum)
        assert (spec == "enum") == is_enum, key


def test_every_default_is_in_range():
    cfg = load_config(None, ["train.max_iters=1"])  # the data paths stay unset (???)
    for key, spec in RANGES.items():
        node = cfg
        for part in key.split("."):
            node = getattr(node, part)
        assert satisfies(node, spec), (key, node, spec)


@pytest.mark.parametrize(
    "value, spec, ok",
    [
        (1, ">=1", True),
        (0, ">=1", False),
        (0.0, ">0", False),
        (1e-9, ">0", True),
        (0.0, "[0,1]", True),
        (1.0, "[0,1)", False),
        (0.0, "(0,1]", False),
        (float("nan"), ">=0", False),
        (float("inf"), ">=0", False),
        (True, ">=0", False),  # a bool is not a number here
        ("3", ">=0", False),
        (50, "{18,34,50,101}", True),
        (51, "{18,34,50,101}", False),
        ([0.5, 1.0], "each (0,1]", True),
        ([0.0, 1.0], "each (0,1]", False),
        (None, ">=1", True),  # optional keys unset
    ],
)
def test_range_vocabulary(value, spec, ok):
    assert satisfies(value, spec) is ok


def test_descriptions():
    assert describe(">=1") == "must be >= 1"
    assert describe("[0,1]") == "must be in [0,1]"
    assert describe("{18,34}") == "must be one of 18, 34"
    assert describe("each [0,1]") == "every element must be in [0,1]"


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.batch_size=0", "key 'train.batch_size': got 0, must be >= 1"),
        # was "Invalid learning rate: -0.0025" from the optimiser: the lr scaled by the batch
        ("train.batch_size=-4", "key 'train.batch_size': got -4, must be >= 1"),
        ("train.lr=-0.02", "key 'train.lr': got -0.02, must be > 0"),
        ("train.max_iters=-5", "key 'train.max_iters': got -5, must be >= 0"),
        ("train.accumulate=0", "key 'train.accumulate': got 0, must be >= 1"),
        ("model.fpn_channels=0", "key 'model.fpn_channels': got 0, must be >= 1"),
        ("data.min_size=-64", "key 'data.min_size': got -64, must be >= 1"),
        ("pretrain.views.flip=2", "key 'pretrain.views.flip': got 2.0, must be in [0,1]"),
        ("finetune.score_thresh=-1", "key 'finetune.score_thresh'"),
        ("train.warmup_factor=0", "key 'train.warmup_factor': got 0.0, must be in (0,1]"),
    ],
)
def test_out_of_range_override_names_key_value_range(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert message in str(info.value)
    assert str(info.value).startswith(f"override '{override}'")


def test_out_of_range_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  batch_size: 0\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: key 'train.batch_size': got 0"):
        load_config(path)
    # the override that repairs it wins: the merged value is what is checked
    assert load_config(path, ["train.batch_size=2"]).train.batch_size == 2


def test_nothing_to_train_is_refused():
    with pytest.raises(ConfigError, match="train.epochs.*nothing would train"):
        load_config(None, ["train.epochs=0"])
    assert load_config(None, ["train.epochs=0", "train.max_iters=5"]).train.max_iters == 5
