"""The project image built from what the host already has (``COMPOSE_BUILD=prebuilt``, the
default of ``make compose-up``): the packages of the host's ``.venv`` repacked as wheels, and the
jars and the dashboard's JS of ``make jars js``, served over HTTP on 127.0.0.1 while ``docker
build --network host`` runs (the Dockerfile's ``PREBUILT_URL``). Nothing is downloaded twice:
after ``make test`` (which builds the venv and resolves the jars) the image's ``pip install`` runs
with ``--no-index`` from these wheels, and neither Maven nor npm is installed in the image. A
piece the host lacks is left out, and the Dockerfile takes it from the registries instead.

Wheels are repacked from the installed distributions (their ``RECORD``), not downloaded: pip
keeps no HTTP cache of them on this kind of machine. The Python of the image must be the same
minor version (3.11) on the same platform (Linux x86-64, glibc); ``pip install`` checks the tags.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import http.server
import importlib.metadata
import io
import json
import logging
import re
import shutil
import sysconfig
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from btc_platform.ops.compose.dockerd import ComposeError
from btc_platform.settings import Settings

log = logging.getLogger(__name__)

#: bump when :func:`repack` changes: the digest in the build's URL, and so the layer cache, changes with it
REPACK_FORMAT = "2"
#: files of an installed distribution's .dist-info that are the installer's, not the wheel's
_INSTALLER_FILES = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
#: a script's shebang that points at the host venv's interpreter
_SHEBANG = re.compile(rb"^#!.*python[0-9.]*[ \t]*(\r?\n)")


def prebuilt_dir(settings: Settings) -> Path:
    return (settings.cache_dir / "compose" / "prebuilt").resolve()


def _hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _tags(wheel_metadata: str) -> str:
    """The compressed tag of a wheel's file name from the ``Tag:`` lines of its WHEEL file
    (``py2-none-any`` + ``py3-none-any`` -> ``py2.py3-none-any``)."""
    parts: list[list[str]] = [[], [], []]
    for line in wheel_metadata.splitlines():
        if line.startswith("Tag:"):
            for i, value in enumerate(line.split(":", 1)[1].strip().split("-")):
                if value not in parts[i]:
                    parts[i].append(value)
    if not parts[0]:
        raise ValueError("no Tag line")
    return "-".join(".".join(values) for values in parts)


def _editable(dist: importlib.metadata.Distribution) -> bool:
    text = dist.read_text("direct_url.json")
    return bool(text) and bool(json.loads(text).get("dir_info", {}).get("editable"))


def repack(dist: importlib.metadata.Distribution, site_packages: Path, dest: Path) -> Path | None:
    """``dist`` (installed in ``site_packages``) as a wheel in ``dest``; None when it cannot be
    (an editable install, no WHEEL file). An existing wheel of the same name is kept."""
    wheel_meta = dist.read_text("WHEEL")
    if wheel_meta is None or _editable(dist) or not dist.files:
        return None
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"]).lower()
    version = dist.version
    target = dest / f"{name}-{version}-{_tags(wheel_meta)}.whl"
    if target.exists():
        return target
    console = {ep.name for ep in dist.entry_points if ep.group in ("console_scripts", "gui_scripts")}
    dist_info = f"{name}-{version}.dist-info"
    data_dir = f"{name}-{version}.data"
    record: list[tuple[str, str, str]] = []
    dest.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as out:
        for file in dist.files:
            posix = PurePosixPath(str(file))
            if "__pycache__" in posix.parts or posix.suffix == ".pyc":
                continue
            if posix.parent.name.endswith(".dist-info"):
                if posix.name in _INSTALLER_FILES:
                    continue
                arcname = f"{dist_info}/{posix.name}"
            elif posix.parts[0] == "..":  # outside site-packages: lib/python3.11/site-packages/../../../X
                rel = PurePosixPath(*[p for p in posix.parts if p != ".."])
                if rel.parts[0] == "bin":
                    if rel.name in console:
                        continue  # pip writes it again from entry_points.txt
                    arcname = f"{data_dir}/scripts/{rel.name}"
                else:
                    arcname = f"{data_dir}/data/{rel}"
            else:
                arcname = str(posix)
            path = (site_packages / str(file)).resolve()
            if not path.is_file():
                continue
            data = path.read_bytes()
            if arcname.startswith(f"{data_dir}/scripts/"):
                data = _SHEBANG.sub(lambda m: b"#!python" + m.group(1), data, count=1)
            info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (path.stat().st_mode & 0xFFFF) << 16  # pip keeps the executable bit
            out.writestr(info, data)
            record.append((arcname, _hash(data), str(len(data))))
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerows([*record, (f"{dist_info}/RECORD", "", "")])
        out.writestr(f"{dist_info}/RECORD", buf.getvalue())
    tmp.replace(target)
    return target


def wheelhouse(dest: Path) -> tuple[int, list[str]]:
    """Every distribution of this interpreter's environment (the host's .venv) as a wheel in
    ``dest``; returns (wheels, names that could not be repacked)."""
    site_packages = Path(sysconfig.get_paths()["purelib"])
    dest.mkdir(parents=True, exist_ok=True)
    count, skipped = 0, []
    for dist in importlib.metadata.distributions(path=[str(site_packages)]):
        try:
            wheel = repack(dist, site_packages, dest)
        except (OSError, ValueError) as exc:
            log.warning("cannot repack %s: %s", dist.metadata["Name"], exc)
            wheel = None
        if wheel is None:
            skipped.append(dist.metadata["Name"])
        else:
            count += 1
    return count, sorted(skipped)


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


def digest(root: Path, settings: Settings) -> str:
    """What the staged folder holds, in 16 hex digits: the wheels' names (a distribution's name,
    version and tags), the jars' stamp, the JS's lock file and :data:`REPACK_FORMAT`. It is part
    of the build's URL, so that the layer cache is reused exactly while these stay the same."""
    h = hashlib.sha256(REPACK_FORMAT.encode())
    for name in sorted(p.name for p in (root / "wheels").glob("*.whl")):
        h.update(name.encode() + b"\n")
    for path in (settings.jars_dir / ".stamp.json", settings.cache_dir / "js" / "package-lock.json"):
        if (root / ("jars.tar" if path.name == ".stamp.json" else "js.tar")).is_file():
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def stage(settings: Settings) -> tuple[Path, str]:
    """The folder the build reads: ``wheels/``, ``jars.tar`` and ``js.tar`` from the host's venv
    and cache (what is missing is left out). Returns the folder and the path the build reads it
    at: ``/<digest>`` (a link to the folder itself)."""
    root = prebuilt_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    wheels = root / "wheels"
    if (root / "format").is_file() and (root / "format").read_text() != REPACK_FORMAT:
        shutil.rmtree(wheels, ignore_errors=True)  # repacked by an earlier version
    (root / "format").write_text(REPACK_FORMAT)
    count, skipped = wheelhouse(wheels)
    log.info("wheelhouse: %d wheels from the host's venv in %s%s", count, root / "wheels",
             f" (not repacked: {', '.join(skipped)})" if skipped else "")  # fmt: skip
    resolved = (settings.jars_dir / ".stamp.json").is_file()  # a complete `make jars`
    jars = _tar(settings.cache_dir, root / "jars.tar", ["jars"] if resolved else [])
    js = _tar(settings.cache_dir / "js", root / "js.tar", ["node_modules"])
    log.info("host's jars: %s; host's js: %s (what is missing comes from Maven Central / npm in the build)",
             "yes" if jars else "no (make jars)", "yes" if js else "no (make js)")  # fmt: skip
    key = digest(root, settings)
    for link in root.iterdir():
        if link.is_symlink():
            link.unlink()
    (root / key).symlink_to(".")
    return root, f"/{key}"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        log.debug("prebuilt server: " + format, *args)


@contextlib.contextmanager
def serve(folder: Path, port: int) -> Iterator[str]:
    """Serve ``folder`` on 127.0.0.1:``port`` while the block runs; yields its URL."""
    handler = lambda *a, **kw: _Quiet(*a, directory=str(folder), **kw)  # noqa: E731
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as exc:
        raise ComposeError(f"cannot serve the prebuilt packages on 127.0.0.1:{port} ({exc}): "
                           "set COMPOSE_PREBUILT_PORT to a free port") from exc  # fmt: skip
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
