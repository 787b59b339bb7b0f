"""``backtest --report``: one self-contained HTML file, rendered by headless Chromium.

Chromium is Debian's ``chromium`` (``sudo scripts/setup-browser.sh``). Without it the rendering tests
skip, saying so, or fail under ``MODWATCH_REQUIRE_SERVICES=1`` (``tests/services.py``).
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from streams.cli.main import main
from streams.config.loader import load_rules
from streams.core.scoring import Severity
from streams.offline.backtest import run_backtest
from streams.offline.explain import explain_alerts
from streams.offline.report import SEVERITY_COLORS, ReportData, render_report
from tests.services import BROWSER, require_program

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
LOG = str(ROOT / "examples" / "events.jsonl")

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars",
]  # fmt: skip


def chromium() -> str:
    return require_program("chromium", BROWSER)


def run_chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / "chromium-profile"
    profile.mkdir(exist_ok=True)
    proc = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def hex_rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def pixel_counts(image: Image.Image) -> Counter[tuple[int, int, int]]:
    width, height = image.size
    return Counter({color: count for count, color in image.getcolors(width * height) or []})


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The report of the example log, written through the CLI as a user would."""
    tmp = tmp_path_factory.mktemp("report")
    path = tmp / "report.html"
    code = main(["backtest", LOG, "--config", str(CONFIG), "--output", str(tmp / "alerts.jsonl"),
                 "--report", str(path)])  # fmt: skip
    assert code == 0
    yield path


@functools.cache
def example_alerts() -> list[dict[str, object]]:
    return [a.to_dict() for a in run_backtest([LOG], load_rules(CONFIG)).alerts]


def test_report_is_self_contained(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    # Nothing to fetch: no src/href attributes, no script, no URL but the SVG namespace.
    assert not re.search(r"\s(src|href)\s*=", html, re.IGNORECASE)
    assert "<script" not in html.lower()
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) == {"http://www.w3.org/2000/svg"}
    assert "default-src 'none'" in html  # and the browser is told not to fetch anything anyway


@pytest.fixture(scope="module")
def dom(report: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The document as Chromium parsed it."""
    return run_chromium(tmp_path_factory.mktemp("dom"), "--dump-dom", report.as_uri()).stdout


def test_dom_has_the_charts_and_the_alert_table(dom: str) -> None:
    for chart in ("chart-timeline", "chart-rules", "chart-latency", "chart-actors"):
        match = re.search(rf'<svg id="{chart}"[^>]*>(.*?)</svg>', dom, re.DOTALL)
        assert match, chart
        assert match.group(1).count("<rect") >= 3, chart
    assert 'id="minute-line"' in dom and "one minute" in dom
    alerts = example_alerts()
    critical = [a for a in alerts if a["severity"] == "critical"]
    serious = [a for a in alerts if a["severity"] in ("critical", "high")]
    rows = re.findall(r'<tr class="alert sev-(critical|high)" data-alert-id="([0-9a-f]+)"', dom)
    assert len(rows) == len(serious) == 20
    assert sorted(i for s, i in rows if s == "critical") == sorted(str(a["alert_id"]) for a in critical)
    # Each has its explanation: events and the score breakdown.
    assert dom.count("<details>") == len(serious)
    assert "ev-000557" in dom and "foreign_requester" in dom and "clamped to 0-100" in dom
    # Every rule with alerts appears in the by-rule chart.
    rules_chart = re.search(r'<svg id="chart-rules".*?</svg>', dom, re.DOTALL)
    assert rules_chart is not None
    for rule_id in {str(a["rule_id"]) for a in alerts}:
        assert rule_id in rules_chart.group(0)
    assert "emp-liaison-01" in re.search(r'<svg id="chart-actors".*?</svg>', dom, re.DOTALL).group(0)  # type: ignore[union-attr]


def test_screenshot_shows_the_charts(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,2000", report.as_uri())
    image = Image.open(shot).convert("RGB")
    assert image.size == (1400, 2000)
    colors = pixel_counts(image)
    _background, share = colors.most_common(1)[0]
    assert share < 0.9 * 1400 * 2000, "the page is (nearly) one colour"
    assert len(colors) > 200  # text, axes, bars: not a blank page
    # Bars are drawn in the severity colours and the latency bars under a minute in the minute colour;
    # their fills render exactly, so counting pixels of those colours shows the charts were painted.
    critical = colors[hex_rgb(SEVERITY_COLORS[Severity.CRITICAL])]
    info = colors[hex_rgb(SEVERITY_COLORS[Severity.INFO])]
    minute = colors[hex_rgb("#7c3aed")]
    assert critical > 2000, critical
    assert info > 2000, info
    assert minute > 1000, minute
    # The timeline sits in the top third of the page: its bars are there, not only further down.
    top = image.crop((0, 0, 1400, 700))
    assert pixel_counts(top)[hex_rgb(SEVERITY_COLORS[Severity.CRITICAL])] > 200


def test_untrusted_text_is_escaped(tmp_path: Path) -> None:
    """Event fields end up in the report: markup in them must stay text."""
    payload = '<img src=x onerror="document.title=1"><script>document.title=2</script>'
    events = [
        {"event_id": "e1", "event_type": "meeting.shutdown", "occurred_at": "2020-06-01T00:00:00Z",
         "actor": {"id": f"emp-{payload}", "kind": "employee", "region": "US"}, "reason": payload,
         "target": {"kind": "meeting", "id": "m-</td></tr></table>", "region": "US", "tags": ["political"]}},
    ]  # fmt: skip
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    ruleset = load_rules(CONFIG)
    result = run_backtest([str(log)], ruleset)
    assert any(a.severity >= Severity.HIGH for a in result.alerts)
    run = explain_alerts(ruleset, [str(log)])
    html = render_report(ReportData(result, run.explanations, [str(log)], str(CONFIG), (run.first_ts or 0, 0)))
    assert "<img" not in html and "<script" not in html
    assert "m-&lt;/td&gt;&lt;/tr&gt;&lt;/table&gt;" in html
    assert "&lt;img src=x onerror=&quot;document.title=1&quot;&gt;" in html
    page = tmp_path / "hostile.html"
    page.write_text(html, encoding="utf-8")
    dom = run_chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    assert "<img" not in dom and "<script" not in dom
    assert "<title>modwatch backtest report</title>" in dom  # no script ran to change it
    assert dom.count('class="alert sev-') == sum(1 for a in result.alerts if a.severity >= Severity.HIGH)


def test_empty_backtest_still_renders(tmp_path: Path) -> None:
    log = tmp_path / "empty.jsonl"
    log.write_text("", encoding="utf-8")
    result = run_backtest([str(log)], load_rules(CONFIG))
    html = render_report(ReportData(result, [], [str(log)], str(CONFIG), None))
    for chart in ("chart-timeline", "chart-rules", "chart-latency", "chart-actors"):
        assert f'id="{chart}"' in html
    assert "No high or critical alerts." in html
