"""The HTTP endpoint Zoom's webhooks post to (``modwatch receive zoom``): verified bodies to a raw topic.

Each request is checked in this order, and a refusal is counted by its reason (``ReceiverCounters``):

====================  ====  ==============================================================================
reason                code  when
====================  ====  ==============================================================================
``not_found``         404   another path than the one served
``method``            405   anything but POST
``content_type``      415   a body that is not ``application/json``
``too_large``         413   a body over ``zoom.max_body_bytes`` (by Content-Length, or while reading)
``missing_signature`` 401   no ``x-zm-signature`` or no ``x-zm-request-timestamp``
``bad_timestamp``     400   a timestamp that is not Unix seconds
``stale``             401   a timestamp further than ``zoom.max_age_seconds`` from the clock, either way
``bad_signature``     401   ``x-zm-signature`` is not ``v0=`` HMAC-SHA256(secret, ``v0:{timestamp}:{body}``)
``invalid_json``      400   a signed body that is not a JSON object
``bad_challenge``     400   an ``endpoint.url_validation`` without a string ``payload.plainToken``
====================  ====  ==============================================================================

Zoom signs its URL validation requests as it signs events (its own webhook sample verifies first), so
the challenge is answered only when signed: ``{"plainToken": ..., "encryptedToken": HMAC-SHA256(secret,
plainToken) hex}``, and it is not stored. Any other signed event is produced, its raw bytes unchanged,
to the raw topic: key the body's sha256 (a redelivery lands on the same partition), Kafka timestamp its
``event_ts`` (Unix ms; the receive time when it has none). The answer is 200 only once the broker has
acknowledged the record (acks=all); a produce that fails or is not acknowledged within
``zoom.produce_timeout_seconds`` is answered 503, so Zoom delivers it again. Delivery is therefore
at least once: a record acknowledged after its 503 is stored twice, and the mapping's deterministic
event ids make the second a duplicate the engine skips.

Nothing of a body, a signature or the secret is logged: refusals are logged by reason and address.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kafka.errors
import orjson
from aiohttp import web
from kafka import KafkaProducer
from pydantic import SecretStr

from streams.config.kafka import create_topics, kafka_client
from streams.config.settings import KafkaSecurity, ZoomWebhook
from streams.core.ruleset import ConfigError

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "modwatch.raw.zoom-webhook"
SIGNATURE = "x-zm-signature"
TIMESTAMP = "x-zm-request-timestamp"
URL_VALIDATION = "endpoint.url_validation"

_SECONDS = re.compile(r"\d{1,12}")
# event_ts is Unix milliseconds; outside 2000..2100 it is not a time Kafka should be given.
_MIN_TS_MS, _MAX_TS_MS = 946_684_800_000, 4_102_444_800_000


@dataclass
class ReceiverCounters:
    """What the endpoint did since it started: read by tests and printed when the service stops."""

    accepted: int = 0  # events stored and answered 200
    challenges: int = 0  # URL validations answered
    refused: Counter[str] = field(default_factory=Counter)  # 4xx, by reason
    failed: Counter[str] = field(default_factory=Counter)  # 503: produce_failed, produce_timeout

    def summary(self) -> str:
        def listed(counts: Counter[str]) -> str:
            return f" ({', '.join(f'{k} {n}' for k, n in sorted(counts.items()))})" if counts else ""

        return (f"receive zoom: accepted {self.accepted}, challenges {self.challenges}, "
                f"refused {sum(self.refused.values())}{listed(self.refused)}, "
                f"failed {sum(self.failed.values())}{listed(self.failed)}")  # fmt: skip


@dataclass(frozen=True)
class ReceiverConfig:
    secret: SecretStr
    topic: str = DEFAULT_TOPIC
    path: str = "/"
    max_age_seconds: float = 300.0
    max_body_bytes: int = 1024 * 1024
    produce_timeout_seconds: float = 2.5


def producer_config(timeout: float) -> dict[str, Any]:
    """kafka-python producer options for an answer within ``timeout`` seconds."""
    ms = max(int(timeout * 1000), 100)
    return {
        "client_id": "modwatch-receive-zoom",
        "acks": "all",  # a 200 means the record is on every in-sync replica
        "linger_ms": 0,  # one request at a time waits for its own record: nothing to batch for
        "max_block_ms": ms,  # send() blocks for metadata or a full buffer at most this long
        "request_timeout_ms": max(ms, 1000),
        # A record the endpoint answered 503 for is not retried for long after: Zoom sends it again.
        "delivery_timeout_ms": max(ms, 1000) + 1000,
        # Measured with kafka-python 3.0.12 and Tansu: once a batch expired (the broker frozen past
        # delivery_timeout_ms), the idempotent producer never sent again, every later request 503;
        # without idempotence the first send after the broker is back succeeds. What idempotence
        # would prevent (a retried batch stored twice) is a duplicate the receiver has anyway from
        # Zoom's retries, and the mapping's event ids make both harmless.
        "enable_idempotence": False,
    }


class ZoomReceiver:
    """The aiohttp application and its producer. ``start`` binds, ``close`` stops and closes the producer."""

    def __init__(self, config: ReceiverConfig, producer: KafkaProducer, *, clock: Callable[[], float] = time.time):
        if not config.secret.get_secret_value():
            raise ConfigError("zoom.secret_token: empty")
        self.config = config
        self.producer = producer
        self.counters = ReceiverCounters()
        self._clock = clock
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        # One byte over the limit is enough to know a body is too large; aiohttp stops reading there.
        application = web.Application(client_max_size=self.config.max_body_bytes)
        application.router.add_route("*", "/{tail:.*}", self.handle)
        return application

    async def start(self, host: str, port: int) -> int:
        """Serve on ``host:port`` (0: a free port); returns the bound port."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        return int(self._runner.addresses[0][1])  # the port actually bound (port 0: a free one)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        # Long enough for every pending record to be delivered or expired (delivery_timeout_ms): a
        # shorter flush fails with the broker gone and leaves the producer's sockets open.
        grace = producer_config(self.config.produce_timeout_seconds)["delivery_timeout_ms"] / 1000 + 2
        try:
            await asyncio.to_thread(self.producer.close, grace)
        except kafka.errors.KafkaError as exc:
            log.warning("producer not closed cleanly: %s", type(exc).__name__)

    def _refuse(self, request: web.Request, status: int, reason: str) -> web.Response:
        self.counters.refused[reason] += 1
        log.info("refused %s from %s: %s", request.method, request.remote, reason)
        headers = {"Allow": "POST"} if status == 405 else None
        return web.json_response({"error": reason}, status=status, headers=headers)

    async def handle(self, request: web.Request) -> web.Response:
        """Called by aiohttp for every request, whatever its path and method."""
        cfg = self.config
        if request.path != cfg.path:
            return self._refuse(request, 404, "not_found")
        if request.method != "POST":
            return self._refuse(request, 405, "method")
        if request.content_type != "application/json":
            return self._refuse(request, 415, "content_type")
        if request.content_length is not None and request.content_length > cfg.max_body_bytes:
            return self._refuse(request, 413, "too_large")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(request, 413, "too_large")
        stamp, signature = request.headers.get(TIMESTAMP), request.headers.get(SIGNATURE)
        if stamp is None or signature is None:
            return self._refuse(request, 401, "missing_signature")
        if not _SECONDS.fullmatch(stamp):
            return self._refuse(request, 400, "bad_timestamp")
        if abs(self._clock() - int(stamp)) > cfg.max_age_seconds:
            return self._refuse(request, 401, "stale")
        if not hmac.compare_digest(signature.encode("utf-8", "replace"), sign(cfg.secret, stamp, body).encode()):
            return self._refuse(request, 401, "bad_signature")
        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError:
            event = None
        if not isinstance(event, dict):
            return self._refuse(request, 400, "invalid_json")
        if event.get("event") == URL_VALIDATION:
            payload = event.get("payload")
            token = payload.get("plainToken") if isinstance(payload, dict) else None
            if not isinstance(token, str):
                return self._refuse(request, 400, "bad_challenge")
            self.counters.challenges += 1
            return web.json_response({"plainToken": token, "encryptedToken": hmac_hex(cfg.secret, token.encode())})
        failure = await self._produce(body, event)
        if failure is not None:
            self.counters.failed[failure] += 1
            log.warning("not stored (%s): answered 503, Zoom will deliver it again", failure)
            return web.json_response({"error": failure}, status=503)
        self.counters.accepted += 1
        return web.json_response({"status": "stored"})

    async def _produce(self, body: bytes, event: dict[str, Any]) -> str | None:
        """Send ``body`` and wait for the broker's acknowledgement; None, or why it was not stored."""
        received_ms = int(self._clock() * 1000)
        event_ts = event.get("event_ts")
        ok_ts = isinstance(event_ts, int) and not isinstance(event_ts, bool) and _MIN_TS_MS <= event_ts <= _MAX_TS_MS
        timestamp_ms = event_ts if ok_ts else received_ms
        key = hashlib.sha256(body).hexdigest()[:32].encode()
        headers = [("source", b"zoom-webhook"), ("received_at_ms", str(received_ms).encode())]
        loop = asyncio.get_running_loop()
        acked: asyncio.Future[BaseException | None] = loop.create_future()

        def resolve(outcome: BaseException | None) -> None:
            if not acked.done():  # not after a timeout cancelled the wait
                acked.set_result(outcome)

        def settle(outcome: BaseException | None) -> None:
            # Called on the producer's I/O thread, possibly after this request was answered 503;
            # a closed loop (RuntimeError) means nobody waits any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(resolve, outcome)

        def send() -> None:
            future = self.producer.send(self.config.topic, value=body, key=key, timestamp_ms=timestamp_ms,
                                        headers=headers)  # fmt: skip
            future.add_callback(lambda _metadata: settle(None))
            future.add_errback(settle)

        try:
            async with asyncio.timeout(self.config.produce_timeout_seconds):
                await asyncio.to_thread(send)  # blocks (at most max_block_ms) only while metadata is missing
                error = await acked
        except (TimeoutError, kafka.errors.KafkaTimeoutError):
            return "produce_timeout"
        except kafka.errors.KafkaError as exc:
            log.warning("produce failed: %s", type(exc).__name__)
            return "produce_failed"
        if error is not None:
            log.warning("produce failed: %s", type(error).__name__)
            return "produce_failed"
        return None


