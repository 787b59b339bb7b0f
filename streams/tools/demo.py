"""``modwatch demo``: the whole loop on one machine, no Docker.

An embedded broker (Tansu) on a free loopback port, the live worker as a child process, a replay of
the example log, and the alerts read back from the alerts topic and printed as they fire. Ctrl-C (or
``--exit-after-idle``) stops everything; the broker and worker are always killed on the way out.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from streams.config.kafka import create_topics
from streams.config.loader import load_rules, resolve_rules_dir
from streams.config.settings import Settings
from streams.tools.broker import EmbeddedBroker, free_port

SEVERITY_COLOURS = {"critical": "\033[1;31m", "high": "\033[31m", "medium": "\033[33m", "low": "\033[36m", "info": ""}


def format_row(alert: dict[str, object], colour: bool = False) -> str:
    severity = str(alert["severity"])
    start, end = (SEVERITY_COLOURS.get(severity, ""), "\033[0m") if colour else ("", "")
    when = str(alert["last_seen"])[:19].replace("T", " ")
    summary = " ".join(str(alert["summary"]).split())
    return f"{when}  {start}{severity:<8}{end}  {alert['rule_id']:<24}  {summary}"


def run_demo(log_path: str = "examples/events.jsonl", config_dir: str | None = None, speed: float | None = None,
             idle_exit: float | None = None, metrics_port: int = 9464, out: TextIO = sys.stdout) -> int:  # fmt: skip
    """``config_dir`` None: as ``resolve_rules_dir`` finds it (the command line resolves it first)."""
    # Absolute, so the worker (a child process) reads the same rules whatever it resolves by itself.
    config_dir = str(Path(config_dir or resolve_rules_dir()).resolve())
    load_rules(config_dir)  # a bad config stops the demo before anything starts
    if not Path(log_path).is_file():
        from streams.offline.logio import LogFileError

        raise LogFileError(f"{log_path}: no such file")
    work = Path(tempfile.mkdtemp(prefix="modwatch-demo-"))
    metrics_port = metrics_port or free_port()
    with EmbeddedBroker() as broker:
        settings = Settings(bootstrap_servers=broker.bootstrap, rules_dir=config_dir, data_dir=str(work / "data"),
                            metrics_port=metrics_port, web_port=free_port())  # fmt: skip
        create_topics(broker.bootstrap, {t: 1 for t in settings.topics.input_topics()} | {settings.topics.alerts: 1})
        env = dict(os.environ)
        env.update({
            "MODWATCH_BOOTSTRAP_SERVERS": broker.bootstrap,
            "MODWATCH_RULES_DIR": config_dir,
            "MODWATCH_DATA_DIR": settings.data_dir,
            "MODWATCH_METRICS_PORT": str(metrics_port),
            "MODWATCH_WEB_PORT": str(settings.web_port),
        })  # fmt: skip
        worker_log = work / "worker.log"
        out.write(f"broker   {broker.bootstrap} (Tansu, in memory)\n")
        out.write(f"metrics  http://127.0.0.1:{metrics_port}/metrics\n")
        out.write(f"worker   log in {worker_log}\n")
        with worker_log.open("wb") as wlog:
            worker = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker", "--config", config_dir, "--loglevel", "info"],
                env=env, stdout=wlog, stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                return _drive(broker, settings, worker, log_path, speed, idle_exit, out)
            except KeyboardInterrupt:
                out.write("\nstopping...\n")
                return 0
            finally:
                _stop(worker)


def _drive(broker: EmbeddedBroker, settings: Settings, worker: subprocess.Popen[bytes], log_path: str,
           speed: float | None, idle_exit: float | None, out: TextIO) -> int:  # fmt: skip
    from kafka import KafkaConsumer, TopicPartition

    from streams.core.topology import input_key
    from streams.tools.replay import replay

    null = open(os.devnull, "w")  # noqa: SIM115 - closed below
    try:
        stats = replay([log_path], broker.bootstrap, settings.topics.topic_for, input_key, speed=speed, out=null)
    finally:
        null.close()
    out.write(f"replay   {stats.sent} events from {log_path} ({stats.rejected_total} rejected)\n\n")
    out.write(f"{'event time':<19}  {'severity':<8}  {'rule':<24}  summary\n")
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False, consumer_timeout_ms=500)
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
                out.write(f"the worker exited with code {worker.returncode}; see its log\n")
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


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
