"""Shared fixtures. Broker tests start their own Tansu broker: they never skip for want of one."""

from __future__ import annotations

import re
import uuid
from collections.abc import Generator, Iterator

import pytest

from streams.tools.broker import EmbeddedBroker


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, object]:
    """Keep each phase's report on the item, so fixtures can tell at teardown whether the test failed."""
    report = yield
    setattr(item, f"_report_{call.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "_report_call", None)
    return bool(report is not None and report.failed)


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> Iterator[EmbeddedBroker]:
    """A fresh memory-only broker for one test, on a free loopback port; killed even if the test fails.

    When the test fails, the tail of the broker's log is printed (pytest shows it with the failure).
    """
    embedded = EmbeddedBroker()
    embedded.start()
    try:
        yield embedded
    finally:
        if _failed(request):
            print(f"--- {embedded!r}: tail of broker log ---\n{embedded.log_tail(50)}")
        embedded.stop()


@pytest.fixture(scope="session")
def session_broker() -> Iterator[EmbeddedBroker]:
    """One broker shared by a whole run, for tests that only need topics of their own.

    Use it with ``unique_prefix`` so tests do not see each other's topics or groups. Tests that
    pause, stop or depend on an empty broker must use ``broker``.
    """
    with EmbeddedBroker() as embedded:
        yield embedded


@pytest.fixture
def unique_prefix(request: pytest.FixtureRequest) -> str:
    """A topic prefix / group id unique to this test: ``t-<test name>-<random>``.

    Only characters legal in Kafka topic names ([a-zA-Z0-9._-]) are used, and it stays short.
    """
    name = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name).strip("-")[:40]
    return f"t-{name}-{uuid.uuid4().hex[:8]}"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> Generator[None, None, None]:
    """At the very end, after pytest's own short summary: the tests skipped for a missing program, by
    program, and the one command that installs them all (``tests/services.py``)."""
    from tests.services import INSTALL_ALL, MISSING

    yield

    by_program: dict[str, list[str]] = {}
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = getattr(report, "longrepr", None)
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else ""
        if MISSING in reason:
            program = reason.split(MISSING, 1)[1].split(" (", 1)[0]
            by_program.setdefault(program, []).append(report.nodeid.split("::", 1)[0])
    if not by_program:
        return
    total = sum(len(nodes) for nodes in by_program.values())
    terminalreporter.section("skipped: missing programs", sep="=", bold=True, yellow=True)
    for program, nodes in sorted(by_program.items()):
        files = ", ".join(sorted(set(nodes)))
        terminalreporter.write_line(f"  {program:<24} {len(nodes):>3} test(s) in {files}")
    terminalreporter.write_line(f"{total} test(s) did not run. Install what they need with:")
    terminalreporter.write_line(f"  {INSTALL_ALL}")
