"""The tamper-evident alert record: each tampering is performed on a real file and caught and located.

The four chain tamperings (delete, alter, insert, reorder), then the attacks the header, the strict
reader and the checkpoint exist for: a cut or emptied log, a keyed log rebuilt without its key,
repeated keys and extra fields, a half-written last line, and alerts without an id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streams.cli.main import main
from streams.outputs.audit import GENESIS, AuditError, AuditLog, default_checkpoint, entry_hash, entry_mac, verify

KEY = b"audit-key"


def alert(n: int, **extra: object) -> dict[str, object]:
    return {
        "alert_id": f"a{n:03d}",
        "rule_id": "rapid_takedown",
        "severity": "critical",
        "summary": f"incident {n}",
    } | extra


def write_log(path: Path, key: bytes | None, n: int = 8, checkpoint: Path | None = None) -> Path:
    log = AuditLog(path, key=key, checkpoint=checkpoint)
    for i in range(1, n + 1):
        assert log.append(alert(i))
    log.sync()
    log.close()
    return path


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    path = tmp_path / "alerts.audit"
    write_log(path, KEY, checkpoint=default_checkpoint(path))
    log = AuditLog(path, key=KEY)
    assert not log.append(alert(3)), "a repeated alert id is recorded once"
    log.close()
    return path


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def kinds(problems: list[Any]) -> list[tuple[int, str]]:
    return [(p.line, p.kind) for p in problems]


def test_an_untouched_log_verifies(log_path: Path) -> None:
    assert verify(log_path, KEY, default_checkpoint(log_path)) == []
    assert json.loads(lines(log_path)[0]) == {"modwatch_audit": 1, "keyed": True}
    assert len(lines(log_path)) == 9  # the header and 8 entries


def test_reopening_continues_the_chain(log_path: Path) -> None:
    log = AuditLog(log_path, key=KEY, checkpoint=default_checkpoint(log_path))
    assert log.seq == 8
    assert not log.append(alert(5))
    assert log.append(alert(9))
    log.sync()
    log.close()
    assert verify(log_path, KEY, default_checkpoint(log_path)) == []
    assert json.loads(default_checkpoint(log_path).read_text())["entries"] == 9


def test_a_deleted_entry_is_found(log_path: Path) -> None:
    content = lines(log_path)
    del content[5]  # entry 5
    log_path.write_text("".join(content))
    problems = verify(log_path, KEY)
    assert kinds(problems) == [(6, "deleted")]
    assert "entry 5 is missing" in str(problems[0])


def test_an_altered_entry_is_found(log_path: Path) -> None:
    content = lines(log_path)
    entry = json.loads(content[3])
    entry["alert"]["severity"] = "low"
    content[3] = json.dumps(entry, sort_keys=True) + "\n"
    log_path.write_text("".join(content))
    assert kinds(verify(log_path, KEY)) == [(4, "altered")]


def test_an_inserted_entry_is_found(log_path: Path) -> None:
    content = lines(log_path)
    before = json.loads(content[4])  # entry 4
    forged = {"alert": alert(99), "seq": 5, "prev": before["hash"]}
    forged["hash"] = entry_hash(before["hash"], 5, alert(99))  # a well-formed entry, chained to entry 4
    forged["mac"] = entry_mac(KEY, forged["hash"])  # even with the key
    content.insert(5, json.dumps(forged, sort_keys=True) + "\n")
    log_path.write_text("".join(content))
    assert kinds(verify(log_path, KEY)) == [(6, "inserted")]


def test_reordered_entries_are_found(log_path: Path) -> None:
    content = lines(log_path)
    content[6], content[7] = content[7], content[6]  # entries 6 and 7 swapped
    log_path.write_text("".join(content))
    assert kinds(verify(log_path, KEY)) == [(7, "reordered"), (8, "reordered"), (9, "reordered")]


# -- 1. a cut tail or an emptied file, against the checkpoint ----------------------------------------


@pytest.mark.parametrize("key", [KEY, None], ids=["keyed", "unkeyed"])
def test_a_cut_tail_is_found_against_the_checkpoint(tmp_path: Path, key: bytes | None) -> None:
    log_path = write_log(tmp_path / "alerts.audit", key, checkpoint=tmp_path / "elsewhere.checkpoint")
    log_path.write_text("".join(lines(log_path)[:-3]))  # entries 6-8 cut: the chain itself is consistent
    assert verify(log_path, key) == []
    problems = verify(log_path, key, tmp_path / "elsewhere.checkpoint")
    assert kinds(problems) == [(7, "truncated")]
    assert "ends after 5 entries, its checkpoint records 8" in str(problems[0])
    with pytest.raises(AuditError, match=r"holds 5 entries but its checkpoint .* records 8: the log was cut"):
        AuditLog(log_path, key, checkpoint=tmp_path / "elsewhere.checkpoint")  # so no new checkpoint hides it


@pytest.mark.parametrize("key", [KEY, None], ids=["keyed", "unkeyed"])
def test_an_emptied_log_is_not_intact(tmp_path: Path, key: bytes | None) -> None:
    path = write_log(tmp_path / "alerts.audit", key, checkpoint=default_checkpoint(tmp_path / "alerts.audit"))
    path.write_text("")
    assert kinds(verify(path, key)) == [(1, "truncated")], "even without a checkpoint"
    assert {p.kind for p in verify(path, key, default_checkpoint(path))} == {"truncated"}
    with pytest.raises(AuditError, match="holds 0 entries"):
        AuditLog(path, key, checkpoint=default_checkpoint(path))


def test_an_entry_rewritten_at_the_checkpoint_is_found(tmp_path: Path) -> None:
    """An unkeyed log rebuilt with the same number of entries: the checkpoint's last hash differs."""
    path = write_log(tmp_path / "alerts.audit", None, n=3, checkpoint=default_checkpoint(tmp_path / "alerts.audit"))
    path.unlink()
    rebuilt = AuditLog(path)
    for n in (1, 2, 4):
        rebuilt.append(alert(n))
    rebuilt.close()
    assert verify(path) == []
    assert kinds(verify(path, None, default_checkpoint(path))) == [(4, "rewritten")]


