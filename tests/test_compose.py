"""docker-compose.yml + Dockerfile of the distributed stack, validated offline.

Docker cannot run here, so the file is checked by parsing it (services, healthchecks, volumes,
depends_on conditions, BTC_* names against the Settings model) and, when the Debian
``docker-compose`` (v1) package is installed, by ``docker-compose config`` too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from btc_platform.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"

EXPECTED_SERVICES = {
    "kafka",
    "kafka-init",
    "namenode",
    "datanode",
    "spark-master",
    "spark-worker",
    "postgres",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
}
ONE_SHOT = {"kafka-init", "airflow-init"}
PROJECT_IMAGE_SERVICES = {
    "spark-master",
    "spark-worker",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _env(service: dict) -> dict:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return env


def test_all_services_present(compose):
    assert set(compose["services"]) == EXPECTED_SERVICES


def test_long_running_services_have_healthchecks(compose):
    for name, service in compose["services"].items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", name
            continue
        check = service.get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert service.get("restart") == "unless-stopped", name


def test_depends_on_use_conditions_on_existing_services(compose):
    services = compose["services"]
    for name, service in services.items():
        deps = service.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on must use conditions, not a plain list"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            expected = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            assert spec == {"condition": expected}, f"{name} -> {dep}: {spec}"
    scheduler = services["airflow-scheduler"]["depends_on"]
    for dep in ("postgres", "airflow-init", "kafka-init", "namenode", "datanode", "spark-master"):
        assert dep in scheduler


def test_persistent_state_is_on_named_volumes(compose):
    volumes = set(compose["volumes"])
    mounts = {
        name: [v.split(":")[0] for v in service.get("volumes", [])]
        for name, service in compose["services"].items()
    }
    assert "kafka-data" in mounts["kafka"] and "kafka-data" in volumes
    assert "hdfs-name" in mounts["namenode"] and "hdfs-data" in mounts["datanode"]
    assert "postgres-data" in mounts["postgres"]
    for name, sources in mounts.items():
        for src in sources:
            assert src in volumes, f"{name} mounts {src}, which is not a declared named volume"


def test_stack_wiring(compose):
    services = compose["services"]
    kafka = _env(services["kafka"])
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"] and "broker" in kafka["KAFKA_PROCESS_ROLES"]
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # the init service creates the topic
    for name in PROJECT_IMAGE_SERVICES:
        assert services[name]["image"] == "btc-platform:latest", name
    assert services["spark-master"]["build"]["dockerfile"] == "Dockerfile"
    scheduler = _env(services["airflow-scheduler"])
    assert scheduler["BTC_STORAGE_ROOT"].startswith("hdfs://namenode:8020")
    assert scheduler["BTC_SPARK_MASTER"] == "spark://spark-master:7077"
    assert scheduler["BTC_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert "spark://spark-master" in scheduler["AIRFLOW_CONN_SPARK_DEFAULT"]
    assert "kafka:9092" in scheduler["AIRFLOW_CONN_KAFKA_DEFAULT"]
    assert "postgresql" in scheduler["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert services["airflow-scheduler"]["hostname"] == "airflow-scheduler"


def test_every_btc_variable_is_a_setting():
    """Every BTC_* name in the compose file and its env files exists in the Settings model."""
    fields = {f"BTC_{name.upper()}" for name in Settings.model_fields}
    texts = [COMPOSE.read_text(), (ROOT / "Dockerfile").read_text()]
    texts += [p.read_text() for p in (ROOT / "infra" / "compose").glob("*.env")]
    used = set()
    for text in texts:
        used |= set(re.findall(r"\bBTC_[A-Z0-9_]+\b", text))
    assert used, "no BTC_* variables found"
    unknown = used - fields - {"BTC_UID"}  # BTC_UID: a Dockerfile build ARG, not a setting
    assert not unknown, f"BTC_* names not in btc_platform.settings.Settings: {sorted(unknown)}"


def test_dockerfile_builds_the_project_image():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", text, re.M)
    assert "jre-headless" in text  # Java 17 (bookworm's default JRE) for Spark
    assert "-c constraints.txt" in text
    assert "btc-jars --group spark" in text
    assert "pip install --no-deps -e /opt/btc" in text  # the project installed, no PYTHONPATH
    assert "PYTHONPATH" not in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".venv", ".data", ".git"):
        assert path in ignored


@pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="docker-compose (Debian package) not installed"
)
def test_docker_compose_config_validates():
    proc = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rendered = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    config = yaml.safe_load(rendered.stdout)
    # anchors/merge keys resolved: every Airflow service carries the settings and connections
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        env = config["services"][name]["environment"]
        assert env["BTC_SPARK_MASTER"] == "spark://spark-master:7077", name
        assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "False", name
