"""Raw audit logs from a contract log, to time ``normalize`` and ``backtest --input`` on real shapes.

    modwatch generate --events 200000 --seed 1 --incidents -o /tmp/contract.jsonl
    python bench/raw_log.py /tmp/contract.jsonl /tmp/raw     # okta.jsonl, zoom.jsonl, register.csv
    time modwatch normalize --input okta=/tmp/raw/okta.jsonl --input zoom-webhook=/tmp/raw/zoom.jsonl \\
        --input requests-csv=/tmp/raw/register.csv -o /tmp/normalized.jsonl
    time modwatch backtest /tmp/contract.jsonl -o /tmp/alerts.jsonl

One raw record per contract event: requests become register rows, meeting shutdowns Zoom
``meeting.deleted``, suspensions and terminations Okta lifecycle events, grants Okta privilege grants;
the rest (exports, reports, quarantines, removals) Okta sign-ins, which the mapping drops.
"""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime
from pathlib import Path


def convert(contract: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with contract.open() as src, (out / "okta.jsonl").open("w") as okta, (out / "zoom.jsonl").open("w") as zoom, \
            (out / "register.csv").open("w", newline="") as reg:  # fmt: skip
        register = csv.writer(reg)
        register.writerow(["request_id", "received_at", "agency", "requester_kind", "jurisdiction", "request_kind",
                           "targets", "deadline_seconds", "confidential"])  # fmt: skip
        for n, line in enumerate(src):
            e = json.loads(line)
            kind, actor, when = e["event_type"], e["actor"], e["occurred_at"]
            okta_base = {"uuid": f"u-{n}", "published": when,
                         "actor": {"id": f"00u{n}", "type": "User", "alternateId": actor["id"]},
                         "client": {"ipAddress": "198.51.100.1", "geographicalContext": {"country": actor["region"]}},
                         "outcome": {"result": "SUCCESS"}}  # fmt: skip
            if kind == "request.received":
                targets = ";".join(f"{t['kind']}:{t['id']}:{t['region']}" for t in e.get("targets", []))
                r = e["requester"]
                register.writerow([e["request_id"], when, r["agency"], r["kind"], r["jurisdiction"], e["request_kind"],
                                   targets, e.get("deadline_seconds", ""), e.get("confidential", False)])  # fmt: skip
            elif kind == "meeting.shutdown":
                ms = int(datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp() * 1000)
                body = {"event": "meeting.deleted", "event_ts": ms,
                        "payload": {"account_id": "A1", "operator": actor["id"], "operator_id": f"op{n}",
                                    "object": {"uuid": f"m{n}", "id": e["target"]["id"],
                                               "host_id": e["target"].get("owner_id", "host")}}}  # fmt: skip
                zoom.write(json.dumps(body) + "\n")
            elif kind in ("account.suspend", "account.terminate"):
                action = "user.lifecycle.suspend" if kind == "account.suspend" else "user.lifecycle.deactivate"
                rec = {**okta_base, "eventType": action,
                       "target": [{"id": f"t{n}", "type": "User", "alternateId": e["target"]["id"]}]}  # fmt: skip
                okta.write(json.dumps(rec) + "\n")
            elif kind == "access.grant":
                rec = {**okta_base, "eventType": "user.account.privilege.grant",
                       "target": [{"id": f"t{n}", "type": "User", "alternateId": e["grantee"]["id"]}],
                       "debugContext": {"debugData": {"privilegeGranted": e["scope"]}}}  # fmt: skip
                okta.write(json.dumps(rec) + "\n")
            else:
                okta.write(json.dumps({**okta_base, "eventType": "user.session.start", "target": []}) + "\n")


if __name__ == "__main__":
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
