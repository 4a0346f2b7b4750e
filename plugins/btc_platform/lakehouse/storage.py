"""A tiny filesystem abstraction over the storage root (``file://`` locally, ``hdfs://`` on a cluster).

``open_storage(uri, settings)`` returns a :class:`Storage` for the URI's scheme. Every method takes
full URIs of the same scheme (``file:///abs/path`` or ``hdfs://host:port/abs/path``):

* ``read_bytes`` / ``write_bytes`` (atomic: written to a temporary name in the same directory,
  then ``os.replace`` for file:// and WebHDFS ``RENAME`` for hdfs://),
* ``exists``, ``listdir`` (names), ``makedirs``, ``delete`` (recursive), ``rename``.

``read_parquet_dataset(uri)`` reads a directory of Parquet files (as Spark writes them) into a
pandas DataFrame, restoring hive partitions ``key=value`` as columns (``date`` stays a string,
``hour`` becomes an int); ``write_parquet(df, uri)`` writes one Parquet file atomically.

hdfs:// goes through the WebHDFS REST API with ``requests`` (always with timeouts): the NameNode
HTTP address is ``settings.webhdfs_url`` or, if empty, ``http://<host of the URI>:<settings.
hdfs_namenode_http_port>``. No Hadoop client libraries are needed.

pandas and pyarrow are imported by the Parquet helpers only: :mod:`lake`'s layout check lists
directories through this module without them.
"""

from __future__ import annotations

import getpass
import io
import logging
import os
import posixpath
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlparse

import requests

from btc_platform.settings import Settings, get_settings

log = logging.getLogger(__name__)

#: Partition columns whose type is fixed whatever the values look like.
_PARTITION_TYPES = {"date": str, "hour": int}


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI and the reason."""


class DatasetNotFoundError(StorageError):
    """The dataset directory does not exist (nothing written there yet)."""


def _split(uri: str) -> tuple[str, str, str]:
    parsed = urlparse(uri)
    if parsed.scheme not in ("file", "hdfs"):
        raise StorageError(f"unsupported storage URI {uri!r}: expected file:// or hdfs://")
    path = parsed.path or "/"
    if not path.startswith("/"):
        raise StorageError(f"storage URI {uri!r} needs an absolute path")
    return parsed.scheme, parsed.netloc, path


class Storage:
    """Interface; see the module docstring."""

    scheme = ""

    def read_bytes(self, uri: str) -> bytes:
        raise NotImplementedError

    def write_bytes(self, uri: str, data: bytes) -> None:
        raise NotImplementedError

    def exists(self, uri: str) -> bool:
        raise NotImplementedError

    def isdir(self, uri: str) -> bool:
        raise NotImplementedError

    def listdir(self, uri: str) -> list[str]:
        raise NotImplementedError

    def makedirs(self, uri: str) -> None:
        raise NotImplementedError

    def delete(self, uri: str) -> None:
        raise NotImplementedError

    def rename(self, src: str, dst: str) -> None:
        raise NotImplementedError

    # ---- helpers built on the primitives ---------------------------------------------
    def read_text(self, uri: str) -> str:
        return self.read_bytes(uri).decode("utf-8")

    def write_text(self, uri: str, text: str) -> None:
        self.write_bytes(uri, text.encode("utf-8"))

    def walk_files(self, uri: str) -> Iterator[str]:
        """URIs of all files under ``uri`` (recursive, sorted), skipping hidden/marker files."""
        for name in sorted(self.listdir(uri)):
            if name.startswith((".", "_")):
                continue
            child = join(uri, name)
            if self.isdir(child):
                yield from self.walk_files(child)
            else:
                yield child


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI (``join("file:///a", "b", "c") == "file:///a/b/c"``)."""
    return "/".join([uri.rstrip("/"), *[p.strip("/") for p in parts if p]])


class LocalStorage(Storage):
    scheme = "file"

    @staticmethod
    def _path(uri: str) -> Path:
        scheme, netloc, path = _split(uri)
        if scheme != "file":
            raise StorageError(f"{uri!r} is not a file:// URI")
        if netloc not in ("", "localhost"):
            raise StorageError(f"file:// URI with a host is not supported: {uri!r}")
        return Path(path)

    def read_bytes(self, uri: str) -> bytes:
        path = self._path(uri)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise StorageError(f"{uri} does not exist") from exc

    def write_bytes(self, uri: str, data: bytes) -> None:
        path = self._path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    def exists(self, uri: str) -> bool:
        return self._path(uri).exists()

    def isdir(self, uri: str) -> bool:
        return self._path(uri).is_dir()

    def listdir(self, uri: str) -> list[str]:
        path = self._path(uri)
        if not path.is_dir():
            raise StorageError(f"{uri} is not a directory")
        return sorted(p.name for p in path.iterdir())

    def makedirs(self, uri: str) -> None:
        self._path(uri).mkdir(parents=True, exist_ok=True)

    def delete(self, uri: str) -> None:
        path = self._path(uri)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()

    def rename(self, src: str, dst: str) -> None:
        dst_path = self._path(dst)
        dst_path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._path(src), dst_path)


