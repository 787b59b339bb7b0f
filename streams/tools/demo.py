"""``modwatch demo``: the whole loop on one machine, no Docker.

An embedded broker (Tansu) on a free loopback port, the live worker as a child process, a replay of
the example log, and the alerts read back from the alerts topic and printed as they fire. Ctrl-C (or
``--exit-after-idle``) stops everything; the broker and worker are always killed on the way out.

``--raw``: the raw path instead. The context tables of ``examples/context`` are published to their
topics, the worker reads the raw topics (``settings.inputs``), and the raw logs of ``examples/raw``
(the legal register, Zoom webhooks, Okta) are replayed as the platforms would deliver them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from streams.config.kafka import create_topics, kafka_client
from streams.config.loader import load_rules, resolve_rules_dir
from streams.config.settings import KafkaSecurity, RawInput, Settings
from streams.offline.explain_text import safe_text
from streams.tools.broker import EmbeddedBroker, free_port

SEVERITY_COLOURS = {"critical": "\033[1;31m", "high": "\033[31m", "medium": "\033[33m", "low": "\033[36m", "info": ""}


RAW_DIR = "examples/raw"
CONTEXT_DIR = "examples/context"
RAW_INPUTS = (("requests-csv", "register.csv"), ("zoom-webhook", "zoom.jsonl"), ("okta", "okta.jsonl"))
HEADER = f"{'event time':<19}  {'severity':<8}  {'rule':<24}  {'alert id':<24}  summary"


def format_row(alert: dict[str, object], colour: bool = False) -> str:
    """One alert as a line under ``HEADER``. Every field is cleaned of control characters (``safe_text``):
    the summary quotes events, which the people being watched write, and a terminal obeys escapes."""
    severity = safe_text(alert["severity"], 20)
    start, end = (SEVERITY_COLOURS.get(severity, ""), "\033[0m") if colour else ("", "")
    when = safe_text(alert["last_seen"])[:19].replace("T", " ")
    summary = " ".join(safe_text(alert["summary"]).split())
    rule, alert_id = safe_text(alert["rule_id"], 60), safe_text(alert["alert_id"], 60)
    return f"{when}  {start}{severity:<8}{end}  {rule:<24}  {alert_id:<24}  {summary}"


def metrics_endpoint(host: str, port: int) -> tuple[int, str]:
    """The port the demo's worker serves metrics on and the banner line saying where. A busy port is no
    reason to stop the demo: the worker then runs without the endpoint (port 0), and the line says
    which ``host:port`` could not be bound."""
    try:
        with socket.create_server((host, port)):
            pass  # binding is the test: the socket closes at once and the worker takes the port
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        return 0, f"metrics  not served: cannot bind {host}:{port} ({why}); --metrics-port 0 picks a free port"
    return port, f"metrics  http://{host}:{port}/metrics"


def raw_inputs(raw_dir: str = RAW_DIR) -> list[tuple[str, str]]:
    """The raw example logs as ``(mapping id, path)``, as ``backtest --input`` and ``replay --input`` take them."""
    return [(name, str(Path(raw_dir) / file)) for name, file in RAW_INPUTS]


def run_demo(log_path: str = "examples/events.jsonl", config_dir: str | None = None, speed: float | None = None,
             idle_exit: float | None = None, metrics_port: int = 9464, out: TextIO = sys.stdout,
             raw: bool = False) -> int:  # fmt: skip
    """``config_dir`` None: as ``resolve_rules_dir`` finds it (the command line resolves it first).
    ``raw``: replay the raw logs of ``RAW_DIR`` with the context of ``CONTEXT_DIR`` (``log_path`` unused)."""
    shown_config = str(config_dir or resolve_rules_dir())
    # Absolute, so the worker (a child process) reads the same rules whatever it resolves by itself.
    config_dir = str(Path(shown_config).resolve())
    load_rules(config_dir)  # a bad config stops the demo before anything starts
    paths = [path for _, path in raw_inputs()] if raw else [log_path]
    for path in paths:
        if not Path(path).is_file():
            from streams.offline.logio import LogFileError

            raise LogFileError(f"{path}: no such file")
    work = Path(tempfile.mkdtemp(prefix="modwatch-demo-"))
    metrics_port = metrics_port or free_port()
    metrics_host = Settings.model_fields["metrics_host"].default
    metrics_port, metrics_line = metrics_endpoint(metrics_host, metrics_port)
    with EmbeddedBroker() as broker:
        # The embedded broker speaks plain Kafka: the demo's clients and its worker use that, whatever
        # security the environment or a settings file gives a real deployment.
        inputs = [RawInput(mapping=name) for name, _ in raw_inputs()] if raw else []
        settings = Settings(bootstrap_servers=broker.bootstrap, rules_dir=config_dir, data_dir=str(work / "data"),
                            metrics_port=metrics_port, web_port=free_port(), kafka=KafkaSecurity(),
                            inputs=inputs)  # fmt: skip
        topics = {t: 1 for t in settings.topics.input_topics()} | {i.topic_name(): 1 for i in inputs}
        create_topics(broker.bootstrap, topics | {settings.topics.alerts: 1}, security=settings.kafka)
        if raw:
            from streams.live.context_tables import publish_context

            counts = publish_context(CONTEXT_DIR, broker.bootstrap, settings.topics.context_prefix,
                                     security=settings.kafka)  # fmt: skip
            out.write(f"context  {', '.join(f'{n} {t}' for t, n in counts.items())} rows from {CONTEXT_DIR}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODWATCH_KAFKA")}
        env.update({
            "MODWATCH_KAFKA__SECURITY_PROTOCOL": settings.kafka.security_protocol,
            "MODWATCH_BOOTSTRAP_SERVERS": broker.bootstrap,
            "MODWATCH_RULES_DIR": config_dir,
            "MODWATCH_DATA_DIR": settings.data_dir,
            "MODWATCH_METRICS_HOST": metrics_host,
            "MODWATCH_METRICS_PORT": str(settings.metrics_port),
            "MODWATCH_WEB_PORT": str(settings.web_port),
            "MODWATCH_INPUTS": json.dumps([item.model_dump() for item in inputs]),
        })  # fmt: skip
        worker_log = work / "worker.log"
        out.write(f"broker   {broker.bootstrap} (Tansu, in memory)\n")
        out.write(metrics_line + "\n")
        out.write(f"worker   log in {worker_log}\n")
        if raw:
            flags = " ".join(f"--input {name}={path}" for name, path in raw_inputs())
            out.write(f"backtest modwatch backtest {flags} --context {CONTEXT_DIR}   (the same alerts)\n")
        else:
            out.write(f"explain  modwatch explain ALERT_ID --log {log_path} --config {shown_config}"
                      "   (ALERT_ID: from the table below)\n")  # fmt: skip
        with worker_log.open("wb") as wlog:
            worker = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker", "--config", config_dir, "--loglevel", "info"],
                env=env, stdout=wlog, stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                return _drive(broker, settings, worker, worker_log, None if raw else log_path, speed, idle_exit, out)
            except KeyboardInterrupt:
                out.write("\nstopping...\n")
                return 0
            finally:
                _stop(worker)


def _drive(broker: EmbeddedBroker, settings: Settings, worker: subprocess.Popen[bytes], worker_log: Path,
           log_path: str | None, speed: float | None, idle_exit: float | None, out: TextIO) -> int:  # fmt: skip
    """``log_path`` None: the raw example logs (``raw_inputs``)."""
    from kafka import KafkaConsumer, TopicPartition

    from streams.core.topology import input_key
    from streams.tools.replay import replay, replay_raw

    null = open(os.devnull, "w")  # noqa: SIM115 - closed below
    try:
        if log_path is None:
            from streams.inputs import load_mappings, resolve_inputs_dir

            mappings = load_mappings(resolve_inputs_dir(settings.inputs_dir))
            stats = replay_raw(raw_inputs(), mappings, broker.bootstrap, speed=speed, security=settings.kafka,
                               out=null)  # fmt: skip
            what = f"raw records from {RAW_DIR}"
        else:
            stats = replay([log_path], broker.bootstrap, settings.topics.topic_for, input_key, speed=speed,
                           security=settings.kafka, out=null)  # fmt: skip
            what = f"events from {log_path}"
    finally:
        null.close()
    out.write(f"replay   {stats.sent} {what} ({stats.rejected_total} rejected)\n\n")
    out.write(HEADER + "\n")
    consumer = kafka_client(KafkaConsumer, broker.bootstrap, settings.kafka, enable_auto_commit=False,
                            consumer_timeout_ms=500)  # fmt: skip
    seen: set[str] = set()
    colour = out.isatty()
    counts: dict[str, int] = {}
    try:
        tp = TopicPartition(settings.topics.alerts, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        last = time.monotonic()
        while True:
            if worker.poll() is not None:
                out.write(f"the worker exited with code {worker.returncode}; see its log{_last_line(worker_log)}\n")
                return 1
            for record in consumer:
                alert = json.loads(record.value)
                if alert["alert_id"] in seen:
                    continue  # at-least-once: a repeat carries the same id
                seen.add(alert["alert_id"])
                counts[alert["severity"]] = counts.get(alert["severity"], 0) + 1
                out.write(format_row(alert, colour) + "\n")
                out.flush()
                last = time.monotonic()
            if idle_exit is not None and seen and time.monotonic() - last > idle_exit:
                break
            if idle_exit is not None and not seen and time.monotonic() - last > max(idle_exit, 90):
                out.write("no alert arrived; see the worker log\n")
                return 1
    finally:
        consumer.close()
        order = ["critical", "high", "medium", "low", "info"]
        out.write("\n" + ", ".join(f"{counts[s]} {s}" for s in order if s in counts) + f" ({len(seen)} alerts)\n")
    return 0


def _last_line(log: Path) -> str:
    """``: <the log's last line>``, cleaned for the terminal, or nothing."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return f": {safe_text(lines[-1])}" if lines else ""


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
