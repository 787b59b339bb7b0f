"""Typed conversions of raw values (an expression's ``convert:``), each a function value -> value.

A conversion that cannot read its value raises ConversionError; the expression then takes its
``default`` if it has one, and otherwise the record is rejected (``conversion_failed``) with a detail
naming the field and the conversion, never the value (records carry personal data).

Times come out as the contract writes them: RFC 3339 in UTC, ``YYYY-MM-DDThh:mm:ssZ``, with
microseconds only when the source had a fraction of a second.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime

from streams.inputs.countries import CODES, COUNTRIES, name_key


class ConversionError(ValueError):
    """A value a conversion cannot read; the message says what was expected, not what was found."""


LIST_SEPARATOR = ";"
_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})")
_ZONELESS = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?")
_TRUE = {"true", "yes", "y", "1", "t"}
_FALSE = {"false", "no", "n", "0", "f", ""}


def format_time(value: datetime) -> str:
    """An aware datetime as the contract's RFC 3339 UTC string."""
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def rfc3339(value: object) -> str:
    """An RFC 3339 string with a zone (fractions to nanoseconds, truncated to microseconds)."""
    if not isinstance(value, str):
        raise ConversionError("expected an RFC 3339 timestamp string")
    match = _RFC3339.fullmatch(value.strip())
    if match is None:
        raise ConversionError("expected an RFC 3339 timestamp with a zone, such as YYYY-MM-DDThh:mm:ssZ")
    day, clock, fraction, zone = match.groups()
    micro = (fraction or "").ljust(6, "0")[:6]
    zone = "+00:00" if zone in ("Z", "z") else zone
    try:
        parsed = datetime.fromisoformat(f"{day}T{clock}.{micro}{zone}")
    except ValueError:
        raise ConversionError("expected a valid calendar date and time") from None
    return format_time(parsed)


def rfc3339_utc(value: object) -> str:
    """``rfc3339``, except that a time without a zone is read as UTC (Microsoft 365's
    ``CreationTime``, documented as UTC). Only for sources that document it: elsewhere a missing zone
    is a producer's mistake, which ``rfc3339`` refuses."""
    if isinstance(value, str) and _ZONELESS.fullmatch(value.strip()):
        return rfc3339(value.strip() + "Z")
    return rfc3339(value)


def _number(value: object) -> float:
    if isinstance(value, bool):
        raise ConversionError("expected a number, got a boolean")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ConversionError("expected a number") from None
    else:
        raise ConversionError("expected a number")
    if not math.isfinite(number):
        raise ConversionError("expected a finite number")
    return number


def _unix(value: object, scale: float) -> str:
    seconds = _number(value) / scale
    try:
        return format_time(datetime.fromtimestamp(seconds, UTC))
    except (OverflowError, OSError, ValueError):
        raise ConversionError("expected a Unix time within the calendar") from None


def unix_s(value: object) -> str:
    """Unix seconds (number or numeric string) -> RFC 3339."""
    return _unix(value, 1.0)


def unix_ms(value: object) -> str:
    """Unix milliseconds (Zoom's ``event_ts``, GitHub's ``@timestamp``) -> RFC 3339."""
    return _unix(value, 1000.0)


def country(value: object) -> str:
    """A country name ("United States", "Korea, Republic of") or an alpha-2 code -> the alpha-2 code."""
    if not isinstance(value, str) or not value.strip():
        raise ConversionError("expected a country name or ISO 3166 alpha-2 code")
    text = value.strip()
    if len(text) == 2 and text.upper() in CODES:
        return text.upper()
    code = COUNTRIES.get(name_key(text))
    if code is None:
        raise ConversionError("not a country name this table knows (streams/inputs/countries.py)")
    return code


def to_int(value: object) -> int:
    """A JSON integer, an integral float, or a decimal string -> int."""
    if isinstance(value, bool):
        raise ConversionError("expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,18}\s*", value):
        return int(value)
    raise ConversionError("expected an integer")


def to_bool(value: object) -> bool:
    """true/false, yes/no, 1/0 (any case; an empty CSV cell is false) -> bool."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ConversionError("expected a boolean (true/false, yes/no, 1/0)")


def to_str(value: object) -> str:
    """A string, or a number written as JSON writes it (Zoom's meeting id is a number or a string)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise ConversionError("expected a string or a number, got a boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    raise ConversionError("expected a string or a number")


def split(value: object) -> list[object]:
    """A ``;``-separated string -> its trimmed, non-empty items; a list stays a list."""
    if isinstance(value, list):
        return value
    if not isinstance(value, str):
        raise ConversionError("expected a ';'-separated string or a list")
    return [item.strip() for item in value.split(LIST_SEPARATOR) if item.strip()]


def count(value: object) -> int:
    """A list's length (the items an event names: OCSF's ``web_resources``)."""
    if not isinstance(value, list):
        raise ConversionError("expected a list to count")
    return len(value)


def join(value: object) -> str:
    """A list of strings (or numbers, written as ``str`` writes them) -> one text joined with ``;``
    (what ``split`` reads back); a string stays as it is. An empty list has nothing to join."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list) or not value:
        raise ConversionError("expected a non-empty list of strings")
    if not all(isinstance(item, str | int | float) and not isinstance(item, bool) for item in value):
        raise ConversionError("expected a list of strings")
    return LIST_SEPARATOR.join(to_str(item) for item in value)


def ip(value: object) -> str:
    """An IPv4 or IPv6 address in its canonical text; a port written after it (``203.0.113.7:443``,
    ``[2001:db8::1]:443``, as Microsoft 365's ``ClientIP`` has it at times) is left out."""
    if not isinstance(value, str):
        raise ConversionError("expected an IP address string")
    text = value.strip()
    bracketed = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::\d{1,5})?", text)
    if bracketed:
        text = bracketed.group(1)
    elif re.fullmatch(r"[\d.]+:\d{1,5}", text):
        text = text.rpartition(":")[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ConversionError("expected an IPv4 or IPv6 address") from None


CONVERSIONS: dict[str, Callable[[object], object]] = {
    "rfc3339": rfc3339,
    "rfc3339_utc": rfc3339_utc,
    "unix_s": unix_s,
    "unix_ms": unix_ms,
    "country": country,
    "int": to_int,
    "bool": to_bool,
    "str": to_str,
    "split": split,
    "join": join,
    "count": count,
    "ip": ip,
}


def split_parts(value: str, names: list[str], sep: str) -> dict[str, str]:
    """``kind:id:region`` -> {kind, id, region}: the last name takes what follows the last ``sep``,
    the first names one part each, and the one before the last takes the rest (an id may hold ``sep``)."""
    if len(names) == 1:
        return {names[0]: value}
    head, found, last = value.rpartition(sep)
    parts = head.split(sep, len(names) - 2) if found else []
    if len(parts) != len(names) - 1 or not all(p.strip() for p in [*parts, last]):
        raise ConversionError(f"expected {len(names)} non-empty parts: {sep.join(names)}")
    return {name: part.strip() for name, part in zip(names, [*parts, last], strict=True)}
