"""Durations in configuration: ``90s``, ``5m``, ``1h``, ``7d``, ``1d12h`` or a number of seconds."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


# Every duration a rule takes (a window, ``within``, ``suppress``, an age) is 0 or lies in these
# bounds: below a second a window holds nothing and a match bucket makes every event an incident;
# beyond 400 days (or infinite) a window never closes and its state never expires. 0 means the option
# is off (no lookback, no suppression); an option that cannot be off says so (``Field(gt=0)``).
MIN_SECONDS = 1.0
MAX_SECONDS = 400 * 86400.0
_SHAPE = "input should be a duration such as 60s, 5m, 24h or 30d"


def parse_duration(value: Any) -> float:
    """Seconds, from a number of seconds or a string of parts (``1d12h``): 0, or between
    ``MIN_SECONDS`` and ``MAX_SECONDS``."""
    seconds = _seconds(value)
    if seconds == 0:
        return 0.0
    if seconds < MIN_SECONDS:
        raise ValueError(f"a duration must be at least {format_duration(MIN_SECONDS)} (or 0)")
    if seconds > MAX_SECONDS:
        raise ValueError(f"a duration must be at most {format_duration(MAX_SECONDS)}")
    return seconds


def _seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(_SHAPE)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("a duration must be finite")
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        pos, total = 0, 0.0
        for match in _PART.finditer(text):
            if match.start() != pos:
                break
            total += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if text and pos == len(text):
            return total
    raise ValueError(_SHAPE)


def format_duration(seconds: float) -> str:
    """The inverse, for summaries: ``42s``, ``5m``, ``2h30m``, ``3d``."""
    if seconds < 120:
        return f"{seconds:.0f}s" if seconds >= 1 or seconds == 0 else f"{seconds * 1000:.0f}ms"
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes}m"
    hours, mins = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{mins:02d}m" if mins else f"{hours}h"
    days, hrs = divmod(hours, 24)
    return f"{days}d{hrs}h" if hrs else f"{days}d"


Duration = Annotated[float, BeforeValidator(parse_duration)]
