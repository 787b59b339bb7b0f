"""The synthetic world ``streams.tools.generate`` draws from: time units, regions and staff pools,
``_World`` (id counters, entity pools and the heap of pending events) and the routine traffic, one
function per kind of primary event with the follow-ups it schedules.

The case's incidents and the clock loop that releases the heap are in ``streams.tools.generate``.
"""

from __future__ import annotations

import functools
import heapq
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Event = dict[str, Any]

DEFAULT_START = datetime(2020, 5, 1, tzinfo=UTC)
DEFAULT_EVENTS_PER_DAY = 2740.0  # 1,000,000 events span about a year

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
YEAR = 365 * DAY

# (region, weight) of users, meetings and accounts.
_REGIONS = (("US", 30), ("IN", 9), ("BR", 8), ("GB", 7), ("DE", 6), ("JP", 6), ("CA", 5), ("FR", 5),
            ("AU", 4), ("MX", 4), ("CN", 3), ("HK", 2), ("SG", 2), ("TW", 2), ("KR", 2), ("IE", 1))
_REGION_TABLE = tuple(region for region, weight in _REGIONS for _ in range(weight))  # choice() is cheap

_TS_STAFF = tuple({"id": f"emp-ts-{i:03d}", "kind": "employee", "region": ("SG", "US", "US", "IE")[i % 4],
                   "role": "trust_safety"} for i in range(1, 41))
_LEGAL_STAFF = tuple({"id": f"emp-lg-{i:03d}", "kind": "employee", "region": ("US", "IE")[i % 2],
                      "role": "legal"} for i in range(1, 9))
_DATA_ENG = tuple({"id": f"emp-de-{i:03d}", "kind": "employee", "region": ("US", "IE")[i % 2],
                   "role": "data_engineering"} for i in range(1, 13))
_ONCALL_REGIONS = ("US", "US", "IE", "SG", "IN", "DE", "JP", "AU")
_SERVICES = ("db", "media", "api", "auth", "kafka")

# Lawful requesters per jurisdiction, (agency, kind). CN is here on purpose: a Chinese request about
# Chinese-hosted accounts, answered days later with a ticket, is routine; the case is not about a country.
_LAWFUL: dict[str, tuple[tuple[str, str], ...]] = {
    "US": (("Federal Bureau of Investigation", "law_enforcement"), ("U.S. District Court", "court")),
    "GB": (("Metropolitan Police Service", "law_enforcement"), ("Home Office", "government")),
    "DE": (("Bundeskriminalamt", "law_enforcement"), ("Amtsgericht Berlin", "court")),
    "IN": (("Ministry of Electronics and IT", "government"), ("Delhi Police", "law_enforcement")),
    "BR": (("Policia Federal", "law_enforcement"), ("Tribunal de Justica de Sao Paulo", "court")),
    "JP": (("National Police Agency", "law_enforcement"),),
    "AU": (("Australian Federal Police", "law_enforcement"), ("eSafety Commissioner", "government")),
    "CA": (("Royal Canadian Mounted Police", "law_enforcement"),),
    "FR": (("Gendarmerie nationale", "law_enforcement"), ("Tribunal judiciaire de Paris", "court")),
    "CN": (("Shenzhen Public Security Bureau", "law_enforcement"),),
}
_LAWFUL_JURISDICTIONS = ("US", "US", "US", "GB", "GB", "DE", "IN", "BR", "JP", "AU", "CA", "FR", "CN")
_PARTNERS = (("NCMEC", "US", "ptn-ncmec"), ("NCMEC", "US", "ptn-ncmec"), ("NCMEC", "US", "ptn-ncmec"),
             ("IWF", "GB", "ptn-iwf"))
_NON_PERSONAL = ("meeting_id", "duration", "region", "participant_count", "started_at", "client_version")
_PERSONAL = ("name", "email", "ip_address")
_ID_PREFIX = {"meeting": "mtg", "account": "acct", "content": "cnt", "user": "usr"}


@functools.lru_cache(maxsize=1024)
def _date(day: int) -> str:
    return time.strftime("%Y-%m-%dT", time.gmtime(day * 86400))


