"""Which rules directory a command uses (``resolve_rules_dir``), and ``modwatch rules init``."""

from __future__ import annotations

import filecmp
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.cli.main import main
from streams.config.loader import bundled_rules_dir, copy_bundled_rules, resolve_rules_dir
from streams.config.settings import Settings

# The bundled rule set's size, read from it: a rule added there needs no edit here.
_BUNDLED = Path(__file__).resolve().parents[2] / "streams/config/defaults/rules.yaml"
BUNDLED_RULES = len(yaml.safe_load(_BUNDLED.read_text())["rules"])

BUNDLED_LINE = "modwatch: using the bundled rules ({}); 'modwatch rules init DIR' copies them for editing"


def _rules(directory: Path) -> Path:
    copy_bundled_rules(directory)
    return directory


@pytest.fixture
def empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, and no MODWATCH_* variable that names rules."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("MODWATCH_CONFIG", raising=False)
    monkeypatch.delenv("MODWATCH_RULES_DIR", raising=False)
    monkeypatch.delenv("MODWATCH_SETTINGS", raising=False)
    return work


# -- the order ------------------------------------------------------------------------------------------


def test_order_of_resolution(tmp_path: Path) -> None:
    local = tmp_path / "config"
    env = {"MODWATCH_CONFIG": "from-env"}
    assert resolve_rules_dir("given", "from-settings", environ=env, cwd=tmp_path) == Path("given")
    assert resolve_rules_dir(None, "from-settings", environ=env, cwd=tmp_path) == Path("from-env")
    assert resolve_rules_dir(None, "from-settings", environ={}, cwd=tmp_path) == Path("from-settings")
    notes: list[str] = []
    assert resolve_rules_dir(None, None, environ={}, cwd=tmp_path, notify=notes.append) == bundled_rules_dir()
    assert notes == [BUNDLED_LINE.format(bundled_rules_dir())]
    local.mkdir()  # ./config without a rules.yaml is not a rules directory
    assert resolve_rules_dir(None, None, environ={}, cwd=tmp_path) == bundled_rules_dir()
    _rules(local)
    notes.clear()
    assert resolve_rules_dir(None, None, environ={}, cwd=tmp_path, notify=notes.append) == local
    assert notes == []
    assert resolve_rules_dir(None, None, environ={"MODWATCH_CONFIG": ""}, cwd=tmp_path) == local  # empty: unset


def test_bundled_rules_are_the_checkouts(tmp_path: Path) -> None:
    checkout = Path(__file__).resolve().parents[2] / "config"
    assert (bundled_rules_dir() / "rules.yaml").read_bytes() == (checkout / "rules.yaml").read_bytes()


def test_commands_fall_back_to_the_bundled_rules_once(empty_cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "validate"]) == 0
    captured = capsys.readouterr()
    assert captured.err == BUNDLED_LINE.format(bundled_rules_dir()) + "\n"
    assert captured.out.startswith(f"{bundled_rules_dir()}: {BUNDLED_RULES} rules OK")
    assert main(["rules", "test"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("using the bundled rules") == 1
    assert " passed, 0 failed" in captured.out


def test_local_config_then_env_then_flag(empty_cwd: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    _rules(empty_cwd / "config")
    assert main(["rules", "validate"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"config: {BUNDLED_RULES} rules OK") and captured.err == ""
    monkeypatch.setenv("MODWATCH_CONFIG", str(_rules(tmp_path / "env")))
    assert main(["rules", "validate"]) == 0
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'env'}: ")
    assert main(["rules", "validate", "--config", str(_rules(tmp_path / "flag"))]) == 0
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'flag'}: ")


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_named_directory_that_is_missing_stays_an_error(empty_cwd: Path, how: str, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    argv = ["rules", "validate"]
    if how == "flag":
        argv += ["--config", "missing"]
    else:
        monkeypatch.setenv("MODWATCH_CONFIG", "missing")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "missing: no such config directory" in err and "bundled" not in err


def test_worker_weighs_its_settings_rules_dir(empty_cwd: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    import streams.live.worker

    seen: list[str] = []

    def fake_run_worker(settings: Settings, **_: Any) -> int:
        seen.append(settings.rules_dir)
        return 0

    monkeypatch.setattr(streams.live.worker, "run_worker", fake_run_worker)
    assert main(["worker"]) == 0
    assert seen.pop() == str(bundled_rules_dir())
    assert "using the bundled rules" in capsys.readouterr().err
    settings_file = tmp_path / "modwatch.yaml"
    settings_file.write_text(f"rules_dir: {_rules(tmp_path / 'from-settings')}\n", encoding="utf-8")
    assert main(["worker", "--settings", str(settings_file)]) == 0
    assert seen.pop() == str(tmp_path / "from-settings")
    monkeypatch.setenv("MODWATCH_CONFIG", str(_rules(tmp_path / "env")))
    assert main(["worker", "--settings", str(settings_file)]) == 0
    assert seen.pop() == str(tmp_path / "env")
    assert main(["worker", "--settings", str(settings_file), "--config", str(_rules(tmp_path / "flag"))]) == 0
    assert seen.pop() == str(tmp_path / "flag")
    assert capsys.readouterr().err == ""


# -- modwatch rules init --------------------------------------------------------------------------------


def test_rules_init_copies_the_bundled_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "new" / "rules"
    assert main(["rules", "init", str(target)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {target / 'rules.yaml'}\n" in out and f"wrote {target / 'fixtures' / 'bulk_export.yaml'}\n" in out
    comparison = filecmp.dircmp(bundled_rules_dir(), target)
    # The input mappings beside the rules are not rules: `--inputs DIR` takes a copy of those.
    assert comparison.left_only == ["inputs"] and comparison.diff_files == []
    assert filecmp.dircmp(bundled_rules_dir() / "fixtures", target / "fixtures").left_only == []
    assert main(["rules", "test", "--config", str(target)]) == 0


def test_rules_init_refuses_to_overwrite_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "rules"
    target.mkdir()
    (target / "scoring.yaml").write_text("# mine\n", encoding="utf-8")
    assert main(["rules", "init", str(target)]) == 2
    assert f"{target / 'scoring.yaml'}: already exists; give --force to overwrite" in capsys.readouterr().err
    assert (target / "scoring.yaml").read_text(encoding="utf-8") == "# mine\n"
    assert not (target / "rules.yaml").exists()  # nothing written when anything would be overwritten
    assert main(["rules", "init", str(target), "--force"]) == 0
    assert (target / "scoring.yaml").read_bytes() == (bundled_rules_dir() / "scoring.yaml").read_bytes()
