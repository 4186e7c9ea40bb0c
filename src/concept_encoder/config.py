"""Experiment YAML files: loading, `--set section.key=value` overrides, and validation before any compute.

A file has one section per stage. This module knows the sections; each section's keys are validated
by the class that owns them (the `model` section by `ConceptEncoderConfig`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .modeling import ConceptEncoderConfig

SECTIONS = ("model",)


class ConfigError(ValueError):
    """A config file or override that cannot describe a run; the message names the file and the key."""


def parse_override(text: str) -> tuple[list[str], Any]:
    """`model.num_concepts=64` -> (["model", "num_concepts"], 64); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if len(path) < 2 or not all(path):
        raise ConfigError(f"--set {text!r}: the key must name a section, e.g. model.num_concepts=64")
    return path, yaml.safe_load(raw)


def load_config(path: str | Path, overrides: list[str] = ()) -> dict[str, dict[str, Any]]:
    """Read a YAML experiment file, apply overrides, and check its sections (not yet their keys)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections {SECTIONS}, got {type(raw).__name__}")
    for text in overrides:
        keys, value = parse_override(text)
        node = raw.setdefault(keys[0], {})
        for key in keys[1:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {unknown}; valid sections are {list(SECTIONS)}")
    for section, body in raw.items():
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: section {section!r} must be a mapping, got {type(body).__name__}")
    return raw


def build_model_config(config: dict[str, dict[str, Any]], source: str | Path = "<config>") -> ConceptEncoderConfig:
    """The `model` section as a validated `ConceptEncoderConfig`; errors name the file and the key."""
    try:
        return ConceptEncoderConfig(**config.get("model", {}))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{source}: [model] {error}") from None
