"""``backtest --input ... --context`` over raw logs, and the context files it reads.

The key property: on the raw examples with context, ``backtest --input ... --context`` raises the
same alerts, byte for byte, as ``normalize --context`` followed by a plain ``backtest`` of its output.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.cli.main import main
from streams.core.ruleset import ConfigError
from streams.inputs import context_files
from streams.inputs.context_files import load_context

ROOT = Path(__file__).resolve().parents[2]
RAW = ROOT / "examples" / "raw"
CONTEXT = ROOT / "examples" / "context"
INPUTS = ["--input", f"requests-csv={RAW / 'register.csv'}", "--input", f"zoom-webhook={RAW / 'zoom.jsonl'}",
          "--input", f"okta={RAW / 'okta.jsonl'}"]  # fmt: skip
CONFIG = ["--config", str(ROOT / "streams" / "config" / "defaults")]


def test_backtest_of_raw_logs_equals_normalize_then_backtest(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    raw_alerts, events, alerts = tmp_path / "raw-alerts.jsonl", tmp_path / "events.jsonl", tmp_path / "alerts.jsonl"
    assert main(["backtest", *INPUTS, "--context", str(CONTEXT), "-o", str(raw_alerts), *CONFIG]) == 0
    summary = capsys.readouterr().err
    assert main(["normalize", *INPUTS, "--context", str(CONTEXT), "-o", str(events)]) == 0
    assert main(["backtest", str(events), "-o", str(alerts), *CONFIG]) == 0
    assert raw_alerts.read_bytes() == alerts.read_bytes()
    fired = sorted((a["rule_id"], a["severity"]) for a in map(json.loads, raw_alerts.read_text().splitlines()))
    assert fired == [("cross_jurisdiction", "critical"), ("cross_region_access", "low"),
                     ("rapid_takedown", "critical"), ("undocumented_action", "high"),
                     ("undocumented_action", "medium")]  # fmt: skip
    assert "zoom-webhook (" in summary and "5 read, 3 mapped, 2 dropped, 0 rejected" in summary
    assert "dropped by action (unmapped or drop_when): user.session.start 1, user.lifecycle.suspend 1" in summary
    assert "context misses (kept, tagged context:unknown_*): accounts 1, staff 1" in summary
    assert "7 events mapped" in summary


def test_incidents_of_raw_logs_equal_those_of_normalize_then_backtest(tmp_path: Path) -> None:
    """``--incidents`` works on raw logs too, and gives what the contract path gives on normalize's output:
    the liaison's takedown pages once, as one incident of her alerts."""
    raw, events, plain = tmp_path / "raw-incidents.jsonl", tmp_path / "events.jsonl", tmp_path / "incidents.jsonl"
    assert main(["backtest", *INPUTS, "--context", str(CONTEXT), "-o", str(tmp_path / "a1"), "--incidents", str(raw),
                 *CONFIG]) == 0  # fmt: skip
    assert main(["normalize", *INPUTS, "--context", str(CONTEXT), "-o", str(events)]) == 0
    assert main(["backtest", str(events), "-o", str(tmp_path / "a2"), "--incidents", str(plain), *CONFIG]) == 0
    assert raw.read_bytes() == plain.read_bytes()
    (incident,) = map(json.loads, raw.read_text().splitlines())
    assert incident["severity"] == "critical" and len(incident["alert_ids"]) == 3


def test_without_context_the_same_logs_raise_other_alerts(tmp_path: Path) -> None:
    """The context is what makes the meeting US (cross_jurisdiction) and documents the ticketed suspensions."""
    out = tmp_path / "alerts.jsonl"
    assert main(["backtest", *INPUTS, "-o", str(out), *CONFIG]) == 0
    rules = sorted(json.loads(line)["rule_id"] for line in out.read_text().splitlines())
    assert "cross_jurisdiction" in rules and rules.count("undocumented_action") >= 3


