"""Context tables live: one compacted topic per table (``<topics.context_prefix><table>``: staff,
accounts, tickets), one record per row keyed by the row's id (a ticket's ``ticket_id``), the value the
row's columns as a JSON object, as the context files give them (``streams.inputs.context_files``).

``publish_context`` (``modwatch context publish DIR``) writes a directory's tables to those topics.
``ContextTables`` is what each worker holds: every partition of every table topic read from its start
into memory by a plain consumer without a group (every worker needs the whole table, not a
partition), then kept current. Not a Faust GlobalTable: its recovery stops at the end offset
ListOffsets reports, which Tansu under-reports for batched writes (docs: KAFKA-NOTES), and the
publisher writes in batches. The rows are parsed by the same functions as the files
(``staff_row``...), and ``current()`` builds the same ``Context`` the offline commands build, so
enrichment gives the worker the values a backtest gets.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.config.kafka import BrokerError, create_topics, kafka_client
from streams.core.ruleset import ConfigError
from streams.inputs.context import Context, GeoLookup, RowError, build_context
from streams.inputs.context_files import TABLES, read_table

if TYPE_CHECKING:
    from streams.config.settings import KafkaSecurity

log = logging.getLogger(__name__)

TABLE_NAMES = tuple(TABLES)  # staff, accounts, tickets
IDLE_SECONDS = 1.0  # a table topic silent this long (no end known from a fetch) counts as read
RETRY_SECONDS = 2.0


def context_topics(prefix: str) -> dict[str, str]:
    """table -> its topic."""
    return {table: prefix + table for table in TABLE_NAMES}


def create_context_topics(bootstrap: str, prefix: str, *, security: KafkaSecurity | None = None,
                          timeout: float = 30.0) -> list[str]:  # fmt: skip
    """Create the table topics that do not exist yet, compacted, one partition each (a table is read
    whole by every worker: partitions buy nothing). Returns those created."""
    names = list(context_topics(prefix).values())
    return create_topics(bootstrap, dict.fromkeys(names, 1), security=security, timeout=timeout,
                         topic_configs={"cleanup.policy": "compact"})


def row_key(table: str, row: Any) -> str:
    return str(row.ticket_id if table == "tickets" else row.id)


def read_context_dir(directory: str | os.PathLike[str]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Each table of ``directory`` found as a file: [(key, the row's columns)], every row checked by
    the table's parser (a bad one is a ConfigError naming file, line and column)."""
    base = Path(directory)
    if not base.is_dir():
        raise ConfigError(f"{base}: no such context directory")
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for table, (parse, required) in TABLES.items():
        found = [p for p in (base / f"{table}.csv", base / f"{table}.jsonl") if p.exists()]
        if len(found) > 1:
            raise ConfigError(f"{base}: both {table}.csv and {table}.jsonl; keep one")
        if found:

            def keyed(values: dict[str, Any], table: str = table, parse: Any = parse) -> tuple[str, dict[str, Any]]:
                return row_key(table, parse(values)), {k: v for k, v in values.items() if v not in ("", None)}

            out[table] = list(read_table(found[0], keyed, required))
    return out


def publish_context(directory: str | os.PathLike[str], bootstrap: str, prefix: str, *,
                    security: KafkaSecurity | None = None, dry_run: bool = False,
                    timeout: float = 60.0) -> dict[str, int]:  # fmt: skip
    """Write the tables of ``directory`` to their topics (created when missing), one record per row
    keyed by its id; returns rows per table. With ``dry_run``, only read and check them."""
    tables = read_context_dir(directory)
    counts = {table: len(rows) for table, rows in tables.items()}
    if dry_run:
        return counts
    create_context_topics(bootstrap, prefix, security=security)
    topics = context_topics(prefix)
    producer = kafka_client(KafkaProducer, bootstrap, security, client_id="modwatch-context-publish", acks="all")
    try:
        for table, rows in tables.items():
            for key, values in rows:
                value = json.dumps(values, sort_keys=True, ensure_ascii=False).encode("utf-8")
                producer.send(topics[table], key=key.encode("utf-8"), value=value)
        producer.flush(timeout)
    finally:
        producer.close(timeout)
    return counts


