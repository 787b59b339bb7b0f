"""modwatch receive zoom against a real broker and a real HTTP server on a loopback port: what is
stored (and answered 200), what is refused (and not stored), the URL validation challenge, and a
broker that stops answering (503 within the produce timeout)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from streams.cli.main import main
from streams.config.kafka import consume_all
from streams.config.settings import ZoomWebhook
from streams.live.receive_zoom import ZoomReceiver, build_receiver, sign
from streams.tools.broker import LOOPBACK, EmbeddedBroker, free_port

pytestmark = pytest.mark.broker

SECRET = "zoom-secret-token-for-tests"
EVENT_TS = 1_717_171_717_123
EVENT = {
    "event": "meeting.deleted",
    "event_ts": EVENT_TS,
    "payload": {"account_id": "acc-1", "operator": "admin@example.com", "operator_id": "op-1",
                "object": {"uuid": "u-1", "id": 809321987, "host_id": "host-1", "topic": "standup"}},
}  # fmt: skip


class Running:
    """A receiver served on its own event loop in a thread, as the service runs it."""

    def __init__(self, receiver: ZoomReceiver) -> None:
        self.receiver = receiver
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self.receiver.start(LOOPBACK, free_port()), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.receiver.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def request(self, body: bytes | Any = b"", *, method: str = "POST", headers: dict[str, str] | None = None,
                path: str = "/", timeout: float = 15.0) -> tuple[int, bytes]:  # fmt: skip
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {}, encode_chunked=not isinstance(body, bytes))
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def post(self, body: bytes, *, stamp: int | None = None, secret: str = SECRET, **kw: Any) -> tuple[int, bytes]:
        ts = str(int(time.time()) if stamp is None else stamp)
        headers = {"Content-Type": "application/json", "x-zm-request-timestamp": ts,
                   "x-zm-signature": sign(SecretStr(secret), ts, body)}  # fmt: skip
        return self.request(body, headers=headers, **kw)


def _receiver(bootstrap: str, topic: str, **zoom: Any) -> ZoomReceiver:
    settings = ZoomWebhook(secret_token=SecretStr(SECRET), **zoom)
    return build_receiver(bootstrap, None, settings, topic=topic)


@pytest.fixture
def served(session_broker: EmbeddedBroker, unique_prefix: str) -> Iterator[tuple[Running, str]]:
    topic = f"{unique_prefix}.raw.zoom"
    with Running(_receiver(session_broker.bootstrap, topic, max_body_bytes=2048)) as running:
        yield running, topic


def test_a_signed_event_is_stored_unchanged_before_200(served: tuple[Running, str],
                                                       session_broker: EmbeddedBroker) -> None:  # fmt: skip
    running, topic = served
    body = json.dumps(EVENT, indent=1).encode()  # stored byte for byte, whitespace included
    status, answer = running.post(body)
    assert (status, json.loads(answer)) == (200, {"status": "stored"})
    [record] = consume_all(session_broker.bootstrap, topic, idle_seconds=1.0)
    assert record.value == body
    assert record.timestamp == EVENT_TS
    assert record.key == hashlib.sha256(body).hexdigest()[:32].encode()
    assert dict(record.headers)["source"] == b"zoom-webhook"
    counters = running.receiver.counters
    assert (counters.accepted, sum(counters.refused.values()), sum(counters.failed.values())) == (1, 0, 0)


def test_url_validation_is_answered_when_signed_and_not_stored(served: tuple[Running, str],
                                                               session_broker: EmbeddedBroker) -> None:  # fmt: skip
    running, topic = served
    body = json.dumps({"event": "endpoint.url_validation", "event_ts": EVENT_TS,
                       "payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"}}).encode()  # fmt: skip
    status, answer = running.post(body)
    expected = hmac.new(SECRET.encode(), b"qgg8vlvZRS6UYooatFL8Aw", hashlib.sha256).hexdigest()
    assert status == 200
    assert json.loads(answer) == {"plainToken": "qgg8vlvZRS6UYooatFL8Aw", "encryptedToken": expected}
    assert running.post(body, secret="not-the-secret")[0] == 401  # an unsigned challenge is not answered
    no_token = json.dumps({"event": "endpoint.url_validation", "payload": {}}).encode()
    assert running.post(no_token)[0] == 400
    assert running.receiver.counters.challenges == 1
    assert running.receiver.counters.refused == {"bad_signature": 1, "bad_challenge": 1}
    assert consume_all(session_broker.bootstrap, topic, idle_seconds=1.0) == []


def test_refused_requests_are_not_stored(served: tuple[Running, str], session_broker: EmbeddedBroker) -> None:
    running, topic = served
    body = json.dumps(EVENT).encode()
    now = int(time.time())
    json_type = {"Content-Type": "application/json"}
    signature = sign(SecretStr(SECRET), str(now), body)
    signed = {**json_type, "x-zm-request-timestamp": str(now), "x-zm-signature": signature}
    cases: list[tuple[str, int, tuple[int, bytes]]] = [
        ("bad_signature", 401, running.post(body, secret="forged-secret")),
        ("bad_signature", 401, running.request(body, headers={**signed, "x-zm-signature": "v0=" + "0" * 64})),
        ("bad_signature", 401, running.request(body + b" ", headers=signed)),  # body changed after signing
        ("stale", 401, running.post(body, stamp=now - 301)),
        ("stale", 401, running.post(body, stamp=now + 301)),
        ("bad_timestamp", 400, running.post(body, stamp=now * 1000 * 1000 * 1000)),
        ("missing_signature", 401, running.request(body, headers=json_type)),
        ("too_large", 413, running.post(b'{"event": "x", "pad": "' + b"a" * 4096 + b'"}')),
        ("too_large", 413, running.request(iter([b"{", b" " * 4096, b"}"]), headers=signed)),  # chunked
        ("method", 405, running.request(method="GET")),
        ("method", 405, running.request(body, method="PUT", headers=signed)),
        ("content_type", 415, running.request(body, headers={**signed, "Content-Type": "text/plain"})),
        ("invalid_json", 400, running.post(b"[1, 2]")),
        ("invalid_json", 400, running.post(b"{not json")),
        ("not_found", 404, running.post(body, path="/other")),
    ]
    for reason, code, (status, answer) in cases:
        assert (reason, status, json.loads(answer)) == (reason, code, {"error": reason})
    counters = running.receiver.counters
    assert counters.accepted == 0 and sum(counters.refused.values()) == len(cases)
    assert consume_all(session_broker.bootstrap, topic, idle_seconds=1.0) == []


def test_a_paused_broker_gets_503_within_the_timeout(broker: EmbeddedBroker) -> None:
    """503 (not 200) when the broker does not acknowledge in time, and the service recovers when it is
    back. At least once, not at most once: a record already handed to the frozen broker is stored when
    it wakes although it was answered 503, so Zoom's retry stores a second copy of the same body (same
    key, and the same event id once mapped: the engine skips it as a duplicate)."""
    topic = "modwatch.raw.zoom-webhook"
    with Running(_receiver(broker.bootstrap, topic, produce_timeout_seconds=1.5)) as running:
        first, second = json.dumps(EVENT).encode(), json.dumps({**EVENT, "event_ts": EVENT_TS + 1}).encode()
        assert running.post(first)[0] == 200
        broker.pause()
        try:
            started = time.monotonic()
            status, answer = running.post(second)
            elapsed = time.monotonic() - started
            time.sleep(3.0)  # past the producer's delivery timeout (2.5 s): it has given the record up
        finally:
            broker.resume()
        assert (status, json.loads(answer)) == (503, {"error": "produce_timeout"})
        assert elapsed < 1.5 + 1.0
        assert running.receiver.counters.failed == {"produce_timeout": 1}
        retries = [running.post(second)[0]]  # Zoom retries what was not answered 200
        while retries[-1] != 200 and len(retries) < 20:
            time.sleep(1.0)
            retries.append(running.post(second)[0])
        assert retries[-1] == 200, retries
        assert running.receiver.counters.accepted == 2
    stored = consume_all(broker.bootstrap, topic, idle_seconds=1.0)
    assert stored[0].value == first
    assert {r.value for r in stored[1:]} == {second}
    assert len(stored) - 1 <= 1 + len(retries)  # the retries' and at most the frozen one's copy
    assert {r.key for r in stored[1:]} == {hashlib.sha256(second).hexdigest()[:32].encode()}
    assert {r.timestamp for r in stored[1:]} == {EVENT_TS + 1}


def test_cli_refuses_to_start_without_a_secret(session_broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.delenv("MODWATCH_ZOOM__SECRET_TOKEN", raising=False)
    monkeypatch.delenv("EMPTY_SECRET", raising=False)
    argv = ["receive", "zoom", "--port", "0", "--bootstrap-servers", session_broker.bootstrap]
    assert main(argv) == 2
    assert "zoom.secret_token: not set" in capsys.readouterr().err
    assert main([*argv, "--secret-env", "EMPTY_SECRET"]) == 2
    assert "$EMPTY_SECRET is not set" in capsys.readouterr().err
