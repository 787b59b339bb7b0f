"""Reading a configuration file cannot exhaust the monitor: nested aliases (a "billion laughs"), a link
to a device, a FIFO or a huge file are refused with a message naming the file, quickly and in bounded
memory. The same reader serves rules.yaml, scoring.yaml and the settings file."""

from __future__ import annotations

import os
import shutil
import time
import tracemalloc
from pathlib import Path

import pytest

from streams.config.loader import MAX_YAML_BYTES, ConfigError, load_rules, read_yaml_file
from streams.config.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = ROOT / "streams" / "config" / "defaults"


def billion_laughs() -> str:
    """The classic: nine levels of nine aliases, 9**10 strings once expanded, under 500 bytes."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    lines.append("rules: *a9")
    return "\n".join(lines) + "\n"


def config_dir(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    target.mkdir()
    shutil.copyfile(DEFAULTS / "rules.yaml", target / "rules.yaml")
    shutil.copyfile(DEFAULTS / "scoring.yaml", target / "scoring.yaml")
    return target


@pytest.mark.parametrize("name", ["rules.yaml", "scoring.yaml"])
def test_nested_aliases_are_refused_quickly_in_bounded_memory(tmp_path: Path, name: str) -> None:
    target = config_dir(tmp_path)
    (target / name).write_text(billion_laughs(), encoding="utf-8")
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ConfigError) as info:
            load_rules(target)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(info.value) == f"{target / name}: YAML aliases expand to more than 100000 nodes; refused"
    assert time.perf_counter() - started < 5.0
    assert peak < 4 * 1024 * 1024


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules: &a [*a]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="YAML aliases expand to more than"):
        read_yaml_file(path)


def test_a_few_aliases_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("a: &x {events: [action]}\nb: *x\nc: *x\n", encoding="utf-8")
    shared = {"events": ["action"]}
    assert read_yaml_file(path) == {"a": shared, "b": shared, "c": shared}


def test_deep_nesting_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"rules\.yaml: invalid YAML"):
        read_yaml_file(path)


@pytest.mark.parametrize("name", ["rules.yaml", "scoring.yaml"])
def test_a_link_to_a_device_is_refused_without_reading_it(tmp_path: Path, name: str) -> None:
    target = config_dir(tmp_path)
    (target / name).unlink()
    (target / name).symlink_to("/dev/zero")
    with pytest.raises(ConfigError) as info:
        load_rules(target)
    assert str(info.value) == f"{target / name}: not a regular file"


def test_a_fifo_is_refused_without_opening_it(tmp_path: Path) -> None:
    target = config_dir(tmp_path)
    (target / "rules.yaml").unlink()
    os.mkfifo(target / "rules.yaml")  # opening it would block until a writer came
    with pytest.raises(ConfigError, match=r"rules\.yaml: not a regular file$"):
        load_rules(target)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    target = config_dir(tmp_path)
    (target / "scoring.yaml").unlink()
    (target / "scoring.yaml").mkdir()
    with pytest.raises(ConfigError, match=r"scoring\.yaml: not a regular file$"):
        load_rules(target)


def test_a_link_to_a_regular_file_is_fine(tmp_path: Path) -> None:
    target = tmp_path / "linked"
    target.mkdir()
    (target / "rules.yaml").symlink_to(DEFAULTS / "rules.yaml")
    (target / "scoring.yaml").symlink_to(DEFAULTS / "scoring.yaml")
    assert len(load_rules(target).rules) == 11  # ten alerting rules (host_reports the tenth) and request_latency


def test_a_dangling_scoring_link_is_an_error_not_an_absent_file(tmp_path: Path) -> None:
    target = config_dir(tmp_path)
    (target / "scoring.yaml").unlink()
    (target / "scoring.yaml").symlink_to(tmp_path / "gone.yaml")
    with pytest.raises(ConfigError, match=r"scoring\.yaml: no such file$"):
        load_rules(target)


def test_a_file_over_the_limit_is_refused(tmp_path: Path) -> None:
    target = config_dir(tmp_path)
    with (target / "rules.yaml").open("a", encoding="utf-8") as fh:
        fh.write("#" * MAX_YAML_BYTES + "\n")
    with pytest.raises(ConfigError) as info:
        load_rules(target)
    assert str(info.value) == f"{target / 'rules.yaml'}: larger than {MAX_YAML_BYTES} bytes"


def test_the_settings_file_is_read_with_the_same_limits(tmp_path: Path) -> None:
    zero = tmp_path / "modwatch.yaml"
    zero.symlink_to("/dev/zero")
    with pytest.raises(ConfigError, match=r"modwatch\.yaml: not a regular file$"):
        load_settings(str(zero))
    laughs = tmp_path / "laughs.yaml"
    laughs.write_text(billion_laughs(), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"laughs\.yaml: YAML aliases expand"):
        load_settings(str(laughs))
    with pytest.raises(ConfigError, match=r"absent\.yaml: no such settings file$"):
        load_settings(str(tmp_path / "absent.yaml"))
