"""``make compose-up`` / ``compose-down`` / ``compose-test`` on this machine: the base image (the
stock one when it can be pulled, else Debian bookworm from debootstrap + ``docker import``), the
project image (from the host's venv, jars and JS when it has them: ``prebuilt``), the generated
secrets, and docker-compose with the local override when needed.

``COMPOSE_STACK=full`` (default) runs the whole stack of docker-compose.yml; ``COMPOSE_STACK=ci``
the smallest stack the end-to-end test needs on a 2-core CI machine, derived from the same files
(:func:`ci_config`): one broker (replication 1, ``min.insync.replicas`` 1), one Spark worker, one
executor per application.

CLI: ``python -m btc_platform.ops.compose.stack up|down [--volumes]|build|secrets|stop-daemon``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from btc_platform.ops import airflow_env
from btc_platform.ops.compose import dockerd, prebuilt
from btc_platform.ops.compose.dockerd import ComposeError
from btc_platform.ops.services.base import PortInUseError, check_port_free
from btc_platform.settings import PROJECT_ROOT, Settings, get_settings

log = logging.getLogger(__name__)

PROJECT = "btc"
PROJECT_IMAGE = "btc-platform:latest"
STOCK_BASE = "python:3.11-slim-bookworm"
LOCAL_BASE = "btc-base:bookworm"
SECRET_NAMES = ("AIRFLOW_JWT_SECRET", "AIRFLOW_FERNET_KEY", "POSTGRES_PASSWORD", "AIRFLOW_ADMIN_PASSWORD")
CA_DIR = PROJECT_ROOT / "infra" / "compose" / "ca-certificates"
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
PULL_TIMEOUT_S = 60
LOG_LINES = 30
#: after ``docker-compose up -d`` returned: until the last services (triggerer, dag-processor) are healthy
HEALTHY_TIMEOUT_S = 600.0
#: COMPOSE_BUILD: ``prebuilt`` serves the host's wheels/jars/js to the build, ``network`` takes all from the registries
BUILD_MODES = ("prebuilt", "network")
#: where the prebuilt packages are served during the build (fixed: the URL, with the digest of what
#: it serves, is the layer cache's key)
PREBUILT_PORT = 18731
#: COMPOSE_STACK: the whole stack, or the end-to-end test's smallest one
STACKS = ("full", "ci")
#: services of the full stack that the ci stack leaves out
CI_LEFT_OUT = ("kafka-2", "kafka-3", "spark-worker-2")
FULL_BOOTSTRAP = "kafka-1:9092,kafka-2:9092,kafka-3:9092"
#: the ci stack's batch jobs run in local mode in the task that submits them (no executor JVM to
#: start for each of them); the stream stays on the standalone cluster
CI_BATCH_MASTER = "local[2]"
#: the ci stack's values of these environment variables (wherever a service sets them)
CI_ENV = {
    "BTC_SPARK_BATCH_MASTER": CI_BATCH_MASTER,
    "AIRFLOW_CONN_SPARK_DEFAULT": airflow_env.spark_conn(CI_BATCH_MASTER),
    "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@kafka-1:9093",
    **dict.fromkeys(("KAFKA_DEFAULT_REPLICATION_FACTOR", "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                     "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                     "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR", "KAFKA_MIN_INSYNC_REPLICAS",
                     "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR",
                     "BTC_KAFKA_BROKERS", "BTC_KAFKA_REPLICATION_FACTOR", "BTC_KAFKA_MIN_INSYNC_REPLICAS",
                     "BTC_SPARK_CORES_MAX", "BTC_STREAM_CORES_MAX"), "1"),  # fmt: skip
}


# ---------------------------------------------------------------------------------------------
# secrets
# ---------------------------------------------------------------------------------------------
def secrets_file(settings: Settings) -> Path:
    return settings.data_dir.resolve() / "compose" / "secrets.env"


def _new_secrets() -> dict[str, str]:
    return {
        "AIRFLOW_JWT_SECRET": secrets.token_urlsafe(48),
        "AIRFLOW_FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "POSTGRES_PASSWORD": secrets.token_hex(24),  # URL-safe: it goes into the SQLAlchemy URL
        "AIRFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(18),
    }


def ensure_secrets(settings: Settings) -> dict[str, str]:
    """The stack's secrets: read from the env file, the missing ones generated and written (0600)."""
    path = secrets_file(settings)
    values: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                key, value = line.split("=", 1)
                values[key.strip()] = value.strip()
    missing = [name for name in SECRET_NAMES if not values.get(name)]
    if missing:
        fresh = _new_secrets()
        values.update({name: fresh[name] for name in missing})
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("# generated by make compose-up on first start; keep it (the database and the encrypted\n"
                      "# connections depend on it). Never commit it.\n")  # fmt: skip
            out.writelines(f"{name}={values[name]}\n" for name in SECRET_NAMES)
        log.info("generated %s in %s", ", ".join(missing), path)
    path.chmod(0o600)
    return {name: values[name] for name in SECRET_NAMES}


# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------
def _image_exists(settings: Settings, tag: str) -> bool:
    return dockerd.docker(settings, "image", "inspect", tag, check=False, timeout=30).returncode == 0


def apt_mirror(sources: list[Path] | None = None) -> str:
    """The Debian mirror of the host's apt sources (one-line or deb822 format)."""
    paths = sources or [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in paths:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for match in re.finditer(r"^\s*(?:deb\s+(?:\[[^]]*\]\s+)?|URIs:\s*)(\S+/debian)/?\s", text, re.M):
            return match.group(1)
    return "http://deb.debian.org/debian"


def ensure_base(settings: Settings) -> str:
    """The base image to build on: the stock one when present or pullable, else the local one."""
    forced = os.environ.get("COMPOSE_BASE", "auto")
    for tag in ((STOCK_BASE,) if forced == "stock" else ()) + ((LOCAL_BASE,) if forced != "stock" else ()):
        if _image_exists(settings, tag):
            return tag
    if forced != "local":
        log.info("pulling %s ...", STOCK_BASE)
        try:
            if dockerd.docker(settings, "pull", STOCK_BASE, check=False, timeout=PULL_TIMEOUT_S).returncode == 0:
                return STOCK_BASE
        except subprocess.TimeoutExpired:
            log.info("no answer from the registry in %d s", PULL_TIMEOUT_S)
        if forced == "stock":
            raise ComposeError(f"cannot pull {STOCK_BASE}; COMPOSE_BASE=auto builds a Debian base instead")
    mirror = apt_mirror()
    log.info("building %s with debootstrap from %s (no registry image)", LOCAL_BASE, mirror)
    with tempfile.TemporaryDirectory(prefix="btc-base-", dir=settings.cache_dir) as tmp:
        rootfs = Path(tmp) / "rootfs"
        cmd = ["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
               "bookworm", str(rootfs), mirror]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
        if proc.returncode != 0:
            raise ComposeError(f"debootstrap failed:\n{(proc.stdout + proc.stderr).strip()[-2000:]}")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        env = {**os.environ, "DOCKER_HOST": dockerd.docker_host(settings)}
        imported = subprocess.run(
            ["docker", "import", "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "-", LOCAL_BASE], stdin=tar.stdout, capture_output=True, text=True, env=env, check=False)  # fmt: skip
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise ComposeError(f"docker import failed: {imported.stderr.strip()[-1000:]}")
    return LOCAL_BASE


def stage_ca_certificates(source: Path | None = None) -> list[str]:
    """Copy the CA certificates the build must trust (COMPOSE_CA_CERTS=dir, default the host's
    /usr/local/share/ca-certificates) into the build context's infra/compose/ca-certificates/."""
    folder = source or Path(os.environ.get("COMPOSE_CA_CERTS") or HOST_CA_DIR)
    copied = []
    CA_DIR.mkdir(parents=True, exist_ok=True)
    for cert in sorted(folder.glob("*.crt")) if folder.is_dir() else []:
        shutil.copyfile(cert, CA_DIR / cert.name)
        copied.append(cert.name)
    return copied


def _choice(name: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name) or choices[0]
    if value not in choices:
        raise ComposeError(f"{name}={value!r}: expected one of {', '.join(choices)}")
    return value


def build_mode() -> str:
    return _choice("COMPOSE_BUILD", BUILD_MODES)


def prebuilt_port() -> int:
    value = os.environ.get("COMPOSE_PREBUILT_PORT") or str(PREBUILT_PORT)
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ComposeError(f"COMPOSE_PREBUILT_PORT={value!r}: expected a TCP port")
    return int(value)


def build(settings: Settings, staged: tuple[Path, str] | None = None) -> str:
    """Build the project image on the base; returns the base it was built on. With
    ``COMPOSE_BUILD=prebuilt`` the host's wheels, jars and JS (``staged``: what
    :func:`prebuilt.stage` returned, else staged here) are served to the build."""
    base = ensure_base(settings)
    certs = stage_ca_certificates()
    mode = build_mode()
    log.info("building %s on %s (%s; extra CA certificates: %s)", PROJECT_IMAGE, base, mode,
             ", ".join(certs) or "none")  # fmt: skip
    started = time.monotonic()
    args = ["build", "--network", "host", "--build-arg", f"BASE_IMAGE={base}", "-t", PROJECT_IMAGE]
    with contextlib.ExitStack() as scope:
        if mode == "prebuilt":
            if staged is None:
                staged = prebuilt.stage(settings)
                log.info("host's packages staged in %.0f s", time.monotonic() - started)
            folder, path = staged
            url = scope.enter_context(prebuilt.serve(folder, prebuilt_port()))
            args += ["--build-arg", f"PREBUILT_URL={url}{path}"]
        proc = dockerd.docker(settings, *args, str(PROJECT_ROOT), check=False, timeout=3600, capture=False)
    if proc.returncode != 0:
        raise ComposeError(f"docker build of {PROJECT_IMAGE} failed (exit {proc.returncode}), see the output above")
    log.info("built %s in %.0f s", PROJECT_IMAGE, time.monotonic() - started)
    return base


# ---------------------------------------------------------------------------------------------
# compose
# ---------------------------------------------------------------------------------------------
def stack_profile() -> str:
    return _choice("COMPOSE_STACK", STACKS)


def _ci_value(value):
    if isinstance(value, str):
        return value.replace(FULL_BOOTSTRAP, "kafka-1:9092")
    if isinstance(value, list):
        return [_ci_value(item) for item in value]
    if isinstance(value, dict):
        return {key: _ci_value(item) for key, item in value.items()}
    return value


def ci_config(config: dict) -> dict:
    """The ci stack of one compose file's content: without :data:`CI_LEFT_OUT` (nor any
    ``depends_on`` them), the one broker as bootstrap server and controller quorum, replication
    and ``min.insync.replicas`` 1, one executor (core) per Spark application, the batch jobs in
    local mode (:data:`CI_BATCH_MASTER`)."""
    config = _ci_value({k: v for k, v in copy.deepcopy(config).items() if not k.startswith("x-")})  # anchors resolved
    services = config.get("services") or {}
    for name in CI_LEFT_OUT:
        services.pop(name, None)
    for service in services.values():
        depends = service.get("depends_on")
        if isinstance(depends, dict):
            service["depends_on"] = {k: v for k, v in depends.items() if k not in CI_LEFT_OUT}
        elif isinstance(depends, list):
            service["depends_on"] = [k for k in depends if k not in CI_LEFT_OUT]
        env = service.get("environment")
        if isinstance(env, dict):
            service["environment"] = {k: CI_ENV.get(k, v) for k, v in env.items()}
    config["volumes"] = {k: v for k, v in (config.get("volumes") or {}).items()
                         if k not in ("kafka-2-data", "kafka-3-data")} or None  # fmt: skip
    if config["volumes"] is None:
        del config["volumes"]
    return config


def _ci_files(names: list[str]) -> list[Path]:
    """The ci stack's compose files, written under the cache (derived again at each call)."""
    import yaml

    folder = get_settings().cache_dir.resolve() / "compose" / "ci"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / name
        content = ci_config(yaml.safe_load((PROJECT_ROOT / name).read_text()))
        path.write_text(f"# generated from {name} by btc_platform.ops.compose.stack (COMPOSE_STACK=ci)\n"
                        + yaml.safe_dump(content, sort_keys=False))  # fmt: skip
        paths.append(path)
    return paths


def compose_files(base: str) -> list[str]:
    names = ["docker-compose.yml"] + (["docker-compose.local.yml"] if base == LOCAL_BASE else [])
    if stack_profile() == "ci":
        return ["--project-directory", str(PROJECT_ROOT), *(a for p in _ci_files(names) for a in ("-f", str(p)))]
    return [a for name in names for a in ("-f", str(PROJECT_ROOT / name))]


def backfill_dir(settings: Settings) -> Path:
    """The host folder mounted read-only at /opt/btc/backfill for btc_backfill's candle files
    (``COMPOSE_BACKFILL_DIR``, default ``<data_dir>/compose/backfill``)."""
    return Path(os.environ.get("COMPOSE_BACKFILL_DIR") or settings.data_dir.resolve() / "compose" / "backfill")


def schedule_start_date(settings: Settings) -> str:
    """``BTC_SCHEDULE_START_DATE`` of the stack: the setting when given, else the UTC hour of the
    stack's first start, remembered next to its secrets (as ``make run`` does in AIRFLOW_HOME), so
    a new stack does not consolidate the empty hours of the day before it started."""
    return airflow_env.schedule_start_date(settings, secrets_file(settings).with_name("schedule_start_date"))


def compose_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **ensure_secrets(settings), "DOCKER_HOST": dockerd.docker_host(settings),
            "COMPOSE_PROJECT_NAME": PROJECT, "COMPOSE_BACKFILL_DIR": str(backfill_dir(settings)),
            "BTC_SCHEDULE_START_DATE": schedule_start_date(settings)}  # fmt: skip


def compose(settings: Settings, base: str, *args: str, check: bool = True,
            capture: bool = False) -> subprocess.CompletedProcess:  # fmt: skip
    cmd = ["docker-compose", *compose_files(base), *args]
    proc = subprocess.run(cmd, env=compose_env(settings), cwd=PROJECT_ROOT, capture_output=capture, text=True,
                          timeout=3600, check=False)  # fmt: skip
    if check and proc.returncode != 0:
        raise ComposeError(f"docker-compose {' '.join(args)} failed (exit {proc.returncode})")
    return proc


def current_base(settings: Settings) -> str:
    return STOCK_BASE if _image_exists(settings, STOCK_BASE) and not _image_exists(settings, LOCAL_BASE) else LOCAL_BASE


def _running(settings: Settings) -> bool:
    proc = dockerd.docker(settings, "ps", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}", check=False)
    return bool((proc.stdout or "").strip())


def check_ports(settings: Settings) -> None:
    """The published port must be free, unless our own stack holds it."""
    if _running(settings):
        return
    try:
        check_port_free(settings.airflow_port, "Airflow UI / REST API of the compose stack", "BTC_AIRFLOW_PORT")
    except PortInUseError as exc:
        raise ComposeError(str(exc)) from exc


def container_states(settings: Settings) -> dict[str, str]:
    """{container name: docker ps status} of the stack's containers, stopped ones included."""
    proc = dockerd.docker(settings, "ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}",
                          "--format", "{{.Names}}\t{{.Status}}", check=False)  # fmt: skip
    return dict(line.split("\t", 1) for line in (proc.stdout or "").splitlines() if "\t" in line)


def not_ready(states: dict[str, str]) -> list[str]:
    """The containers that are neither healthy nor a one-shot service that exited 0."""
    return sorted(name for name, status in states.items()
                  if "(healthy)" not in status and not status.startswith("Exited (0)"))  # fmt: skip


def wait_healthy(settings: Settings, timeout_s: float = HEALTHY_TIMEOUT_S) -> None:
    """Wait until every container is healthy (one-shot ones exited 0); on a failure or at the
    deadline, raise with the last log lines of each container that is not."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = container_states(settings)
        waiting = not_ready(states)
        failed = [n for n in waiting if "unhealthy" in states[n] or states[n].startswith(("Exited", "Dead"))]
        if states and not waiting:
            return
        if failed or time.monotonic() > deadline:
            why = f"not healthy: {', '.join(failed)}" if failed else f"not healthy after {timeout_s:.0f} s"
            raise ComposeError(f"{why}\n{unhealthy_report(settings, waiting)}")
        time.sleep(3)


def unhealthy_report(settings: Settings, names: list[str] | None = None) -> str:
    """Each container of the stack that is unhealthy or exited non-zero (or each of ``names``),
    with its last log lines."""
    parts = []
    for name, status in container_states(settings).items():
        bad = "unhealthy" in status or (status.startswith("Exited") and not status.startswith("Exited (0)"))
        if bad or (names is not None and name in names):
            logs = dockerd.docker(settings, "logs", "--tail", str(LOG_LINES), name, check=False)
            parts.append(f"--- {name}: {status}; last {LOG_LINES} log lines:\n{(logs.stdout + logs.stderr).rstrip()}")
    return "\n".join(parts)


def up(settings: Settings, rebuild: bool = True, timings: dict[str, float] | None = None) -> str:
    """Install, start dockerd, build, start the stack and wait until it is healthy; the seconds
    of each step go into ``timings`` when given."""
    timings = {} if timings is None else timings
    clock = time.monotonic()

    def step(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        timings[name] = round(now - clock, 1)
        clock = now

    dockerd.ensure_packages()
    step("install packages, s")
    dockerd.start(settings)
    step("start dockerd, s")
    check_ports(settings)
    if rebuild or not _image_exists(settings, PROJECT_IMAGE):
        with ThreadPoolExecutor(max_workers=1) as pool:  # the host's packages staged while the base builds
            staging = pool.submit(prebuilt.stage, settings) if build_mode() == "prebuilt" else None
            ensure_base(settings)
            staged = staging.result() if staging else None
        step("base image (the host's packages staged meanwhile), s")
        base = build(settings, staged)
        step("project image, s")
    else:
        base = current_base(settings)
    ensure_secrets(settings)
    backfill_dir(settings).mkdir(parents=True, exist_ok=True)
    proc = compose(settings, base, "up", "-d", "--no-build", check=False)
    dockerd.record_bridges(settings)
    if proc.returncode != 0:
        report = unhealthy_report(settings)
        raise ComposeError(f"docker-compose up failed (exit {proc.returncode})" + (f":\n{report}" if report else ""))
    wait_healthy(settings)
    step("up until healthy, s")
    log.info("stack (%s) up: %s; Airflow on http://127.0.0.1:%d (user admin, password AIRFLOW_ADMIN_PASSWORD in %s)",
             stack_profile(), timings, settings.airflow_port, secrets_file(settings))  # fmt: skip
    return base


def down(settings: Settings, volumes: bool = False, stop_daemon: bool = True) -> None:
    """Remove the containers and the network (and the volumes when asked); stop our dockerd."""
    if dockerd.daemon_answers(settings):
        compose(settings, current_base(settings), "down", *(["--volumes"] if volumes else []), "--remove-orphans")
    if stop_daemon:
        dockerd.stop(settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m btc_platform.ops.compose.stack", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["up", "down", "build", "secrets", "stop-daemon"])
    parser.add_argument("--volumes", action="store_true", help="down: also remove the named volumes (all data)")
    parser.add_argument("--keep-daemon", action="store_true", help="down: leave dockerd running")
    parser.add_argument("--no-rebuild", action="store_true", help="up: reuse the project image if it exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = get_settings()
    try:
        if args.action == "up":
            up(settings, rebuild=not args.no_rebuild)
        elif args.action == "down":
            down(settings, volumes=args.volumes, stop_daemon=not args.keep_daemon)
        elif args.action == "build":
            dockerd.ensure_packages()
            dockerd.start(settings)
            build(settings)
        elif args.action == "secrets":
            ensure_secrets(settings)
            log.info("secrets in %s", secrets_file(settings))
        else:
            dockerd.stop(settings)
    except ComposeError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
