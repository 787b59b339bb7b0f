"""Kafka clients as the settings say: security (TLS, SASL), consumer-group timing, and the small
kafka-python helpers every command uses (reachability, topic creation, reading a topic whole).

:func:`kafka_client_kwargs` is the only place a kafka-python client's security options come from,
and :func:`kafka_client` the only way modwatch builds one (admin, producer, consumer): it first checks
the broker answers (:func:`ping`, over TLS when the settings say SSL) and bounds the bootstrap, so a
client that cannot connect fails with one clear :class:`BrokerError` instead of retrying forever. The
Faust worker gets the same TLS context through :func:`faust_credentials`.

Secrets are read from ``SecretStr`` only here, at the moment a client is built. Facts relied on
(Tansu, the test and demo broker): group joins are held for session_timeout / 2, so consumer groups
use :data:`GROUP_SETTINGS` (6 s session) or every join costs 30 s; ListOffsets "latest" under-reports,
so :func:`consume_all` finds the end of a topic by reading until nothing new arrives.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import kafka.errors
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord

from streams.core.ruleset import ConfigError

if TYPE_CHECKING:
    from streams.config.settings import KafkaSecurity

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"

#: kafka-python consumer-group settings for Tansu: joins take ~3 s instead of 30 s.
GROUP_SETTINGS: dict[str, int] = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "max_poll_interval_ms": 10000,
}

_VERSION_SPECIFIC = frozenset({"bootstrap_timeout_ms"})

_Client = TypeVar("_Client", KafkaAdminClient, KafkaConsumer, KafkaProducer)


class BrokerError(RuntimeError):
    """The embedded broker could not be started, or a helper could not talk to a broker."""


def client_config(cls: type, config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` minus the options that only newer kafka-python versions know.

    kafka-python 3 added ``bootstrap_timeout_ms`` (fail fast when no broker answers); 2.x rejects
    unknown options. Anything else is passed through, so that a misspelt option is still an error.
    """
    known = getattr(cls, "DEFAULT_CONFIG", {})
    return {k: v for k, v in config.items() if k not in _VERSION_SPECIFIC or k in known}


_CLIENT_ID = b"modwatch"
_API_VERSIONS = struct.pack(">hhih", 18, 0, 1, len(_CLIENT_ID)) + _CLIENT_ID
_API_VERSIONS_REQUEST = struct.pack(">i", len(_API_VERSIONS)) + _API_VERSIONS


def ping(bootstrap: str, timeout: float = 5.0, *, security: KafkaSecurity | None = None) -> None:
    """Raise :class:`BrokerError` unless a server in ``bootstrap`` answers a Kafka request in time.

    Done with a plain socket before any kafka-python client is built: kafka-python 3.0 leaks its
    sockets when a client's bootstrap fails (ResourceWarnings, which the test suite turns into
    errors), and a frozen broker (``pause()``) accepts connections but never answers. With SSL or
    SASL_SSL in ``security`` the request goes over TLS (the clients' own context, hostname checked),
    so the first bytes on the wire are a TLS ClientHello, never a plaintext Kafka request; SASL
    itself is left to the client (ApiVersions needs no authentication).
    """
    context = ssl_context(security) if security is not None else None
    deadline = time.monotonic() + timeout
    errors: list[str] = []
    for server in (s.strip() for s in bootstrap.split(",") if s.strip()):
        host, _, port = server.rpartition(":")
        host = host.strip("[]") or "localhost"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            errors.append(f"{server}: not tried, out of time")
            continue
        try:
            with socket.create_connection((host, int(port)), remaining) as raw:
                if context is None:
                    header = _ask_versions(raw)
                else:
                    raw.settimeout(max(deadline - time.monotonic(), 0.001))
                    try:
                        tls = context.wrap_socket(raw, server_hostname=host)
                    except (ssl.SSLError, OSError) as exc:
                        raise ConnectionError(f"TLS handshake failed ({exc or type(exc).__name__})") from exc
                    with tls:
                        header = _ask_versions(tls)
        except (OSError, ValueError) as exc:
            errors.append(f"{server}: {exc or type(exc).__name__}")
            continue
        _size, correlation_id = struct.unpack(">ii", header)
        if correlation_id == 1:
            return
        errors.append(f"{server}: not a Kafka answer")
    protocol = security.security_protocol if security is not None else "PLAINTEXT"
    raise BrokerError(f"cannot reach Kafka broker at {bootstrap} ({protocol}): {'; '.join(errors) or 'no servers'}")