# Pieces of a timestamp, formatted once: a format spec per field per event costs more than the JSON.
_HOUR_MINUTE = tuple(f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60))
_SECONDS = tuple(f"{s:02d}." for s in range(60))
_MILLIS = tuple(f"{m:03d}Z" for m in range(1000))


def _iso(ms: int) -> str:
    """RFC 3339 in UTC with milliseconds: ``2020-05-01T00:00:00.000Z``. Hot: once per event."""
    day, rest = divmod(ms, DAY)
    sec = rest // SECOND
    return _date(day) + _HOUR_MINUTE[sec // 60] + _SECONDS[sec % 60] + _MILLIS[rest % SECOND]


def _employee(ident: str, region: str, role: str | None = None) -> dict[str, Any]:
    employee = {"id": ident, "kind": "employee", "region": region}
    if role:
        employee["role"] = role
    return employee


def _event(event_type: str, actor: dict[str, Any], **fields: Any) -> Event:
    # event_id and occurred_at are filled in when the event leaves the heap; listing them first
    # keeps them first in every JSON line.
    event: Event = {"event_id": "", "event_type": event_type, "occurred_at": "", "actor": actor}
    event.update(fields)
    return event


class _World:
    """Counters, entity pools and the heap that routine generators and incidents write into."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.heap: list[tuple[int, int, Event]] = []
        self._seq = 0
        self._entity = 0
        self._ticket = 40  # a ticketing system that has been running for a while
        self._request = 256

    def at(self, ms: int, event: Event) -> None:
        self._seq += 1
        heapq.heappush(self.heap, (ms, self._seq, event))

    # Ids are a counter followed by fixed-width random digits: unique, yet not in creation order, so
    # the incidents (planned first) do not get tellingly small ids.
    def ticket(self) -> str:
        self._ticket += 1
        return f"TSK-{self._ticket}{self.rng.randrange(1000):03d}"

    def request_id(self) -> str:
        self._request += 1
        return f"req-{self._request:x}{self.rng.getrandbits(16):04x}"

    def region(self) -> str:
        return self.rng.choice(_REGION_TABLE)

    def ident(self, prefix: str) -> str:
        self._entity += 1
        return f"{prefix}-{self._entity:x}{self.rng.getrandbits(12):03x}"

    def target(self, kind: str, region: str | None = None, tags: tuple[str, ...] = (),
               owner: str | None = None) -> dict[str, Any]:
        target: dict[str, Any] = {"kind": kind, "id": self.ident(_ID_PREFIX[kind]),
                                  "region": region or self.region()}
        if kind in ("meeting", "content"):
            target["owner_id"] = owner or self.ident("acct")
        if tags:
            target["tags"] = list(tags)
        return target

    def user(self, now: int, min_age: int, max_age: int, region: str | None = None) -> dict[str, Any]:
        created = now - self.rng.randint(min_age, max_age)
        return {"id": self.ident("usr"), "kind": "user", "region": region or self.region(),
                "created_at": _iso(created)}

    def staff(self, pool: tuple[dict[str, Any], ...]) -> dict[str, Any]:
        return dict(self.rng.choice(pool))


def _tagged(target: dict[str, Any], tag: str) -> dict[str, Any]:
    return {**target, "tags": [tag]}


# --- routine traffic: one function per kind of primary event ----------------------------------------


def _report(w: _World, t: int) -> None:
    """An abuse report from an old account (rarely a days-old one), sometimes acted on later."""
    rng = w.rng
    category = rng.choice(("spam", "spam", "harassment", "zoombombing"))
    young = category == "spam" and rng.random() < 0.06
    reporter = w.user(t, DAY, 6 * DAY) if young else w.user(t, YEAR, 8 * YEAR)
    kind, action, delay = {
        "spam": ("account", "account.suspend", (2 * HOUR, 30 * HOUR)),
        "harassment": ("content", "content.remove", (HOUR, 20 * HOUR)),
        "zoombombing": ("meeting", "meeting.shutdown", (2 * MINUTE, 20 * MINUTE)),
    }[category]
    target = w.target(kind)
    w.at(t, _event("report.filed", reporter, target=target, category=category))
    if rng.random() < 0.3:
        w.at(t + rng.randint(*delay), _event(action, w.staff(_TS_STAFF), ticket_id=w.ticket(),
                                              target=_tagged(target, category)))


def _severe_report(w: _World, t: int) -> None:
    """A terrorism/CSAM/violence report from an established account; sometimes upheld hours later."""
    rng = w.rng
    category = rng.choice(("terrorism", "csam", "violence"))
    target = w.target(rng.choice(("content", "meeting")))
    w.at(t, _event("report.filed", w.user(t, 2 * YEAR, 9 * YEAR), target=target, category=category))
    if rng.random() < 0.3:
        action = "content.remove" if target["kind"] == "content" else "meeting.shutdown"
        w.at(t + rng.randint(HOUR, 12 * HOUR), _event(action, w.staff(_TS_STAFF), ticket_id=w.ticket(),
                                                      target=_tagged(target, category)))


_TS_ACTIONS = (("meeting.shutdown", "meeting", "zoombombing"), ("meeting.shutdown", "meeting", "spam"),
               ("content.remove", "content", "spam"), ("content.remove", "content", "harassment"),
               ("account.suspend", "account", "spam"), ("account.terminate", "account", "spam"),
               ("account.quarantine", "account", "spam"))


def _ts_action(w: _World, t: int) -> None:
    """A ticketed trust-and-safety action on spam, harassment or zoombombing."""
    action, kind, tag = w.rng.choice(_TS_ACTIONS)
    w.at(t, _event(action, w.staff(_TS_STAFF), ticket_id=w.ticket(), target=w.target(kind, tags=(tag,))))


def _raid(w: _World, t: int) -> None:
    """A zoombombing wave: 4-6 ticketed shutdowns within the hour, one incident ticket."""
    rng = w.rng
    ticket, region = w.ticket(), w.region()
    staff = [w.staff(_TS_STAFF), w.staff(_TS_STAFF)]
    offsets = sorted(rng.randint(0, 55 * MINUTE) for _ in range(rng.randint(4, 6)))
    for offset in offsets:
        target = w.target("meeting", region, ("zoombombing",))
        w.at(t + offset, _event("meeting.shutdown", dict(rng.choice(staff)), ticket_id=ticket,
                                reason="zoombombing wave", target=target))


def _lawful(w: _World, t: int) -> None:
    """A request from an authority about its own jurisdiction, answered hours or days later."""
    rng = w.rng
    jurisdiction = rng.choice(_LAWFUL_JURISDICTIONS)
    agency, kind = rng.choice(_LAWFUL[jurisdiction])
    request_kind = rng.choice(("user_data", "user_data", "takedown", "suspension"))
    target_kind = {"user_data": "account", "takedown": "content", "suspension": "account"}[request_kind]
    tag = rng.choice(("fraud", "extortion", "illegal_goods", "defamation"))
    targets = [w.target(target_kind, jurisdiction, (tag,)) for _ in range(rng.randint(1, 3))]
    request_id = w.request_id()
    requester = {"agency": agency, "kind": kind, "jurisdiction": jurisdiction}
    request = _event("request.received", {"id": "sys-legal-intake", "kind": "system", "region": "US"},
                     request_id=request_id, requester=requester, request_kind=request_kind, targets=targets)
    if rng.random() < 0.3:
        request["deadline_seconds"] = rng.choice((3, 7, 14)) * 86400
    if kind != "government" and rng.random() < 0.2:
        request["confidential"] = True  # a gag order: routine when the process is documented
    w.at(t, request)
    if rng.random() < 0.15:
        return  # declined
    answer = t + rng.randint(2 * HOUR, 5 * DAY)
    responder = w.staff(_LEGAL_STAFF)
    if request_kind == "user_data":
        w.at(answer, _event("data.export", responder, ticket_id=w.ticket(), request_id=request_id,
                            target=targets[0], record_count=rng.randint(len(targets), 49),
                            fields=[*_PERSONAL, "meeting_history"],
                            subject_regions={jurisdiction: len(targets)},
                            destination={"kind": "government", "name": agency, "region": jurisdiction}))
        return
    action = "content.remove" if request_kind == "takedown" else "account.suspend"
    ticket = w.ticket()
    for i, target in enumerate(targets):
        w.at(answer + i * rng.randint(SECOND, 5 * MINUTE),
             _event(action, responder, ticket_id=ticket, request_id=request_id, target=target))


def _partner_csam(w: _World, t: int) -> None:
    """A child-safety partner's takedown in its own jurisdiction, removed within a minute: fine."""
    rng = w.rng
    agency, jurisdiction, partner_id = rng.choice(_PARTNERS)
    target = w.target("content", jurisdiction, ("csam",))
    request_id = w.request_id()
    requester = {"agency": agency, "kind": "partner", "jurisdiction": jurisdiction}
    w.at(t, _event("request.received", {"id": partner_id, "kind": "partner", "region": jurisdiction},
                   request_id=request_id, requester=requester, request_kind="takedown", targets=[target],
                   deadline_seconds=3600))
    w.at(t + rng.randint(10 * SECOND, 50 * SECOND),
         _event("content.remove", w.staff(_TS_STAFF), ticket_id=w.ticket(), request_id=request_id,
                target=target))


def _internal_export(w: _World, t: int) -> None:
    """A big non-personal export to the internal warehouse."""
    rng = w.rng
    region = rng.choice(("US", "US", "IE"))
    actor = (w.staff(_DATA_ENG) if rng.random() < 0.4
             else {"id": f"sys-etl-{rng.randint(1, 6):02d}", "kind": "system", "region": region})
    dataset = rng.choice(("meeting_metrics", "usage_daily", "qos_telemetry"))
    fields = sorted(rng.sample(_NON_PERSONAL, rng.randint(3, 6)), key=_NON_PERSONAL.index)
    w.at(t, _event("data.export", actor, ticket_id=w.ticket(),
                   target={"kind": "dataset", "id": dataset, "region": region},
                   record_count=rng.randint(5_000, 500_000), fields=fields, subject_regions={},
                   destination={"kind": "internal", "name": "analytics-warehouse", "region": region}))


def _user_export(w: _World, t: int) -> None:
    """A user downloading their own data (a data-subject access request)."""
    rng = w.rng
    account = w.target("account")
    region = account["region"]
    w.at(t, _event("data.export", {"id": "sys-privacy-portal", "kind": "system", "region": "US"},
                   ticket_id=w.ticket(), target=account, record_count=rng.randint(1, 3000),
                   fields=list(_PERSONAL), subject_regions={region: 1},
                   destination={"kind": "data_subject", "name": account["id"], "region": region}))


def _oncall_grant(w: _World, t: int) -> None:
    """On-call access, mostly in the engineer's own region; a follow-the-sun grant now and then."""
    rng = w.rng
    region = rng.choice(_ONCALL_REGIONS)
    grantee_region = rng.choice(("IE", "SG", "IN")) if rng.random() < 0.1 else region
    w.at(t, _event("access.grant", {"id": "sys-access-broker", "kind": "system", "region": region},
                   ticket_id=w.ticket(), approved_by=f"emp-mgr-{rng.randint(1, 15):03d}",
                   grantee=_employee(f"emp-sre-{rng.randint(1, 60):03d}", grantee_region),
                   system={"id": f"prod-{rng.choice(_SERVICES)}-{region.lower()}-{rng.randint(1, 9):02d}",
                           "region": region},
                   scope="oncall", remote=rng.random() < 0.5,
                   expires_at=_iso(t + rng.choice((8, 12, 24)) * HOUR)))


# (generator, weight, mean events it produces); the mean turns events_per_day into a primary rate.
_ROUTINE: tuple[tuple[Callable[[_World, int], None], float, float], ...] = (
    (_report, 34.0, 1.3), (_severe_report, 3.0, 1.3), (_ts_action, 36.0, 1.0), (_raid, 1.2, 5.0),
    (_lawful, 4.0, 2.3), (_partner_csam, 2.0, 2.0), (_internal_export, 5.0, 1.0), (_user_export, 4.0, 1.0),
    (_oncall_grant, 3.0, 1.0),
)
_ROUTINE_TABLE = tuple(fn for fn, weight, _ in _ROUTINE for _ in range(round(weight * 10)))
_EVENTS_PER_PRIMARY = sum(weight * mean for _, weight, mean in _ROUTINE) / sum(w for _, w, _ in _ROUTINE)
