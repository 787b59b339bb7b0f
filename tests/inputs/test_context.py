"""Context joins (streams/inputs/context.py): each table's hits and misses, ticket windows, several
identities of one person, geo-IP from a tiny MaxMind database, and enriched events decoding again."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from streams.core.decode import Decoded, decode
from streams.inputs.context import (
    UNKNOWN_ACTOR,
    UNKNOWN_GRANTEE,
    UNKNOWN_TARGET,
    Account,
    ContextStats,
    RowError,
    Staff,
    Ticket,
    account_row,
    build_context,
    enrich,
    enrich_mapped,
    staff_row,
    ticket_row,
)
from streams.inputs.mapping import Mapped

T = "2024-06-04T10:00:40Z"
TS = datetime.fromisoformat(T.replace("Z", "+00:00")).timestamp()

STAFF = [
    Staff("liaison@corp.example", "employee", "US", "government liaison", "2019-02-01T00:00:00Z", "p1"),
    Staff("ZOPLI01", "employee", "US", "government liaison", None, "p1"),
    Staff("vendor@contractor.example", "contractor", "DE"),
    Staff("sync-bot", "bot", "ZZ"),
]
ACCOUNTS = [
    Account("HOST1", "account", "US", "2016-03-10T00:00:00Z", ("human_rights",)),
    Account("809321987", "meeting", "ZZ", None, ("political",), "HOST1"),
    Account("newbie", "account", "BR", "2024-06-03T00:00:00Z"),
    Account("okta", "system", "US"),
]


def shutdown(actor: str = "liaison@corp.example", target: str = "809321987", **extra: Any) -> dict[str, Any]:
    return {"event_type": "meeting.shutdown", "event_id": "e1", "occurred_at": T,
            "actor": {"id": actor, "kind": "employee", "region": "ZZ"},
            "target": {"kind": "meeting", "id": target, "region": "ZZ"}, "tags": ["zoom"], **extra}  # fmt: skip


def contract(event: dict[str, Any]) -> None:
    import json

    assert isinstance(decode(json.dumps(event)), Decoded), event


def test_staff_fills_the_actor_and_accounts_the_meeting_through_its_host() -> None:
    ctx = build_context(STAFF, ACCOUNTS)
    out = enrich(shutdown(), ctx, TS)
    assert out.misses == ()
    assert out.event["actor"] == {"id": "liaison@corp.example", "kind": "employee", "region": "US",
                                  "role": "government liaison", "created_at": "2019-02-01T00:00:00Z"}  # fmt: skip
    assert out.event["target"] == {"kind": "meeting", "id": "809321987", "region": "US", "owner_id": "HOST1",
                                   "tags": ["political"]}  # fmt: skip
    assert out.event["tags"] == ["zoom"]
    contract(out.event)


def test_a_region_the_event_has_is_kept_and_the_input_is_not_changed() -> None:
    event = shutdown()
    event["actor"]["region"] = "HK"
    before = repr(event)
    out = enrich(event, build_context(STAFF, ACCOUNTS), TS)
    assert out.event["actor"]["region"] == "HK"
    assert repr(event) == before


def test_misses_keep_the_event_tagged_and_counted_by_table() -> None:
    ctx = build_context(STAFF, ACCOUNTS)
    out = enrich(shutdown(actor="old-admin@corp.example", target="nowhere"), ctx, TS)
    assert out.misses == ("staff", "accounts")
    assert out.event["tags"] == ["zoom", UNKNOWN_ACTOR, UNKNOWN_TARGET]
    assert out.event["actor"]["region"] == "ZZ"
    contract(out.event)


def test_an_absent_table_is_not_consulted_and_makes_no_miss() -> None:
    out = enrich(shutdown(actor="nobody", target="nothing"), build_context(), TS)
    assert out.misses == () and out.event == shutdown(actor="nobody", target="nothing")


def test_one_person_under_several_identities() -> None:
    ctx = build_context(STAFF, ACCOUNTS, [Ticket("T-1", ("809321987",), TS - 60, None, None, "liaison@corp.example")])
    out = enrich(shutdown(actor="ZOPLI01"), ctx, TS)  # Zoom's operator id, the ticket names the e-mail
    assert out.event["actor"]["role"] == "government liaison"
    assert out.event["ticket_id"] == "T-1"


@pytest.mark.parametrize(
    ("opened", "closed", "covered"),
    [(TS, None, True), (TS - 3600, TS, True), (TS + 1, None, False), (TS - 3600, TS - 1, False)],
    ids=["opens at the event", "closes at the event", "opens after", "closed before"],
)
def test_ticket_window_edges(opened: float, closed: float | None, covered: bool) -> None:
    ticket = Ticket("T-7", ("809321987",), opened, closed, "boss@corp.example", "liaison@corp.example")
    out = enrich(shutdown(), build_context(STAFF, ACCOUNTS, [ticket]), TS)
    assert out.event.get("ticket_id") == ("T-7" if covered else None)
    assert out.event.get("approved_by") == ("boss@corp.example" if covered else None)


def test_a_ticket_covers_its_assignee_or_approver_only_and_never_replaces_one() -> None:
    other = Ticket("T-8", ("809321987",), TS - 60, None, None, "someone-else@corp.example")
    assert "ticket_id" not in enrich(shutdown(), build_context(STAFF, ACCOUNTS, [other]), TS).event
    approver = Ticket("T-9", ("809321987",), TS - 60, None, "liaison@corp.example", None)
    ctx = build_context(STAFF, ACCOUNTS, [approver, Ticket("T-10", ("809321987",), TS - 30, None, None, "ZOPLI01")])
    assert enrich(shutdown(), ctx, TS).event["ticket_id"] == "T-10"  # the latest opened
    kept = enrich(shutdown(ticket_id="OWN-1", approved_by="x"), ctx, TS).event
    assert (kept["ticket_id"], kept["approved_by"]) == ("OWN-1", "x")


def test_grants_fill_grantee_and_system_and_a_reporter_from_accounts() -> None:
    grant = {"event_type": "access.grant", "event_id": "g", "occurred_at": T, "scope": "admin",
             "actor": {"id": "liaison@corp.example", "kind": "employee", "region": "ZZ"},
             "grantee": {"id": "vendor@contractor.example", "kind": "employee", "region": "ZZ"},
             "system": {"id": "okta", "region": "ZZ"}}  # fmt: skip
    out = enrich(grant, build_context(STAFF, ACCOUNTS), TS).event
    assert out["grantee"] == {"id": "vendor@contractor.example", "kind": "contractor", "region": "DE"}
    assert out["system"] == {"id": "okta", "region": "US"}
    contract(out)
    grant["grantee"]["id"] = "stranger"
    assert enrich(grant, build_context(STAFF, ACCOUNTS), TS).event["tags"] == [UNKNOWN_GRANTEE]
    report = {"event_type": "report.filed", "event_id": "r", "occurred_at": T, "category": "terrorism",
              "actor": {"id": "newbie", "kind": "user", "region": "ZZ"},
              "target": {"kind": "account", "id": "HOST1", "region": "ZZ"}}  # fmt: skip
    out = enrich(report, build_context(STAFF, ACCOUNTS), TS).event
    assert out["actor"] == {"id": "newbie", "kind": "user", "region": "BR", "created_at": "2024-06-03T00:00:00Z"}
    assert "tags" not in out
    contract(out)


def test_rows_validate_each_column() -> None:
    assert staff_row({"id": " a ", "kind": "bot", "region": "us"}) == Staff("a", "bot", "US")
    assert account_row({"id": "m", "kind": "meeting", "tags": "a; b;a", "owner": "h"}).tags == ("a", "b")
    for row, values in [(staff_row, {"id": "a", "kind": "robot"}), (staff_row, {"kind": "bot"}),
                        (staff_row, {"id": "a", "kind": "bot", "created_at": "2024-06-01"}),
                        (ticket_row, {"ticket_id": "t", "targets": "", "opened_at": T}),
                        (ticket_row, {"ticket_id": "t", "targets": "x", "opened_at": T,
                                      "closed_at": "2024-01-01T00:00:00Z"})]:  # fmt: skip
        with pytest.raises(RowError):
            row(values)


def test_enrich_mapped_decodes_again_and_counts() -> None:
    import json

    line = json.dumps(shutdown(), sort_keys=True, separators=(",", ":"))
    decoded = decode(line)
    assert isinstance(decoded, Decoded)
    stats = ContextStats()
    out = enrich_mapped(Mapped(shutdown(), decoded, line), build_context(STAFF, []), stats)
    assert out.decoded.event.actor.region == "US"
    assert out.line == json.dumps(out.event, sort_keys=True, separators=(",", ":"))
    assert stats.misses == {"accounts": 1}
