"""The event contract: one JSON object per event, discriminated on ``event_type``.

Producers evolve, so unknown extra fields are accepted and ignored. Missing or mistyped required
fields are errors that name the field.

Types are exact, never coerced: the rules, the scoring, the metrics and the summaries read the
parsed JSON, so a value must mean there what it means to the model. An integer is a JSON integer
(not ``"5000000"``, not ``5e6``, not ``true``), a flag is a JSON boolean (not ``"true"``, not ``1``),
a timestamp is an RFC 3339 string with seconds and a zone (``2024-06-04T10:00:00Z``,
``2024-06-04T18:00:00.250+08:00``; not a Unix number, not a date alone). Anything else is a contract
violation: the record becomes a dead letter naming the field (docs/contract.md).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, Strict, TypeAdapter

# Region codes are ISO 3166 alpha-2 in practice; anything short is kept (metrics fold unknown
# codes into "other") so that a new region never becomes a dead letter.
Region = Annotated[str, Field(min_length=1, max_length=8)]
Id = Annotated[str, Field(min_length=1, max_length=200)]
Text = Annotated[str, Field(max_length=2000)]
Tag = Annotated[str, Field(min_length=1, max_length=100)]

MAX_RECORD_COUNT = 10**10

# RFC 3339 as ``datetime.fromisoformat`` reads it too (the rules parse timestamps they compare, such
# as an account's ``created_at``, with it): so the model and the rules see the same instant.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")


def _rfc3339(value: object) -> object:
    if isinstance(value, datetime):  # built in code, not read from JSON
        return value
    if not isinstance(value, str) or _RFC3339.fullmatch(value) is None:
        raise ValueError("expected an RFC 3339 timestamp string with a zone, such as 2024-06-04T10:00:00Z")
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
Count = Annotated[int, Strict(), Field(ge=0, le=MAX_RECORD_COUNT)]
Flag = Annotated[bool, Strict()]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# Who acts or is granted access. Directories know more kinds than the sources: a contractor, a
# service account, a bot (docs/inputs.md "Context"); scoring.yaml says how each counts.
ActorKind = Literal["employee", "contractor", "service_account", "bot", "system", "user", "partner"]


class Actor(_Model):
    id: Id
    kind: ActorKind
    region: Region
    role: Text | None = None
    created_at: Timestamp | None = None


class Target(_Model):
    kind: Literal["meeting", "account", "user", "content", "dataset", "system"]
    id: Id
    region: Region
    owner_id: Id | None = None
    tags: tuple[Tag, ...] = ()


class Requester(_Model):
    agency: Text
    kind: Literal["government", "law_enforcement", "court", "partner"]
    jurisdiction: Region


class Destination(_Model):
    kind: Literal["internal", "external", "government", "partner", "data_subject"]
    name: Text
    region: Region


class Grantee(_Model):
    id: Id
    kind: ActorKind
    region: Region


class System(_Model):
    id: Id
    region: Region


class BaseEvent(_Model):
    event_id: Id
    occurred_at: Timestamp
    actor: Actor
    ticket_id: Id | None = None
    request_id: Id | None = None
    reason: Text | None = None
    approved_by: Id | None = None
    tags: tuple[Tag, ...] = ()


class RequestReceived(BaseEvent):
    event_type: Literal["request.received"]
    request_id: Id
    requester: Requester
    request_kind: Literal["takedown", "suspension", "user_data", "monitoring"]
    targets: tuple[Target, ...] = ()
    deadline_seconds: Annotated[int, Strict(), Field(ge=0, le=10**9)] | None = None
    confidential: Flag = False


ACTION_TYPES = (
    "meeting.shutdown",
    "account.suspend",
    "account.quarantine",
    "account.terminate",
    "content.remove",
)


class ModerationAction(BaseEvent):
    event_type: Literal[
        "meeting.shutdown", "account.suspend", "account.quarantine", "account.terminate", "content.remove"
    ]
    target: Target


class DataExport(BaseEvent):
    event_type: Literal["data.export"]
    target: Target
    record_count: Count
    fields: tuple[Annotated[str, Field(max_length=100)], ...] = ()
    subject_regions: dict[Region, Count] = Field(
        default_factory=dict
    )
    destination: Destination


class AccessGrant(BaseEvent):
    event_type: Literal["access.grant"]
    grantee: Grantee
    system: System
    scope: Text
    remote: Flag = False
    expires_at: Timestamp | None = None


class ReportFiled(BaseEvent):
    event_type: Literal["report.filed"]
    target: Target
    category: Annotated[str, Field(min_length=1, max_length=100)]


Event = Annotated[
    RequestReceived | ModerationAction | DataExport | AccessGrant | ReportFiled,
    Field(discriminator="event_type"),
]
AnyEvent = RequestReceived | ModerationAction | DataExport | AccessGrant | ReportFiled

EVENT_TYPES: tuple[str, ...] = (
    "request.received",
    *ACTION_TYPES,
    "data.export",
    "access.grant",
    "report.filed",
)

EVENT_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(Event)


def event_time(event: AnyEvent) -> float:
    """Event time as POSIX seconds: what every rule and window uses."""
    return event.occurred_at.timestamp()


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 timestamp that must carry a zone (``--since``/``--until``)."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    return value


def to_view(event: AnyEvent) -> dict[str, Any]:
    """The event as plain data, for events built in code rather than decoded from JSON."""
    return event.model_dump(mode="json", exclude_none=True)
