"""docker-compose.yml: valid for Compose, and everything it mounts, builds and points at exists.

No Docker daemon is needed: ``docker compose config`` (or, where the client has no compose plugin,
Debian's ``docker-compose``, installed by scripts/setup-services.sh) validates and renders the file
offline; the rest is read from the YAML.
"""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.config.settings import Settings

from .servers import REPO, binary

COMPOSE = REPO / "docker-compose.yml"
SERVICES = {"kafka", "kafka-init", "worker", "replay", "prometheus", "alertmanager", "grafana"}


def compose_command() -> list[str]:
    """``docker compose`` when the client has the plugin, else ``docker-compose``."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    return [binary("docker-compose")]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def test_compose_config_validates() -> None:
    command = [*compose_command(), "--project-directory", str(REPO), "-f", str(COMPOSE), "--profile", "replay"]
    proc = subprocess.run([*command, "config"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    rendered = yaml.safe_load(proc.stdout)
    assert set(rendered["services"]) == SERVICES


def test_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert set(kafka["environment"]["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}  # KRaft
    assert not any("ZOOKEEPER" in key for key in kafka["environment"])
    assert services["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("worker", "replay"):
        assert services[name]["build"] == "."
        assert services[name]["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    assert services["replay"]["profiles"] == ["replay"]
    assert "profiles" not in services["worker"]
    for service in services.values():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{port}: published beyond loopback"


def test_worker_environment_is_settings(compose: dict[str, Any]) -> None:
    """Every MODWATCH_ variable names a setting, and the worker is reachable by Prometheus and reaches
    Alertmanager and Kafka under their service names."""
    env = {k: str(v) for k, v in compose["services"]["worker"]["environment"].items()}
    for key in env:
        assert key.startswith("MODWATCH_")
        field = key.removeprefix("MODWATCH_").split("__")[0].lower()
        assert field in Settings.model_fields, f"{key}: no such setting"
    assert env["MODWATCH_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["MODWATCH_METRICS_HOST"] == "0.0.0.0"
    assert env["MODWATCH_ALERTMANAGER_URL"] == "http://alertmanager:9093"
    prometheus = yaml.safe_load((REPO / "config/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert jobs["modwatch"]["static_configs"][0]["targets"] == [f"worker:{env['MODWATCH_METRICS_PORT']}"]
    assert prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]


def _bind_mounts(compose: dict[str, Any]) -> list[tuple[str, Path, str]]:
    mounts = []
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source, target = str(volume).split(":")[:2]
            if source.startswith((".", "/")):
                mounts.append((name, (REPO / source).resolve(), target))
    return mounts


def test_every_mounted_file_exists_in_the_repo(compose: dict[str, Any]) -> None:
    mounts = _bind_mounts(compose)
    assert len(mounts) >= 5
    for service, source, _target in mounts:
        assert source.exists(), f"{service} mounts {source}, which is not in the repository"
        assert REPO in source.parents, f"{service} mounts {source}, outside the repository"
        if not (REPO / ".git").exists():
            continue
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", "--others", "--cached", "--exclude-standard",
                                  str(source)], cwd=REPO, capture_output=True)  # fmt: skip
        assert tracked.returncode == 0, f"{source} is ignored by git: a fresh clone would not have it"


def test_mounts_line_up_with_what_the_services_read(compose: dict[str, Any]) -> None:
    targets = {(service, target): source for service, source, target in _bind_mounts(compose)}
    # Prometheus reads the rule file named in prometheus.yml beside it.
    prometheus = yaml.safe_load((REPO / "config/prometheus/prometheus.yml").read_text())
    for rule_file in prometheus["rule_files"]:
        assert ("prometheus", f"/etc/prometheus/{rule_file}") in targets
    # Grafana's dashboard provider reads the folder the dashboards are mounted at.
    provisioning = targets[("grafana", "/etc/grafana/provisioning")]
    provider = yaml.safe_load((provisioning / "dashboards" / "modwatch.yml").read_text())
    dashboards = targets[("grafana", provider["providers"][0]["options"]["path"])]
    assert sorted(p.name for p in dashboards.glob("*.json")) == ["moderation-overview.json", "pipeline-health.json"]
    datasources = yaml.safe_load((provisioning / "datasources" / "modwatch.yml").read_text())["datasources"]
    assert {d["type"]: d["url"] for d in datasources} == {
        "prometheus": "http://prometheus:9090", "alertmanager": "http://alertmanager:9093",
    }  # fmt: skip
    home = compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (dashboards / Path(home).name).exists()
    assert ("alertmanager", "/etc/alertmanager/alertmanager.yml") in targets


def test_dockerfile_copies_exist_and_are_not_ignored() -> None:
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    ignored = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]  # fmt: skip
    copies = [line.split()[1:-1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    assert copies
    for sources in copies:
        for source in sources:
            assert (REPO / source).exists(), f"Dockerfile copies {source}, which does not exist"
            for pattern in ignored:
                assert not fnmatch.fnmatch(source.rstrip("/"), pattern.rstrip("/")), f"{source} is in .dockerignore"
    assert "ENTRYPOINT [\"modwatch\"]" in dockerfile
    assert "MODWATCH_METRICS_HOST=0.0.0.0" in dockerfile
