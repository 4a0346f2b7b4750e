"""The project image built from what the host already has (``BTC_COMPOSE_BUILD=prebuilt``, the
default of ``make compose-up``): the packages of the host's ``.venv``, and the jars and the
dashboard's JS of ``make jars js``, served over HTTP on 127.0.0.1 while ``docker build --network
host`` runs (the Dockerfile's ``PREBUILT_URL``). Nothing is downloaded or installed twice: after
``make test`` (which builds the venv and resolves the jars) the image's venv gets the host venv's
site-packages as they are installed, bytecode included (``venv.tar``, no pip run, nothing
compiled), and neither Maven nor npm is installed in the image. A piece the host lacks is left
out, and the Dockerfile takes it from the registries instead.

The Python of the image must be the same minor version (3.11) on the same platform (Linux x86-64,
glibc): :func:`host_venv` checks it, else the build installs the requirements from pip's index.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import importlib.metadata
import io
import json
import logging
import re
import shutil
import sys
import sysconfig
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from btc_platform.ops.compose.dockerd import ComposeError
from btc_platform.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

#: bump when :func:`venv_tar` changes: the digest in the build's URL, and so the layer cache, changes with it
VENV_FORMAT = "3"
#: the image's venv (the Dockerfile's ``python3 -m venv /opt/venv``): the scripts' interpreter there
IMAGE_VENV = "/opt/venv"
#: the Python the host's venv must run to be copied into the image's (Debian bookworm's 3.11)
PYTHON = (3, 11)
#: the runtime requirements: the image takes these (and their dependencies) of the host's venv
REQUIREMENTS = PROJECT_ROOT / "requirements.txt"
#: a script's shebang that points at the host venv's interpreter
_SHEBANG = re.compile(rb"^#!.*python[0-9.]*[ \t]*(\r?\n)")
#: the venv's own files, which the image's ``python3 -m venv`` made already (pip: the image's own)
_VENV_OWN = re.compile(r"^(python[0-9.]*|activate.*|Activate\.ps1|pip[0-9.]*|__pycache__)$")


def prebuilt_dir(settings: Settings) -> Path:
    return (settings.cache_dir / "compose" / "prebuilt").resolve()


def host_venv() -> Path | None:
    """The venv this interpreter runs in (the host's ``.venv``), when the image can take its
    packages as they are: Python 3.11 on Linux x86-64, a venv (not the system's Python)."""
    if sys.prefix == sys.base_prefix or sys.version_info[:2] != PYTHON or sysconfig.get_platform() != "linux-x86_64":
        return None
    return Path(sys.prefix)


def _editable(dist: importlib.metadata.Distribution) -> bool:
    text = dist.read_text("direct_url.json")
    return bool(text) and bool(json.loads(text).get("dir_info", {}).get("editable"))


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_distributions(site_packages: Path, requirements: Path) -> set[str] | None:
    """The (normalized) names of the distributions ``requirements`` needs, with every dependency
    (extras and environment markers evaluated): requirements.txt, without the development tools
    of requirements-dev.txt that the host's venv also holds. None when a requirement is missing."""
    from packaging.requirements import Requirement

    installed = {_name(d.metadata["Name"]): d for d in importlib.metadata.distributions(path=[str(site_packages)])}
    todo = [Requirement(line.split("#", 1)[0].strip()) for line in requirements.read_text().splitlines()
            if line.split("#", 1)[0].strip() and not line.startswith("-")]  # fmt: skip
    needed: set[tuple[str, str]] = set()
    while todo:
        req = todo.pop()
        name = _name(req.name)
        if name not in installed:
            log.warning("%s is not installed in the host's venv", req)
            return None
        for extra in ("", *sorted(req.extras)):
            if (name, extra) in needed:
                continue
            needed.add((name, extra))
            for dep in map(Requirement, installed[name].requires or []):
                if dep.marker is None or dep.marker.evaluate({"extra": extra}):
                    todo.append(dep)
    return {name for name, _ in needed}


def _left_out(site_packages: Path, requirements: Path) -> tuple[set[str], set[str]]:
    """Top-level names of site-packages and scripts of bin/ that are not copied: the editable
    installs (the project: the image installs /opt/btc instead), pip (the image's venv has its
    own) and what ``requirements`` does not need (:func:`runtime_distributions`)."""
    needed = runtime_distributions(site_packages, requirements)
    keep: set[str] = set()
    drop: set[str] = {"pip"}
    scripts: set[str] = set()
    for dist in importlib.metadata.distributions(path=[str(site_packages)]):
        files = [PurePosixPath(str(f)) for f in dist.files or []]
        tops = {f.parts[0] for f in files if f.parts[0] != ".."}
        name = _name(dist.metadata["Name"])
        if _editable(dist) or name == "pip" or (needed is not None and name not in needed):
            drop |= tops
            scripts |= {f.name for f in files if f.parts[0] == ".."}
        else:
            keep |= tops
    return (drop - keep) | {p.name for p in site_packages.glob("__editable__*")}, scripts


def venv_tar(venv: Path, out: BinaryIO, requirements: Path = REQUIREMENTS) -> int:
    """Write the packages of ``venv`` as an uncompressed tar stream to ``out``, paths relative to
    the venv (``lib/python3.11/site-packages/...``, ``bin/...``), for ``tar -x -C /opt/venv``:
    site-packages as installed (with their bytecode, whose source times the tar keeps), without
    :func:`_left_out`; the scripts of ``bin/`` with their shebang pointing at the image's
    interpreter. Returns the number of members."""
    site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    skip, skip_scripts = _left_out(site, requirements)
    count = 0

    def owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
        nonlocal count
        count += 1
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(site.iterdir()):
            if entry.name not in skip:
                tar.add(entry, arcname=str(entry.relative_to(venv)), filter=owner)
        for script in sorted((venv / "bin").iterdir()):
            if _VENV_OWN.match(script.name) or script.name in skip_scripts or script.is_symlink() or not script.is_file():
                continue
            data = script.read_bytes()
            data = _SHEBANG.sub(lambda m: f"#!{IMAGE_VENV}/bin/python".encode() + m.group(1), data, count=1)
            info = owner(tar.gettarinfo(str(script), arcname=f"bin/{script.name}"))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return count


def venv_key(venv: Path) -> str:
    """What the venv's copy holds: Python's version and each distribution's name and version."""
    site = sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"]
    dists = sorted(f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions(path=[site]))
    return "\n".join([f"python {sys.version_info[0]}.{sys.version_info[1]}", *dists])


def _tar(source: Path, target: Path, names: list[str]) -> bool:
    present = [n for n in names if (source / n).exists()]
    if not present:
        target.unlink(missing_ok=True)
        return False
    tmp = target.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        for name in present:
            tar.add(source / name, arcname=name)
    tmp.replace(target)
    return True


def digest(root: Path, settings: Settings, venv: Path | None) -> str:
    """What the build reads, in 16 hex digits: the venv's :func:`venv_key`, the jars' stamp, the
    JS's lock file and :data:`VENV_FORMAT`. It is part of the build's URL, so that the layer cache
    is reused exactly while these stay the same."""
    h = hashlib.sha256(VENV_FORMAT.encode())
    if venv is not None:
        h.update(venv_key(venv).encode())
    for path in (settings.jars_dir / ".stamp.json", settings.cache_dir / "js" / "package-lock.json"):
        if (root / ("jars.tar" if path.name == ".stamp.json" else "js.tar")).is_file():
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def stage(settings: Settings) -> tuple[Path, str]:
    """The folder the build reads: ``jars.tar`` and ``js.tar`` from the host's cache (what is
    missing is left out); ``venv.tar``, the host's venv (:func:`venv_tar`), is written while it is
    read. Returns the folder and the path the build reads it at: ``/<digest>`` (a link to the
    folder itself)."""
    root = prebuilt_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root / "wheels", ignore_errors=True)  # an earlier version's wheelhouse
    venv = host_venv()
    log.info("host's venv: %s", venv or f"no (not a Python {PYTHON[0]}.{PYTHON[1]} venv on Linux x86-64: the "
             "build installs the requirements from pip's index)")  # fmt: skip
    resolved = (settings.jars_dir / ".stamp.json").is_file()  # a complete `make jars`
    jars = _tar(settings.cache_dir, root / "jars.tar", ["jars"] if resolved else [])
    js = _tar(settings.cache_dir / "js", root / "js.tar", ["node_modules"])
    log.info("host's jars: %s; host's js: %s (what is missing comes from Maven Central / npm in the build)",
             "yes" if jars else "no (make jars)", "yes" if js else "no (make js)")  # fmt: skip
    key = digest(root, settings, venv)
    for link in root.iterdir():
        if link.is_symlink():
            link.unlink()
    (root / key).symlink_to(".")
    return root, f"/{key}"


class _Handler(http.server.SimpleHTTPRequestHandler):
    """The staged folder, and ``.../venv.tar``: the host's venv as a tar written while it is sent."""

    venv: Path | None = None

    def do_GET(self) -> None:
        if self.path.rsplit("/", 1)[-1] != "venv.tar" or self.venv is None:
            super().do_GET()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-tar")
        self.end_headers()  # no length: HTTP/1.0, the end of the stream ends the file
        started = time.monotonic()
        members = venv_tar(self.venv, self.wfile)
        log.info("host's venv sent: %d files in %.0f s", members, time.monotonic() - started)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        log.debug("prebuilt server: " + format, *args)


@contextlib.contextmanager
def serve(folder: Path, port: int, venv: Path | None = None) -> Iterator[str]:
    """Serve ``folder`` (and ``venv`` as ``venv.tar``, when given) on 127.0.0.1:``port`` while
    the block runs; yields its URL."""
    handler = type("Handler", (_Handler,), {"venv": venv})
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port),
                                                 lambda *a, **kw: handler(*a, directory=str(folder), **kw))  # fmt: skip
    except OSError as exc:
        raise ComposeError(f"cannot serve the prebuilt packages on 127.0.0.1:{port} ({exc}): "
                           "set BTC_COMPOSE_PREBUILT_PORT to a free port") from exc  # fmt: skip
    thread = threading.Thread(target=server.serve_forever, name="prebuilt-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def clear(settings: Settings) -> None:
    shutil.rmtree(prebuilt_dir(settings), ignore_errors=True)