def test_the_checkpoint_is_replaced_atomically_and_keyed(log_path: Path) -> None:
    checkpoint = default_checkpoint(log_path)
    assert sorted(p.name for p in log_path.parent.iterdir()) == [log_path.name, checkpoint.name]  # no temp file
    saved = json.loads(checkpoint.read_text())
    assert set(saved) == {"modwatch_audit_checkpoint", "entries", "last", "keyed", "mac"}
    forged = {k: v for k, v in saved.items() if k != "mac"} | {"keyed": False, "entries": 5}
    checkpoint.write_text(json.dumps(forged))
    assert "checkpoint" in {p.kind for p in verify(log_path, KEY, checkpoint)}, "an unkeyed checkpoint of a keyed log"
    checkpoint.write_text(json.dumps(saved | {"entries": 5}))
    assert (0, "checkpoint") in kinds(verify(log_path, KEY, checkpoint)), "a checkpoint altered without the key"


def test_verify_says_a_cut_tail_needs_a_checkpoint(log_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(log_path), "--hmac-key-env", "AUDIT_KEY"]) == 2  # the variable is not set
    assert "AUDIT_KEY is not set" in capsys.readouterr().err
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUDIT_KEY", KEY.decode())
        assert main(["verify", str(log_path), "--hmac-key-env", "AUDIT_KEY"]) == 0
        out = capsys.readouterr().out
        assert "without --checkpoint, a cut tail cannot be detected" in out and "intact (8 entries, keyed" in out
        checkpoint = str(default_checkpoint(log_path))
        log_path.write_text("".join(lines(log_path)[:-1]))
        assert main(["verify", str(log_path), "--hmac-key-env", "AUDIT_KEY", "--checkpoint", checkpoint]) == 1
        out = capsys.readouterr().out
        assert "truncated: the log ends after 7 entries, its checkpoint records 8" in out and "TAMPERED" in out
        assert main(["verify", str(log_path), "--checkpoint", checkpoint + ".missing"]) == 2


# -- 2. a keyed log rebuilt without its key --------------------------------------------------------


def rebuild_without_key(original: Path, forged: Path) -> None:
    rebuilt = AuditLog(forged)  # no key: the insider does not hold it
    for line in lines(original)[1:]:
        a = json.loads(line)["alert"]
        rebuilt.append(a | {"severity": "info"} if a["alert_id"] == "a004" else a)
    rebuilt.close()


def test_an_unkeyed_rebuild_of_a_keyed_log_is_caught(log_path: Path) -> None:
    forged = log_path.with_name("forged.audit")
    rebuild_without_key(log_path, forged)
    assert json.loads(lines(forged)[0]) == {"modwatch_audit": 1, "keyed": False}
    assert kinds(verify(forged, KEY)) == [(1, "header")], "whoever holds the key sees it"
    problems = verify(forged, None, default_checkpoint(log_path))
    assert (1, "header") in kinds(problems), "and whoever holds the keyed log's checkpoint, even without the key"
    assert "checkpoint is of a keyed log, this one is unkeyed" in " ".join(map(str, problems))


