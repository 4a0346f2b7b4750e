"""HDFS (NameNode + DataNode on 127.0.0.1) from the jars btc_platform.ops.jars resolved: config,
name-dir format (once), start until out of safe mode with a live DataNode.

``requests`` and ``btc_platform.lakehouse.namenode`` (which needs it) are imported inside the
functions that call the NameNode: DAG files reach this module at parse time (through the supervisor's trigger).
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path
from xml.sax.saxutils import escape

from btc_platform.ops import process
from btc_platform.ops.process import ProcessError
from btc_platform.ops.services import base
from btc_platform.ops.services.base import ServiceError
from btc_platform.settings import Settings

log = logging.getLogger(__name__)


def hdfs_dir(settings: Settings) -> Path:
    return settings.data_dir / "hdfs"


def _xml(props: dict[str, str]) -> str:
    body = "".join(
        f"  <property><name>{escape(k)}</name><value>{escape(v)}</value></property>\n" for k, v in props.items()
    )
    return f'<?xml version="1.0"?>\n<configuration>\n{body}</configuration>\n'


def _write_hdfs_config(settings: Settings) -> Path:
    root = hdfs_dir(settings)
    conf = root / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "core-site.xml").write_text(
        _xml({"fs.defaultFS": settings.hdfs_uri, "hadoop.tmp.dir": str(root / "tmp")})
    )
    (conf / "hdfs-site.xml").write_text(
        _xml(
            {
                "dfs.replication": "1",
                "dfs.permissions.enabled": "false",
                "dfs.webhdfs.enabled": "true",
                "dfs.namenode.name.dir": f"file://{root / 'name'}",
                "dfs.datanode.data.dir": f"file://{root / 'data'}",
                "dfs.namenode.rpc-address": f"127.0.0.1:{settings.hdfs_namenode_port}",
                "dfs.namenode.rpc-bind-host": "127.0.0.1",
                "dfs.namenode.http-address": f"127.0.0.1:{settings.hdfs_namenode_http_port}",
                "dfs.namenode.http-bind-host": "127.0.0.1",
                "dfs.namenode.secondary.http-address": "127.0.0.1:0",
                "dfs.datanode.address": f"127.0.0.1:{settings.hdfs_datanode_port}",
                "dfs.datanode.http.address": f"127.0.0.1:{settings.hdfs_datanode_http_port}",
                "dfs.datanode.ipc.address": f"127.0.0.1:{settings.hdfs_datanode_ipc_port}",
                "dfs.datanode.hostname": "127.0.0.1",
                "dfs.namenode.datanode.registration.ip-hostname-check": "false",
                "dfs.namenode.safemode.extension": "0",
                "dfs.namenode.handler.count": "5",
                "dfs.datanode.handler.count": "3",
                "dfs.heartbeat.interval": "1",
                "dfs.namenode.heartbeat.recheck-interval": "15000",
            }
        )
    )
    (conf / "log4j.properties").write_text(
        "log4j.rootLogger=INFO,console\n"
        "log4j.appender.console=org.apache.log4j.ConsoleAppender\n"
        "log4j.appender.console.target=System.out\n"
        "log4j.appender.console.layout=org.apache.log4j.PatternLayout\n"
        "log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n\n"
        "log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR\n"
        "log4j.logger.org.apache.hadoop.hdfs.StateChange=WARN\n"
        "log4j.logger.BlockStateChange=WARN\n"
    )
    return conf


def _hdfs_java_cmd(settings: Settings, conf: Path, main_class: str) -> list[str]:
    return [
        base.java(),
        "-Xms64m",
        f"-Xmx{settings.hdfs_heap}",
        "-XX:+UseG1GC",
        "-Djava.net.preferIPv4Stack=true",
        f"-Dhadoop.log.dir={settings.logs_dir}",
        f"-Dlog4j.configuration=file:{conf / 'log4j.properties'}",
        "--add-opens=java.base/java.lang=ALL-UNNAMED",
        "--add-opens=java.base/java.util=ALL-UNNAMED",
        "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
        "--add-opens=java.base/java.nio=ALL-UNNAMED",
        "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
        "-cp",
        f"{conf}{os.pathsep}{base.classpath(settings, 'hadoop')}",
        main_class,
    ]


def _hdfs_env() -> dict[str, str]:
    env = base.base_env()
    for key in ("HADOOP_CONF_DIR", "HADOOP_HOME", "HADOOP_OPTS"):
        env.pop(key, None)
    return env


def _format_hdfs(settings: Settings, conf: Path) -> None:
    name_dir = hdfs_dir(settings) / "name"
    if (name_dir / "current" / "VERSION").is_file():
        return
    log.info("formatting HDFS name dir %s", name_dir)
    cmd = _hdfs_java_cmd(settings, conf, "org.apache.hadoop.hdfs.server.namenode.NameNode")
    cmd += ["-format", "-nonInteractive", "-force", "-clusterid", "btc-platform"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=_hdfs_env(), check=False)
    if proc.returncode != 0 or not (name_dir / "current" / "VERSION").is_file():
        raise ServiceError(f"formatting HDFS failed:\n{(proc.stdout + proc.stderr).strip()[-2000:]}")


def hdfs_health(settings: Settings) -> str | None:
    """None if the NameNode is out of safe mode with a live DataNode, else the reason."""
    import requests

    from btc_platform.lakehouse.namenode import HdfsNotReadyError, namenode_http_url, namenode_state

    try:
        state = namenode_state(namenode_http_url(settings))
    except (requests.RequestException, ValueError, HdfsNotReadyError) as exc:
        return f"NameNode not answering: {exc.__class__.__name__}"
    if state.safemode:
        return f"in safe mode: {state.safemode}"
    if state.live_datanodes == 0:
        return "no live datanode"
    return None


def start_hdfs(settings: Settings) -> None:
    from btc_platform.lakehouse.namenode import HdfsNotReadyError, wait_for_hdfs_ready

    if base.running_pid(settings, "hdfs-namenode") and base.running_pid(settings, "hdfs-datanode"):
        if hdfs_health(settings) is None:
            log.info("hdfs already running at %s", settings.hdfs_uri)
            return
    started = time.monotonic()
    for name in reversed(base.processes(settings, "hdfs")):
        base.terminate(settings, name)
    for port, what, setting in (
        (settings.hdfs_namenode_port, "NameNode RPC", "BTC_HDFS_NAMENODE_PORT"),
        (settings.hdfs_namenode_http_port, "NameNode HTTP", "BTC_HDFS_NAMENODE_HTTP_PORT"),
        (settings.hdfs_datanode_port, "DataNode", "BTC_HDFS_DATANODE_PORT"),
        (settings.hdfs_datanode_http_port, "DataNode HTTP", "BTC_HDFS_DATANODE_HTTP_PORT"),
        (settings.hdfs_datanode_ipc_port, "DataNode IPC", "BTC_HDFS_DATANODE_IPC_PORT"),
    ):
        base.check_port_free(port, what, setting)
    conf = _write_hdfs_config(settings)
    _format_hdfs(settings, conf)
    env = _hdfs_env()
    namenode_cmd = _hdfs_java_cmd(settings, conf, "org.apache.hadoop.hdfs.server.namenode.NameNode")
    namenode = base.spawn(settings, "hdfs-namenode", namenode_cmd, env, hdfs_dir(settings))
    process.wait_until_healthy(
        namenode,
        lambda: None if base.port_open(settings.hdfs_namenode_http_port) else "HTTP port closed",
        settings.hdfs_safemode_timeout_s,
        "NameNode HTTP",
    )
    datanode_cmd = _hdfs_java_cmd(settings, conf, "org.apache.hadoop.hdfs.server.datanode.DataNode")
    datanode = base.spawn(settings, "hdfs-datanode", datanode_cmd, env, hdfs_dir(settings))
    log.info("waiting (up to %.0f s) for HDFS to leave safe mode with a live datanode", settings.hdfs_safemode_timeout_s)

    def check() -> str | None:
        if not process.is_alive(datanode):
            raise ServiceError(
                f"hdfs-datanode exited; last log lines:\n{process.log_tail(Path(datanode.log)) or '(no log)'}"
            )
        return hdfs_health(settings)

    try:
        process.wait_until_healthy(namenode, check, settings.hdfs_safemode_timeout_s, "safe mode off + live datanode")
        wait_for_hdfs_ready(settings, timeout=5)
    except (ProcessError, HdfsNotReadyError) as exc:
        raise ServiceError(f"HDFS did not become ready: {exc}") from exc
    log.info("hdfs ready at %s (web UI http://127.0.0.1:%d) in %.1f s", settings.hdfs_uri,
             settings.hdfs_namenode_http_port, time.monotonic() - started)  # fmt: skip