def _ask_versions(sock: socket.socket) -> bytes:
    """Send an ApiVersions request; the first 8 bytes of the answer (size, correlation id)."""
    sock.sendall(_API_VERSIONS_REQUEST)
    header = b""
    while len(header) < 8:
        chunk = sock.recv(8 - len(header))
        if not chunk:
            raise ConnectionError("connection closed without an answer")
        header += chunk
    return header


def kafka_client(
    cls: type[_Client],
    bootstrap: str,
    security: KafkaSecurity | None,
    *,
    timeout: float = 10.0,
    **config: Any,
) -> _Client:
    """A kafka-python ``cls`` (admin, consumer or producer) for ``bootstrap``, secured as ``security``
    says: the only way modwatch builds one. :func:`ping` first, then the client with its bootstrap
    bounded by ``timeout``; :class:`BrokerError` naming the address and protocol if either fails."""
    ping(bootstrap, timeout, security=security)
    full = {
        "bootstrap_timeout_ms": int(timeout * 1000),
        **config,
        **kafka_client_kwargs(security),
        "bootstrap_servers": bootstrap,
    }
    try:
        return cls(**client_config(cls, full))
    except kafka.errors.KafkaError as exc:
        protocol = security.security_protocol if security is not None else "PLAINTEXT"
        raise BrokerError(f"cannot reach Kafka broker at {bootstrap} ({protocol}): {exc}") from exc


def admin_client(bootstrap: str, timeout: float = 10.0, *, security: KafkaSecurity | None = None) -> KafkaAdminClient:
    """A kafka-python admin client; :class:`BrokerError` if the broker does not answer in ``timeout``."""
    return kafka_client(
        KafkaAdminClient, bootstrap, security, timeout=timeout,
        client_id="modwatch-admin", request_timeout_ms=max(int(timeout * 1000), 1000),
    )  # fmt: skip


def _list_topics(bootstrap: str, timeout: float, security: KafkaSecurity | None = None) -> list[str]:
    admin = admin_client(bootstrap, timeout, security=security)
    try:
        topics: list[str] = admin.list_topics()
        return topics
    except kafka.errors.KafkaError as exc:
        raise BrokerError(f"metadata request to {bootstrap} failed: {exc}") from exc
    finally:
        admin.close()


def create_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    timeout: float = 30.0,
    security: KafkaSecurity | None = None,
    topic_configs: Mapping[str, str] | None = None,
) -> list[str]:
    """Create each ``{name: partitions}`` topic that does not exist yet (with ``topic_configs``, such as
    ``{"cleanup.policy": "compact"}``); wait until all are usable.

    Idempotent: an existing topic is left alone, whatever its partition count (a warning is logged if
    it differs). Returns the names actually created by this call.
    """
    if not topics:
        return []
    created: list[str] = []
    admin = admin_client(bootstrap, timeout, security=security)
    try:
        existing = set(admin.list_topics())
        for name, partitions in topics.items():
            if name in existing:
                continue
            try:
                # One request per topic: a TopicAlreadyExists for one (a concurrent creator won the
                # race) must not hide the outcome for the others.
                admin.create_topics([NewTopic(name, partitions, replication_factor,
                                              topic_configs=dict(topic_configs or {}))])  # fmt: skip
                created.append(name)
            except kafka.errors.TopicAlreadyExistsError:
                pass
            except kafka.errors.KafkaError as exc:
                raise BrokerError(f"cannot create topic {name!r} on {bootstrap}: {exc}") from exc
    finally:
        admin.close()
    actual = wait_for_topics(bootstrap, list(topics), timeout=timeout, security=security)
    for name, partitions in topics.items():
        if actual[name] != partitions:
            log.warning("topic %s exists with %d partitions, not %d", name, actual[name], partitions)
    return created


def wait_for_topics(
    bootstrap: str, names: Iterable[str], *, timeout: float = 30.0, security: KafkaSecurity | None = None
) -> dict[str, int]:
    """Block until every topic is in metadata with a leader for each partition.

    Returns ``{name: partition count}``; raises :class:`BrokerError` naming the topics still missing.
    """
    wanted = list(names)
    deadline = time.monotonic() + timeout
    admin = admin_client(bootstrap, timeout, security=security)
    try:
        while True:
            ready: dict[str, int] = {}
            pending: dict[str, str] = {}
            try:
                described = admin.describe_topics(wanted)
            except kafka.errors.KafkaError as exc:
                described = []
                pending["(all)"] = str(exc)
            by_name = {t["topic"] if "topic" in t else t["name"]: t for t in described}
            for name in wanted:
                reason = _not_ready(by_name.get(name))
                if reason is None:
                    ready[name] = len(by_name[name]["partitions"])
                else:
                    pending[name] = reason
            if not pending:
                return ready
            if time.monotonic() >= deadline:
                detail = ", ".join(f"{k}: {v}" for k, v in pending.items())
                raise BrokerError(f"topics not ready on {bootstrap} after {timeout:g} s: {detail}")
            time.sleep(0.1)
    finally:
        admin.close()


