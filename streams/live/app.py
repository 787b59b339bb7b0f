"""create_app(settings) -> faust.App: wiring only. The logic is in ``streams/live/pipeline.py``.

Topics: the input topics (``settings.topics.events``), the internal keyed topic and its table's
changelog (both ``settings.topics.partitions`` partitions), the alerts and dead-letter topics, and
for incidents (``streams/live/incidents_stage.py``) the internal incident feed and the ``incidents``
table's changelog (one partition each) and the incidents topic.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
import mode
from faust.serializers import codecs
from faust.types import TP, EventT

from streams.config.settings import Settings
from streams.core.alerts import Alert
from streams.core.decode import Limits
from streams.core.engine import Engine
from streams.core.incident_config import IncidentsConfig
from streams.core.incidents import IncidentUpdate
from streams.core.ruleset import RuleSet
from streams.live.changelog import Change, changelog_records
from streams.live.context_tables import ContextTables, wait_ready
from streams.live.faust_ext.consumer import Consumer as ModwatchConsumer
from streams.live.faust_ext.settings import App, CommitHook
from streams.live.faust_ext.store import SCHEME as STORE_SCHEME
from streams.live.faust_ext.store import register as register_store
from streams.live.faust_ext.transport import broker_urls
from streams.live.faust_ext.transport import register as register_transport
from streams.live.incidents_stage import SNAPSHOT_KEY, IncidentStage, alert_record, feed_topic, mark_record
from streams.live.pipeline import Evaluator, Router
from streams.live.raw_inputs import Normalizer, resolve_raw_inputs
from streams.live.wire import Outgoing, bundle
from streams.outputs.metrics import Health
from streams.outputs.sinks import SinkSet

log = logging.getLogger(__name__)

BATCH = 1000  # records per batch at most, in each agent
BATCH_WITHIN = 0.02  # seconds a batch waits to fill: at a trickle, each agent adds this much latency
# Bytes of a producer batch (per partition). aiokafka keeps one produce request in flight per broker,
# and a record that finds its partition's batch full waits for that request's round trip: with
# Faust's 16 KiB, a batch's state changes (~100 records at 2,000 events/s) waited so, 12-30 ms a batch.
PRODUCER_BATCH_BYTES = 256 * 1024
# Most bytes of event records packed into one keyed-topic record (``wire.bundle``): ~350 events
# of ~700 bytes, well inside a produce request (``producer_max_request_size``, 1 MB).
BUNDLE_BYTES = 256 * 1024
RecordHeaders = list[tuple[str, bytes]]
CENSUS_SHARE = 0.02  # the most of the worker's time that counting its state for the metrics may take
CONTEXT_WAIT = 60.0  # seconds routing waits at start for the context tables to be read, then goes on
RECORD_OVERHEAD = 1024  # bytes of a changelog record besides its key and value (headers, batch framing)
FREEZE_AFTER = 10.0  # seconds after start: the objects made by then are exempt from garbage collection
TABLE_SERIALIZER = "json"  # Faust's for a table without key or value types: its changelog's format
# What ``standby_replicas`` above 0 trades. Each worker keeps a copy of as many peers' state
# partitions, reading their changelogs as they are written (Faust's standby recovery, through the
# worker's fetch loop): CPU on every worker all the time. In exchange, a worker taking a partition
# over reads back only what its copy lacks (``streams.live.faust_ext.store``), not the whole changelog.
STANDBY_NOTE = (
    "standby_replicas is %d: each worker keeps copies of its peers' state partitions, reading their "
    "changelogs as they are written (CPU on every worker), so that taking a partition over reads back "
    "only what its copy lacks; 0 is the default"
)


@dataclass
class Runtime:
    """What the agents share: built once per worker process."""

    app: faust.App
    engine: Engine
    router: Router
    evaluator: Evaluator
    sinks: SinkSet
    health: Health
    topics: dict[str, Any] = field(default_factory=dict)
    context: ContextTables | None = None  # with raw inputs
    incidents: IncidentStage | None = None


def _faust_settings(settings: Settings) -> dict[str, Any]:
    sec = settings.kafka
    extra: dict[str, Any] = {}
    if sec.security_protocol != "PLAINTEXT":
        from streams.config.kafka import faust_credentials

        extra["broker_credentials"] = faust_credentials(sec)
    return {
        # Faust's aiokafka transport with modwatch's consumer (``streams.live.faust_ext.transport``)
        "broker": broker_urls(settings.bootstrap_servers),
        "store": f"{STORE_SCHEME}://",  # Faust's in-memory store that reports its changelog offsets
        # Faust's check that a store's offset is not past the changelog's end. Here it could only fail
        # when the end is under-reported (Tansu's ListOffsets, when the Fetch that corrects it fails:
        # ``streams.live.faust_ext.consumer.ConsumerThread._highwaters``), and failing stops the worker;
        # unchecked, that partition just has nothing left to read.
        "recovery_consistency_check": False,
        "topic_partitions": settings.topics.partitions,
        "topic_replication_factor": 1,
        "broker_session_timeout": settings.session_timeout_seconds,
        "broker_heartbeat_interval": settings.heartbeat_seconds,
        "table_standby_replicas": settings.standby_replicas,
        "producer_max_batch_size": PRODUCER_BATCH_BYTES,
        "processing_guarantee": "at_least_once",  # Tansu has no transactions; duplicates are handled
        "web_host": "127.0.0.1",
        "web_port": settings.web_port or 6066,  # Faust validates the port even when the server is off
        "web_bind": "127.0.0.1",
        "web_enabled": settings.web_port != 0,
        "datadir": settings.data_dir,
        "value_serializer": "raw",
        "key_serializer": "raw",
        **extra,
    }


def _logged(store: Any, tp: TP, sent: asyncio.Future[Any]) -> None:
    """A changelog record of ``tp`` was acknowledged: the store's data reaches its offset."""
    if not sent.cancelled() and sent.exception() is None:
        store.set_persisted_offset(tp, sent.result().offset)


