"""docker-compose.yml and the deploy/ files it mounts, checked by structure here (no Docker
engine runs in the test environment): Redis on 127.0.0.1 with the shipped ACL users, the
exporter reading as one of them, Prometheus scraping it by service name with the example alert
rules, Grafana provisioned with the shipped dashboard. The cluster profile runs the same
redis-server and redis-cli commands that the test suite's own cluster fixture runs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import promql_parser
import yaml

from redis_telemetry.cli import DEFAULT_PORT

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]


def acl_passwords() -> dict[str, str]:
    """user -> password of deploy/users.acl (its `>password` rules)."""
    out = {}
    for line in (ROOT / "deploy" / "users.acl").read_text().splitlines():
        words = line.split()
        passwords = [w[1:] for w in words if w.startswith(">")]
        if words[:1] == ["user"] and passwords:
            out[words[1]] = passwords[0]
    return out


def mounts(service: str) -> dict[str, Path]:
    """A service's bind mounts: container path -> file in this checkout."""
    out = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            out[target] = ROOT / source
    return out


def test_every_file_the_compose_file_mounts_or_builds_exists() -> None:
    found = 0
    for name in SERVICES:
        for target, source in mounts(name).items():
            assert source.is_file(), f"{name} mounts {source} at {target}: missing"
            found += 1
        if "build" in SERVICES[name]:
            build = SERVICES[name]["build"]
            assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    assert found >= 6
    named = {v.split(":")[0] for s in SERVICES.values() for v in s.get("volumes", [])}
    assert {v for v in named if not v.startswith("./")} <= set(COMPOSE["volumes"])


def test_every_published_port_is_on_127_0_0_1_only() -> None:
    published = [p for s in SERVICES.values() for p in s.get("ports", [])]
    assert published
    assert all(p.startswith("127.0.0.1:") for p in published), published
    for name, service in SERVICES.items():
        if service.get("network_mode") == "host":  # the cluster nodes: no mapping to restrict
            command = service["command"]
            if command[0] == "redis-server":
                assert command[command.index("--bind") + 1] == "127.0.0.1", name


def test_redis_has_aof_the_acl_users_and_an_authenticated_health_check() -> None:
    redis = SERVICES["redis"]
    command = redis["command"]
    assert redis["image"] == "redis:7"
    assert command[command.index("--appendonly") + 1] == "yes"
    acl = command[command.index("--aclfile") + 1]
    assert mounts("redis")[acl] == ROOT / "deploy" / "users.acl"
    assert "127.0.0.1:6379:6379" in redis["ports"]
    assert "profiles" not in redis  # starts with a plain `docker compose up -d`
    check = redis["healthcheck"]["test"]
    user = check[check.index("--user") + 1]
    assert acl_passwords()[user] == check[check.index("--pass") + 1]  # `default` is off
    assert "ping" in check


