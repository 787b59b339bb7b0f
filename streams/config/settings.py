"""Service settings for the live worker, replay and demo.

Precedence, highest first: command-line flags, environment variables ``MODWATCH_<NAME>`` (nested
with ``__``, e.g. ``MODWATCH_KAFKA__SASL_PASSWORD``), the YAML file named by ``--settings`` or
``MODWATCH_SETTINGS`` (default ``config/modwatch.yaml`` when it exists), then the defaults below.
Secrets are ``SecretStr``: never printed, logged or shown by ``modwatch settings``, which also masks
what a URL setting may carry (``redact_url``).
"""

from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from streams.config.loader import read_yaml_file
from streams.core.alerts import MIN_KEY_BYTES
from streams.core.events import EVENT_TYPES
from streams.core.ruleset import ConfigError

DEFAULT_SETTINGS_FILE = "config/modwatch.yaml"


class KafkaSecurity(BaseModel):
    """How to reach the brokers. Defaults: plaintext, no authentication."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: SecretStr | None = None
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None


class Topics(BaseModel):
    """Topic names and which input topic each event type is read from and replayed to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    events: dict[str, str] = Field(default_factory=lambda: dict.fromkeys(EVENT_TYPES, "modwatch.events"))
    alerts: str = "modwatch.alerts"
    deadletter: str = "modwatch.deadletter"
    incidents: str = "modwatch.incidents"  # each incident revision, keyed by incident id
    keyed: str = "modwatch.keyed"  # internal: events repartitioned by rule key
    context_prefix: str = "modwatch.context."  # + staff, accounts, tickets: compacted context tables
    partitions: int = Field(default=1, ge=1, le=256)  # for topics modwatch creates

    def input_topics(self) -> list[str]:
        return sorted(set(self.events.values()))

    def topic_for(self, event_type: str) -> str:
        try:
            return self.events[event_type]
        except KeyError:
            raise ValueError(f"no topic configured for event type {event_type!r}") from None


RAW_TOPIC_PREFIX = "modwatch.raw."


class RawInput(BaseModel):
    """A raw source the worker reads: records of ``topic`` mapped by the input mapping ``mapping``
    (an id of the bundled mappings or of ``inputs_dir``), then routed as contract events are."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mapping: str = Field(min_length=1)
    topic: str | None = None  # default: modwatch.raw.<mapping>, where ``modwatch replay --input`` writes

    def topic_name(self) -> str:
        return self.topic or RAW_TOPIC_PREFIX + self.mapping


class ZoomWebhook(BaseModel):
    """``modwatch receive zoom``: the app's webhook Secret Token and the bounds of what is accepted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret_token: SecretStr | None = None  # Zoom Marketplace, the app's Event Subscriptions: Secret Token
    # A request whose x-zm-request-timestamp is further than this from the clock (either way) is refused.
    max_age_seconds: float = Field(default=300.0, gt=0, le=3600)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=16 * 1024 * 1024)
    # Zoom waits 3 s for an answer: a record not acknowledged by the broker by then is answered 503.
    produce_timeout_seconds: float = Field(default=2.5, gt=0, le=60)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODWATCH_", env_nested_delimiter="__", extra="forbid", frozen=True)

    bootstrap_servers: str = "127.0.0.1:9092"
    app_id: str = "modwatch"
    rules_dir: str = "config"
    kafka: KafkaSecurity = KafkaSecurity()
    topics: Topics = Topics()
    zoom: ZoomWebhook = ZoomWebhook()
    # Raw sources read by the worker besides the input topics; checked against the mappings at start-up.
    inputs: list[RawInput] = Field(default_factory=list)
    inputs_dir: str | None = None  # input mappings: this directory, else ./config/inputs, else the bundled ones
    geoip_database: str | None = None  # a MaxMind database: raw inputs' actor region from source.ip
    lateness_seconds: float = Field(default=300.0, ge=0)
    # An input partition silent this long stops holding the watermark back.
    idle_source_seconds: float = Field(default=10.0, gt=0)
    tick_seconds: float = Field(default=0.5, gt=0)  # how often event time is broadcast to keyed partitions
    max_record_bytes: int = Field(default=1024 * 1024, ge=1024)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    web_port: int = Field(default=6066, ge=0, le=65535)  # Faust's own web server (bound to 127.0.0.1)
    alerts_jsonl: str | None = None  # also append alerts to this file
    webhook_url: str | None = None
    webhook_min_severity: Literal["info", "low", "medium", "high", "critical"] = "high"
    alertmanager_url: str | None = None  # e.g. http://alertmanager:9093 (POST /api/v2/alerts)
    alertmanager_min_severity: Literal["info", "low", "medium", "high", "critical"] = "high"
    # endsAt = send time + this; 0 leaves endsAt unset (Alertmanager's resolve_timeout applies).
    alertmanager_resolve_after_seconds: float = Field(default=3600.0, ge=0)
    # What pages: one Alertmanager alert per incident (and each alert of a ``page: always`` rule), or
    # every alert on its own as before incidents.
    alertmanager_paging: Literal["incidents", "alerts"] = "incidents"
    webhook_incidents: bool = False  # also POST each incident revision to the webhook
    session_timeout_seconds: float = Field(default=6.0, gt=0)  # short joins on Tansu; raise for Apache Kafka
    heartbeat_seconds: float = Field(default=1.0, gt=0)
    # Standby copies of each table partition on other workers (Faust's table_standby_replicas; its
    # default is 1). A copy spares the worker that takes its partition over reading it back from the
    # changelog (``streams.live.faust_ext.store``), and costs every worker CPU all the time, reading its peers'
    # changelogs (``app.STANDBY_NOTE``; README, Performance, "Failover" and "Scale-out").
    standby_replicas: int = Field(default=0, ge=0)
    # Evaluate an event in the routing stage for the keyed partitions this worker owns, instead of
    # sending it through the keyed topic to itself (bench, one worker: 1.16x the throughput with keyed
    # bundles, 1.72x before them; a third of the p99 latency at 250 events/s).
    # Off from 30 Nov 2026 00:30 until the cause of a fault-test failure with it on was found: after a
    # rebalance Faust handed the agents records from a partition's tail before seeking back to its
    # committed offset (``streams.live.faust_ext.consumer.Consumer.perform_seek`` fixes that).
    local_evaluation: bool = True
    # Send a batch's events for another worker's keyed partition packed into one record instead of
    # one record each (bench: see Performance). A worker of a version before 30 Nov 2026 cannot read
    # such records: set false while any still runs (a rolling upgrade), then back to true.
    bundle_keyed_records: bool = True
    data_dir: str = ".modwatch"  # Faust's local data directory
    # When set, the ids of targets, owners, data subjects and reporters in alerts are replaced by a
    # keyed HMAC pseudonym (``streams.core.alerts.Pseudonymizer``). At least 32 bytes.
    pseudonymize_key: SecretStr | None = None

    @field_validator("inputs")
    @classmethod
    def _distinct_inputs(cls, inputs: list[RawInput]) -> list[RawInput]:
        seen: set[str] = set()
        for item in inputs:
            for name in (f"mapping {item.mapping!r}", f"topic {item.topic_name()!r}"):
                if name in seen:
                    raise ValueError(f"{name} is given twice")
                seen.add(name)
        return inputs

    @field_validator("pseudonymize_key")
    @classmethod
    def _long_enough(cls, key: SecretStr | None) -> SecretStr | None:
        # The message names the length, never the key (pydantic would not show a SecretStr anyway).
        size = len(key.get_secret_value().encode("utf-8")) if key is not None else MIN_KEY_BYTES
        if size < MIN_KEY_BYTES:
            raise ValueError(f"the key is {size} bytes, at least {MIN_KEY_BYTES} are required")
        return key

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))

    def explicit_rules_dir(self) -> str | None:
        """``rules_dir`` when a flag, the environment or the settings file set it; None for the default
        (then ``streams.config.loader.resolve_rules_dir`` looks further: ./config, the bundled rules)."""
        return self.rules_dir if "rules_dir" in self.model_fields_set else None

    def redacted(self) -> dict[str, Any]:
        """The effective settings for display: secrets appear as ``**********``, and the URL settings
        without their credentials, query values and token-like path segments (``redact_url``)."""
        shown = self.model_dump(mode="json")
        for name, value in shown.items():
            if name.endswith("_url") and isinstance(value, str):
                shown[name] = redact_url(value)
        return shown