def _committed(consumer: Any, tp: TP) -> int | None:
    """The offset Faust last committed for ``tp``: Kafka's "next to read" (last processed + 1), as a
    high watermark is. Faust keeps it but has no public accessor."""
    committed: int | None = consumer._committed_offset.get(tp)
    return committed


def _partition_count(app: faust.App, topic: str) -> int:
    """Partitions of ``topic`` in the consumer's cluster metadata (0 if unknown). Not Faust's
    ``consumer.topic_partitions``: that reads the group leader's assignment snapshot, which is empty
    on every other member."""
    try:
        client = app.consumer._thread._ensure_consumer()  # type: ignore[attr-defined]  # the aiokafka consumer
        return len(client.partitions_for_topic(topic) or ())
    except Exception:  # not started, or another transport: fall back to what Faust knows
        return int(app.consumer.topic_partitions(topic) or 0)


def batches(stream: faust.StreamT) -> AsyncIterator[Sequence[EventT]]:
    """The stream's events in lists of up to ``BATCH``, each within ``BATCH_WITHIN`` s. A list's
    events are acked when the next list is asked for: after the caller handed its records to the
    producer, which Faust flushes before it commits offsets (at least once). Its state changes are
    handed over then too, or at the latest when the offsets are chosen for a commit
    (``streams.live.faust_ext.consumer.Consumer._commit_tps``)."""
    return stream.take_events(BATCH, within=BATCH_WITHIN)  # type: ignore[attr-defined]  # not on StreamT


