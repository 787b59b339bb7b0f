"""Durations in configuration: ``90s``, ``5m``, ``1h``, ``7d``, ``1d12h`` or a number of seconds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("input should be a duration such as 60s, 5m, 24h or 30d")
    if isinstance(value, int | float):
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
    raise ValueError("input should be a duration such as 60s, 5m, 24h or 30d")


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
