"""docker-compose.yml is checked by structure here (no Docker engine runs in the test
environment); its cluster profile runs the same redis-server and redis-cli commands that the
test suite's own cluster fixture runs."""

from __future__ import annotations

from pathlib import Path

import yaml

COMPOSE = yaml.safe_load((Path(__file__).resolve().parents[1] / "docker-compose.yml").read_text())


def test_single_redis_has_aof_and_a_health_check() -> None:
    redis = COMPOSE["services"]["redis"]
    assert redis["image"] == "redis:7"
    assert "--appendonly" in redis["command"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert "ping" in redis["healthcheck"]["test"]
    assert "6379:6379" in redis["ports"]
    assert "profiles" not in redis  # starts with a plain `docker compose up -d`


def test_cluster_profile_forms_a_three_master_cluster() -> None:
    services = COMPOSE["services"]
    nodes = [services[f"redis-cluster-{i}"] for i in (1, 2, 3)]
    ports = []
    for node in nodes:
        assert node["profiles"] == ["cluster"]
        assert node["network_mode"] == "host"
        cmd = node["command"]
        assert cmd[cmd.index("--cluster-enabled") + 1] == "yes"
        ports.append(cmd[cmd.index("--port") + 1])
    assert ports == ["7001", "7002", "7003"]
    init = services["redis-cluster-init"]
    assert init["profiles"] == ["cluster"]
    script = " ".join(init["command"])
    assert "--cluster create 127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003" in script
    assert all(v["condition"] == "service_healthy" for v in init["depends_on"].values())