class ContextTables:
    """The context tables as every worker holds them (module docstring). ``start`` begins reading in a
    thread; ``ready`` is set once each topic was read to its end; ``current()`` is the Context now."""

    def __init__(self, bootstrap: str, prefix: str, *, security: KafkaSecurity | None = None,
                 geoip: GeoLookup | None = None, idle_seconds: float = IDLE_SECONDS) -> None:  # fmt: skip
        self.bootstrap, self.security, self.geoip, self.idle_seconds = bootstrap, security, geoip, idle_seconds
        self.topics = context_topics(prefix)
        self.rows: dict[str, dict[str, Any]] = {table: {} for table in TABLE_NAMES}
        self.bad_rows = 0
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._context: Context | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="modwatch-context", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def current(self) -> Context:
        """The tables as read so far (an empty table is absent: not consulted, no misses)."""
        with self._lock:
            if self._context is None:
                staff, accounts, tickets = (list(self.rows[t].values()) or None for t in TABLE_NAMES)
                self._context = build_context(staff, accounts, tickets, self.geoip)
            return self._context

    def apply(self, table: str, key: bytes | None, value: bytes | None) -> None:
        """One record of a table topic: a row (replacing its key's) or a tombstone (deleting it)."""
        if key is None:
            self.bad_rows += 1
            return
        name = key.decode("utf-8", errors="replace")
        row = None
        if value is not None:
            try:
                values = json.loads(value)
                if not isinstance(values, dict):
                    raise RowError("(row)", "expected a JSON object")
                row = TABLES[table][0](values)
            except (ValueError, RowError) as exc:  # JSONDecodeError is a ValueError
                self.bad_rows += 1
                log.warning("context: a %s row not used: %s", table, exc)
                return
        with self._lock:
            if row is None:
                self.rows[table].pop(name, None)
            else:
                self.rows[table][name] = row
            self._context = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
                return
            except Exception as exc:  # the broker gone, a topic missing: try again, the worker goes on
                log.error("context: reading the table topics failed (%s); again in %g s", exc, RETRY_SECONDS)
                self._stop.wait(RETRY_SECONDS)

    def _follow(self) -> None:
        consumer = kafka_client(KafkaConsumer, self.bootstrap, self.security, client_id="modwatch-context",
                                group_id=None, enable_auto_commit=False, auto_offset_reset="earliest")  # fmt: skip
        try:
            table_of = {topic: table for table, topic in self.topics.items()}
            assigned = [TopicPartition(topic, p) for topic in table_of
                        for p in sorted(consumer.partitions_for_topic(topic) or ())]  # fmt: skip
            missing = set(table_of) - {tp.topic for tp in assigned}
            if missing:
                raise BrokerError(f"no topic {', '.join(sorted(missing))}")
            consumer.assign(assigned)
            consumer.seek_to_beginning(*assigned)
            last = time.monotonic()
            while not self._stop.is_set():
                for tp, records in consumer.poll(timeout_ms=200).items():
                    for record in records:
                        self.apply(table_of[tp.topic], record.key, record.value)
                    last = time.monotonic()
                if not self.ready.is_set() and (self._caught_up(consumer, assigned)
                                                or time.monotonic() - last > self.idle_seconds):  # fmt: skip
                    counts = ", ".join(f"{t} {len(self.rows[t])}" for t in TABLE_NAMES)
                    log.info("context tables read: %s rows", counts)
                    self.ready.set()
        finally:
            consumer.close()

    @staticmethod
    def _caught_up(consumer: Any, assigned: list[TopicPartition]) -> bool:
        """Every partition read to the high watermark its last fetch reported (not ListOffsets)."""
        for tp in assigned:
            high = consumer.highwater(tp)
            if high is None or consumer.position(tp) < high:
                return False
        return True


async def wait_ready(tables: ContextTables, timeout: float, sleep: Callable[[float], Any]) -> bool:
    """Wait (``await sleep(...)`` steps) until the tables are read; False after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not tables.ready.is_set():
        if time.monotonic() >= deadline:
            return False
        await sleep(0.05)
    return True


__all__ = ["ContextTables", "context_topics", "create_context_topics", "publish_context", "wait_ready"]
