"""Geo-IP context: a tiny MaxMind database built with mmdb-writer fills an actor's unknown region
from the event's ``source.ip``; the staff directory comes first."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.core.ruleset import ConfigError
from streams.inputs.context import build_context, enrich
from tests.inputs.test_context import STAFF, TS, shutdown


def test_geoip_fills_an_unknown_region_from_source_ip(tmp_path: Path) -> None:
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    from streams.inputs.context_files import open_geoip

    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-Country", ipv4_compatible=True)
    writer.insert_network(IPSet(["203.0.113.0/24"]), {"country": {"iso_code": "HK"}})
    writer.insert_network(IPSet(["2001:db8::/32"]), {"registered_country": {"iso_code": "us"}})
    writer.to_db_file(str(tmp_path / "tiny.mmdb"))
    lookup = open_geoip(tmp_path / "tiny.mmdb")
    assert (lookup("203.0.113.9"), lookup("2001:db8::1"), lookup("192.0.2.1"), lookup("not an ip")) == \
        ("HK", "US", None, None)  # fmt: skip
    ctx = build_context(geoip=lookup)
    out = enrich(shutdown(source={"ip": "203.0.113.9"}), ctx, TS)
    assert out.event["actor"]["region"] == "HK" and out.misses == ()
    assert enrich(shutdown(source={"ip": "192.0.2.1"}), ctx, TS).misses == ("geoip",)
    assert "region" in enrich(shutdown(), ctx, TS).event["actor"]  # no IP: nothing to look up
    staffed = enrich(shutdown(source={"ip": "203.0.113.9"}), build_context(STAFF, geoip=lookup), TS)
    assert staffed.event["actor"]["region"] == "US"  # the directory first


def test_a_file_that_is_no_database_is_a_config_error(tmp_path: Path) -> None:
    from streams.inputs.context_files import open_geoip

    (tmp_path / "bad.mmdb").write_bytes(b"not a database")
    with pytest.raises(ConfigError, match=r"bad\.mmdb: not a MaxMind database"):
        open_geoip(tmp_path / "bad.mmdb")
    with pytest.raises(ConfigError, match="no such geo-IP database"):
        open_geoip(tmp_path / "missing.mmdb")
