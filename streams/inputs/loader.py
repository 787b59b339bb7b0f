"""Reading mapping files: ``<dir>/<id>.yaml``, one mapping each, fixtures in ``<dir>/fixtures/<id>.yaml``.

YAML is read by the config loader's ``read_yaml_file`` (size, regular-file and alias limits). Every
error is a ConfigError naming the file, the mapping and the field:
``config/inputs/okta.yaml: mapping 'okta': fields.actor.id: ...``.

Which directory: ``resolve_inputs_dir`` mirrors the rules': ``--inputs DIR``, else ``./config/inputs``
when it is a directory, else the mappings bundled in the package.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from streams.config.loader import bundled_rules_dir, read_yaml_file
from streams.core.ruleset import ConfigError
from streams.inputs.mapping import Mapping, MappingSpec

INPUTS_DIR = "inputs"
FIXTURES_DIR = "fixtures"
LOCAL_INPUTS = Path("config") / INPUTS_DIR


def bundled_inputs_dir() -> Path:
    """The mappings shipped inside the package (``streams/config/defaults/inputs``)."""
    return bundled_rules_dir() / INPUTS_DIR


def resolve_inputs_dir(given: str | os.PathLike[str] | None = None, cwd: str | Path | None = None) -> Path:
    """``given`` as it is (a named directory that is missing is an error later, never a fallback),
    else ``./config/inputs`` when it is a directory, else the bundled mappings."""
    if given is not None:
        return Path(given)
    local = Path(cwd or ".") / LOCAL_INPUTS
    if local.is_dir():
        return LOCAL_INPUTS if cwd is None else local
    return bundled_inputs_dir()


def describe_error(error: ValidationError) -> str:
    """The first problem as ``loc.path: message`` (+N more), without quoting input values."""
    first = error.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    more = error.error_count() - 1
    return (f"{loc}: {msg}" if loc else msg) + (f" (+{more} more)" if more > 0 else "")


def parse_mapping(data: Any, path: str) -> Mapping:
    """A Mapping from already parsed YAML; ``path`` names the file in errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping (id, version, actions, fields...), got {type(data).__name__}")
    name = data.get("id") if isinstance(data.get("id"), str) else "?"
    try:
        spec = MappingSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: mapping '{name}': {describe_error(exc)}") from None
    except ValueError as exc:  # a nested model raised before pydantic could place it
        raise ConfigError(f"{path}: mapping '{name}': {exc}") from None
    return Mapping(spec, path)


def load_mapping(path: str | os.PathLike[str]) -> Mapping:
    """One mapping file; its ``id`` must be the file's name (``okta.yaml`` holds ``id: okta``)."""
    path = Path(path)
    mapping = parse_mapping(read_yaml_file(path, "mapping file"), str(path))
    if mapping.id != path.stem:
        raise ConfigError(f"{path}: mapping '{mapping.id}': id: must be the file's name ({path.stem})")
    return mapping


def mapping_files(directory: str | os.PathLike[str]) -> list[Path]:
    base = Path(directory)
    if not base.is_dir():
        raise ConfigError(f"{base}: no such inputs directory")
    return sorted(p for p in base.glob("*.yaml") if not p.name.startswith("."))


def load_mappings(directory: str | os.PathLike[str]) -> dict[str, Mapping]:
    """Every mapping in ``directory`` by id; raises ConfigError on the first problem."""
    return {m.id: m for m in (load_mapping(p) for p in mapping_files(directory))}


def fixtures_file(directory: str | os.PathLike[str], mapping_id: str) -> Path:
    return Path(directory) / FIXTURES_DIR / f"{mapping_id}.yaml"
