"""Kafka clients as the settings say: security (TLS, SASL), consumer-group timing, and the small
kafka-python helpers every command uses (reachability, topic creation, reading a topic whole).

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
from typing import TYPE_CHECKING, Any

import kafka.errors
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord

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


def ping(bootstrap: str, timeout: float = 5.0) -> None:
    """Raise :class:`BrokerError` unless a server in ``bootstrap`` answers a Kafka request in time.

    Done with a plain socket before any kafka-python client is built: kafka-python 3.0 leaks its
    sockets when a client's bootstrap fails (ResourceWarnings, which the test suite turns into
    errors), and a frozen broker (``pause()``) accepts connections but never answers.
    """
    deadline = time.monotonic() + timeout
    errors: list[str] = []
    for server in (s.strip() for s in bootstrap.split(",") if s.strip()):
        host, _, port = server.rpartition(":")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            errors.append(f"{server}: not tried, out of time")
            continue
        try:
            with socket.create_connection((host.strip("[]") or "localhost", int(port)), remaining) as sock:
                sock.sendall(_API_VERSIONS_REQUEST)
                header = b""
                while len(header) < 8:
                    chunk = sock.recv(8 - len(header))
                    if not chunk:
                        raise ConnectionError("connection closed without an answer")
                    header += chunk
        except (OSError, ValueError) as exc:
            errors.append(f"{server}: {exc}")
            continue
        _size, correlation_id = struct.unpack(">ii", header)
        if correlation_id == 1:
            return
        errors.append(f"{server}: not a Kafka answer")
    raise BrokerError(f"cannot reach Kafka broker at {bootstrap}: {'; '.join(errors) or 'no servers'}")


def admin_client(bootstrap: str, timeout: float = 10.0) -> KafkaAdminClient:
    """A kafka-python admin client; :class:`BrokerError` if the broker does not answer in ``timeout``."""
    ping(bootstrap, timeout)
    config = {
        "bootstrap_servers": bootstrap,
        "client_id": "modwatch-admin",
        "bootstrap_timeout_ms": int(timeout * 1000),
        "request_timeout_ms": max(int(timeout * 1000), 1000),
    }
    try:
        return KafkaAdminClient(**client_config(KafkaAdminClient, config))
    except kafka.errors.KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka broker at {bootstrap}: {exc}") from exc


def _list_topics(bootstrap: str, timeout: float) -> list[str]:
    admin = admin_client(bootstrap, timeout)
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
) -> list[str]:
    """Create each ``{name: partitions}`` topic that does not exist yet; wait until all are usable.

    Idempotent: an existing topic is left alone, whatever its partition count (a warning is logged if
    it differs). Returns the names actually created by this call.
    """
    if not topics:
        return []
    created: list[str] = []
    admin = admin_client(bootstrap, timeout)
    try:
        existing = set(admin.list_topics())
        for name, partitions in topics.items():
            if name in existing:
                continue
            try:
                # One request per topic: a TopicAlreadyExists for one (a concurrent creator won the
                # race) must not hide the outcome for the others.
                admin.create_topics([NewTopic(name, partitions, replication_factor)])
                created.append(name)
            except kafka.errors.TopicAlreadyExistsError:
                pass
            except kafka.errors.KafkaError as exc:
                raise BrokerError(f"cannot create topic {name!r} on {bootstrap}: {exc}") from exc
    finally:
        admin.close()
    actual = wait_for_topics(bootstrap, list(topics), timeout=timeout)
    for name, partitions in topics.items():
        if actual[name] != partitions:
            log.warning("topic %s exists with %d partitions, not %d", name, actual[name], partitions)
    return created


def wait_for_topics(bootstrap: str, names: Iterable[str], *, timeout: float = 30.0) -> dict[str, int]:
    """Block until every topic is in metadata with a leader for each partition.

    Returns ``{name: partition count}``; raises :class:`BrokerError` naming the topics still missing.
    """
    wanted = list(names)
    deadline = time.monotonic() + timeout
    admin = admin_client(bootstrap, timeout)
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
) -> list[ConsumerRecord]:
    """Every record of ``topic`` from the beginning, ordered by (partition, offset).

    Reads without a consumer group (all partitions assigned, seeked to the beginning) until no new
    record has arrived for ``idle_seconds``: Tansu's end offsets are wrong, so "idle" is the only
    honest end of a topic. Raises :class:`BrokerError` if the topic does not exist, or if records are
    still arriving after ``timeout`` seconds (a partial answer would look like a lost message).
    """
    config = {
        "bootstrap_servers": bootstrap,
        "client_id": "modwatch-consume-all",
        "group_id": None,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "bootstrap_timeout_ms": 10000,
    }
    ping(bootstrap, 10.0)
    try:
        consumer = KafkaConsumer(**client_config(KafkaConsumer, config))
    except kafka.errors.KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka broker at {bootstrap}: {exc}") from exc
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
    if "SSL" not in sec.security_protocol:
        return None
    context = ssl.create_default_context(cafile=sec.ssl_cafile)
    if sec.ssl_certfile:
        password = sec.ssl_password.get_secret_value() if sec.ssl_password else None
        context.load_cert_chain(sec.ssl_certfile, sec.ssl_keyfile, password=password)
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


def kafka_python_config(sec: KafkaSecurity) -> dict[str, Any]:
    config: dict[str, Any] = {"security_protocol": sec.security_protocol}
    if "SSL" in sec.security_protocol:
        config.update(ssl_cafile=sec.ssl_cafile, ssl_certfile=sec.ssl_certfile, ssl_keyfile=sec.ssl_keyfile)
        if sec.ssl_password:
            config["ssl_password"] = sec.ssl_password.get_secret_value()
    if sec.security_protocol.startswith("SASL"):
        config.update(
            sasl_mechanism=sec.sasl_mechanism,
            sasl_plain_username=sec.sasl_username,
            sasl_plain_password=sec.sasl_password.get_secret_value() if sec.sasl_password else None,
        )
    return config
