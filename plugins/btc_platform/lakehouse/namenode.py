"""Readiness of an HDFS cluster, seen from its NameNode's HTTP endpoint.

``wait_for_hdfs_ready`` blocks (bounded) until the NameNode has left safe mode and at least one
DataNode is live; the local services (btc_platform.ops.services) and the streaming job call it before
they write to ``hdfs://``. It only uses the NameNode JMX servlet
(``/jmx?qry=Hadoop:service=NameNode,name=NameNodeInfo``), so no Hadoop client is needed.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import requests

from btc_platform.settings import Settings

log = logging.getLogger(__name__)

_NAMENODE_INFO = "/jmx?qry=Hadoop:service=NameNode,name=NameNodeInfo"
_HTTP_TIMEOUT = (2.0, 10.0)


class HdfsNotReadyError(RuntimeError):
    """The NameNode did not leave safe mode or no DataNode registered in time."""


@dataclass(frozen=True)
class NameNodeState:
    safemode: str  # empty string when safe mode is off, else the NameNode's explanation
    live_datanodes: int

    @property
    def ready(self) -> bool:
        return not self.safemode and self.live_datanodes > 0


def namenode_http_url(settings: Settings) -> str:
    """HTTP URL of the local NameNode started by btc_platform.ops.services."""
    return f"http://127.0.0.1:{settings.hdfs_namenode_http_port}"


def namenode_state(http_url: str) -> NameNodeState:
    """Ask the NameNode for its safe-mode status and live DataNodes (raises on HTTP errors)."""
    response = requests.get(http_url.rstrip("/") + _NAMENODE_INFO, timeout=_HTTP_TIMEOUT)
    response.raise_for_status()
    beans = response.json().get("beans") or []
    if not beans:
        raise HdfsNotReadyError(f"NameNode at {http_url} returned no NameNodeInfo bean yet")
    bean = beans[0]
    live = bean.get("LiveNodes") or "{}"
    live_nodes = json.loads(live) if isinstance(live, str) else live
    return NameNodeState(safemode=str(bean.get("Safemode") or ""), live_datanodes=len(live_nodes))


def wait_for_hdfs_ready(target: Settings | str, timeout: float | None = None, poll_s: float = 0.5) -> NameNodeState:
    """Wait until the NameNode is out of safe mode with a live DataNode.

    ``target`` is a Settings object (local NameNode, timeout defaults to
    ``settings.hdfs_safemode_timeout_s``) or the NameNode HTTP URL (``http://host:9870``).
    Raises ``HdfsNotReadyError`` naming the last state seen when ``timeout`` expires.
    """
    if isinstance(target, Settings):
        url = namenode_http_url(target)
        timeout = target.hdfs_safemode_timeout_s if timeout is None else timeout
    else:
        url = target
        timeout = 120.0 if timeout is None else timeout
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    logged = ""
    while True:
        try:
            state = namenode_state(url)
        except (requests.RequestException, ValueError, HdfsNotReadyError) as exc:
            last = f"NameNode not answering: {exc}"
        else:
            if state.ready:
                log.info("HDFS at %s ready: safe mode off, %d live datanode(s)", url, state.live_datanodes)
                return state
            last = (
                f"safe mode: {state.safemode!r}; live datanodes: {state.live_datanodes}"
                if state.safemode
                else f"safe mode off but live datanodes: {state.live_datanodes}"
            )
        if last != logged:
            log.info("waiting for HDFS at %s: %s", url, last)
            logged = last
        if time.monotonic() >= deadline:
            raise HdfsNotReadyError(
                f"HDFS at {url} not ready after {timeout:.0f} s ({last}); check the NameNode/DataNode "
                "logs, or raise BTC_HDFS_SAFEMODE_TIMEOUT_S"
            )
        time.sleep(poll_s)
