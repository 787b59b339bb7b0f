"""The embedded Tansu broker and the kafka-python helpers in streams/tools/broker.py, against a real broker."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from kafka import KafkaProducer

from streams.config.kafka import BrokerError, admin_client, consume_all, create_topics, wait_for_topics
from streams.tools.broker import EmbeddedBroker, free_port

pytestmark = pytest.mark.broker

BASE_MS = 1_700_000_000_000


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_start_answers_kafka_and_stop_kills_the_process() -> None:
    embedded = EmbeddedBroker()
    with embedded as broker:
        pid = broker.pid
        assert pid is not None and _alive(pid)
        host, port = broker.bootstrap.split(":")
        assert host == "127.0.0.1" and int(port) == broker.port
        assert broker.url == f"kafka://{broker.bootstrap}"
        log_dir = broker.log_path.parent
        assert "listening on" in broker.log_path.read_text()
        with admin_client(broker.bootstrap) as admin:
            assert admin.describe_cluster()["brokers"][0]["port"] == broker.port
    assert embedded.pid is None and not embedded.is_running()
    assert not _alive(pid), "stop() must kill and reap the broker"
    assert not log_dir.exists()
    embedded.stop()  # idempotent


def test_stop_on_exception_inside_the_with_block() -> None:
    with pytest.raises(ZeroDivisionError), EmbeddedBroker() as broker:
        pid = broker.pid
        1 / 0  # noqa: B018
    assert pid is not None and not _alive(pid)


def test_roundtrip_keys_timestamps_headers_over_three_partitions(broker: EmbeddedBroker, unique_prefix: str) -> None:
    topic = f"{unique_prefix}-events"
    assert create_topics(broker.bootstrap, {topic: 3}) == [topic]
    assert create_topics(broker.bootstrap, {topic: 3}) == []  # idempotent
    assert wait_for_topics(broker.bootstrap, [topic]) == {topic: 3}

    sent = {
        (f"user-{i % 10}".encode(), f"value-{i}".encode(), BASE_MS + i * 1001, (("n", str(i).encode()),))
        for i in range(60)
    }
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
    try:
        for key, value, ts, headers in sent:
            producer.send(topic, key=key, value=value, timestamp_ms=ts, headers=list(headers))
        producer.flush(timeout=10)
    finally:
        producer.close()

    records = consume_all(broker.bootstrap, topic, idle_seconds=1.0)
    assert len(records) == 60
    got = {(r.key, r.value, r.timestamp, tuple(r.headers)) for r in records}
    assert got == sent
    assert {r.timestamp_type for r in records} == {0}  # CreateTime: ours, not the broker's clock
    assert {r.partition for r in records} == {0, 1, 2}
    for partition in range(3):
        offsets = [r.offset for r in records if r.partition == partition]
        assert offsets == list(range(len(offsets)))
    by_key: dict[bytes, set[int]] = {}
    for r in records:
        by_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(parts) == 1 for parts in by_key.values()), "one key, one partition"


def test_consume_all_of_an_empty_topic_returns_nothing(broker: EmbeddedBroker, unique_prefix: str) -> None:
    topic = f"{unique_prefix}-empty"
    create_topics(broker.bootstrap, {topic: 2})
    assert consume_all(broker.bootstrap, topic, idle_seconds=0.5) == []


def test_missing_topic_is_an_error_not_an_empty_answer(broker: EmbeddedBroker, unique_prefix: str) -> None:
    with pytest.raises(BrokerError, match="does not exist"):
        consume_all(broker.bootstrap, f"{unique_prefix}-nope", idle_seconds=0.2)
    with pytest.raises(BrokerError, match="not ready"):
        wait_for_topics(broker.bootstrap, [f"{unique_prefix}-nope"], timeout=0.3)


def test_pause_freezes_and_resume_thaws(broker: EmbeddedBroker) -> None:
    broker.pause()
    assert broker.paused and broker.is_running()
    with pytest.raises(BrokerError, match="cannot reach"):
        admin_client(broker.bootstrap, timeout=1.0).close()
    broker.resume()
    with admin_client(broker.bootstrap, timeout=5.0) as admin:
        assert admin.list_topics() == []


def test_a_port_taken_by_another_broker_is_never_mistaken_for_ours(
    broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other broker answers on that port, but ours died of AddrInUse: it must not count as ready."""
    with pytest.raises(BrokerError, match=r"(?i)in use"):
        EmbeddedBroker(port=broker.port).start(timeout=5)

    ports = iter([broker.port, free_port()])  # the first "free" port is already taken
    monkeypatch.setattr("streams.tools.broker.free_port", lambda host="127.0.0.1": next(ports))
    with EmbeddedBroker() as second:
        assert second.port != broker.port
        assert second.is_running() and "ready in" in second.log_tail()


