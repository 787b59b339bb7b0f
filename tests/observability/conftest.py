"""Fixtures the Alertmanager tests share: a webhook receiver and a real Alertmanager posting to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .servers import Alertmanager, Receiver, alertmanager_test_config


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


@pytest.fixture
def alertmanager(tmp_path: Path, receiver: Receiver) -> Iterator[Alertmanager]:
    server = Alertmanager(tmp_path / "alertmanager", alertmanager_test_config(receiver.url))
    server.start()
    try:
        yield server
    finally:
        server.stop()
