"""Mapping files: one-failure mapping files, each error naming the file, the mapping and the field;
the inputs directory resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.core.ruleset import ConfigError
from streams.inputs import bundled_inputs_dir, load_mapping, load_mappings, resolve_inputs_dir

VALID: dict[str, Any] = {
    "id": "demo",
    "version": 1,
    "description": "a demo source",
    "action": "type",
    "actions": {"suspend": "account.suspend"},
    "time": {"path": "at", "convert": "rfc3339"},
    "event_id": {"path": "id"},
    "fields": {
        "actor.id": {"path": "who"},
        "actor.kind": {"const": "employee"},
        "actor.region": {"const": "ZZ"},
        "target.kind": {"const": "account"},
        "target.id": {"path": "whom"},
        "target.region": {"const": "ZZ"},
    },
}


def _with(**changes: Any) -> dict[str, Any]:
    data = {**VALID, **changes}
    return {k: v for k, v in data.items() if v is not None}


INVALID = [
    ("unknown key", _with(colour="red"), "colour: Extra inputs are not permitted"),
    ("missing actions", _with(actions=None), "actions: Field required"),
    ("bad event type", _with(actions={"suspend": "account.ban"}),
     "actions.suspend: 'account.ban' is not an event type"),
    ("bad conversion", _with(fields={**VALID["fields"], "actor.id": {"path": "who", "convert": "rot13"}}),
     "fields.actor.id"),
    ("not a contract field", _with(fields={**VALID["fields"], "actor.idd": {"path": "who"}}),
     "fields.actor.idd: 'idd' is not a field of actor"),
    ("not a contract top field", _with(fields={**VALID["fields"], "colour": {"const": "red"}}),
     "fields.colour: 'colour' is not a field of the contract"),
    ("set by the mapper", _with(fields={**VALID["fields"], "event_id": {"const": "x"}}),
     "fields.event_id: set by the mapper"),
    ("whole and part", _with(fields={**VALID["fields"], "actor": {"const": {}}}), "fields.actor.id: actor is given"),
    ("per_action of an unmapped action", _with(per_action={"login": {"reason": {"const": "x"}}}),
     "per_action.login: not one of the mapped actions"),
    ("bad drop_when", _with(drop_when=[{"path": "result"}]), "exactly one of 'in' and 'exists'"),
    ("bad hash", _with(event_id={"hash": []}), "hash"),
    ("bad version", _with(version=0), "version: Input should be greater than or equal to 1"),
    ("bad format", _with(format="xml"), "format: Input should be 'json' or 'csv'"),
    ("backtracking regex", _with(fields={**VALID["fields"], "reason": {"path": "d", "regex": "(a*)*"}}),
     "fields.reason"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "data", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_an_invalid_mapping_names_file_mapping_and_field(tmp_path: Path, case: str, data: Any, message: str) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_mapping(path)
    text = str(info.value)
    assert text.startswith(f"{path}: mapping 'demo': "), text
    assert message in text, text


def test_the_valid_one_loads_and_the_id_must_be_the_file_name(tmp_path: Path) -> None:
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(VALID), encoding="utf-8")
    assert load_mapping(tmp_path / "demo.yaml").id == "demo"
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(VALID), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"other.yaml: mapping 'demo': id: must be the file's name \(other\)"):
        load_mappings(tmp_path)


def test_files_that_are_not_mappings(tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"list\.yaml: expected a mapping"):
        load_mapping(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("id: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.yaml: invalid YAML"):
        load_mapping(tmp_path / "broken.yaml")
    with pytest.raises(ConfigError, match=r"missing\.yaml: no such mapping file"):
        load_mapping(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="no such inputs directory"):
        load_mappings(tmp_path / "nowhere")


def test_the_inputs_directory_resolution(tmp_path: Path) -> None:
    assert resolve_inputs_dir("mine", cwd=tmp_path) == Path("mine")
    assert resolve_inputs_dir(None, cwd=tmp_path) == bundled_inputs_dir()
    (tmp_path / "config" / "inputs").mkdir(parents=True)
    assert resolve_inputs_dir(None, cwd=tmp_path) == tmp_path / "config" / "inputs"


def test_the_repository_link_points_at_the_bundled_mappings() -> None:
    link = Path(__file__).resolve().parents[2] / "config" / "inputs"
    assert link.is_symlink() and link.resolve() == bundled_inputs_dir().resolve()
