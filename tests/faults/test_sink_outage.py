"""Sinks that go away: the webhook unreachable for a while in a live worker, then back on the same
port — alerts are retried with backoff and delivered, the stream keeps flowing meanwhile; and, at unit
level, a sink's bounded buffer overflowing — counted in ``health.sink_dropped`` and logged by id."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from streams.config.loader import load_rules
from streams.core.alerts import Alert
from streams.core.scoring import Severity
from streams.offline.backtest import run_backtest
from streams.outputs.metrics import Health
from streams.outputs.sinks.alertmanager import AlertmanagerSink
from streams.outputs.sinks.webhook import WebhookSink
from streams.tools.broker import free_port

from ..worker_harness import REPO, WorkerProcess, read_topic, worker_env
from .harness import (
    EXAMPLE,
    Published,
    backtest_alerts,
    metrics_port,
    replay_now,
    scrape,
    split_log,
    total,
    wait_ready,
    wait_until,
)

OUTAGE = 20.0  # seconds the webhook stays down, at least


class Receiver:
    """A webhook endpoint on a fixed loopback port that can be stopped and started again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[str] = []  # alert ids, in arrival order
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def ids(self) -> Counter[str]:
        with self._lock:
            return Counter(self.received)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.received.append(json.loads(body)["alert_id"])
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)  # allow_reuse_address is set
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()  # the port refuses connections from here on
            self._server = None
        if self._thread is not None:
            self._thread.join(10)


@pytest.mark.broker
def test_webhook_outage_alerts_are_retried_and_delivered_when_it_returns(broker, unique_prefix, tmp_path: Path) -> None:
    expected = backtest_alerts(EXAMPLE)
    paging = {k for k, a in expected.items() if Severity.parse(a["severity"]) >= Severity.LOW and a["mode"] != "shadow"}
    part1, part2 = split_log(EXAMPLE, 300, tmp_path)
    receiver = Receiver(free_port()).start()
    env = worker_env(broker.bootstrap, unique_prefix, tmp_path, MODWATCH_WEBHOOK_URL=receiver.url,
                     MODWATCH_WEBHOOK_MIN_SEVERITY="low")  # fmt: skip
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    port = metrics_port(worker)
    topic = f"{unique_prefix}.events"
    try:
        wait_ready(worker)
        replay_now(broker.bootstrap, topic, part1)
        wait_until(lambda: len(receiver.ids()) >= 5, 90, "the webhook to receive the first alerts",
                   diagnostics=worker.log_tail)  # fmt: skip
        receiver.stop()
        down_at = time.monotonic()
        before = receiver.ids()
        replay_now(broker.bootstrap, topic, part2)
        # The stream does not wait for the webhook: every alert reaches the alerts topic meanwhile.
        records = read_topic(broker.bootstrap, f"{unique_prefix}.alerts",
                             until=lambda r: Published.of(r).ids >= set(expected), timeout=120)  # fmt: skip
        flowed = time.monotonic() - down_at
        wait_until(lambda: total(scrape(port), "modwatch_sink_failures_total", sink="webhook") >= 2, 60,
                   "failed webhook deliveries to be counted")  # fmt: skip
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))  # keep the outage going
        outage = time.monotonic() - down_at
        failures = total(scrape(port), "modwatch_sink_failures_total", sink="webhook")
        receiver.start()  # same port
        wait_until(lambda: set(receiver.ids()) >= paging, 120, "every paging alert to reach the webhook",
                   diagnostics=lambda: f"missing {len(paging - set(receiver.ids()))}\n{worker.log_tail()}")
        after = scrape(port)
        assert worker.alive(), worker.log_tail()
    finally:
        worker.stop()
        receiver.stop()

    got = receiver.ids()
    repeats = sum(got.values()) - len(got)
    # At most one attempt per backoff step (0.5 s doubling): a tight retry loop would make ~outage/0.5.
    bound = 2 * math.ceil(math.log2(2 * outage + 1)) + 2
    print(f"webhook down {outage:.0f} s after {len(before)} deliveries; all {len(Published.of(records).ids)} alerts "
          f"on the topic {flowed:.1f} s into the outage; {failures:g} failed attempts during it (bound {bound}); "
          f"{len(got)}/{len(paging)} paging alerts delivered, {repeats} repeats; "
          f"dropped {total(after, 'modwatch_sink_dropped_total'):g}")  # fmt: skip
    assert set(got) == paging
    assert 2 <= failures <= bound
    assert total(after, "modwatch_sink_dropped_total") == 0
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert "webhook delivery of" in log and "retrying in" in log