class WebHdfsStorage(Storage):
    """hdfs:// through WebHDFS (``/webhdfs/v1``), requests with connect/read timeouts."""

    scheme = "hdfs"

    def __init__(self, base_url: str, user: str, timeout: tuple[float, float]):
        self.base_url = base_url.rstrip("/")
        self.user = user
        self.timeout = timeout
        self.session = requests.Session()

    @staticmethod
    def _path(uri: str) -> str:
        scheme, _netloc, path = _split(uri)
        if scheme != "hdfs":
            raise StorageError(f"{uri!r} is not an hdfs:// URI")
        return posixpath.normpath(path)

    def _url(self, path: str) -> str:
        return f"{self.base_url}/webhdfs/v1{quote(path)}"

    def _call(self, method: str, uri: str, op: str, *, ok=(200,), allow_redirects=True, data=None, **params):
        path = self._path(uri)
        query = {"op": op, "user.name": self.user, **params}
        try:
            resp = self.session.request(
                method,
                self._url(path),
                params=query,
                data=data,
                timeout=self.timeout,
                allow_redirects=allow_redirects,
            )
        except requests.RequestException as exc:
            raise StorageError(f"WebHDFS {op} {uri} failed: {exc}") from exc
        if resp.status_code not in ok:
            raise StorageError(f"WebHDFS {op} {uri} failed: HTTP {resp.status_code} {resp.text[:300]}")
        return resp

    def _status(self, uri: str) -> dict | None:
        resp = self._call("GET", uri, "GETFILESTATUS", ok=(200, 404))
        if resp.status_code == 404:
            return None
        return resp.json()["FileStatus"]

    def read_bytes(self, uri: str) -> bytes:
        resp = self._call("GET", uri, "OPEN", ok=(200, 404))
        if resp.status_code == 404:
            raise StorageError(f"{uri} does not exist")
        return resp.content

    def _create(self, uri: str, data: bytes) -> None:
        # Two steps as the WebHDFS spec says: the NameNode answers 307 with the DataNode location.
        first = self._call("PUT", uri, "CREATE", ok=(307, 201), allow_redirects=False, overwrite="true")
        if first.status_code == 201:  # some gateways accept the data directly
            return
        location = first.headers.get("Location")
        if not location:
            raise StorageError(f"WebHDFS CREATE {uri}: no redirect location in the NameNode answer")
        try:
            resp = self.session.put(location, data=data, timeout=self.timeout)
        except requests.RequestException as exc:
            raise StorageError(f"WebHDFS CREATE {uri} (datanode {location}) failed: {exc}") from exc
        if resp.status_code != 201:
            raise StorageError(f"WebHDFS CREATE {uri} failed: HTTP {resp.status_code} {resp.text[:300]}")

    def write_bytes(self, uri: str, data: bytes) -> None:
        parent, name = posixpath.split(self._path(uri))
        scheme, netloc, _ = _split(uri)
        tmp = f"{scheme}://{netloc}{parent}/.{name}.{uuid.uuid4().hex}.tmp"
        self.makedirs(f"{scheme}://{netloc}{parent}")
        self._create(tmp, data)
        try:
            self.rename(tmp, uri)
        except StorageError:
            self.delete(tmp)
            raise

    def exists(self, uri: str) -> bool:
        return self._status(uri) is not None

    def isdir(self, uri: str) -> bool:
        status = self._status(uri)
        return status is not None and status["type"] == "DIRECTORY"

    def _list(self, uri: str) -> list[tuple[str, bool]]:
        resp = self._call("GET", uri, "LISTSTATUS", ok=(200, 404))
        if resp.status_code == 404:
            raise StorageError(f"{uri} is not a directory")
        entries = resp.json()["FileStatuses"]["FileStatus"]
        return sorted((e["pathSuffix"], e["type"] == "DIRECTORY") for e in entries)

    def listdir(self, uri: str) -> list[str]:
        return [name for name, _ in self._list(uri)]

    def walk_files(self, uri: str) -> Iterator[str]:
        # one LISTSTATUS per directory (its entries carry their type)
        for name, is_dir in self._list(uri):
            if name.startswith((".", "_")):
                continue
            child = join(uri, name)
            if is_dir:
                yield from self.walk_files(child)
            else:
                yield child

    def makedirs(self, uri: str) -> None:
        resp = self._call("PUT", uri, "MKDIRS")
        if not resp.json().get("boolean"):
            raise StorageError(f"WebHDFS MKDIRS {uri} returned false")

    def delete(self, uri: str) -> None:
        self._call("DELETE", uri, "DELETE", recursive="true")

    def rename(self, src: str, dst: str) -> None:
        dst_path = self._path(dst)
        # HDFS RENAME refuses to replace an existing file: remove it first (the window in which
        # neither exists is as short as two NameNode calls).
        if self.exists(dst) and not self.isdir(dst):
            self.delete(dst)
        resp = self._call("PUT", src, "RENAME", destination=dst_path)
        if not resp.json().get("boolean"):
            raise StorageError(f"WebHDFS RENAME {src} -> {dst} returned false")