def create_app(settings: Settings, ruleset: RuleSet, faust_options: Mapping[str, Any] | None = None,
               incidents: IncidentsConfig | None = None) -> Runtime:  # fmt: skip
    """``faust_options``: Faust settings laid over ``_faust_settings``, such as the consumer's own
    (``streams.live.faust_ext.settings.Settings``: ``fetch_max_wait_ms``, ``fast_delivery``,
    ``wake_on_buffer_drop``). ``incidents``: default, ``incidents.yaml`` of the rules directory."""
    if settings.standby_replicas:
        log.info(STANDBY_NOTE, settings.standby_replicas)
    register_store()
    register_transport()
    app = App(settings.app_id, **{**_faust_settings(settings), **(faust_options or {})})
    partitions = settings.topics.partitions
    key = settings.pseudonymize_key.get_secret_value().encode() if settings.pseudonymize_key else None
    engine = Engine(ruleset, lateness=settings.lateness_seconds, pseudonymize=key)
    health = Health()
    raw_inputs = resolve_raw_inputs(settings)
    raw_topics = [item.topic for item in raw_inputs]
    topics = {
        "input": app.topic(*settings.topics.input_topics(), *raw_topics, value_serializer="raw", key_serializer="raw"),
        "keyed": app.topic(
            settings.topics.keyed, partitions=partitions, value_serializer="raw", key_serializer="raw", internal=True
        ),
        "alerts": app.topic(settings.topics.alerts, value_serializer="raw", key_serializer="raw"),
        "deadletter": app.topic(settings.topics.deadletter, value_serializer="raw", key_serializer="raw"),
        "feed": app.topic(
            feed_topic(settings.app_id), partitions=1, value_serializer="raw", key_serializer="raw", internal=True
        ),
    }
    table = app.Table("state", default=None, partitions=partitions)  # json keys and values
    if incidents is None:
        from streams.config.loader import load_incidents

        incidents = load_incidents(settings.rules_dir)
    incidents_table = app.Table("incidents", default=None, partitions=1)  # the stage's snapshot
    limits = Limits(max_bytes=settings.max_record_bytes)
    context: ContextTables | None = None
    normalizer: Normalizer | None = None
    if raw_inputs:
        # Raw records are mapped and enriched in the routing stage with the same functions as offline.
        geoip = None
        if settings.geoip_database:
            from streams.inputs.context_files import open_geoip

            geoip = open_geoip(settings.geoip_database)
        context = ContextTables(settings.bootstrap_servers, settings.topics.context_prefix, security=settings.kafka,
                                geoip=geoip)  # fmt: skip
        normalizer = Normalizer(raw_inputs, limits, context.current, health)
    router = Router(
        engine, settings.topics.keyed, settings.topics.deadletter, partitions, limits,
        idle_seconds=settings.idle_source_seconds, health=health, normalizer=normalizer,
    )  # fmt: skip
    # The engine works on the table's local storage; the agent logs each changed key once per batch.
    evaluator = Evaluator(engine, table.data, partitions, health)
    sinks = SinkSet.from_settings(settings, health)
    stage = IncidentStage(incidents, partitions, health)
    runtime = Runtime(app, engine, router, evaluator, sinks, health, topics, context, stage)
    input_names = set(settings.topics.input_topics()) | set(raw_topics)
    feed_name = topics["feed"].get_topic_name()
    incidents_changelog = incidents_table.changelog_topic.get_topic_name()
    owned_keyed: set[int] = set()  # keyed partitions this worker evaluates (``on_assigned``)
    marked: dict[int, float] = {}  # keyed partition -> the last watermark put on the incident feed
    keyed_name = topics["keyed"].get_topic_name()
    changelog = table.changelog_topic.get_topic_name()

    # Records go to the producer directly, not through ``topic.send()``: Faust's send yields to the
    # event loop on every call (``maybe_start_producer`` is a stampede, which sleeps first), and at
    # each yield aiokafka's sender ships what it holds, so a batch went out as one produce request
    # per record. Without the yields a batch's records leave together. The producer is started
    # before the agents and the timers run.
    async def produce(topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
                      timestamp: float | None = None,
                      headers: RecordHeaders | None = None) -> Awaitable[Any]:  # fmt: skip
        """Hands the record to the producer; returns what resolves to its acknowledgement."""
        return await app.producer.send(topic, key, value, partition, timestamp, headers)

    async def send(record: Outgoing) -> None:
        await produce(record.topic, record.key, record.value, record.partition, record.timestamp, list(record.headers))

    async def publish(alerts: list[Alert]) -> None:
        for alert in alerts:
            await produce(
                settings.topics.alerts, alert.alert_id.encode(), alert.to_json().encode(), None, alert.last_seen,
                [("rule_id", alert.rule_id.encode()), ("severity", alert.severity.label.encode())],
            )  # fmt: skip
            if stage.wants(alert):
                await produce(feed_name, *alert_record(alert), 0, alert.last_seen)
            sinks.deliver(alert)

    def table_dumps(obj: Any) -> bytes:
        return codecs.dumps(TABLE_SERIALIZER, obj)

    async def log_changes(changes: list[Change]) -> None:
        """Each changed key's value to its changelog partition, serialised as the table would
        (a deleted key is a tombstone, as Faust's own ``del table[key]`` sends); a value over the
        producer's record size is left out (``changelog_records`` says why)."""
        limit = app.conf.producer_max_request_size - RECORD_OVERHEAD
        last: dict[int, Awaitable[Any]] = {}  # partition -> its last record's acknowledgement
        for key, value, partition in changelog_records(changes, table_dumps, limit, health):
            last[partition] = await produce(changelog, key, value, partition)
        # The store's offset for each partition (``streams.live.faust_ext.store``): a partition's records are
        # acknowledged in order, so its last record's offset covers the others.
        for partition, sent in last.items():
            reached = functools.partial(_logged, table.data, TP(changelog, partition))
            asyncio.ensure_future(sent).add_done_callback(reached)

    # One batch at a time, whichever agent runs it: both change the state, and a batch's changes
    # must all be in the producer before its offsets are acked. Unlocked, ``evaluate``
    # could flush (and still be sending) a key that ``route`` changed, while ``route`` moved on and
    # acked the input records behind it.
    batch_lock = asyncio.Lock()

    async def finish(alerts: list[Alert]) -> None:
        await publish(alerts)  # before the state that remembers them: a crash repeats, never loses
        await log_changes(evaluator.flush())

    # The state is logged at each offset commit, not at every batch (``Consumer._commit_tps``), when
    # the app's consumer is modwatch's; on another transport, every change at every batch.
    async def before_commit() -> None:
        router.logging_state()
        await log_changes(evaluator.flush(commit=True))

    def after_commit(offsets: dict[TP, int]) -> None:
        router.state_logged()

    app.modwatch_commit = CommitHook(batch_lock, before_commit, after_commit)
    evaluator.defer = router.report_committed = issubclass(app.transport.Consumer, ModwatchConsumer)

    @app.agent(topics["input"], name="route")
    async def route(stream: faust.StreamT) -> None:
        # In batches, as ``evaluate``: a batch's records reach the producer together.
        # The records for other workers' keyed partitions leave at the end of the batch, a
        # partition's packed together (``bundle``; ``bundle_keyed_records: false`` sends them one by one).
        # With raw inputs, the context tables are read first: an event enriched from half a table
        # would not be the event a backtest sees.
        if context is not None and not await wait_ready(context, CONTEXT_WAIT, asyncio.sleep):
            log.warning("context tables not read within %g s: routing goes on with what is read", CONTEXT_WAIT)
        async for batch in batches(stream):
            async with batch_lock:
                alerts: list[Alert] = []
                outgoing: list[Outgoing] = []
                for event in batch:
                    msg = event.message
                    for item in router.on_record(msg.topic, msg.partition, msg.offset, msg.key, msg.value,
                                                 msg.headers):  # fmt: skip
                        if isinstance(item, Outgoing):
                            outgoing.append(item)
                        else:
                            alerts.extend(evaluator.on_local(item))
                alerts.extend(router.take_raised())  # integrity alerts: an event id reused with other content
                if settings.bundle_keyed_records:
                    outgoing = bundle(outgoing, keyed_name, BUNDLE_BYTES)
                for record in outgoing:
                    await send(record)
                await finish(alerts)

    @app.agent(topics["keyed"], name="evaluate")
    async def evaluate(stream: faust.StreamT) -> None:
        # In batches: a key that several records of a batch change is logged once, with its last value.
        async for batch in batches(stream):
            async with batch_lock:
                alerts: list[Alert] = []
                for event in batch:
                    msg = event.message
                    alerts.extend(evaluator.on_record(msg.partition, msg.value, msg.headers))
                await finish(alerts)

    async def publish_incidents(updates: list[IncidentUpdate]) -> None:
        for update in updates:
            incident = update.incident
            await produce(
                settings.topics.incidents, incident.incident_id.encode(), incident.to_json().encode(), None,
                incident.last_seen, [("change", update.change.encode()), ("revision", str(incident.revision).encode())],
            )  # fmt: skip
            sinks.deliver_incident(update)

    @app.agent(topics["feed"], name="incidents")
    async def incidents_agent(stream: faust.StreamT) -> None:
        # One partition, one worker: every alert of the group through one incident engine
        # (``streams.live.incidents_stage``). Its state is one table value, logged after each batch
        # and before the batch's offsets are committed: a restart repeats updates, never loses them.
        async for batch in batches(stream):
            if not stage.loaded:
                stage.restore(incidents_table.data.get(SNAPSHOT_KEY))
            for event in batch:
                stage.on_record(event.message.value, event.message.headers)
            await publish_incidents(stage.release())
            snapshot = stage.snapshot()
            incidents_table.data[SNAPSHOT_KEY] = snapshot
            sent = await produce(incidents_changelog, table_dumps(SNAPSHOT_KEY), table_dumps(snapshot), 0)
            reached = functools.partial(_logged, incidents_table.data, TP(incidents_changelog, 0))
            asyncio.ensure_future(sent).add_done_callback(reached)

    @app.timer(interval=settings.tick_seconds)
    async def mark_watermarks() -> None:
        """Each evaluated keyed partition's watermark to the incident feed when it moved: after the
        alerts it raised below it (the batch lock: no batch is half published)."""
        async with batch_lock:
            for partition in sorted(owned_keyed):
                shard = evaluator.shards.get(partition)
                if shard is None:
                    continue
                watermark = engine.watermark(shard)
                if watermark > marked.get(partition, float("-inf")):
                    marked[partition] = watermark
                    key, value, headers = mark_record(partition, watermark)
                    await produce(feed_name, key, value, 0, None, headers)

    def caught_up(source: str, next_offset: int | None) -> bool:
        """Whether this worker has read every record of an input partition, as far as it knows (the
        high watermark of its last fetch): a silent partition with records left is not idle."""
        topic, _, partition = source.rpartition(":")
        tp = TP(topic, int(partition))
        try:
            high = app.consumer.highwater(tp)
            if next_offset is None:  # nothing read since the assignment: from the committed offset
                next_offset = _committed(app.consumer, tp) or 0
        except Exception:  # not assigned (mid-rebalance) or not running: unknown, so not idle
            return False
        return high is not None and next_offset >= high

    @app.timer(interval=settings.tick_seconds)
    async def tick() -> None:
        # Through the keyed topic even for the partitions evaluated in place (``Router``'s docstring
        # says why); sent ticks are only applied by ``evaluate``, so never during a recovery.
        # Under the batch lock: a tick must not reach a keyed partition before the events of the
        # batch being routed, which leave at its end (their sources' event times are in the tick).
        async with batch_lock:
            for record in router.tick(caught_up):
                await send(record)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, assigned: Any = None, **kwargs: Any) -> None:
        # Streams resume only after the table is recovered; shards are rebuilt on first use.
        health.rebalances += 1
        owned = {f"{tp.topic}:{tp.partition}" for tp in assigned or () if tp.topic in input_names}
        every = {f"{name}:{p}" for name in input_names for p in range(_partition_count(app, name))}
        log.info("assigned %d of %d input partitions", len(owned), len(every | owned))
        router.assign(owned)
        evaluator.expect(every | owned)
        evaluator.reset()
        keyed = {tp.partition for tp in assigned or () if tp.topic == keyed_name}
        owned_keyed.clear()
        owned_keyed.update(keyed)
        marked.clear()
        stage.loaded = False  # read back from the (recovered) table at its next batch
        dropped = evaluator.keep_partitions(keyed)
        if dropped:
            log.warning("forgot %d unlogged state changes of keyed partitions now owned by another worker "
                        "(it reads them again from the committed offsets)", dropped)  # fmt: skip
        # Standby copies' keys stay: Faust reads them into the store (``streams.live.faust_ext.store``).
        standby = {tp.partition for tp in app.assignor.assigned_standbys() if tp.topic == changelog}
        deleted = evaluator.forget_partitions(keyed | standby)
        if deleted:
            log.info("dropped %d state keys of keyed partitions now held by other workers", deleted)
        if settings.local_evaluation:
            router.evaluate_locally(keyed)
            log.info("evaluating %d of %d keyed partitions in place", len(keyed), partitions)

    census_due = 0.0  # monotonic time of the next count of the state (``Evaluator.census``)

    @app.timer(interval=5.0)
    async def sample_health() -> None:
        """Consumer lag and commit progress from the offsets Faust already tracks (fetch high
        watermarks, not ListOffsets: Tansu under-reports the latter), and state size.

        The state is counted in slices, and after each the agents get at least as long as it took
        (a bare yield let them run one step: at 2,000 events/s, a count of ~150,000 keys held them
        off for ~400 ms, and the events behind it waited). No more often than keeps its cost under
        ``CENSUS_SHARE`` of the worker's time: a million keys take seconds."""
        nonlocal census_due
        consumer = app.consumer
        end: dict[str, int] = {}
        committed: dict[str, int] = {}
        for tp in consumer.assignment():
            if tp.topic not in input_names:
                continue
            high = consumer.highwater(tp)
            # Both "next to read": no +1 here (it over-counted by one per partition and hid a lag of one).
            done = _committed(consumer, tp)
            end[tp.topic] = end.get(tp.topic, 0) + (high or 0)
            committed[tp.topic] = committed.get(tp.topic, 0) + (done or 0)
        health.record_offsets(end, committed)
        started = time.monotonic()
        if started >= census_due:
            busy = 0.0
            slices = evaluator.census()
            while True:
                before = time.perf_counter()
                finished = next(slices, True)  # the generator yields None after each slice
                took = time.perf_counter() - before
                busy += took
                if finished:
                    break
                await asyncio.sleep(took)
            census_due = started + busy / CENSUS_SHARE

    @app.task
    async def freeze_startup_objects() -> None:
        """Exempt the objects made at start-up (modules, functions, classes, Faust's services) from
        Python's cyclic garbage collection: with the state packed (``Shard``), they were most of
        the ~100,000 objects each full collection walked, 58-85 ms at a time. They live as long as
        the worker; one that a rebalance replaces is still freed by its reference count, unless it
        is in a reference cycle (then it stays, once)."""
        await asyncio.sleep(FREEZE_AFTER)
        gc.collect()  # what is garbage already goes first
        gc.freeze()
        log.info("%d start-up objects exempt from garbage collection", gc.get_freeze_count())

    @app.service
    class SinkService(mode.Service):
        """Starts the sinks' senders with the app and, on shutdown, gives queued alerts a few
        seconds to go out before the senders are cancelled."""

        async def on_start(self) -> None:
            if context is not None:
                context.start()
            await sinks.start()

        async def on_stop(self) -> None:
            if context is not None:
                context.stop()
            await sinks.stop()

    return runtime