def _not_ready(info: Mapping[str, Any] | None) -> str | None:
    if info is None:
        return "missing from metadata"
    if info.get("error_code", 0):
        return kafka.errors.for_code(info["error_code"]).__name__
    partitions = info.get("partitions") or []
    if not partitions:
        return "no partitions"
    for p in partitions:
        if p.get("error_code", 0) or p.get("leader", p.get("leader_id", -1)) < 0:
            return f"partition {p.get('partition', p.get('partition_index'))} has no leader"
    return None


def consume_all(
    bootstrap: str,
    topic: str,
    *,
    idle_seconds: float = 2.0,
    timeout: float = 60.0,
    security: KafkaSecurity | None = None,
) -> list[ConsumerRecord]:
    """Every record of ``topic`` from the beginning, ordered by (partition, offset).

    Reads without a consumer group (all partitions assigned, seeked to the beginning) until no new
    record has arrived for ``idle_seconds``: Tansu's end offsets are wrong, so "idle" is the only
    honest end of a topic. Raises :class:`BrokerError` if the topic does not exist, or if records are
    still arriving after ``timeout`` seconds (a partial answer would look like a lost message).
    """
    consumer = kafka_client(
        KafkaConsumer, bootstrap, security, timeout=10.0,
        client_id="modwatch-consume-all", group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
    )  # fmt: skip
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise BrokerError(f"topic {topic!r} does not exist on {bootstrap}")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        records: list[ConsumerRecord] = []
        start = last = time.monotonic()
        while True:
            now = time.monotonic()
            if now - last >= idle_seconds:
                break
            if now - start >= timeout:
                raise BrokerError(f"{topic}: still receiving records after {timeout:g} s ({len(records)} so far)")
            batch = consumer.poll(timeout_ms=100)
            for part_records in batch.values():
                records.extend(part_records)
                last = time.monotonic()
        records.sort(key=lambda r: (r.partition, r.offset))
        return records
    finally:
        consumer.close()


def ssl_context(sec: KafkaSecurity) -> ssl.SSLContext | None:
    """The TLS context of every client (ping, kafka-python, Faust), None without SSL in the protocol.
    Verifies the broker's certificate and hostname; a CA or certificate file that cannot be read is a
    :class:`ConfigError` naming the setting."""
    if "SSL" not in sec.security_protocol:
        return None
    try:
        context = ssl.create_default_context(cafile=sec.ssl_cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"kafka.ssl_cafile: cannot load {sec.ssl_cafile}: {exc}") from None
    if sec.ssl_certfile:
        password = sec.ssl_password.get_secret_value() if sec.ssl_password else None
        try:
            context.load_cert_chain(sec.ssl_certfile, sec.ssl_keyfile, password=password)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"kafka.ssl_certfile: cannot load {sec.ssl_certfile}: {exc}") from None
    return context


def faust_credentials(sec: KafkaSecurity) -> Any:
    import faust

    context = ssl_context(sec)
    if sec.security_protocol.startswith("SASL"):
        password = sec.sasl_password.get_secret_value() if sec.sasl_password else ""
        return faust.SASLCredentials(
            username=sec.sasl_username, password=password, ssl_context=context, mechanism=sec.sasl_mechanism
        )
    return faust.SSLCredentials(context)


def kafka_client_kwargs(security: KafkaSecurity | None) -> dict[str, Any]:
    """The kafka-python options for ``security`` (the settings' ``kafka``; None is PLAINTEXT): the only
    place a kafka-python client's security comes from. TLS goes through :func:`ssl_context`, the
    context the ping and the Faust worker use too, so every client checks the same CA and hostname."""
    if security is None:
        return {"security_protocol": "PLAINTEXT"}
    config: dict[str, Any] = {"security_protocol": security.security_protocol}
    context = ssl_context(security)
    if context is not None:
        config["ssl_context"] = context
    if security.security_protocol.startswith("SASL"):
        config.update(
            sasl_mechanism=security.sasl_mechanism or "PLAIN",
            sasl_plain_username=security.sasl_username,
            sasl_plain_password=security.sasl_password.get_secret_value() if security.sasl_password else None,
        )
    return config
