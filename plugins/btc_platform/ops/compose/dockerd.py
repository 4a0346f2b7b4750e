"""The Docker daemon of ``make compose-up`` on a machine without systemd: Debian's packages
installed when missing (root) or named in one error, and a ``dockerd`` of our own whose state,
socket and pid file live under ``<cache_dir>/compose/docker``; stopped by its pid, leaving the
host as it was (no bridge, no iptables chain, no mount of ours).

The daemon is confined: ``--iptables=false --ip-forward=false --ip-masq=false --bridge=none``.
It creates no default bridge, touches no firewall table and never turns forwarding on, so a
container reaches the containers of its compose network and nothing else; published ports go
through docker-proxy on the host's 127.0.0.1. Image builds use the host's network
(``docker build --network host``), as any host process does, to reach the package registries.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from btc_platform.settings import Settings

log = logging.getLogger(__name__)

#: command -> Debian package that provides it
PACKAGES: dict[str, str] = {
    "dockerd": "docker.io",
    "docker-compose": "docker-compose",
    "debootstrap": "debootstrap",
}
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0


class ComposeError(RuntimeError):
    """A step of the compose stack failed; the message says what to do."""


def missing_packages(which=shutil.which) -> list[str]:
    return sorted({pkg for cmd, pkg in PACKAGES.items() if which(cmd) is None})


def ensure_packages(euid: int | None = None, which=shutil.which) -> None:
    """apt-get install the missing Debian packages as root; otherwise one error naming them all."""
    missing = missing_packages(which)
    if not missing:
        return
    euid = os.geteuid() if euid is None else euid
    apt_get = which("apt-get")
    if euid != 0 or apt_get is None:
        why = "not running as root" if euid != 0 else "apt-get not found"
        raise ComposeError(
            f"missing Debian packages {' '.join(missing)} and they cannot be installed here ({why}): "
            f"run `sudo apt-get install {' '.join(missing)}` and retry"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in ([apt_get, "update", "-q"], [apt_get, "install", "-y", "-q", *missing]):
        log.info("%s", " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200, check=False)
        if proc.returncode != 0:
            raise ComposeError(f"{' '.join(cmd)} failed:\n{(proc.stdout + proc.stderr).strip()[-2000:]}")


def docker_dir(settings: Settings) -> Path:
    return (settings.cache_dir / "compose" / "docker").resolve()


def socket_path(settings: Settings) -> Path:
    return docker_dir(settings) / "docker.sock"


def docker_host(settings: Settings) -> str:
    """``DOCKER_HOST`` of the stack: ours, unless the caller set one (a daemon they run)."""
    return os.environ.get("DOCKER_HOST") or f"unix://{socket_path(settings)}"


def _pid(settings: Settings) -> int | None:
    path = docker_dir(settings) / "dockerd.pid"
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid


def docker(settings: Settings, *args: str, check: bool = True, timeout: float = 600,
           capture: bool = True) -> subprocess.CompletedProcess:  # fmt: skip
    """Run the docker CLI against the stack's daemon."""
    env = {**os.environ, "DOCKER_HOST": docker_host(settings)}
    proc = subprocess.run(["docker", *args], capture_output=capture, text=True, env=env, timeout=timeout,
                          check=False)  # fmt: skip
    if check and proc.returncode != 0:
        out = ((proc.stdout or "") + (proc.stderr or "")).strip()[-3000:]
        raise ComposeError(f"docker {' '.join(args[:3])} ... failed (exit {proc.returncode}):\n{out}")
    return proc


def daemon_answers(settings: Settings) -> bool:
    return docker(settings, "info", "--format", "{{.ServerVersion}}", check=False, timeout=20).returncode == 0


def start(settings: Settings) -> bool:
    """Start our dockerd unless one answers on DOCKER_HOST; True if this call started it."""
    if daemon_answers(settings):
        return False
    if os.environ.get("DOCKER_HOST"):
        raise ComposeError(f"no Docker daemon answers on DOCKER_HOST={os.environ['DOCKER_HOST']}")
    if os.geteuid() != 0:
        raise ComposeError("starting dockerd needs root: run as root, or start a daemon and set DOCKER_HOST")
    root = docker_dir(settings)
    for sub in ("data", "exec"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    log_path = root / "dockerd.log"
    cmd = [
        "dockerd", "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
        "-H", f"unix://{socket_path(settings)}", "--pidfile", str(root / "dockerd.pid"),
        "--iptables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none",
        "--userland-proxy=true", "--log-level=warn",
    ]  # fmt: skip
    log.info("starting dockerd (state in %s)", root)
    with open(log_path, "ab") as out:
        subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if daemon_answers(settings):
            return True
        time.sleep(1)
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
    raise ComposeError(f"dockerd did not answer within {START_TIMEOUT_S:.0f} s; last lines of {log_path}:\n{tail}")


def _bridges(settings: Settings) -> list[str]:
    """Linux bridge names of the daemon's bridge networks (``br-<id12>`` unless named)."""
    proc = docker(settings, "network", "ls", "-q", "--filter", "driver=bridge", "--no-trunc", check=False)
    names = []
    for net_id in (proc.stdout or "").split():
        inspect = docker(settings, "network", "inspect", "--format",
                         '{{index .Options "com.docker.network.bridge.name"}}', net_id, check=False)  # fmt: skip
        name = (inspect.stdout or "").strip()
        names.append(name if name and name != "<no value>" else f"br-{net_id[:12]}")
    return names


def _bridges_record(settings: Settings) -> Path:
    return docker_dir(settings) / "bridges"


def record_bridges(settings: Settings) -> None:
    """Remember the bridges of the daemon's networks, so that :func:`stop` removes them even
    when the daemon no longer answers (it crashed, or was killed)."""
    known = set(_bridges_record(settings).read_text().split()) if _bridges_record(settings).is_file() else set()
    _bridges_record(settings).write_text("".join(f"{name}\n" for name in sorted(known | set(_bridges(settings)))))


def stop(settings: Settings) -> None:
    """Stop our dockerd by its pid and remove the bridges its networks left (those it reports,
    and those recorded by :func:`record_bridges`)."""
    record = _bridges_record(settings)
    bridges = sorted(set(_bridges(settings) if daemon_answers(settings) else [])
                     | set(record.read_text().split() if record.is_file() else []))  # fmt: skip
    pid = _pid(settings)
    if pid is None:
        log.info("dockerd of %s is not running", docker_dir(settings))
        _remove_bridges(bridges)
        record.unlink(missing_ok=True)
        return
    log.info("stopping dockerd (pid %d)", pid)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if _exited(pid):
            break
        time.sleep(0.5)
    else:
        log.warning("dockerd (pid %d) still running after %.0f s: SIGKILL", pid, STOP_TIMEOUT_S)
        os.kill(pid, signal.SIGKILL)
    root = str(docker_dir(settings))
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1]
        if point.startswith(root + "/"):  # e.g. exec/netns/default, left when dockerd was killed
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
            log.info("unmounted %s", point)
    _remove_bridges(bridges)
    record.unlink(missing_ok=True)


def _exited(pid: int) -> bool:
    """True once ``pid`` is gone; reaps it when this process started it (make compose-test starts
    and stops the daemon in one process: an exited child stays a zombie until its parent waits)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:  # not our child: its parent (or init) reaps it
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _remove_bridges(names: list[str]) -> None:
    for name in names:
        if Path("/sys/class/net", name).exists():
            subprocess.run(["ip", "link", "delete", name], capture_output=True, check=False)
            log.info("removed bridge %s", name)
