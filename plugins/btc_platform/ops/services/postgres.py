"""PostgreSQL server on 127.0.0.1 for Airflow's metadata DB (``BTC_AIRFLOW_DATABASE=postgres``,
the cluster profile): the Debian package's binaries (``/usr/lib/postgresql/<version>/bin``),
installed with apt-get when missing and the user is root, else a clear error naming the package.

The cluster lives in ``<data_dir>/postgres/data`` (initdb once, superuser ``airflow``, listening
on 127.0.0.1 only, no Unix socket) with scram-sha-256 password authentication: the password is
generated on first start into ``<data_dir>/postgres/password`` (mode 0600,
``airflow_env.database_password``) and Airflow's SQLAlchemy URL carries it. A cluster that an
earlier version initialised with trust authentication gets the password and its ``trust`` lines
turned into ``scram-sha-256`` at its next start. The server refuses to run as root, so a root user
runs it as the Debian package's ``postgres`` user. The database ``airflow`` is created once.

psycopg2 is imported inside the functions that connect: DAG files reach this module at parse time
(through the supervisor's trigger), and psycopg2 is only needed with the Postgres metadata database.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from btc_platform.ops import process
from btc_platform.ops.airflow_env import DATABASE_NAME, DATABASE_USER, database_password
from btc_platform.ops.services import base
from btc_platform.ops.services.base import ServiceError
from btc_platform.settings import Settings

log = logging.getLogger(__name__)

POSTGRES_START_TIMEOUT_S = 60.0
DEBIAN_PACKAGE = "postgresql"
SYSTEM_USER = "postgres"
PASSWORD_AUTH = "scram-sha-256"
_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def postgres_dir(settings: Settings) -> Path:
    return settings.data_dir / "postgres"


def find_bin_dir() -> Path | None:
    """The newest PostgreSQL server's bin directory of the Debian packages, if installed."""
    found = [Path(p) for p in glob.glob(_BIN_GLOB) if (Path(p) / "postgres").is_file()]
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0) if found else None


def install_commands(euid: int, apt_get: str | None) -> list[list[str]]:
    """What installs the missing server: ``apt-get update`` + ``apt-get install postgresql`` as root
    with apt-get on PATH; otherwise :class:`ServiceError` naming the Debian package (never a silent
    fallback to another database)."""
    if euid != 0 or apt_get is None:
        why = "not running as root" if euid != 0 else "apt-get not found"
        raise ServiceError(
            f"PostgreSQL server not found ({_BIN_GLOB}/postgres) and it cannot be installed here ({why}): "
            f"install the Debian package {DEBIAN_PACKAGE!r} (sudo apt-get install {DEBIAN_PACKAGE}); the "
            "cluster profile keeps Airflow's metadata in it"
        )
    return [[apt_get, "update", "-q"], [apt_get, "install", "-y", "-q", "--no-install-recommends", DEBIAN_PACKAGE]]


def ensure_installed() -> Path:
    """Bin directory of the PostgreSQL server; ``apt-get install postgresql`` when missing and root."""
    bin_dir = find_bin_dir()
    if bin_dir is not None:
        return bin_dir
    commands = install_commands(os.geteuid(), shutil.which("apt-get"))
    log.info("installing the Debian package %s (apt-get) ...", DEBIAN_PACKAGE)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in commands:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, check=False)
        if proc.returncode != 0:
            raise ServiceError(f"{' '.join(cmd)} failed:\n{(proc.stdout + proc.stderr).strip()[-2000:]}")
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise ServiceError(f"apt-get installed {DEBIAN_PACKAGE} but no {_BIN_GLOB}/postgres exists")
    return bin_dir


def _as_server_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run as the package's ``postgres`` user then."""
    if os.geteuid() != 0:
        return cmd
    return ["setpriv", f"--reuid={SYSTEM_USER}", f"--regid={SYSTEM_USER}", "--init-groups", "--", *cmd]


def _chown_to_server_user(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, SYSTEM_USER, SYSTEM_USER)


def _initdb(settings: Settings, bin_dir: Path) -> Path:
    data = postgres_dir(settings) / "data"
    if (data / "PG_VERSION").is_file():
        return data
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o700)
    _chown_to_server_user(data)
    log.info("initialising PostgreSQL cluster %s", data)
    # initdb reads the superuser's password from a file (as the server's user when root)
    pwfile = postgres_dir(settings) / ".initdb-password"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(database_password(settings) + "\n")
    _chown_to_server_user(pwfile)
    try:
        cmd = _as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-U", DATABASE_USER,
                               f"--auth={PASSWORD_AUTH}", f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C",
                               "--no-instructions"])  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    finally:
        pwfile.unlink()
    if proc.returncode != 0:
        raise ServiceError(f"initdb failed:\n{(proc.stdout + proc.stderr).strip()[-2000:]}")
    return data


