"""Running real ``modwatch worker`` processes against the embedded broker in tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from streams.tools.broker import free_port

REPO = Path(__file__).resolve().parent.parent


def worker_env(bootstrap: str, prefix: str, workdir: Path, partitions: int = 1, **extra: str) -> dict[str, str]:
    """Environment for a worker whose topics and group are unique to one test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODWATCH_")}
    env.update(
        {
            "MODWATCH_BOOTSTRAP_SERVERS": bootstrap,
            "MODWATCH_APP_ID": f"{prefix}-app",
            "MODWATCH_RULES_DIR": str(REPO / "config"),
            "MODWATCH_DATA_DIR": str(workdir / "data"),
            "MODWATCH_METRICS_PORT": str(free_port()),
            "MODWATCH_WEB_PORT": str(free_port()),
            "MODWATCH_TOPICS__EVENTS": json.dumps(dict.fromkeys(_event_types(), f"{prefix}.events")),
            "MODWATCH_TOPICS__ALERTS": f"{prefix}.alerts",
            "MODWATCH_TOPICS__DEADLETTER": f"{prefix}.deadletter",
            "MODWATCH_TOPICS__KEYED": f"{prefix}.keyed",
            "MODWATCH_TOPICS__PARTITIONS": str(partitions),
            "MODWATCH_SETTINGS": str(workdir / "none.yaml"),
        }
    )
    (workdir / "none.yaml").write_text("{}\n")
    env.update(extra)
    return env


def _event_types() -> tuple[str, ...]:
    from streams.core.events import EVENT_TYPES

    return EVENT_TYPES


class WorkerProcess:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--loglevel", "info"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
        log.close()
        return self

    def stop(self, timeout: float = 20.0) -> int | None:
        """Graceful stop (SIGTERM), SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        """``kill -9``: no chance to commit or flush."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def read_topic(bootstrap: str, topic: str, until: Callable[[list[Any]], bool], timeout: float = 120.0,
               settle: float = 3.0) -> list[Any]:  # fmt: skip
    """Read a topic from the start until ``until(records)`` holds and nothing new arrived for
    ``settle`` seconds, or ``timeout`` passes. Returns every record read."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=300)
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        assigned = False
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            if not assigned:
                parts = consumer.partitions_for_topic(topic)
                if parts:
                    tps = [TopicPartition(topic, p) for p in sorted(parts)]
                    consumer.assign(tps)
                    consumer.seek_to_beginning(*tps)
                    assigned = True
                else:
                    time.sleep(0.3)
                    continue
            got = list(consumer)
            if got:
                records.extend(got)
                last_new = time.monotonic()
            elif until(records) and time.monotonic() - last_new >= settle:
                break
        return records
    finally:
        consumer.close()


def alert_ids(records: list[Any]) -> set[str]:
    return {json.loads(r.value)["alert_id"] for r in records}
