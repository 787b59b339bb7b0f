"""Context tables live: the rows a worker holds build the Context the files build; a later row
replaces its key's, a tombstone deletes it; ``modwatch context publish`` and a worker's reader
against the embedded broker, kept current after the first read."""

from __future__ import annotations

import json
import time

import pytest
from kafka import KafkaProducer

from streams.cli.main import main
from streams.inputs.context_files import load_context
from streams.live.context_tables import ContextTables, context_topics, read_context_dir
from tests.worker_harness import REPO

CONTEXT = REPO / "examples" / "context"


def _loaded(tables: ContextTables) -> ContextTables:
    for table, rows in read_context_dir(CONTEXT).items():
        for key, values in rows:
            tables.apply(table, key.encode(), json.dumps(values).encode())
    return tables


def test_rows_read_back_build_the_context_the_files_build() -> None:
    files = load_context(CONTEXT)
    live = _loaded(ContextTables("unused:0", "p.")).current()
    assert live.staff == files.staff and live.accounts == files.accounts
    assert sorted(live.tickets or (), key=lambda t: t.ticket_id) == sorted(files.tickets or (),
                                                                          key=lambda t: t.ticket_id)  # fmt: skip


def test_a_row_replaces_a_tombstone_deletes_and_a_bad_row_is_skipped() -> None:
    tables = _loaded(ContextTables("unused:0", "p."))
    before = tables.current()
    tables.apply("staff", b"ZOPLI01", json.dumps({"id": "ZOPLI01", "kind": "employee", "region": "CN"}).encode())
    after = tables.current()
    assert after is not before and after.staff is not None and after.staff["ZOPLI01"].region == "CN"
    tables.apply("staff", b"ZOPLI01", None)
    assert "ZOPLI01" not in (tables.current().staff or {})
    tables.apply("staff", b"x", b'{"id": "x", "kind": "wizard"}')
    tables.apply("staff", b"y", b"not json")
    assert tables.bad_rows == 2 and "x" not in (tables.current().staff or {})
    for key in list(tables.rows["tickets"]):
        tables.apply("tickets", key.encode(), None)
    assert tables.current().tickets is None  # an empty table is absent: not consulted, no misses


@pytest.mark.broker
def test_publish_then_a_reader_holds_the_tables_and_follows_updates(broker, unique_prefix, capsys, tmp_path) -> None:
    prefix = f"{unique_prefix}.context."
    (tmp_path / "settings.yaml").write_text("{}\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODWATCH_TOPICS__CONTEXT_PREFIX", prefix)
        mp.setenv("MODWATCH_SETTINGS", str(tmp_path / "settings.yaml"))
        assert main(["context", "publish", str(CONTEXT), "--bootstrap-servers", broker.bootstrap]) == 0
    assert f"staff: 7 rows published to {prefix}staff" in capsys.readouterr().out
    tables = ContextTables(broker.bootstrap, prefix)
    tables.start()
    try:
        assert tables.ready.wait(30)
        assert len(tables.current().staff or {}) == 7
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
        row = {"id": "new@corp.example", "kind": "employee", "region": "FR"}
        producer.send(context_topics(prefix)["staff"], key=b"new@corp.example", value=json.dumps(row).encode())
        producer.flush()
        producer.close()
        deadline = time.monotonic() + 20
        while "new@corp.example" not in (tables.current().staff or {}) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (tables.current().staff or {})["new@corp.example"].region == "FR"
    finally:
        tables.stop()
