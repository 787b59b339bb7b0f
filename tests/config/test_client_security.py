"""Every Kafka client modwatch makes speaks the protocol the settings name.

A plain TCP listener on a free loopback port records the first bytes of each connection and hangs
up. With ``security_protocol`` SSL or SASL_SSL, each client path (ping, the admin/producer/consumer
that ``kafka_client`` builds, replay's real send, the worker's ``ensure_topics``, the ``replay`` and
``audit`` commands) must open with a TLS ClientHello (0x16 0x03 ...), never a plaintext Kafka request,
and then fail with one clear message within seconds. The PLAINTEXT paths against a real broker are
covered by tests/tools/test_replay.py, tests/tools/test_broker.py and tests/live/test_worker.py.
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.cli.main import main
from streams.config.kafka import BrokerError, kafka_client_kwargs, ping
from streams.config.settings import KafkaSecurity, Settings
from streams.live.worker import ensure_topics
from streams.tools.replay import ReplayError, replay
from tests.worker_harness import REPO

EXAMPLE = str(REPO / "examples" / "events.jsonl")
EMPTY_SETTINGS = str(REPO / "tests" / "fixtures" / "empty-settings.yaml")
PROTOCOLS = ["SSL", "SASL_SSL"]
BOUND = 8.0  # seconds a client may take to give up on a server that is not what it expects


class Recorder:
    """A TCP listener that keeps the first bytes each connection sends, then closes it."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.bootstrap = f"127.0.0.1:{self.server.getsockname()[1]}"
        self.first: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2.0)
                try:
                    self.first.append(conn.recv(16))
                except OSError:
                    self.first.append(b"")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.server.close()

    def assert_tls_only(self) -> None:
        assert self.first, "no client connected"
        for data in self.first:
            assert data[:2] == b"\x16\x03", f"not a TLS ClientHello: {data!r}"


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    try:
        yield rec
    finally:
        rec.close()


def _security(protocol: str) -> KafkaSecurity:
    if protocol == "SASL_SSL":
        return KafkaSecurity.model_validate(
            {"security_protocol": protocol, "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "modwatch",
             "sasl_password": "s3cret-password"}
        )  # fmt: skip
    return KafkaSecurity(security_protocol="SSL")


@pytest.fixture
def env_security(monkeypatch: pytest.MonkeyPatch, recorder: Recorder, request: pytest.FixtureRequest) -> str:
    """The command line's settings: the recorder as broker, the protocol from the environment."""
    for name in list(__import__("os").environ):
        if name.startswith("MODWATCH_"):
            monkeypatch.delenv(name)
    protocol: str = request.param
    monkeypatch.setenv("MODWATCH_SETTINGS", EMPTY_SETTINGS)
    monkeypatch.setenv("MODWATCH_BOOTSTRAP_SERVERS", recorder.bootstrap)
    monkeypatch.setenv("MODWATCH_KAFKA__SECURITY_PROTOCOL", protocol)
    if protocol.startswith("SASL"):
        monkeypatch.setenv("MODWATCH_KAFKA__SASL_MECHANISM", "PLAIN")
        monkeypatch.setenv("MODWATCH_KAFKA__SASL_USERNAME", "modwatch")
        monkeypatch.setenv("MODWATCH_KAFKA__SASL_PASSWORD", "s3cret-password")
    return protocol


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_ping_opens_with_a_tls_handshake(recorder: Recorder, protocol: str) -> None:
    started = time.monotonic()
    with pytest.raises(BrokerError, match=rf"cannot reach Kafka broker at {recorder.bootstrap} \({protocol}\).*TLS"):
        ping(recorder.bootstrap, 5.0, security=_security(protocol))
    assert time.monotonic() - started < BOUND
    recorder.assert_tls_only()


def test_ping_without_security_still_speaks_plain_kafka(recorder: Recorder) -> None:
    with pytest.raises(BrokerError, match=r"\(PLAINTEXT\)"):
        ping(recorder.bootstrap, 5.0)
    assert recorder.first and recorder.first[0][4:6] == b"\x00\x12"  # ApiVersions (18), after the size


