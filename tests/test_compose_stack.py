"""The compose stack running on this machine (issue 27): `make compose-test` builds and starts it
(dockerd of our own, local base when no registry image can be pulled), checks it from the host,
and removes it again (containers, network, volumes, daemon). Marked ``compose`` and skipped unless
COMPOSE_TEST=1 (set by `make compose-test`), so `make test` does not start Docker."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import requests

from btc_platform.ops.compose import dockerd, stack
from btc_platform.settings import get_settings

pytestmark = [
    pytest.mark.compose,
    pytest.mark.skipif(os.environ.get("COMPOSE_TEST") != "1", reason="compose stack test: make compose-test"),
]

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def running_stack():
    settings = get_settings()
    started_here = not (dockerd.daemon_answers(settings) and stack._running(settings))
    try:
        stack.up(settings, rebuild=True)
        yield settings
    finally:
        if started_here:
            stack.down(settings, volumes=True, stop_daemon=True)


def _api(settings) -> str:
    return f"http://127.0.0.1:{settings.airflow_port}"


def _token(settings) -> str:
    password = stack.ensure_secrets(settings)["AIRFLOW_ADMIN_PASSWORD"]
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            resp = requests.post(f"{_api(settings)}/auth/token", json={"username": "admin", "password": password},
                                 timeout=10)  # fmt: skip
            if resp.status_code in (200, 201):
                return resp.json()["access_token"]
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("no token from the Airflow API")
        time.sleep(3)


def test_only_the_airflow_api_is_published_on_loopback(running_stack):
    proc = dockerd.docker(running_stack, "ps", "--filter", f"label=com.docker.compose.project={stack.PROJECT}",
                          "--format", "{{.Names}}\t{{.Ports}}")  # fmt: skip
    published = {}
    for line in proc.stdout.splitlines():
        name, _, ports = line.partition("\t")
        if "->" in ports:
            published[name] = ports
    assert len(published) == 1, published
    ((name, ports),) = published.items()
    assert "airflow-apiserver" in name
    assert ports == f"127.0.0.1:{running_stack.airflow_port}->8080/tcp"


def _repository_strings() -> set[str]:
    """Every word-like string of the deployment files: what someone could try as the JWT secret."""
    texts = [(ROOT / name).read_text() for name in ("docker-compose.yml", "docker-compose.local.yml",
                                                    "Dockerfile", ".env.example")]  # fmt: skip
    texts += [p.read_text() for p in (ROOT / "infra" / "compose").glob("*.env")]
    found = {"change-me-btc-platform-jwt-secret", "secret", "airflow", "admin", ""}
    for text in texts:
        found |= set(re.findall(r"[A-Za-z0-9_.:/@+=-]{4,}", text))
    return found


def test_a_token_signed_with_any_string_of_the_repository_is_refused(running_stack):
    import jwt

    real = _token(running_stack)
    header = jwt.get_unverified_header(real)
    claims = jwt.decode(real, options={"verify_signature": False})
    url = f"{_api(running_stack)}/api/v2/dags"
    ok = requests.get(url, headers={"Authorization": f"Bearer {real}"}, timeout=10)
    assert ok.status_code == 200
    assert "btc_stream_supervisor" in {d["dag_id"] for d in ok.json()["dags"]}
    secret = stack.ensure_secrets(running_stack)["AIRFLOW_JWT_SECRET"]
    resigned = jwt.encode(claims, secret, algorithm=header["alg"], headers={"kid": header.get("kid")})
    assert requests.get(url, headers={"Authorization": f"Bearer {resigned}"}, timeout=10).status_code == 200
    accepted = []
    for candidate in sorted(_repository_strings()):
        forged = jwt.encode(claims, candidate, algorithm=header["alg"], headers={"kid": header.get("kid")})
        if requests.get(url, headers={"Authorization": f"Bearer {forged}"}, timeout=10).status_code != 401:
            accepted.append(candidate)
    assert accepted == []


def test_secrets_file_is_private(running_stack):
    path = stack.secrets_file(running_stack)
    assert path.stat().st_mode & 0o777 == 0o600
    assert subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", str(path)], check=False).returncode == 0


def test_hdfs_permissions_are_on_and_the_root_belongs_to_the_platform(running_stack):
    proc = stack.compose(running_stack, stack.current_base(running_stack), "exec", "-T", "namenode", "curl", "-fsS",
                         "http://namenode:9870/webhdfs/v1/bitcoin?op=GETFILESTATUS&user.name=nobody",
                         capture=True)  # fmt: skip
    status = json.loads(proc.stdout)["FileStatus"]
    assert status["owner"] == "btc" and status["permission"] == "755"
    denied = stack.compose(running_stack, stack.current_base(running_stack), "exec", "-T", "namenode", "curl",
                           "-sS", "-X", "PUT",
                           "http://namenode:9870/webhdfs/v1/bitcoin/intruder?op=MKDIRS&user.name=nobody",
                           capture=True)  # fmt: skip
    assert "AccessControlException" in denied.stdout