def test_the_exporter_reads_as_the_acl_reader_on_its_port() -> None:
    exporter = SERVICES["exporter"]
    env = exporter["environment"]
    url = urlsplit(env["REDIS_TELEMETRY_URL"])
    assert (url.hostname, url.port, url.username) == ("redis", 6379, "telemetry-reader")
    assert acl_passwords()[url.username] == url.password
    assert env["REDIS_TELEMETRY_HOST"] == "0.0.0.0"  # reachable from the other containers
    assert int(env["REDIS_TELEMETRY_PORT"]) == DEFAULT_PORT
    assert f"127.0.0.1:{DEFAULT_PORT}:{DEFAULT_PORT}" in exporter["ports"]
    assert exporter["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "profiles" not in exporter
    dockerfile = (ROOT / exporter["build"]["dockerfile"]).read_text()
    assert 'ENTRYPOINT ["redis-telemetry"]' in dockerfile
    assert 'CMD ["serve"]' in dockerfile
    assert 'pip install --no-cache-dir ".[server]"' in dockerfile  # serve needs the extra
    # a read-only HTTP API, as its Redis user is: a read token and no write token (writes are
    # 403); Prometheus and the healthcheck reach /metrics and /healthz without one
    assert exporter["command"] == ["serve", "--open-metrics"]
    assert "REDIS_TELEMETRY_READ_TOKEN" in env["REDIS_TELEMETRY_READ_TOKEN"]
    assert "REDIS_TELEMETRY_WRITE_TOKEN" not in env


def test_prometheus_scrapes_the_exporter_by_service_name_with_the_alert_rules() -> None:
    prometheus = SERVICES["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    files = mounts("prometheus")
    config = yaml.safe_load(files["/etc/prometheus/prometheus.yml"].read_text())
    (job,) = config["scrape_configs"]
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert targets == [f"exporter:{DEFAULT_PORT}"]  # never localhost: that is the container
    assert not any("localhost" in t or "127.0.0.1" in t for t in targets)
    (rules_file,) = config["rule_files"]
    assert files[f"/etc/prometheus/{rules_file}"] == ROOT / "deploy" / "alerts.yml"


def test_the_alert_rules_parse_and_cover_a_dead_exporter_and_a_long_limit() -> None:
    rules = yaml.safe_load((ROOT / "deploy" / "alerts.yml").read_text())
    exprs = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    for rule in exprs.values():
        promql_parser.parse(rule["expr"])
        assert rule["annotations"]["summary"]
    assert exprs["RedisTelemetryExporterDown"]["expr"] == 'up{job="redis-telemetry"} == 0'
    long = exprs["RedisTelemetryModelLimitedLong"]
    assert long["expr"] == "redis_telemetry_subscription_limited == 1"
    assert long["for"] == "1h"
    job = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())["scrape_configs"][0]
    assert job["job_name"] == "redis-telemetry"  # the job the `up` rule selects
    names = {n for r in exprs.values() for n in re.findall(r"redis_telemetry_\w+", r["expr"])}
    assert names == {
        "redis_telemetry_up",
        "redis_telemetry_subscription_limited",
        "redis_telemetry_subscription_limit_expiry_timestamp_seconds",
    }  # each one is exported: tests/test_exporter.py checks the scrape


def test_grafana_is_provisioned_with_the_shipped_dashboard_and_prometheus() -> None:
    grafana = SERVICES["grafana"]
    assert grafana["profiles"] == ["monitoring"]
    files = mounts("grafana")
    provisioning = {t: f for t, f in files.items() if t.startswith("/etc/grafana/provisioning/")}
    (datasources,) = [f for t, f in provisioning.items() if "/datasources/" in t]
    (source,) = yaml.safe_load(datasources.read_text())["datasources"]
    assert (source["type"], source["url"]) == ("prometheus", "http://prometheus:9090")
    (dashboards,) = [f for t, f in provisioning.items() if "/dashboards/" in t]
    (provider,) = yaml.safe_load(dashboards.read_text())["providers"]
    folder = provider["options"]["path"]
    shipped = [f for t, f in files.items() if t.startswith(folder + "/")]
    assert shipped == [ROOT / "deploy" / "grafana-dashboard.json"]
    assert json.loads(shipped[0].read_text())["uid"] == "redis-telemetry"
    assert "${GRAFANA_ADMIN_PASSWORD" in grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]


def test_cluster_profile_forms_a_three_master_cluster() -> None:
    nodes = [SERVICES[f"redis-cluster-{i}"] for i in (1, 2, 3)]
    ports = []
    for node in nodes:
        assert node["profiles"] == ["cluster"]
        assert node["network_mode"] == "host"
        cmd = node["command"]
        assert cmd[cmd.index("--cluster-enabled") + 1] == "yes"
        ports.append(cmd[cmd.index("--port") + 1])
    assert ports == ["7001", "7002", "7003"]
    init = SERVICES["redis-cluster-init"]
    assert init["profiles"] == ["cluster"]
    script = " ".join(init["command"])
    assert "--cluster create 127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003" in script
    assert all(v["condition"] == "service_healthy" for v in init["depends_on"].values())
