"""``RecentIds``: what it tells of an event id (new, duplicate, conflict) matches a plain dict of every
id's contents; an id inside the horizon is never forgotten, one two horizons behind is; the memory of
expired ids comes back."""

from __future__ import annotations

import hashlib
import random
import tracemalloc

from streams.core.state import CONFLICT, DUPLICATE, KEEP_ALL_BELOW, MAX_VERSIONS, NEW, RecentIds

# Ids that a packed table could get wrong: prefixes of one another, empty, non-ASCII (U+00FF and
# U+00FE are not the bytes 0xFF and 0xFE in UTF-8), a lone surrogate (JSON can carry one), a NUL.
ODD_IDS = ["", "ev-1", "ev-10", "ev-100", "v-1", "é", "\u00ff", "\u00fe", "a\u00fe\u00ffb", "\ud800", "\x00",
           "x" * 300, "ev-1 ", " ev-1", "日本"]  # fmt: skip


def digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def first_content(event_id: str) -> bytes:
    """Mostly a digest; for some ids 16 zero bytes, or a digest of another size (kept apart)."""
    kind = sum(event_id.encode("utf-8", "surrogatepass")) % 10
    return bytes(16) if kind == 0 else digest(event_id)[:5] if kind == 1 else digest(event_id)


def check_against_dict(recent: RecentIds, seen: dict[str, list[bytes]], event_id: str, content: bytes) -> str:
    """``recent.check`` with a timestamp inside the horizon, against the plain rule: same content as
    any remembered one is a duplicate; other content a conflict, remembered up to ``MAX_VERSIONS``
    besides the first."""
    verdict = recent.check(event_id, 1_000.0, content)
    versions = seen.get(event_id)
    if versions is None:
        seen[event_id] = [content]
        expected = NEW
    elif content in versions:
        expected = DUPLICATE
    else:
        if len(versions) <= MAX_VERSIONS:
            versions.append(content)
        expected = CONFLICT
    assert verdict == expected, (event_id, verdict, expected)
    return verdict


def test_verdicts_and_first_digests_match_a_dict_of_every_id() -> None:
    rng = random.Random(7)
    ids = sorted({*ODD_IDS, *(f"ev-{n}" for n in range(6000)), *(f"{rng.getrandbits(64):x}" for _ in range(2000))})
    rng.shuffle(ids)
    recent = RecentIds()
    seen: dict[str, list[bytes]] = {}
    verdicts = set()
    for step in range(20_000):
        event_id = ids[step] if step < len(ids) else rng.choice(ids)
        roll = rng.random()
        if roll < 0.6 or event_id not in seen:
            content = first_content(event_id)  # (or its redelivery)
        elif roll < 0.9:
            content = digest(f"{event_id} version {rng.randrange(8)}")  # more versions than are kept
        else:
            content = event_id.encode("utf-8", "surrogatepass")[:5]  # a digest of another size
        verdicts.add(check_against_dict(recent, seen, event_id, content))
    assert verdicts == {NEW, DUPLICATE, CONFLICT}
    assert len(recent) == len(seen) == len(ids)
    for event_id, versions in seen.items():
        assert recent.first_digest(event_id) == versions[0]
    assert recent.first_digest("never-seen") is None
    assert recent.first_digest("ev-1000000") is None


def test_a_redelivered_conflicting_version_is_a_duplicate_until_max_versions() -> None:
    recent = RecentIds()
    assert recent.check("ev-1", 0.0, digest("a")) == NEW
    others = [digest(f"b{n}") for n in range(MAX_VERSIONS + 2)]
    assert [recent.check("ev-1", 5.0, other) for other in others] == [CONFLICT] * len(others)
    kept, dropped = others[:MAX_VERSIONS], others[MAX_VERSIONS:]
    assert [recent.check("ev-1", 5.0, other) for other in kept] == [DUPLICATE] * MAX_VERSIONS
    assert [recent.check("ev-1", 5.0, other) for other in dropped] == [CONFLICT] * len(dropped)
    assert recent.check("ev-1", 0.0, digest("a")) == DUPLICATE
    assert recent.first_digest("ev-1") == digest("a")
    assert len(recent) == 1


