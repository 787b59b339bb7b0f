"""The Router's raw path without a broker: a raw record is mapped (and enriched) and its events routed
exactly as contract events; dropped actions are counted per input and action; a record that cannot be
mapped is a dead letter of the raw bytes with its reason."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from streams.config.loader import load_rules
from streams.config.settings import RawInput as RawInputSetting
from streams.config.settings import Settings
from streams.core.decode import Decoded, Limits
from streams.core.engine import Engine
from streams.core.events import ModerationAction
from streams.core.ruleset import ConfigError
from streams.inputs import load_mappings, resolve_inputs_dir
from streams.inputs.context import Context
from streams.inputs.context_files import load_context
from streams.live.pipeline import Router
from streams.live.raw_inputs import Normalizer, RawInput, resolve_raw_inputs
from streams.live.wire import LocalEvent, Outgoing
from streams.outputs.metrics import Health, ModwatchCollector
from tests.worker_harness import REPO

MAPPINGS = load_mappings(resolve_inputs_dir(None))
OKTA = (REPO / "examples" / "raw" / "okta.jsonl").read_text().splitlines()
PARTITIONS = 2


def _router(context: Context | None = None, local: bool = False) -> tuple[Router, Health]:
    health = Health()
    engine = Engine(load_rules(REPO / "config"))
    raw = [RawInput("okta", "raw.okta", MAPPINGS["okta"])]
    normalizer = Normalizer(raw, Limits(), (lambda: context) if context else None, health)
    router = Router(engine, "keyed", "dead", PARTITIONS, Limits(), health=health, normalizer=normalizer)
    if local:
        router.evaluate_locally(set(range(PARTITIONS)))
    return router, health


def _contract_router() -> Router:
    return Router(Engine(load_rules(REPO / "config")), "keyed", "dead", PARTITIONS, Limits())


def test_a_mapped_record_is_routed_as_its_contract_event() -> None:
    router, health = _router()
    line = OKTA[1]  # user.lifecycle.suspend
    work = router.on_record("raw.okta", 0, 7, b"k", line.encode(), [("source", b"okta")])
    (mapped,) = MAPPINGS["okta"].map(json.loads(line), "okta")
    # The same records as the contract event read from an input topic: value, partitions, headers.
    contract = _contract_router().on_record("raw.okta", 0, 7, None, mapped.line.encode())  # type: ignore[union-attr]
    sent = [w for w in work if isinstance(w, Outgoing)]
    assert sent and len(sent) == len(work)
    strip = [(w.topic, w.value, w.partition, w.timestamp, [h for h in w.headers if h[0] != "mw-arrival"])
             for w in sent]  # fmt: skip
    expect = [(w.topic, w.value, w.partition, w.timestamp, [h for h in w.headers if h[0] != "mw-arrival"])
              for w in contract if isinstance(w, Outgoing)]  # fmt: skip
    assert strip == expect
    assert json.loads(sent[0].value)["source"]["input"] == "okta"
    assert health.inputs["okta"].normalized == 1
    assert router.sources["raw.okta:0"] == mapped.ts  # type: ignore[union-attr]  # the mapped event time


def test_a_local_event_is_the_decoded_contract_event() -> None:
    router, _ = _router(local=True)
    work = router.on_record("raw.okta", 0, 0, None, OKTA[1].encode())
    assert work and all(isinstance(w, LocalEvent) for w in work)
    assert isinstance(work[0], LocalEvent) and isinstance(work[0].decoded, Decoded)
    assert work[0].decoded.event.event_type == "account.suspend"
    assert router.on_record("raw.okta", 0, 1, None, OKTA[1].encode()) == []  # a redelivery: admitted once
    assert router.duplicates == 1


def test_a_dropped_action_is_counted_not_dead_lettered() -> None:
    router, health = _router()
    session = OKTA[0]  # user.session.start: not mapped
    assert router.on_record("raw.okta", 0, 0, None, session.encode()) == []
    other = json.dumps({**json.loads(session), "eventType": "user.session.end"})
    assert router.on_record("raw.okta", 0, 1, None, other.encode()) == []
    stats = health.inputs["okta"]
    assert stats.dropped == {"other": 2}  # neither is in the mapping's list: bounded labels
    assert not router.dead or sum(router.dead.values()) == 0


@pytest.mark.parametrize(
    ("value", "reason"),
    [(b"{not json", "invalid_json"), (b'"text"', "not_object"), (b'{"uuid":"x","eventType":"user.lifecycle.suspend"}',
                                                                    "missing_time")],
)  # fmt: skip
def test_a_record_that_cannot_be_mapped_is_a_dead_letter(value: bytes, reason: str) -> None:
    router, health = _router()
    (dead,) = router.on_record("raw.okta", 0, 3, b"key", value, [("source", b"okta")])
    assert isinstance(dead, Outgoing) and dead.topic == "dead"
    assert dead.value == value and dead.key == b"key"  # the raw record as read
    headers = dict(dead.headers)
    assert headers["mw-dl-reason"] == reason.encode()
    assert headers["mw-dl-topic"] == b"raw.okta" and headers["mw-dl-offset"] == b"3"
    assert headers["mw-dl-detail"].startswith(b"okta: ")
    assert health.inputs["okta"].rejected[reason] == 1
    assert health.dead_letters[reason] == 1


def test_context_enriches_and_misses_are_counted() -> None:
    ctx = load_context(REPO / "examples" / "context")
    router, health = _router(ctx, local=True)
    (work,) = router.on_record("raw.okta", 0, 1, None, OKTA[1].encode())
    assert isinstance(work, LocalEvent)
    event = work.decoded.event
    assert isinstance(event, ModerationAction)
    assert event.target.region == "US"  # spam-ring@example.net, from accounts
    assert event.ticket_id == "TS-1088"  # assigned to 00uTS01's person
    unknown = json.loads(OKTA[1])
    unknown["actor"]["alternateId"] = "nobody@corp.example"
    unknown["uuid"] = "other"
    router.on_record("raw.okta", 0, 2, None, json.dumps(unknown).encode())
    assert health.inputs["okta"].context_misses["staff"] == 1


def test_input_metrics_are_exported_with_bounded_labels() -> None:
    router, health = _router()
    router.on_record("raw.okta", 0, 0, None, OKTA[0].encode())
    router.on_record("raw.okta", 0, 1, None, OKTA[1].encode())
    router.on_record("raw.okta", 0, 2, None, b"[")
    registry = CollectorRegistry()
    registry.register(ModwatchCollector(router.engine, health, live=True))
    value: Any = registry.get_sample_value
    assert value("modwatch_input_events_normalized_total", {"input": "okta"}) == 1
    assert value("modwatch_input_records_dropped_total", {"input": "okta", "action": "other"}) == 1
    assert value("modwatch_input_records_rejected_total", {"input": "okta", "reason": "invalid_json"}) == 1
    assert value("modwatch_input_records_rejected_total", {"input": "okta", "reason": "missing_time"}) == 0
    assert value("modwatch_input_context_misses_total", {"input": "okta", "table": "staff"}) == 0


def test_the_inputs_setting_is_checked_against_the_mappings() -> None:
    settings = Settings(inputs=[RawInputSetting(mapping="okta"), RawInputSetting(mapping="zoom-webhook", topic="z")])
    resolved = resolve_raw_inputs(settings)
    assert [(r.name, r.topic) for r in resolved] == [("okta", "modwatch.raw.okta"), ("zoom-webhook", "z")]
    with pytest.raises(ConfigError, match=r"inputs\.0\.mapping: no input mapping 'nope'"):
        resolve_raw_inputs(Settings(inputs=[RawInputSetting(mapping="nope")]))
    with pytest.raises(ValueError, match="given twice"):
        Settings(inputs=[RawInputSetting(mapping="okta"), RawInputSetting(mapping="okta", topic="x")])