def hmac_hex(secret: SecretStr, message: bytes) -> str:
    return hmac.new(secret.get_secret_value().encode(), message, hashlib.sha256).hexdigest()


def sign(secret: SecretStr, timestamp: str, body: bytes) -> str:
    """The ``x-zm-signature`` Zoom sends for ``body`` at ``timestamp`` (Unix seconds, as in the header)."""
    return "v0=" + hmac_hex(secret, b"v0:" + timestamp.encode() + b":" + body)


def build_receiver(bootstrap: str, security: KafkaSecurity | None, zoom: ZoomWebhook, *, topic: str = DEFAULT_TOPIC,
                   partitions: int = 1, path: str = "/", secret: SecretStr | None = None) -> ZoomReceiver:  # fmt: skip
    """A receiver for the settings' ``zoom`` (``secret`` replaces its secret_token): the topic is
    created if missing and the producer connected, or ``BrokerError`` / ``ConfigError`` is raised."""
    secret = secret or zoom.secret_token
    if secret is None or not secret.get_secret_value():
        raise ConfigError("zoom.secret_token: not set (MODWATCH_ZOOM__SECRET_TOKEN, the settings file or --secret-env)")
    create_topics(bootstrap, {topic: partitions}, security=security)
    timeout = zoom.produce_timeout_seconds
    producer = kafka_client(KafkaProducer, bootstrap, security, **producer_config(timeout))
    config = ReceiverConfig(secret, topic, path, zoom.max_age_seconds, zoom.max_body_bytes, timeout)
    return ZoomReceiver(config, producer)


async def serve(receiver: ZoomReceiver, host: str, port: int, stop: asyncio.Event,
                ready: Callable[[int], None] | None = None) -> None:  # fmt: skip
    """Serve until ``stop`` is set, then close the server and the producer."""
    bound = await receiver.start(host, port)
    try:
        if ready is not None:
            ready(bound)
        await stop.wait()
    finally:
        await receiver.close()


__all__ = ["DEFAULT_TOPIC", "ReceiverConfig", "ReceiverCounters", "ZoomReceiver", "build_receiver", "serve", "sign"]
