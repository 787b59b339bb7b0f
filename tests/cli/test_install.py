"""``pip install modwatch`` outside the checkout: the wheel carries the default rules, and the commands
find them from an empty directory.

The project is built as a wheel from a copy of its sources (the shared checkout is left alone) and
installed, without its dependencies, into a fresh venv; a ``.pth`` file there makes this interpreter's
site-packages (where the dependencies are) visible. No network: nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from streams.cli.main import main

# The bundled rule set's size, read from it: a rule added there needs no edit here.
_BUNDLED = Path(__file__).resolve().parents[2] / "streams/config/defaults/rules.yaml"
BUNDLED_RULES = len(yaml.safe_load(_BUNDLED.read_text())["rules"])

ROOT = Path(__file__).resolve().parents[2]
BUNDLED_LINE = "modwatch: using the bundled rules ({}); 'modwatch rules init DIR' copies them for editing\n"


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=240, check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A venv with modwatch installed from its wheel; returns its bin directory and an environment."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"
    source.mkdir()
    shutil.copy2(ROOT / "pyproject.toml", source)
    shutil.copy2(ROOT / "README.md", source)
    shutil.copytree(ROOT / "streams", source / "streams", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODWATCH_", "PYTHON", "PIP_"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    pip = [sys.executable, "-m", "pip"]
    build = _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "wheel"),
                  str(source)], tmp, env)  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    wheel = next((tmp / "wheel").glob("modwatch-*.whl"))

    venv = tmp / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    install = _run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)], tmp, env)
    assert install.returncode == 0, install.stdout + install.stderr
    # The dependencies: this interpreter's site-packages, after the venv's own (so the installed
    # `streams` wins over the checkout's editable install, whose .pth is not read from there).
    venv_site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, env)
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(venv_site.stdout.strip()) / "modwatch-test-deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    return venv / "bin", env


def test_wheel_ships_the_default_rules(installed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    bindir, env = installed
    python = bindir / "python"
    code = "import streams.config.loader as m; print(m.bundled_rules_dir())"
    where = _run([str(python), "-c", code], tmp_path, env)
    bundled = Path(where.stdout.strip())
    assert bindir.parent in bundled.parents, where  # the installed copy, not the checkout
    assert (bundled / "rules.yaml").is_file() and (bundled / "scoring.yaml").is_file()
    assert sorted(p.name for p in (bundled / "fixtures").glob("*.yaml")) == sorted(
        p.name for p in (ROOT / "config" / "fixtures").glob("*.yaml")
    )


def test_installed_commands_work_from_an_empty_directory(installed: tuple[Path, dict[str, str]], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    bindir, env = installed
    work = tmp_path / "empty"
    work.mkdir()
    modwatch = str(bindir / "modwatch")

    validate = _run([modwatch, "rules", "validate"], work, env)
    assert validate.returncode == 0, validate.stderr
    bundled = validate.stdout.split(":", 1)[0]
    assert bindir.parent in Path(bundled).parents
    assert validate.stderr == BUNDLED_LINE.format(bundled)
    assert f"{BUNDLED_RULES} rules OK" in validate.stdout

    shutil.copy2(ROOT / "examples" / "events.jsonl", work / "events.jsonl")
    backtest = _run([modwatch, "backtest", "events.jsonl", "-o", "out.jsonl"], work, env)
    assert backtest.returncode == 0, backtest.stderr
    assert backtest.stderr.startswith(BUNDLED_LINE.format(bundled))
    assert backtest.stderr.count("using the bundled rules") == 1
    alerts = (work / "out.jsonl").read_bytes()
    assert alerts.count(b"\n") > 10

    expected = tmp_path / "checkout.jsonl"
    monkeypatch.chdir(ROOT)
    assert main(["backtest", "examples/events.jsonl", "--config", "config", "-o", str(expected)]) == 0
    assert alerts == expected.read_bytes()
