"""Programs some tests run that a contributor may not have: headless Chromium, Prometheus, Alertmanager,
docker-compose. Debian packages, installed by the setup scripts as root.

``require_program`` is the one place that decides what a missing one means: the test is skipped with
a reason naming the program and the command that installs it, or, when ``MODWATCH_REQUIRE_SERVICES=1``
(CI, which must run everything), it fails with the same message. The summary at the end of a run
(``tests/conftest.py``) lists what was skipped and the one command that installs it all.
"""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_ENV = "MODWATCH_REQUIRE_SERVICES"
BROWSER = "sudo ./scripts/setup-browser.sh"
SERVICES = "sudo ./scripts/setup-services.sh"
INSTALL_ALL = f"{SERVICES} && {BROWSER}"
# Skip reasons start with this, so the run's summary can find them.
MISSING = "missing program: "


def required() -> bool:
    """Whether a missing program fails the test instead of skipping it."""
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def missing_reason(name: str, install: str) -> str:
    return f"{MISSING}{name} (install: {install})"


def require_program(name: str, install: str) -> str:
    """The path of ``name`` on PATH; when it is not there, skip the calling test (or fail it, under
    ``MODWATCH_REQUIRE_SERVICES=1``). Call it from the test or fixture that needs the program, so only
    those tests are affected. ``install`` is the command that installs it, e.g. ``SERVICES``."""
    path = shutil.which(name)
    if path is not None:
        return path
    reason = missing_reason(name, install)
    if required():
        pytest.fail(f"{reason}; {REQUIRE_ENV}=1 asks for every server", pytrace=False)
    pytest.skip(reason)