# kafka-python 3.0 leaks its sockets when a client's bootstrap fails (the reason ``kafka_client`` pings
# first). Here the ping is skipped on purpose, so the client runs in a child process: its leak ends there.
_CLIENT_SCRIPT = """
import sys, time
import streams.config.kafka as k
from streams.config.settings import KafkaSecurity
import kafka
k.ping = lambda *args, **kwargs: None
security = KafkaSecurity.model_validate_json(sys.argv[3])
started = time.monotonic()
try:
    k.kafka_client(getattr(kafka, sys.argv[1]), sys.argv[2], security, timeout=2.0)
except k.BrokerError as exc:
    print(f"{time.monotonic() - started:.1f} {exc}")
"""


@pytest.mark.parametrize("cls", ["KafkaAdminClient", "KafkaConsumer", "KafkaProducer"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_kafka_python_clients_get_the_settings(recorder: Recorder, protocol: str, cls: str) -> None:
    """Past the ping (skipped here), kafka-python itself speaks TLS and gives up in bounded time."""
    fields = json.loads(_security(protocol).model_dump_json())  # SecretStr dumps masked: put the password back
    security = json.dumps({**fields, "sasl_password": "s3cret-password"} if "SASL" in protocol else fields)
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", _CLIENT_SCRIPT, cls, recorder.bootstrap, security],
                          capture_output=True, text=True, timeout=60, cwd=REPO)  # fmt: skip
    seconds, _, message = done.stdout.strip().partition(" ")
    assert message.startswith(f"cannot reach Kafka broker at {recorder.bootstrap} ({protocol})"), done.stderr[-2000:]
    assert float(seconds) < BOUND
    recorder.assert_tls_only()


def test_client_kwargs_carry_tls_and_sasl() -> None:
    config = kafka_client_kwargs(_security("SASL_SSL"))
    assert config["security_protocol"] == "SASL_SSL" and config["ssl_context"] is not None
    assert config["sasl_mechanism"] == "SCRAM-SHA-512" and config["sasl_plain_password"] == "s3cret-password"
    assert kafka_client_kwargs(None) == {"security_protocol": "PLAINTEXT"}
    assert "ssl_context" not in kafka_client_kwargs(KafkaSecurity())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_replay_send_uses_tls(recorder: Recorder, protocol: str) -> None:
    started = time.monotonic()
    with pytest.raises(ReplayError, match=rf"cannot reach Kafka broker at {recorder.bootstrap} \({protocol}\)"):
        replay([EXAMPLE], recorder.bootstrap, lambda _t: "events", lambda _v: None,
               security=_security(protocol), out=io.StringIO())  # fmt: skip
    assert time.monotonic() - started < BOUND
    recorder.assert_tls_only()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_worker_ensure_topics_uses_tls(recorder: Recorder, protocol: str) -> None:
    settings = Settings(bootstrap_servers=recorder.bootstrap, kafka=_security(protocol))
    started = time.monotonic()
    with pytest.raises(BrokerError, match=rf"cannot reach Kafka broker at {recorder.bootstrap} \({protocol}\)"):
        ensure_topics(settings)
    assert time.monotonic() - started < BOUND
    recorder.assert_tls_only()


@pytest.mark.parametrize("env_security", PROTOCOLS, indirect=True)
def test_replay_command_uses_the_environment_security(
    recorder: Recorder, env_security: str, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    assert main(["replay", EXAMPLE]) == 2
    assert time.monotonic() - started < BOUND
    err = capsys.readouterr().err
    assert f"modwatch: cannot reach Kafka broker at {recorder.bootstrap} ({env_security})" in err
    assert "s3cret" not in err
    recorder.assert_tls_only()
@pytest.mark.parametrize("env_security", PROTOCOLS, indirect=True)
def test_audit_command_uses_the_environment_security(
    recorder: Recorder, env_security: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    started = time.monotonic()
    assert main(["audit", "--output", str(tmp_path / "alerts.audit"), "--exit-after-idle", "1"]) == 2
    assert time.monotonic() - started < BOUND
    err = capsys.readouterr().err
    assert f"modwatch: cannot reach Kafka broker at {recorder.bootstrap} ({env_security})" in err
    assert "s3cret" not in err
    recorder.assert_tls_only()