def trust_lines(hba: str) -> list[str]:
    """The rules of a pg_hba.conf that let clients in without a password."""
    return [line for line in hba.splitlines() if line.split("#", 1)[0].split()[-1:] == ["trust"]]


def _require_password(settings: Settings, data: Path) -> None:
    """A cluster initialised with trust authentication (before passwords): give the role its
    password, turn every ``trust`` rule into password authentication and reload."""
    import psycopg2

    hba_path = data / "pg_hba.conf"
    hba = hba_path.read_text()
    if not trust_lines(hba):
        return
    log.info("PostgreSQL cluster %s used trust authentication: setting the generated password", data)
    conn = _connect(settings, "postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'ALTER ROLE "{DATABASE_USER}" PASSWORD %s', (database_password(settings),))
            hba_path.write_text("".join(
                line.rsplit("trust", 1)[0] + PASSWORD_AUTH + "\n" if line in trust_lines(hba) else line + "\n"
                for line in hba.splitlines()
            ))  # fmt: skip
            cur.execute("SELECT pg_reload_conf()")
    except psycopg2.Error as exc:
        raise ServiceError(f"setting the password of the PostgreSQL cluster {data} failed: {exc}") from exc
    finally:
        conn.close()


def _connect(settings: Settings, dbname: str):
    import psycopg2

    return psycopg2.connect(host="127.0.0.1", port=settings.postgres_port, user=DATABASE_USER, dbname=dbname,
                            password=database_password(settings), connect_timeout=3)  # fmt: skip


def postgres_health(settings: Settings) -> str | None:
    """None if the server accepts a connection to the ``airflow`` database, else the reason."""
    import psycopg2

    try:
        conn = _connect(settings, DATABASE_NAME)
    except psycopg2.Error as exc:
        return f"PostgreSQL on 127.0.0.1:{settings.postgres_port} not answering: {str(exc).strip()[:200]}"
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
    except psycopg2.Error as exc:
        return f"PostgreSQL query failed: {str(exc).strip()[:200]}"
    finally:
        conn.close()
    return None


def _create_database(settings: Settings) -> None:
    import psycopg2

    conn = _connect(settings, "postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{DATABASE_NAME}" OWNER "{DATABASE_USER}"')
                log.info("created database %s", DATABASE_NAME)
    except psycopg2.Error as exc:
        raise ServiceError(f"creating database {DATABASE_NAME!r} failed: {exc}") from exc
    finally:
        conn.close()


def start_postgres(settings: Settings) -> None:
    import psycopg2

    if base.running_pid(settings, "postgres") is not None and postgres_health(settings) is None:
        log.info("postgres already running on 127.0.0.1:%d", settings.postgres_port)
        return
    base.terminate(settings, "postgres")
    bin_dir = ensure_installed()
    base.check_port_free(settings.postgres_port, "PostgreSQL", "BTC_POSTGRES_PORT")
    started = time.monotonic()
    data = _initdb(settings, bin_dir)
    cmd = _as_server_user([
        str(bin_dir / "postgres"), "-D", str(data),
        "-c", "listen_addresses=127.0.0.1", "-p", str(settings.postgres_port),
        "-c", "unix_socket_directories=", "-c", "shared_buffers=32MB", "-c", "max_connections=100",
        "-c", "fsync=on", "-c", "logging_collector=off",
    ])  # fmt: skip
    record = base.spawn(settings, "postgres", cmd, base.base_env(), postgres_dir(settings))

    def accepting() -> str | None:
        try:
            _connect(settings, "postgres").close()
        except psycopg2.Error as exc:
            return f"not accepting connections: {str(exc).strip()[:120]}"
        return None

    process.wait_until_healthy(record, accepting, POSTGRES_START_TIMEOUT_S, "PostgreSQL connection")
    _require_password(settings, data)
    _create_database(settings)
    log.info("postgres ready on 127.0.0.1:%d (PostgreSQL %s) in %.1f s", settings.postgres_port,
             bin_dir.parent.name, time.monotonic() - started)  # fmt: skip