MASK = "***"
# A path segment that looks like a secret: a webhook token (Slack's 24 characters, Discord's 68), a
# key. Runs of 16 letters and digits with at least one digit, or of 20 without (no path word is that long).
_TOKEN = re.compile(r"(?=[^/]*\d)[A-Za-z0-9_\-=.~+%]{16,}|[A-Za-z0-9_\-=.~+%]{20,}")


def redact_url(url: str) -> str:
    """``url`` for display: ``https://user:***@host/hooks/***?key=***``. The password, every query value,
    the fragment and token-like path segments are masked; the scheme, host, port, user name and the
    rest of the path stay, so the reader can still tell which endpoint it is."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return MASK  # not a URL we can take apart: show nothing of it
    if not parts.scheme or not parts.netloc:
        return MASK
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"  # IPv6
    if port is not None:
        netloc += f":{port}"
    if parts.username is not None or parts.password is not None:
        user = urllib.parse.quote(urllib.parse.unquote(parts.username or ""), safe="")
        netloc = f"{user}:{MASK}@{netloc}" if parts.password is not None else f"{user}@{netloc}"
    path = "/".join(MASK if _TOKEN.fullmatch(seg) else seg for seg in parts.path.split("/"))

    query = "&".join(f"{p.split('=', 1)[0]}={MASK}" if "=" in p else MASK for p in parts.query.split("&") if p)
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, query, MASK if parts.fragment else ""))


class _YamlSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("MODWATCH_SETTINGS") or _settings_file_override
        if path is None:
            if not Path(DEFAULT_SETTINGS_FILE).exists():
                return {}
            path = DEFAULT_SETTINGS_FILE
        # The rules' reader: regular files only, a size limit, aliases bounded.
        data = read_yaml_file(path, what="settings file") or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of settings")
        return data


_settings_file_override: str | None = None


def load_settings(path: str | None = None, **overrides: Any) -> Settings:
    """Settings from flags (``overrides``, None values ignored), environment and file."""
    global _settings_file_override
    _settings_file_override = path
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in err["loc"])
        source = path or os.environ.get("MODWATCH_SETTINGS") or "settings"
        raise ConfigError(f"{source}: {where}: {err['msg']}") from None
    finally:
        _settings_file_override = None
