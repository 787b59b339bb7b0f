"""Real Prometheus and Alertmanager servers for the observability tests, and what they query.

The binaries come from Debian's ``prometheus`` and ``prometheus-alertmanager`` packages, installed by
``sudo scripts/setup-services.sh``. A missing binary skips the test with that command in the reason, or
fails it under ``MODWATCH_REQUIRE_SERVICES=1`` (``binary``, through ``tests.services``). Each server
runs on a free loopback port with its data in a temporary directory, and is killed at teardown (and,
on Linux, when the test process dies).
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from streams.tools.broker import LOOPBACK, _die_with_parent_hook, free_port
from tests.services import SERVICES, require_program

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"
PROMETHEUS_DIR = REPO / "config" / "prometheus"
ALERT_RULES = PROMETHEUS_DIR / "alerts.yml"
ALERTMANAGER_CONFIG = REPO / "config" / "alertmanager" / "alertmanager.yml"

# What a Grafana variable stands for when a query is sent to Prometheus directly: "All" for the
# multi-value variables, and intervals that suit a 1 s scrape over a short test.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "5s",
    "$__range": "10m",
    "$region": ".*",
    "$rule": ".*",
}


def binary(name: str) -> str:
    """A program from Debian's prometheus packages or docker-compose: skips (or fails) when missing."""
    return require_program(name, SERVICES)


def substitute(expr: str) -> str:
    """A dashboard query as Grafana would send it (longest names first: ``$__range`` vs ``$__rate``)."""
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace("${" + name[1:] + "}", GRAFANA_VARIABLES[name]).replace(name, GRAFANA_VARIABLES[name])
    leftover = re.search(r"\$\{?\w+", expr)
    assert leftover is None, f"unsubstituted Grafana variable {leftover.group(0)!r} in {expr!r}"
    return expr


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


@dataclass(frozen=True)
class Query:
    source: str  # "moderation-overview.json: Actions by type [A]" or "alerts.yml: ModwatchDown"
    expr: str  # as Prometheus receives it
    instant: bool


def dashboard_queries(name: str | None = None) -> list[Query]:
    out = []
    for file, dashboard in load_dashboards().items():
        if name is not None and file != name:
            continue
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                out.append(Query(f"{file}: {panel['title']} [{target['refId']}]", substitute(target["expr"]),
                                 bool(target.get("instant"))))  # fmt: skip
    return out


def rule_queries() -> list[Query]:
    rules = yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8"))
    return [
        Query(f"alerts.yml: {rule['alert']}", rule["expr"], True)
        for group in rules["groups"]
        for rule in group["rules"]
    ]


def has_data(result: list[dict[str, Any]]) -> bool:
    """At least one sample that is a number (a quantile of no observations is NaN: no data)."""
    samples = [s for series in result for s in ([series["value"]] if "value" in series else series["values"])]
    return any(value != "NaN" for _, value in samples)