def test_rejected_raw_records_are_dead_letters_and_strict_fails(tmp_path: Path) -> None:
    log = tmp_path / "okta.jsonl"
    log.write_text((RAW / "okta.jsonl").read_text() + "{not json\n")
    dead = tmp_path / "dead.jsonl"
    argv = ["backtest", "--input", f"okta={log}", "-o", str(tmp_path / "a.jsonl"), "--deadletter", str(dead), *CONFIG]
    assert main(argv) == 0
    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    assert [(d["reason"], d["line"]) for d in letters] == [("invalid_json", 5)]
    assert main([*argv, "--strict"]) == 1


def test_paths_and_inputs_together_or_neither_are_usage_errors(tmp_path: Path) -> None:
    out = str(tmp_path / "a.jsonl")
    assert main(["backtest", str(ROOT / "examples" / "events.jsonl"), *INPUTS, "-o", out]) == 2
    assert main(["backtest", "-o", out]) == 2
    assert main(["backtest", "--input", f"nope={RAW / 'okta.jsonl'}", "-o", out]) == 2


# -- context files --------------------------------------------------------------------------------


def test_csv_and_jsonl_tables_give_the_same_context(tmp_path: Path) -> None:
    import csv

    csv_ctx = load_context(CONTEXT)

    for name in ("staff", "accounts", "tickets"):
        with (CONTEXT / f"{name}.csv").open(newline="") as fh:
            lines = [json.dumps({k: v for k, v in row.items() if v}) for row in csv.DictReader(fh)]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    jsonl_ctx = load_context(tmp_path)
    assert jsonl_ctx.staff == csv_ctx.staff and jsonl_ctx.accounts == csv_ctx.accounts
    assert jsonl_ctx.tickets == csv_ctx.tickets
    (tmp_path / "accounts.jsonl").write_text('{"id": "m", "kind": "meeting", "tags": ["a", "b"]}\n')
    assert load_context(tmp_path).accounts["m"].tags == ("a", "b")  # type: ignore[index]


def test_a_missing_table_is_absent_and_said_once(tmp_path: Path) -> None:
    (tmp_path / "staff.csv").write_text("id,kind,region\nsomeone,employee,US\n")
    said: list[str] = []
    ctx = load_context(tmp_path, notify=said.append)
    assert ctx.staff is not None and ctx.accounts is None and ctx.tickets is None
    assert len(said) == 2 and all("not consulted" in line for line in said)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("staff.csv", "id,kind,region\na,employee,US\nb,robot,US\n", "staff.csv: line 3: column kind: 'robot' is not"),
        ("staff.csv", "id,region\na,US\n", "staff.csv: line 1: column kind: missing from the header"),
        ("tickets.csv", "ticket_id,targets,opened_at\nT1,x,yesterday\n",
         "tickets.csv: line 2: column opened_at: 'yesterday' is not an RFC 3339"),
        ("accounts.jsonl", '{"id": "a", "kind": "account"}\n\n{"id": "b", "kind": "account", "region": 7}\n',
         "accounts.jsonl: line 3: column region: expected a string"),
        ("accounts.jsonl", '{"id": "a", "kind": "account"}\n[1]\n', "accounts.jsonl: line 2: expected a JSON object"),
        ("staff.csv", "id,kind\na,bot,extra\n", "staff.csv: line 2: 3 values for 2 columns"),
    ],
)
def test_bad_rows_name_file_line_and_column(tmp_path: Path, name: str, text: str, message: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as err:
        load_context(tmp_path)
    assert message in str(err.value)


def test_oversized_ambiguous_or_missing_tables_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "staff.csv").write_text("id,kind\n" + "someone,employee\n" * 10)
    monkeypatch.setattr(context_files, "MAX_TABLE_BYTES", 64)
    with pytest.raises(ConfigError, match="larger than 64 bytes"):
        load_context(tmp_path)
    monkeypatch.undo()
    (tmp_path / "staff.jsonl").write_text("")
    with pytest.raises(ConfigError, match=r"both staff\.csv and staff\.jsonl"):
        load_context(tmp_path)
    with pytest.raises(ConfigError, match="no such context directory"):
        load_context(tmp_path / "nope")
    assert main(["normalize", *INPUTS, "--context", str(tmp_path / "nope"), "-o", str(tmp_path / "e.jsonl")]) == 2
