"""Load YAML configs with ``_base_`` inheritance and ``a.b=c`` overrides onto the typed schema.

Refused at load time, with the file (and line) or override named: a file that is not UTF-8,
a duplicate key in one mapping, a ``_base_`` that is not a string or a list of strings, an
unknown key, a wrong type, and a value outside its range (``drcl.config.ranges``).
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from drcl.config.ranges import violations
from drcl.config.schema import LOSSES_BY_ARCH, Config


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` keeps the last of two equal keys silently (two ``train:`` blocks: the
    first is dropped); this loader refuses them, naming both lines."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(
                    f"line {line}: duplicate key '{key}' (first at line {seen[key]}); "
                    "merge the two blocks"
                )
            seen[key] = line
        return super().construct_mapping(node, deep)


def _parse_yaml(path: Path) -> Any:
    from drcl.utils.io import read_text_utf8

    try:
        text = read_text_utf8(path, "YAML config")
    except ValueError as err:
        raise ConfigError(str(err)) from err
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from err


def _bases_of(raw: dict, path: Path) -> list[str]:
    bases = raw.pop("_base_", [])
    if isinstance(bases, str):
        return [bases]
    if isinstance(bases, list) and all(isinstance(b, str) for b in bases):
        return bases
    raise ConfigError(f"{path}: _base_ must be a file name or a list of file names, got {bases!r}")


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read ``path`` and merge it over its ``_base_`` files (a string or a list, relative paths)."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular _base_ chain: {' -> '.join(map(str, seen))}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    raw = _parse_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    bases = _bases_of(raw, path)
    merged = OmegaConf.create()
    for base in bases:
        base_dict = _read_yaml(path.parent / base, (*seen, path))
        merged = OmegaConf.merge(merged, base_dict)
    merged = OmegaConf.merge(merged, raw)
    return OmegaConf.to_container(merged)  # type: ignore[return-value]


_ENUM_ERROR = re.compile(r"Invalid value '(?P<value>.*)', expected one of \[(?P<allowed>.*)\]")


_UNKNOWN_KEY = re.compile(r"Key '(?P<leaf>[^']+)' not in '")


def _describe(err: OmegaConfBaseException, source: str) -> str:
    key = getattr(err, "full_key", None) or "?"
    msg = str(err).splitlines()[0]
    enum = _ENUM_ERROR.match(msg)
    if enum:  # a choice (Enum field): say it the way every other message of drcl does
        msg = f"got {enum['value']!r}, allowed: {enum['allowed']}"
    unknown = _UNKNOWN_KEY.match(msg)
    if unknown:
        msg = _unknown_key(key, unknown["leaf"])
    return f"{source}: key '{key}': {msg}"


def _unknown_key(full_key: str, leaf: str) -> str:
    """``unknown key; did you mean 'train.lr'?; allowed in 'train': ...`` (difflib's match)."""
    section = full_key[: -len(leaf)].rstrip(".") if full_key.endswith(leaf) else ""
    node = OmegaConf.select(OmegaConf.structured(Config), section) if section else None
    node = node if section else OmegaConf.structured(Config)
    allowed = sorted(str(k) for k in node.keys()) if OmegaConf.is_dict(node) else []
    prefix = f"{section}." if section else ""
    close = difflib.get_close_matches(leaf, allowed, n=1, cutoff=0.6)
    text = "unknown key"
    if close:
        text += f"; did you mean '{prefix}{close[0]}'?"
    if allowed:
        text += f"; allowed in '{section or 'the config'}': {', '.join(allowed)}"
    return text


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None
) -> Config:
    """Build the typed config: schema defaults <- YAML (with bases) <- ``key.sub=value`` overrides.

    Unknown keys and wrong types raise :class:`ConfigError` naming the key.
    """
    cfg = OmegaConf.structured(Config)
    if path is not None:
        try:
            cfg = OmegaConf.merge(cfg, _read_yaml(Path(path)))
        except OmegaConfBaseException as err:
            raise ConfigError(_describe(err, str(path))) from err
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as err:
            raise ConfigError(_describe(err, f"override {item!r}")) from err
    check_ranges(cfg, path, overrides or [])
    check_arch_loss(cfg)
    return cfg  # type: ignore[return-value]


def derive_config(cfg: Config, changes: dict[str, Any]) -> Config:
    """A new config for another stage: ``cfg`` with ``changes`` (``{"train.max_iters": 5}``)
    merged, checked as a loaded config is (types, ranges, arch and loss); ``cfg`` is left alone.

    The one way an orchestrator (proposals, ablation, demo) turns a config into another stage's,
    instead of editing a copy field by field.
    """
    nested: dict[str, Any] = {}
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        out = OmegaConf.merge(cfg, nested)
    except OmegaConfBaseException as err:
        raise ConfigError(_describe(err, f"derived config {sorted(changes)}")) from err
    check_ranges(out, "derived config", [f"{k}={v}" for k, v in changes.items()])
    check_arch_loss(out)
    return out  # type: ignore[return-value]


def job_section(cfg: Config, name: str, required: tuple[str, ...] = ()) -> Any:
    """A read-only copy of section ``name`` of ``cfg`` (``data``, ``pretrain.proposals``, ...)
    for a stage's job: the job's ``from_config`` reads the root config, nothing after it can
    edit the section.

    Raises:
        ConfigError: a key of ``required`` is unset (``???``), named as ``name.key``.
    """
    if not OmegaConf.is_config(cfg):  # a Config dataclass built in code (tests, notebooks)
        cfg = OmegaConf.structured(cfg)
    node = OmegaConf.select(cfg, name, throw_on_missing=True)
    if node is None:
        raise ConfigError(f"config has no section '{name}'")
    for key in required:
        if OmegaConf.is_missing(node, key):
            # the words of `drcl`'s report of an unset `???` key (cli/main.py)
            full = f"{name}.{key}"
            raise ConfigError(f"{full} is required: set it in the config or as {full}=...")
    section = copy.deepcopy(node)
    OmegaConf.set_readonly(section, True)
    return section


def config_text(cfg: Config) -> str:
    """The resolved config as YAML (what ``RUN/config.yaml`` holds)."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def check_ranges(
    cfg: Config, path: str | os.PathLike | None = None, overrides: list[str] = ()
) -> None:
    """Refuse the first value outside its range (``drcl.config.ranges.RANGES``), naming the
    override or file that set it, the key, the value and the range."""
    for key, value, rule in violations(cfg):
        setters = [o for o in overrides if o.split("=", 1)[0].strip() == key]
        source = f"override {setters[-1]!r}" if setters else str(path or "defaults")
        raise ConfigError(f"{source}: key '{key}': got {value!r}, {rule}")


def check_arch_loss(cfg: Config) -> None:
    """``finetune.loss`` must belong to ``finetune.arch``'s family (R-CNN or one-stage)."""
    arch, loss = str(cfg.finetune.arch), str(cfg.finetune.loss)
    if loss not in LOSSES_BY_ARCH[arch]:
        raise ConfigError(
            f"key 'finetune.loss': got {loss!r}, allowed with finetune.arch={arch}: "
            f"{', '.join(LOSSES_BY_ARCH[arch])}"
        )


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (atomically)."""
    from drcl.utils.io import atomic_write_text

    atomic_write_text(path, config_text(cfg))


def to_dict(cfg: Config) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
