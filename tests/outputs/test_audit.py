"""The tamper-evident alert record: each of the four tamperings is caught and located."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.cli.main import main
from streams.outputs.audit import AuditLog, verify


def alert(n: int) -> dict[str, object]:
    return {"alert_id": f"a{n:03d}", "rule_id": "rapid_takedown", "severity": "critical", "summary": f"incident {n}"}


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    path = tmp_path / "alerts.audit"
    log = AuditLog(path, key=b"audit-key")
    for n in range(1, 9):
        assert log.append(alert(n))
    assert not log.append(alert(3)), "a repeated alert id is recorded once"
    log.sync()
    log.close()
    return path


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def test_an_untouched_log_verifies(log_path: Path) -> None:
    assert verify(log_path, b"audit-key") == []
    assert len(lines(log_path)) == 8


def test_reopening_continues_the_chain(log_path: Path) -> None:
    log = AuditLog(log_path, key=b"audit-key")
    assert log.seq == 8
    assert not log.append(alert(5))
    assert log.append(alert(9))
    log.close()
    assert verify(log_path, b"audit-key") == []


def test_a_deleted_entry_is_found(log_path: Path) -> None:
    content = lines(log_path)
    del content[4]  # entry 5
    log_path.write_text("".join(content))
    problems = verify(log_path)
    assert [(p.line, p.kind) for p in problems] == [(5, "deleted")]
    assert "entry 5 is missing" in str(problems[0])


def test_an_altered_entry_is_found(log_path: Path) -> None:
    content = lines(log_path)
    entry = json.loads(content[2])
    entry["alert"]["severity"] = "low"
    content[2] = json.dumps(entry, sort_keys=True) + "\n"
    log_path.write_text("".join(content))
    problems = verify(log_path)
    assert [(p.line, p.kind) for p in problems] == [(3, "altered")]


def test_an_inserted_entry_is_found(log_path: Path) -> None:
    from streams.outputs.audit import entry_hash

    content = lines(log_path)
    before = json.loads(content[3])  # entry 4
    forged = {"alert": alert(99), "seq": 5, "prev": before["hash"]}
    forged["hash"] = entry_hash(before["hash"], 5, alert(99))  # a well-formed entry, chained to entry 4
    content.insert(4, json.dumps(forged, sort_keys=True) + "\n")
    log_path.write_text("".join(content))
    problems = verify(log_path)
    assert [(p.line, p.kind) for p in problems] == [(5, "inserted")]


def test_reordered_entries_are_found(log_path: Path) -> None:
    content = lines(log_path)
    content[5], content[6] = content[6], content[5]  # entries 6 and 7 swapped
    log_path.write_text("".join(content))
    problems = verify(log_path)
    assert [(p.line, p.kind) for p in problems] == [(6, "reordered"), (7, "reordered"), (8, "reordered")]


def test_a_rebuilt_chain_fails_the_hmac(log_path: Path) -> None:
    """Rewriting the whole tail with fresh hashes fools a plain chain, not the keyed one."""
    content = [json.loads(line) for line in lines(log_path)]
    rebuilt = AuditLog(log_path.with_suffix(".forged"))  # no key: the insider does not hold it
    for entry in content:
        a = entry["alert"]
        if a["alert_id"] == "a004":
            a = {**a, "severity": "info"}
        rebuilt.append(a)
    rebuilt.close()
    forged = log_path.with_suffix(".forged")
    assert verify(forged) == []  # the plain chain is consistent
    problems = verify(forged, b"audit-key")
    assert len(problems) == 8 and {p.kind for p in problems} == {"bad_mac"}


def test_verify_command_exit_codes(
    log_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUDIT_KEY", "audit-key")
    assert main(["verify", str(log_path), "--hmac-key-env", "AUDIT_KEY"]) == 0
    assert "intact" in capsys.readouterr().out
    content = lines(log_path)
    del content[0]
    log_path.write_text("".join(content))
    assert main(["verify", str(log_path), "--hmac-key-env", "AUDIT_KEY"]) == 1
    out = capsys.readouterr().out
    assert "line 1: deleted" in out and "TAMPERED" in out
    assert main(["verify", str(log_path.with_suffix(".missing"))]) == 2


@pytest.mark.broker
def test_audit_consumes_the_alerts_topic_once_per_alert(broker, unique_prefix, tmp_path: Path) -> None:
    from kafka import KafkaProducer

    from streams.config.kafka import create_topics
    from streams.outputs.audit import consume_alerts

    topic = f"{unique_prefix}.alerts"
    create_topics(broker.bootstrap, {topic: 1})
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for n in [1, 2, 3, 2, 4]:  # at-least-once: alert 2 delivered twice
        producer.send(topic, json.dumps(alert(n)).encode(), key=f"a{n:03d}".encode())
    producer.flush()
    producer.close()
    path = tmp_path / "alerts.audit"
    log = AuditLog(path, key=b"k")
    try:
        recorded = consume_alerts(broker.bootstrap, topic, log, group=f"{unique_prefix}-audit", idle_exit=3.0)
    finally:
        log.close()
    assert recorded == 4
    assert [json.loads(line)["alert"]["alert_id"] for line in lines(path)] == ["a001", "a002", "a003", "a004"]
    assert verify(path, b"k") == []
