"""Typed configs: schema, YAML loading with ``_base_`` and overrides."""

from drcl.config.loader import (
    ConfigError,
    config_text,
    derive_config,
    job_section,
    load_config,
    save_config,
    to_dict,
)
from drcl.config.schema import Config

__all__ = [
    "Config",
    "ConfigError",
    "config_text",
    "derive_config",
    "job_section",
    "load_config",
    "save_config",
    "to_dict",
]