def test_free_ports_come_from_below_the_range_outgoing_connections_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """A port handed out for a server is not one the kernel may give a client socket meanwhile;
    a port taken by a listener is skipped; with the range unknown, the kernel picks."""
    import socket

    from streams.tools import broker as broker_module

    low = broker_module._ephemeral_low()
    if low > broker_module.PORT_FLOOR + 1000:  # Linux: the range is known
        ports = {free_port() for _ in range(50)}
        assert all(broker_module.PORT_FLOOR <= port < low for port in ports)
        assert len(ports) > 40  # random picks, not one port over and over
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        first, pick = [port], broker_module._ports.randrange
        monkeypatch.setattr(broker_module, "_ephemeral_low", lambda: 65536)
        monkeypatch.setattr(broker_module._ports, "randrange", lambda a, b: first.pop() if first else pick(a, b))
        assert free_port() != port and not first  # the taken port was tried, and passed over
    monkeypatch.setattr(broker_module, "_ephemeral_low", lambda: 0)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))  # the kernel's pick, free


def test_missing_binary_raises_broker_error(tmp_path: Path) -> None:
    embedded = EmbeddedBroker(binary=str(tmp_path / "no-such-tansu"))
    with pytest.raises(BrokerError, match="cannot start Tansu broker"):
        embedded.start()
    assert embedded.pid is None


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake-tansu"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def test_broker_that_dies_at_start_reports_its_log(tmp_path: Path) -> None:
    binary = _script(tmp_path, 'echo "storage engine exploded: $1"; exit 3')
    with pytest.raises(BrokerError, match=r"exited with status 3[\s\S]*storage engine exploded: broker"):
        EmbeddedBroker(binary=binary).start(timeout=10)


def test_broker_that_never_answers_times_out(tmp_path: Path) -> None:
    binary = _script(tmp_path, 'echo "thinking"; exec sleep 60')
    embedded = EmbeddedBroker(binary=binary)
    started = time.monotonic()
    with pytest.raises(BrokerError, match=r"did not answer Kafka requests in time[\s\S]*thinking"):
        embedded.start(timeout=1.0)
    assert time.monotonic() - started < 10
    assert embedded.pid is None  # the hung process was killed, not leaked


@pytest.mark.parametrize("ending", ["exception", "sigkill"])
def test_a_crashing_owner_does_not_leak_the_broker(ending: str) -> None:
    """atexit kills the broker when the owner dies of an exception; PDEATHSIG when it is SIGKILLed."""
    code = textwrap.dedent(
        f"""
        import os, sys, time
        from streams.tools.broker import EmbeddedBroker
        broker = EmbeddedBroker().start()
        print(broker.pid, broker.log_path.parent, flush=True)
        if {ending!r} == "sigkill":
            os.kill(os.getpid(), 9)
        raise RuntimeError("test run crashed")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == (-signal.SIGKILL if ending == "sigkill" else 1), proc.stderr
    pid, log_dir = proc.stdout.split()
    shutil.rmtree(log_dir, ignore_errors=True)  # a SIGKILLed owner cannot clean up its temp dir
    assert _wait_gone(int(pid)), f"broker pid {pid} outlived its owner"