def webhdfs_base_url(uri: str, settings: Settings) -> str:
    if settings.webhdfs_url:
        return settings.webhdfs_url.rstrip("/")
    host = urlparse(uri).hostname
    if not host:
        raise StorageError(f"hdfs URI {uri!r} has no host; set BTC_WEBHDFS_URL")
    return f"http://{host}:{settings.hdfs_namenode_http_port}"


def open_storage(uri: str, settings: Settings | None = None) -> Storage:
    """The :class:`Storage` for the scheme of ``uri`` (file:// or hdfs://)."""
    scheme, _, _ = _split(uri)
    if scheme == "file":
        return LocalStorage()
    s = settings or get_settings()
    user = s.webhdfs_user or os.environ.get("HADOOP_USER_NAME") or getpass.getuser()
    return WebHdfsStorage(
        webhdfs_base_url(uri, s), user, (s.http_connect_timeout_s, s.http_read_timeout_s)
    )


def _partition_values(relative: str) -> dict[str, object]:
    values: dict[str, object] = {}
    for part in relative.split("/")[:-1]:
        key, sep, value = part.partition("=")
        if not sep:
            continue
        caster = _PARTITION_TYPES.get(key)
        values[key] = caster(value) if caster else value
    return values


def read_parquet_dataset(uri: str, settings: Settings | None = None, storage: Storage | None = None):
    """Read every Parquet file under ``uri`` into one pandas DataFrame (empty if none).

    Hive partition directories (``date=2024-01-01/hour=5``) become columns ``date`` (string) and
    ``hour`` (int); other ``key=value`` directories become string columns. Files starting with
    ``.`` or ``_`` (Spark's ``_SUCCESS``, ``.crc``, our temp files) are ignored.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    store = storage or open_storage(uri, settings)
    if not store.exists(uri):
        raise DatasetNotFoundError(f"dataset {uri} does not exist")
    base = uri.rstrip("/")
    tables = []
    for file_uri in store.walk_files(base):
        if not file_uri.endswith(".parquet"):
            continue
        if isinstance(store, LocalStorage):
            table = pq.read_table(str(store._path(file_uri)), partitioning=None)
        else:
            table = pq.read_table(io.BytesIO(store.read_bytes(file_uri)), partitioning=None)
        for key, value in _partition_values(file_uri[len(base) + 1 :]).items():
            if key in table.column_names:
                continue
            kind = pa.int64() if isinstance(value, int) else pa.string()
            table = table.append_column(key, pa.array([value] * table.num_rows, type=kind))
        tables.append(table)
    if not tables:
        log.warning("no parquet files under %s", uri)
        return pd.DataFrame()
    return pa.concat_tables(tables, promote_options="permissive").to_pandas()


def write_parquet(df, uri: str, settings: Settings | None = None, storage: Storage | None = None) -> None:
    """Write ``df`` as one Parquet file at ``uri`` (atomically replaced if it exists)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    store = storage or open_storage(uri, settings)
    buf = io.BytesIO()
    # microsecond timestamps: what Spark reads (pandas may hold nanoseconds)
    pq.write_table(
        pa.Table.from_pandas(df, preserve_index=False), buf, coerce_timestamps="us", allow_truncated_timestamps=True
    )
    store.write_bytes(uri, buf.getvalue())