def test_a_keyed_log_is_never_intact_without_its_key(log_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert kinds(verify(log_path)) == [(1, "needs_key")]
    assert main(["verify", str(log_path)]) == 1
    assert "it cannot be called intact without its key (--hmac-key-env)" in capsys.readouterr().out
    # Rebuilt keeping the keyed header: the entries have no mac, or macs made with another key.
    forged = log_path.with_name("forged.audit")
    rebuild_without_key(log_path, forged)
    content = lines(forged)
    content[0] = lines(log_path)[0]
    forged.write_text("".join(content))
    problems = verify(forged)
    assert {p.kind for p in problems} == {"needs_key", "header", "bad_mac"}  # entry 1 no longer chains to it
    assert len([p for p in problems if p.kind == "bad_mac"]) == 8


def test_a_header_contradicted_by_the_entries_is_a_problem(log_path: Path) -> None:
    content = lines(log_path)
    content[0] = json.dumps({"modwatch_audit": 1, "keyed": False}) + "\n"  # entries carry macs
    log_path.write_text("".join(content))
    problems = verify(log_path)
    assert kinds(problems)[0] == (2, "header") and {p.kind for p in problems} == {"header"}
    log_path.write_text("".join(content[1:]))  # no header at all: entry 1 chained to one
    assert (1, "header") in kinds(verify(log_path, KEY))


def test_a_legacy_log_without_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Logs from before the header: read as keyed when their entries carry macs; continued headerless."""
    path = tmp_path / "old.audit"
    prev, out = GENESIS, []
    for n in (1, 2):
        digest = entry_hash(prev, n, alert(n))
        out.append(
            json.dumps({"seq": n, "alert": alert(n), "prev": prev, "hash": digest, "mac": entry_mac(KEY, digest)})
        )
        prev = digest
    path.write_text("\n".join(out) + "\n")
    assert verify(path, KEY) == []
    assert kinds(verify(path)) == [(1, "needs_key")]
    log = AuditLog(path, KEY)
    assert log.append(alert(3)) and "has no header" in log.notes[0]
    log.close()
    assert verify(path, KEY) == []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUDIT_KEY", KEY.decode())
        assert main(["verify", str(path), "--hmac-key-env", "AUDIT_KEY"]) == 0
    assert "warning: no header" in capsys.readouterr().out


# -- 3. repeated keys and extra fields -------------------------------------------------------------


def test_a_second_alert_key_is_found(log_path: Path) -> None:
    content = lines(log_path)
    entry = json.loads(content[4])
    fake = json.dumps({"alert": alert(4, severity="low")})[1:-1]
    content[4] = "{" + fake + ", " + content[4].strip()[1:] + "\n"  # json.loads alone would keep the real one, last
    log_path.write_text("".join(content))
    assert json.loads(content[4]) == entry
    problems = verify(log_path, KEY)
    assert kinds(problems) == [(5, "duplicate_key"), (6, "deleted")]
    assert "the key 'alert' appears twice" in str(problems[0])
    with pytest.raises(AuditError, match="line 5: duplicate_key"):
        AuditLog(log_path, KEY)


def test_an_extra_field_is_found(log_path: Path) -> None:
    content = lines(log_path)
    content[2] = json.dumps(json.loads(content[2]) | {"note": "approved by legal"}) + "\n"
    content[0] = json.dumps({"modwatch_audit": 1, "keyed": True, "by": "x"}) + "\n"
    log_path.write_text("".join(content))
    problems = verify(log_path, KEY)
    assert kinds(problems) == [(1, "unknown_field"), (2, "header"), (3, "unknown_field"), (4, "deleted")]
    assert "unknown field(s) 'by'" in str(problems[0]) and "unknown field(s) 'note'" in str(problems[2])


# -- 4. a half-written last line -------------------------------------------------------------------


def test_a_half_written_line_is_set_aside_and_auditing_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "alerts.audit"
    checkpoint = default_checkpoint(path)
    write_log(path, KEY, n=3, checkpoint=checkpoint)
    intact = path.read_bytes()
    log = AuditLog(path, KEY)
    log.append(alert(4, summary="Überweisung an 名前"))
    log.close()
    full = path.read_bytes()
    half = full[: full.index("名".encode(), len(intact)) + 1]  # the crash came mid-character
    path.write_bytes(half)
    assert kinds(verify(path, KEY, checkpoint)) == [(5, "partial")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUDIT_KEY", KEY.decode())
        assert main(["verify", str(path), "--hmac-key-env", "AUDIT_KEY"]) == 1
    assert "INCOMPLETE: a half-written last line (1 problem(s))" in capsys.readouterr().out
    log = AuditLog(path, KEY, checkpoint)
    assert log.seq == 3 and "line 5 was half-written" in log.notes[0]
    assert path.read_bytes() == intact
    aside = path.with_name("alerts.audit.partial").read_bytes().split(b"\n")
    assert aside[0].startswith(b"# ") and b"line 5 of alerts.audit" in aside[0] and aside[1] == half[len(intact) :]
    assert log.append(alert(4)) and log.append(alert(5))
    log.sync()
    log.close()
    assert verify(path, KEY, checkpoint) == []
    assert [json.loads(line)["alert"]["alert_id"] for line in lines(path)[1:]] == [
        "a001",
        "a002",
        "a003",
        "a004",
        "a005",
    ]


def test_a_complete_line_without_its_newline_is_partial(log_path: Path) -> None:
    log_path.write_bytes(log_path.read_bytes()[:-1])
    assert kinds(verify(log_path, KEY)) == [(9, "partial")]


def test_only_the_last_line_can_be_partial(log_path: Path) -> None:
    content = lines(log_path)
    log_path.write_text("".join(content) + '{"seq": 9, "alert": {"alert_id"\n')  # newline-ended, not JSON
    assert kinds(verify(log_path, KEY)) == [(10, "partial")]
    content[4] = content[4][:40] + "\n"
    log_path.write_text("".join(content))
    assert kinds(verify(log_path, KEY)) == [(5, "unreadable"), (6, "deleted")]
    with pytest.raises(AuditError, match="line 5: unreadable: not JSON: the log is damaged"):
        AuditLog(log_path, KEY)


# -- 5. alerts without an id -----------------------------------------------------------------------


def test_an_alert_without_id_is_rejected_and_counted(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "alerts.audit", KEY)
    assert log.append(alert(1))
    for bad in ({"rule_id": "x"}, {"alert_id": None}, {"alert_id": ""}, {"alert_id": 7}):
        assert not log.append(bad)
    assert not log.append(alert(1))
    log.close()
    assert log.seq == 1 and log.rejected == {"no alert_id": 4} and log.duplicates == 1
    assert "recorded 1 new alerts, skipped 1 already recorded, REJECTED 4 (no alert_id: 4)" in log.summary()
    assert len(lines(tmp_path / "alerts.audit")) == 2


# -- 6. the audit command: settings, security, checkpoint, summary ---------------------------------


def test_the_audit_command_uses_the_kafka_security_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import streams.outputs.audit as audit

    seen: dict[str, Any] = {}

    def fake_consume(bootstrap: str, topic: str, log: AuditLog, **kwargs: Any) -> int:
        seen.update(kwargs, bootstrap=bootstrap, topic=topic)
        log.append({"severity": "high"})
        log.sync()
        return 0

    monkeypatch.setattr(audit, "consume_alerts", fake_consume)
    settings = tmp_path / "modwatch.yaml"
    settings.write_text(
        "kafka:\n  security_protocol: SASL_PLAINTEXT\n  sasl_mechanism: PLAIN\n"
        "  sasl_username: auditor\n  sasl_password: s3cret\n"
    )
    out = tmp_path / "alerts.audit"
    argv = ["audit", "--output", str(out), "--bootstrap-servers", "kafka:9093", "--settings", str(settings)]
    assert main(argv) == 0
    assert seen["bootstrap"] == "kafka:9093"
    security = seen["security"]  # the settings' KafkaSecurity: consume_alerts builds its client from it
    assert security.security_protocol == "SASL_PLAINTEXT" and security.sasl_username == "auditor"
    assert security.sasl_password.get_secret_value() == "s3cret"
    assert "REJECTED 1 (no alert_id: 1)" in capsys.readouterr().err
    assert verify(out, None, default_checkpoint(out)) == []


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
    producer.send(topic, json.dumps({"rule_id": "x"}).encode())  # no alert_id
    producer.send(topic, b"{not json")
    producer.send(topic, None, key=b"tombstone")
    producer.flush()
    producer.close()
    path = tmp_path / "alerts.audit"
    log = AuditLog(path, key=b"k", checkpoint=default_checkpoint(path))
    try:
        recorded = consume_alerts(broker.bootstrap, topic, log, group=f"{unique_prefix}-audit", idle_exit=3.0)
    finally:
        log.close()
    assert recorded == 4
    assert log.rejected == {"no alert_id": 1, "not JSON": 2} and log.duplicates == 1
    assert [json.loads(line)["alert"]["alert_id"] for line in lines(path)[1:]] == ["a001", "a002", "a003", "a004"]
    assert verify(path, b"k", default_checkpoint(path)) == []


def test_modwatch_registers_audit_and_verify_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for command, example in [("audit", "modwatch audit --output"), ("verify", "modwatch verify alerts.audit")]:
        assert main([command, "--help"]) == 0
        text = capsys.readouterr().out
        assert "--checkpoint FILE" in text and example in text
