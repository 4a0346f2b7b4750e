"""Resolve the platform's JVM artifacts from Maven Central with the machine's ``mvn``.

Groups (profiles of ``infra/pom.xml``), each copied into ``<settings.jars_dir>/<group>/``:

* ``kafka``  - the Apache Kafka broker (KRaft) and its storage-format tool, with a log4j2 binding;
* ``hadoop`` - HDFS NameNode + DataNode (hadoop-hdfs, hadoop-common) and their dependencies;
* ``spark``  - ``spark-sql-kafka-0-10`` matching pyspark, minus every artifact pyspark already
  ships in ``pyspark/jars`` (so Spark never sees two versions of a class);
* ``localfs`` - not from Maven: ``infra/localfs/src`` compiled with the JDK's ``javac`` against
  pyspark's own Hadoop jar. A ``file://`` file system that sets permissions through java.nio
  instead of forking ``chmod`` per file (pyspark ships no libhadoop.so) and writes no ``.crc``
  side files; local Spark sessions use it (``btc_platform.lakehouse.spark_session.local_fs_conf``).

Maven uses a private local repository under ``<settings.cache_dir>/m2`` so the cache is
self-contained. A stamp file keyed on the pom's hash (and the pyspark jar list) makes a second
run a no-op that never calls Maven; when the stamp is stale Maven is first tried offline
(``mvn -o``) and only goes to the network if something is missing.

CLI: ``btc-jars [--force] [--offline] [--group G ...]``. Python API:
``ensure_jars(settings)`` (used by btc_platform.ops.services and the test fixtures) and
``classpath(group, settings)``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from btc_platform.settings import PROJECT_ROOT, Settings, SettingsError, get_settings

log = logging.getLogger(__name__)

INFRA_DIR = PROJECT_ROOT / "infra"
POM = INFRA_DIR / "pom.xml"
LOCALFS_SRC = INFRA_DIR / "localfs" / "src"
LOCALFS_JAR = "btc-localfs.jar"
GROUPS: tuple[str, ...] = ("kafka", "hadoop", "spark", "localfs")
STAMP_NAME = ".stamp.json"
#: Bump when the copy logic changes so existing caches are rebuilt.
_LAYOUT_VERSION = "1"
_MVN_TIMEOUT_S = 1800


class JarsError(RuntimeError):
    """Maven is missing or could not resolve the artifacts; the message says what to do."""


@dataclass(frozen=True)
class Artifact:
    group_id: str
    artifact_id: str
    version: str
    path: Path


def _pyspark_jars_dir() -> Path:
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise JarsError("pyspark is not installed in this interpreter (run `make venv`)")
    return Path(next(iter(spec.submodule_search_locations))) / "jars"


def _ships(artifact_id: str, jar_names: Sequence[str]) -> bool:
    """True if one of ``jar_names`` is ``<artifact_id>-<version>.jar`` (any version)."""
    prefix = artifact_id + "-"
    return any(name.startswith(prefix) and name[len(prefix) : len(prefix) + 1].isdigit() for name in jar_names)


def _fingerprint() -> str:
    digest = hashlib.sha256()
    digest.update(_LAYOUT_VERSION.encode())
    digest.update(POM.read_bytes())
    for source in sorted(LOCALFS_SRC.rglob("*.java")):
        digest.update(source.relative_to(LOCALFS_SRC).as_posix().encode())
        digest.update(source.read_bytes())
    with contextlib.suppress(JarsError):
        digest.update("\n".join(sorted(p.name for p in _pyspark_jars_dir().glob("*.jar"))).encode())
    return digest.hexdigest()


def _parse_dependency_list(text: str) -> list[Artifact]:
    """Parse ``mvn dependency:list -DoutputAbsoluteArtifactFilename=true`` output lines
    ``group:artifact:type[:classifier]:version:scope:/abs/path[ -- module ...]``."""
    artifacts = []
    for line in text.splitlines():
        token = line.strip().split(" ", 1)[0]
        parts = token.split(":")
        if len(parts) < 6 or not parts[-1].startswith("/"):
            continue
        artifacts.append(Artifact(parts[0], parts[1], parts[-3], Path(parts[-1])))
    return artifacts


def _mvn(settings: Settings, group: str, offline: bool) -> list[Artifact]:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise JarsError("`mvn` not found on PATH: install Maven (apt-get install maven) and retry")
    m2 = settings.cache_dir / "m2"
    m2.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="btc-jars-") as tmp:
        listing = Path(tmp) / "deps.txt"
        cmd = [
            mvn, "-B", "-q", "-f", str(POM), "-P", group,
            f"-Dmaven.repo.local={m2}",
            "dependency:list",
            f"-DoutputFile={listing}",
            "-DoutputAbsoluteArtifactFilename=true",
            "-DincludeScope=runtime",
        ]  # fmt: skip
        if offline:
            cmd.insert(1, "-o")
        log.info("resolving %s jars with maven%s", group, " (offline)" if offline else "")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_MVN_TIMEOUT_S, check=False)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise JarsError(f"mvn could not resolve group {group!r} (exit {proc.returncode}):\n{tail}")
        artifacts = _parse_dependency_list(listing.read_text())
    if not artifacts:
        raise JarsError(f"mvn resolved no artifacts for group {group!r}: check infra/pom.xml")
    return artifacts


def _build_localfs(settings: Settings) -> list[Path]:
    """Compile infra/localfs/src against pyspark's Hadoop client jar, install it as ``<jars_dir>/localfs``."""
    javac, jar = shutil.which("javac"), shutil.which("jar")
    if javac is None or jar is None:
        raise JarsError("`javac`/`jar` not found on PATH: install a JDK 17 (apt-get install openjdk-17-jdk-headless)")
    hadoop_api = sorted(_pyspark_jars_dir().glob("hadoop-client-api-*.jar"))
    if not hadoop_api:
        raise JarsError(f"pyspark ships no hadoop-client-api jar in {_pyspark_jars_dir()}")
    sources = sorted(str(p) for p in LOCALFS_SRC.rglob("*.java"))
    with tempfile.TemporaryDirectory(prefix="btc-localfs-") as tmp:
        classes, out = Path(tmp) / "classes", Path(tmp) / LOCALFS_JAR
        steps = (
            [javac, "--release", "17", "-nowarn", "-cp", str(hadoop_api[-1]), "-d", str(classes), *sources],
            [jar, "--create", "--file", str(out), "-C", str(classes), "."],
        )
        for cmd in steps:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
            if proc.returncode != 0:
                raise JarsError(f"{Path(cmd[0]).name} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return _install_group(settings, "localfs", [Artifact("io.btcplatform", "btc-localfs", "local", out)])


def _select(group: str, artifacts: list[Artifact]) -> list[Artifact]:
    if group != "spark":
        return artifacts
    shipped = [p.name for p in _pyspark_jars_dir().glob("*.jar")]
    keep = [a for a in artifacts if not _ships(a.artifact_id, shipped)]
    dropped = sorted(a.artifact_id for a in artifacts if a not in keep)
    log.info("spark: keeping %s; pyspark already ships %s", [a.artifact_id for a in keep], dropped)
    return keep


def _install_group(settings: Settings, group: str, artifacts: list[Artifact]) -> list[Path]:
    """Copy the jars into a fresh directory and swap it in, so readers never see half a group."""
    target = settings.jars_dir / group
    staging = settings.jars_dir / f".{group}.new"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for artifact in artifacts:
        if not artifact.path.is_file():
            raise JarsError(f"maven listed {artifact.path} but the file is missing")
        shutil.copy2(artifact.path, staging / artifact.path.name)
    old = settings.jars_dir / f".{group}.old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return sorted(target.glob("*.jar"))


@contextlib.contextmanager
def _lock(settings: Settings) -> Iterator[None]:
    """Serialise concurrent resolutions (parallel test sessions share the cache)."""
    settings.jars_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.jars_dir / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_stamp(settings: Settings) -> dict:
    path = settings.jars_dir / STAMP_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        log.warning("ignoring unreadable stamp file %s", path)
        return {}


def is_ready(settings: Settings, groups: Sequence[str] = GROUPS) -> bool:
    """True if every group is resolved for the current pom (no Maven call)."""
    stamp = _read_stamp(settings)
    if stamp.get("fingerprint") != _fingerprint():
        return False
    return all(g in stamp.get("groups", {}) and any((settings.jars_dir / g).glob("*.jar")) for g in groups)


def ensure_jars(
    settings: Settings | None = None,
    groups: Sequence[str] = GROUPS,
    *,
    force: bool = False,
    offline: bool = False,
) -> dict[str, list[Path]]:
    """Make sure ``<jars_dir>/<group>/`` holds the resolved jars of each group; return them."""
    if settings is None:
        settings = get_settings()
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise JarsError(f"unknown jar group(s) {unknown}; known: {list(GROUPS)}")
    with _lock(settings):
        fingerprint = _fingerprint()
        stamp = _read_stamp(settings)
        if stamp.get("fingerprint") != fingerprint:
            stamp = {"fingerprint": fingerprint, "groups": {}}
        result: dict[str, list[Path]] = {}
        for group in groups:
            jars = sorted((settings.jars_dir / group).glob("*.jar"))
            if not force and group in stamp["groups"] and jars:
                log.info("%s jars up to date (%d jars in %s)", group, len(jars), settings.jars_dir / group)
                result[group] = jars
                continue
            started = time.monotonic()
            if group == "localfs":
                jars = _build_localfs(settings)
            else:
                try:
                    artifacts = _mvn(settings, group, offline=True)
                except JarsError:
                    if offline:
                        raise
                    log.info("offline resolution of %s incomplete, downloading from Maven Central", group)
                    artifacts = _mvn(settings, group, offline=False)
                jars = _install_group(settings, group, _select(group, artifacts))
            stamp["groups"][group] = sorted(p.name for p in jars)
            (settings.jars_dir / STAMP_NAME).write_text(json.dumps(stamp, indent=1))
            log.info("%s: %d jars in %s (%.1f s)", group, len(jars), settings.jars_dir / group,
                     time.monotonic() - started)  # fmt: skip
            result[group] = jars
    return result


def classpath(group: str, settings: Settings) -> str:
    """``:``-joined classpath of a resolved group; raise ``JarsError`` if it is not resolved."""
    jars = sorted((settings.jars_dir / group).glob("*.jar"))
    if not jars:
        raise JarsError(f"no {group} jars under {settings.jars_dir / group}: run `make jars`")
    return os.pathsep.join(str(j) for j in jars)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Resolve Kafka, Hadoop and the Spark Kafka connector from Maven Central into "
        "<BTC_CACHE_DIR>/jars/<group>/ (a no-op when already resolved for the current infra/pom.xml)."
    )
    parser.add_argument("--group", action="append", choices=GROUPS,
                        help="resolve only this group (repeatable; default: all of %(choices)s)")  # fmt: skip
    parser.add_argument("--force", action="store_true", help="re-resolve and re-copy even if the stamp is current")
    parser.add_argument("--offline", action="store_true",
                        help="never touch the network (fail if the local Maven repository lacks something)")  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip

    started = time.monotonic()
    try:
        settings = get_settings()
        result = ensure_jars(settings, args.group or GROUPS, force=args.force, offline=args.offline)
    except (JarsError, SettingsError) as exc:
        log.error("%s", exc)
        return 1
    for group, jars in result.items():
        log.info("%-7s %3d jars %6.1f MiB", group, len(jars), sum(j.stat().st_size for j in jars) / 2**20)
    log.info("jars ready in %.1f s", time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
