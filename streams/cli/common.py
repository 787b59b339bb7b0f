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


def key_from_env(env_name: str | None) -> bytes | None:
    """A key from the environment variable named on the command line (never the key itself: a
    command line is visible to every user of the machine)."""
    if not env_name:
        return None
    value = os.environ.get(env_name)
    if not value:
        raise UsageError(f"environment variable {env_name} is not set")
    return value.encode("utf-8")
