"""What modwatch still changes in aiokafka by patching, behind a version check.

Everything else the worker corrects in Faust and aiokafka is a method of its own consumer classes
(``streams.live.faust_ext.consumer``), registered as a Faust transport. What is left here has no
such place: aiokafka's ``GroupCoordinator`` is built inside ``AIOKafkaConsumer.start`` and never
handed to Faust. ``install`` patches the coordinator *instance* of one started consumer (the
worker's, from ``ConsumerThread.on_start``): aiokafka's classes stay as they are, for every other
consumer in the process.

A patch leans on private code that can change in any release, so ``install`` refuses to run
outside the versions it was tested with (``TESTED``, the ranges pyproject.toml declares), and the
worker checks them (``check_versions``) before anything connects.
"""

from __future__ import annotations

import logging
import re
import types
from importlib import metadata
from typing import Any

from streams.core.ruleset import ConfigError

log = logging.getLogger(__name__)

#: Distribution -> (lowest tested, first untested) release. Kept equal to pyproject.toml's ranges;
#: scripts/test-lowest.sh runs the worker's tests on the lowest.
TESTED: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "faust-streaming": ((0, 15, 3), (0, 16)),
    "aiokafka": ((0, 13), (0, 15)),
}


class UnsupportedVersion(ConfigError):
    """An installed faust-streaming or aiokafka outside the tested ranges (the message names both)."""


def installed_version(distribution: str) -> str:
    """The installed version of ``distribution`` (a seam for tests)."""
    return metadata.version(distribution)


def _release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string: ``0.15.3`` -> (0, 15, 3); ``0.14.0rc1`` -> (0, 14, 0)."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    if match is None:
        raise UnsupportedVersion(f"cannot read the version {version!r}")
    return tuple(int(part) for part in match.group().split("."))


def _shown(release: tuple[int, ...]) -> str:
    return ".".join(map(str, release))


def tested_range(distribution: str) -> str:
    low, high = TESTED[distribution]
    return f">={_shown(low)},<{_shown(high)}"


def check_versions() -> None:
    """Refuse to go on when faust-streaming or aiokafka is installed outside ``TESTED``: the
    corrections of ``streams.live.faust_ext`` override and patch their private methods, as these
    versions have them. Raises ``UnsupportedVersion`` naming what is installed and what was tested."""
    found = {name: installed_version(name) for name in TESTED}
    wrong = [name for name, version in found.items() if not TESTED[name][0] <= _release(version) < TESTED[name][1]]
    if wrong:
        installed = ", ".join(f"{name} {version}" for name, version in found.items())
        tested = ", ".join(f"{name}{tested_range(name)}" for name in TESTED)
        pins = " ".join(f"'{name}{tested_range(name)}'" for name in wrong)
        raise UnsupportedVersion(
            f"installed {installed}; the worker is tested with {tested} only (it corrects their "
            f"private methods, streams/live/faust_ext, docs/faust.md). Install tested versions: "
            f"pip install {pins}"
        )


def install(consumer: Any) -> None:
    """Apply the patches to ``consumer``, a started ``aiokafka.AIOKafkaConsumer``: its group
    coordinator leaves the group from generation 0 too (``leave_group_from_generation_zero``).
    Only this consumer's coordinator changes; a consumer without a group has nothing to leave."""
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    check_versions()
    coordinator = getattr(consumer, "_coordinator", None)
    if isinstance(coordinator, GroupCoordinator):
        coordinator._maybe_leave_group = types.MethodType(leave_group_from_generation_zero, coordinator)


async def leave_group_from_generation_zero(coordinator: Any) -> None:
    """A stopping worker leaves its consumer group in the group's first generation too (bound as one
    coordinator's ``_maybe_leave_group``).

    aiokafka sends LeaveGroup only from generation 1 (``GroupCoordinator._maybe_leave_group``:
    ``generation > 0``). Apache Kafka numbers a group's first generation 1; Tansu numbers it 0. So on
    Tansu a worker stopped in that generation stayed a member until its session timed out
    (``session_timeout_seconds``): the survivor of two workers started together took the partitions
    over that much later (bench ``failover``: 5.5-6.8 s of each takeover). Kafka's own client leaves
    whenever it has a member id; this does too, as aiokafka does from generation 1. Any other
    generation, no member id, or static membership: aiokafka's own method.
    """
    from aiokafka.consumer.group_coordinator import GroupCoordinator
    from aiokafka.errors import KafkaError
    from aiokafka.protocol.group import LeaveGroupRequest

    if coordinator.generation != 0 or not coordinator.member_id or coordinator._group_instance_id is not None:
        await GroupCoordinator._maybe_leave_group(coordinator)  # leaves from generation 1, resets the generation
        return
    try:
        await coordinator._send_req(LeaveGroupRequest(coordinator.group_id, coordinator.member_id))
    except KafkaError as exc:  # a minimal effort, as aiokafka's: the session times out instead
        log.warning("could not leave the consumer group: %r", exc)
    else:
        log.info("left the consumer group (generation 0)")
    coordinator.reset_generation()