# -- the bounded buffer, at unit level ------------------------------------------------------------


def _alerts(n: int) -> list[Alert]:
    result = run_backtest([str(EXAMPLE)], load_rules(REPO / "config"))
    paging = [a for a in result.alerts if a.severity >= Severity.LOW]
    assert len(paging) >= n
    return paging[:n]


class _AsyncReceiver:
    """An aiohttp endpoint in the test's own loop, answering ``status``; records alert ids."""

    def __init__(self, port: int, status: int = 200) -> None:
        self.port, self.status = port, status
        self.received: list[str] = []
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        for item in body if isinstance(body, list) else [body]:
            self.received.append(item["alert_id"] if "alert_id" in item else item["labels"]["alert_id"])
        return web.Response(status=self.status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def _until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _sink(kind: str, url: str, health: Health, capacity: int) -> WebhookSink | AlertmanagerSink:
    if kind == "webhook":
        return WebhookSink(url, Severity.LOW, capacity=capacity, max_backoff=0.5, health=health)
    return AlertmanagerSink(url, Severity.LOW, capacity=capacity, max_backoff=0.5, health=health)


@pytest.mark.parametrize("kind", ["webhook", "alertmanager"])
def test_a_full_buffer_drops_alerts_counted_and_logged_by_id(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    alerts = _alerts(10)
    capacity = 3
    port = free_port()
    health = Health()
    receiver = _AsyncReceiver(port)

    async def scenario() -> None:
        sink = _sink(kind, f"http://127.0.0.1:{port}", health, capacity)
        await sink.start()
        try:
            # The endpoint is down and the sender has not run yet: the buffer takes `capacity`.
            for alert in alerts:
                sink.deliver(alert)
            await _until(lambda: health.sink_failures[kind] >= 2, 30, "retries against the dead endpoint")
            await receiver.start()
            await _until(lambda: len(receiver.received) >= capacity, 30, "the buffered alerts to be delivered")
            await asyncio.sleep(0.2)  # nothing else may arrive
        finally:
            await sink.stop()
            await receiver.stop()

    with caplog.at_level(logging.WARNING, logger=f"streams.outputs.sinks.{kind}"):
        asyncio.run(scenario())
    dropped = alerts[capacity:]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    logged = [line for line in errors if "dropped alert" in line]
    print(f"{kind}: {len(alerts)} alerts into a buffer of {capacity}: {health.sink_dropped[kind]} dropped and "
          f"{len(logged)} logged, {health.sink_failures[kind]} failed attempts, {len(receiver.received)} delivered")
    assert health.sink_dropped[kind] == len(dropped) == 7
    assert len(logged) == len(dropped)
    assert all(any(a.alert_id in line for line in logged) for a in dropped)
    assert receiver.received == [a.alert_id for a in alerts[:capacity]]


@pytest.mark.parametrize("kind", ["webhook", "alertmanager"])
def test_an_alert_the_endpoint_refuses_is_counted_and_logged_not_lost_silently(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A 4xx is not retried (the same request would be refused again), but it is a lost page: it must
    show in ``modwatch_sink_failures_total`` and in the log with the alert's id."""
    alerts = _alerts(3)
    port = free_port()
    health = Health()
    receiver = _AsyncReceiver(port, status=400)

    async def scenario() -> None:
        await receiver.start()
        sink = _sink(kind, f"http://127.0.0.1:{port}", health, 10)
        await sink.start()
        try:
            for alert in alerts:
                sink.deliver(alert)
            await _until(lambda: len(receiver.received) >= len(alerts), 30, "the endpoint to see every alert")
            await asyncio.sleep(0.3)  # a retry would arrive by now (backoff starts at 0.5 s, capped here at 0.5)
        finally:
            await sink.stop()
            await receiver.stop()

    with caplog.at_level(logging.WARNING, logger=f"streams.outputs.sinks.{kind}"):
        asyncio.run(scenario())
    logged = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    print(f"{kind}: {len(alerts)} alerts refused with HTTP 400: {len(receiver.received)} attempts, "
          f"{health.sink_failures[kind]} counted failures, {sum(a.alert_id in logged for a in alerts)} ids logged")
    assert receiver.received == [a.alert_id for a in alerts]  # once each: not retried
    assert health.sink_failures[kind] >= 1
    assert all(a.alert_id in logged for a in alerts)
