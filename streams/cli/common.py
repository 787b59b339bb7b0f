"""What the command modules share: usage errors, argument types, keys from the environment."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable


class UsageError(Exception):
    """Bad usage the command line can name (a missing variable, conflicting options): exit code 2."""


def parse_time_arg(text: str) -> object:
    from streams.core.events import parse_time

    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an RFC 3339 timestamp with a time zone ({exc})") from None


def key_from_env(env_name: str | None, min_bytes: int = 0) -> bytes | None:
    """A key from the environment variable named on the command line (never the key itself: a
    command line is visible to every user of the machine). A key shorter than ``min_bytes`` (UTF-8)
    is refused with a :class:`UsageError` naming the variable, never the key; a pseudonymisation key
    must have ``streams.core.alerts.MIN_KEY_BYTES``."""
    if not env_name:
        return None
    value = os.environ.get(env_name)
    if not value:
        raise UsageError(f"environment variable {env_name} is not set")
    key = value.encode("utf-8")
    if len(key) < min_bytes:
        raise UsageError(
            f"environment variable {env_name}: the key is {len(key)} bytes, at least {min_bytes} are required "
            f"(e.g. {env_name}=$(openssl rand -hex 32))"
        )
    return key


# -- numeric flags, bounded as the MODWATCH_* settings are (streams/config/settings.py) --------------------


def _number(text: str, kind: type[int] | type[float]) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if value != value or value in (float("inf"), float("-inf")):  # NaN, infinity
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` for an integer in [low, high]; the error names the bound (argparse adds the flag)."""

    def parse(text: str) -> int:
        value = int(_number(text, int))
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{text!r}: must be {bounds}")
        return value

    parse.__name__ = f"int_at_least_{low}"
    return parse


def non_negative_float(text: str) -> float:
    """An argparse ``type``: a finite number >= 0 (a lateness, a time to wait)."""
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be >= 0")
    return value


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number > 0 (a speed, a rate)."""
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be > 0")
    return value


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
port_number = int_at_least(0, 65535)
