"""What the command modules share: usage errors, argument types, keys from the environment."""

from __future__ import annotations

import argparse
import os


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