def http_json(url: str, data: bytes | None = None, timeout: float = 5.0) -> Any:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.25) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` (and the last error)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
            last = result
        except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class Server:
    """A server binary on a free loopback port, started with ``start()`` and always ``stop()``-ed."""

    name = "server"
    ready_path = "/-/ready"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.requested_port = port
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{self.name}.log"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> Server:
        # A port picked by free_port() can be taken before the server binds it: retry on a fresh one.
        attempts = 1 if self.requested_port else 3
        for attempt in range(attempts):
            self.port = self.requested_port or free_port()
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                    start_new_session=True, preexec_fn=_die_with_parent_hook(),
                )  # fmt: skip
            try:
                wait_for(f"{self.name} on {self.url}", self._ready, timeout)
                return self
            except AssertionError:
                in_use = "address already in use" in self.log_tail().lower()
                self.stop()
                if not in_use or attempt == attempts - 1:
                    raise AssertionError(f"{self.name} did not start:\n{self.log_tail()}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
        with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as resp:
            return bool(resp.status == 200)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class Prometheus(Server):
    name = "prometheus"

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        super().__init__(workdir)
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    def argv(self) -> list[str]:
        return [
            binary("prometheus"),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
        ]

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; fails with Prometheus' own error message unless the status is success."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            body = http_json(url, timeout=10)
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        assert body.get("status") == "success", f"{path} {params}: {body.get('errorType')}: {body.get('error')}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr, time=f"{time.time():.3f}")
        result: list[dict[str, Any]] = data["result"] if data["resultType"] in ("vector", "matrix") else [data]
        return result

    def query_range(self, expr: str, seconds: float = 60.0, step: str = "1s") -> list[dict[str, Any]]:
        now = time.time()
        data = self.api("query_range", query=expr, start=f"{now - seconds:.3f}", end=f"{now:.3f}", step=step)
        result: list[dict[str, Any]] = data["result"]
        return result


def prometheus_config(targets: list[str], alertmanager: str | None = None) -> dict[str, Any]:
    """A test config: job "modwatch" scraped every second, the shipped alerting rules evaluated every second."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(ALERT_RULES)],
        "scrape_configs": [{"job_name": "modwatch", "static_configs": [{"targets": targets}]}],
    }
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return config


class Alertmanager(Server):
    name = "alertmanager"

    def __init__(self, workdir: Path, config: dict[str, Any], port: int | None = None) -> None:
        super().__init__(workdir, port)
        self.config_path = workdir / "alertmanager.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    def argv(self) -> list[str]:
        return [
            binary("prometheus-alertmanager"),
            f"--config.file={self.config_path}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            "--cluster.listen-address=",  # no gossip: one instance, no port 9094
        ]

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """GET /api/v2/alerts (active, silenced and inhibited), optionally ``label="value"`` filtered."""
        query = urllib.parse.urlencode([("filter", f'{k}="{v}"') for k, v in filters.items()])
        result: list[dict[str, Any]] = http_json(f"{self.url}/api/v2/alerts?{query}")
        return result


class Receiver:
    """A loopback HTTP server standing in for the pager and chat services: records each
    Alertmanager webhook notification by path (``/pager``, ``/chat``)."""

    def __init__(self) -> None:
        self.received: dict[str, list[dict[str, Any]]] = {}
        lock = threading.Lock()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with lock:
                    received.setdefault(self.path, []).append(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server.server_address[1]}"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def alert_ids(self, path: str) -> set[str]:
        return {
            alert["labels"].get("alert_id", alert["labels"]["alertname"])
            for notification in self.received.get(path, [])
            for alert in notification["alerts"]
        }


def alertmanager_test_config(receiver_url: str) -> dict[str, Any]:
    """The shipped config with its route tree and inhibition rules unchanged, the receivers replaced by
    webhooks to a loopback :class:`Receiver` (a test must not reach PagerDuty or Slack), and the waits
    shortened so notifications arrive within a test."""
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    names = [receiver["name"] for receiver in config["receivers"]]
    config["receivers"] = [
        {"name": name, "webhook_configs": [{"url": f"{receiver_url}/{name}", "send_resolved": True}]}
        for name in names
    ]

    def shorten(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval"):
            if key in route:
                route[key] = "1s"
        for child in route.get("routes", []):
            shorten(child)

    shorten(config["route"])
    return config


class TextfileServer:
    """Serves a Prometheus textfile over loopback HTTP, the way a backtest's ``--metrics`` file would be
    exposed to Prometheus. It starts with every sample at zero (the counters before the run) and
    serves the real file after :meth:`publish`, so rates and increases over the scrapes are the run's."""

    def __init__(self, text: str) -> None:
        self.real = text.encode()
        self.zero = "\n".join(_zeroed(line) for line in text.splitlines()).encode() + b"\n"
        self.body = self.zero
        self.scrapes = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = outer.body
                outer.scrapes += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def target(self) -> str:
        return f"{LOOPBACK}:{self.server.server_address[1]}"

    def publish(self) -> None:
        self.body = self.real

    def __enter__(self) -> TextfileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def _zeroed(line: str) -> str:
    if not line or line.startswith("#"):
        return line
    name_and_labels, _, _value = line.rpartition(" ")
    return f"{name_and_labels} 0.0"