def test_an_id_inside_the_horizon_is_never_forgotten_and_one_two_horizons_behind_is() -> None:
    """Event time advances in steps and jumps (some within a horizon, some past two), some events
    arrive late (up to three horizons): after new ids, each id whose time is within the horizon of
    the newest is known, with its digest; and one that arrived when the newest time was more than
    two horizons before now is not, unless fewer than ``KEEP_ALL_BELOW`` ids were held since (all
    are kept then)."""
    rng = random.Random(11)
    horizon = 50.0
    recent = RecentIds(horizon)
    arrived: list[tuple[str, float, float, int]] = []  # id, its time, the newest time after it, number
    newest, now, small_at = float("-inf"), 0.0, -1
    jumps = 0
    for number in range(40_000):
        if rng.random() < 0.0001:
            now += rng.uniform(20, 200)
            jumps += 1
        else:
            now += rng.choice((0.0, 0.01, 0.02, 0.05))
        ts = now - rng.uniform(0, 3 * horizon) if rng.random() < 0.05 else now
        if len(recent) < KEEP_ALL_BELOW:
            small_at = number
        event_id = f"ev-{number}"
        assert recent.check(event_id, ts, digest(event_id)) == NEW
        newest = max(newest, ts)
        arrived.append((event_id, ts, newest, number))
        if number % 499 == 0:
            for old_id, old_ts, arrival, old_number in arrived:
                if old_ts >= newest - horizon:
                    assert recent.first_digest(old_id) == digest(old_id), (old_id, old_ts, newest)
                elif arrival < newest - 2 * horizon and old_number > small_at:
                    assert recent.first_digest(old_id) is None, (old_id, arrival, newest)
            arrived = [item for item in arrived if item[1] >= newest - horizon or item[2] >= newest - 2 * horizon]
    assert jumps >= 3 and len(recent) < 10_000


def test_ids_in_the_previous_generation_still_conflict_and_are_forgotten_with_it() -> None:
    recent = RecentIds(horizon=10.0)
    for number in range(2000):
        recent.check(f"a-{number}", number / 1000, digest(f"a-{number}"))
    for number in range(701):  # a horizon on: the a- ids are now the previous generation
        recent.check(f"b-{number}", 10.5 + number / 1000, digest(f"b-{number}"))
    assert all(recent.first_digest(f"a-{number}") == digest(f"a-{number}") for number in range(1200, 2000))
    assert recent.check("a-1500", 1.5, digest("a-1500")) == DUPLICATE
    assert recent.check("a-1500", 1.5, digest("other")) == CONFLICT
    assert recent.check("a-1500", 1.5, digest("other")) == DUPLICATE
    assert recent.first_digest("a-1500") == digest("a-1500")
    length = len(recent)
    recent.check("later", 22.0, digest("later"))  # every a- id arrived more than two horizons before
    assert all(recent.first_digest(f"a-{number}") is None for number in range(2000))
    assert recent.check("a-1500", 1.5, digest("other")) == NEW  # forgotten, its other version too
    assert len(recent) < length


def test_an_id_is_forgotten_two_horizons_after_it_arrived_when_event_time_jumped_at_a_rotation() -> None:
    recent = RecentIds(horizon=10.0)
    for number in range(2000):  # the generation opens at 1.023, when it holds KEEP_ALL_BELOW ids
        recent.check(f"a-{number}", number / 1000, digest(f"a-{number}"))
    for number in range(902):  # to 11.01: it holds a horizon of ids
        recent.check(f"c-{number}", 2.0 + number / 100, digest(f"c-{number}"))
    recent.check("jump", 20.0, digest("jump"))  # it becomes the previous generation here, 9 s late
    assert recent.first_digest("a-1024") == digest("a-1024")
    recent.check("after", 21.1, digest("after"))  # more than two horizons after a-1024 arrived (1.024)
    assert recent.first_digest("a-1024") is None and recent.first_digest("c-900") is None
    assert len(recent) == 2


def test_ids_within_a_horizon_make_one_generation() -> None:
    """Not the first ``KEEP_ALL_BELOW`` ids in a generation of their own: one more to search for every
    event through a horizon (as the memory benchmark would, its 50 s of events all in one)."""
    recent = RecentIds(horizon=100.0)
    for number in range(5000):
        recent.check(f"ev-{number}", number / 100, digest(f"ev-{number}"))
    assert (recent._current.count, recent._previous.count) == (5000, 0)


def test_fewer_ids_than_keep_all_below_are_all_kept_across_a_jump() -> None:
    """As the timestamped dict did: a small log's redelivery is a duplicate however late it comes."""
    recent = RecentIds(horizon=10.0)
    for number in range(KEEP_ALL_BELOW - 2):
        recent.check(f"ev-{number}", float(number), digest(f"ev-{number}"))
    assert recent.check("far", 1e6, digest("far")) == NEW
    assert recent.check("ev-0", 0.0, digest("ev-0")) == DUPLICATE
    assert len(recent) == KEEP_ALL_BELOW - 1


def test_the_memory_of_expired_ids_comes_back() -> None:
    tracemalloc.start()
    try:
        recent = RecentIds(horizon=60.0)
        ids = [f"ev-{number:06d}" for number in range(20_000)]
        digests = [digest(event_id) for event_id in ids]
        before = tracemalloc.get_traced_memory()[0]
        for number, (event_id, content) in enumerate(zip(ids, digests, strict=True)):
            recent.check(event_id, number / 1000, content)
        loaded = tracemalloc.get_traced_memory()[0] - before
        recent.check("after", 1000.0, digest("after"))  # every id is more than two horizons behind
        after = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(recent) == 1
    assert loaded < 20_000 * 40  # ~32 bytes an id (a dict of timestamped digests took ~190)
    assert after < 4096
