"""Entry points of the services that docker-compose.local.yml runs from the project image where
the official images (apache/kafka, apache/hadoop, postgres) cannot be pulled: the same jars the
local profile resolves (btc-jars groups kafka and hadoop) and Debian's PostgreSQL, configured
from the environment variables of docker-compose.yml in the official images' conventions.

    python -m btc_platform.ops.compose.entry kafka | kafka-health | kafka-topic
    python -m btc_platform.ops.compose.entry namenode | datanode | hdfs-init | hdfs-health [--datanode]
    python -m btc_platform.ops.compose.entry postgres
    python -m btc_platform.ops.compose.entry airflow-job-health TriggererJob | DagProcessorJob

* Kafka: every ``KAFKA_X_Y`` variable becomes ``x.y`` in server.properties (as apache/kafka
  does), ``CLUSTER_ID`` formats the log dir once, ``KAFKA_HEAP_OPTS`` sizes the JVM.
* Hadoop: every ``CORE-SITE.XML_p=v`` / ``HDFS-SITE.XML_p=v`` variable becomes property p of that
  file (as apache/hadoop does); ``ENSURE_NAMENODE_DIR`` formats an empty name dir once.
* PostgreSQL: ``POSTGRES_USER/PASSWORD/DB`` as the postgres image reads them; the cluster is
  initialised with scram-sha-256 password authentication (never trust) on first start.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)

CONF_ROOT = Path("/tmp/btc-conf")  # noqa: S108  (inside the container, rebuilt at each start)
HADOOP_FILES = ("CORE-SITE.XML", "HDFS-SITE.XML")
_NOT_KAFKA_PROPS = {"KAFKA_HEAP_OPTS", "KAFKA_OPTS", "KAFKA_LOG4J_OPTS"}
_LOG4J2 = (
    "status = warn\nappender.out.type = Console\nappender.out.name = STDOUT\n"
    "appender.out.layout.type = PatternLayout\nappender.out.layout.pattern = [%d{ISO8601}{UTC}] %p %m (%c)%n\n"
    "rootLogger.level = info\nrootLogger.appenderRef.out.ref = STDOUT\n"
    "logger.statechange.name = state.change.logger\nlogger.statechange.level = warn\n"
)
_LOG4J1 = (
    "log4j.rootLogger=INFO,console\nlog4j.appender.console=org.apache.log4j.ConsoleAppender\n"
    "log4j.appender.console.layout=org.apache.log4j.PatternLayout\n"
    "log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n\n"
    "log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR\nlog4j.logger.BlockStateChange=WARN\n"
)


# The health checks (kafka-health, hdfs-health) run every few seconds in each container, next to a
# JVM starting: they import neither the settings nor the services package (seconds on a busy machine).
def _classpath(group: str) -> str:
    from btc_platform.settings import get_settings

    return f"{get_settings().jars_dir / group}/*"


def kafka_properties(environ: dict[str, str]) -> dict[str, str]:
    """server.properties from ``KAFKA_*`` variables: KAFKA_NODE_ID -> node.id, as apache/kafka."""
    return {
        key.removeprefix("KAFKA_").lower().replace("__", "-").replace("_", "."): value
        for key, value in sorted(environ.items())
        if key.startswith("KAFKA_") and key not in _NOT_KAFKA_PROPS
    }


def hadoop_properties(environ: dict[str, str]) -> dict[str, dict[str, str]]:
    """{file: {property: value}} from ``<FILE>_<property>`` variables, as apache/hadoop."""
    files: dict[str, dict[str, str]] = {name: {} for name in HADOOP_FILES}
    for key, value in environ.items():
        for name in HADOOP_FILES:
            if key.startswith(f"{name}_"):
                files[name][key.removeprefix(f"{name}_")] = value
    return files


def _java(heap_opts: str, log_opt: str, classpath: str, main: str, *args: str) -> list[str]:
    return ["java", *heap_opts.split(), "-XX:+UseG1GC", "-Djava.net.preferIPv4Stack=true", log_opt,
            "-cp", classpath, main, *args]  # fmt: skip


def run_kafka() -> None:
    conf = CONF_ROOT / "kafka"
    conf.mkdir(parents=True, exist_ok=True)
    props = kafka_properties(dict(os.environ))
    server = conf / "server.properties"
    server.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    (conf / "log4j2.properties").write_text(_LOG4J2)
    log_opt = f"-Dlog4j2.configurationFile={conf / 'log4j2.properties'}"
    data = Path(props["log.dirs"])
    if not (data / "meta.properties").is_file():
        subprocess.run(_java("-Xmx256m", log_opt, _classpath("kafka"), "kafka.tools.StorageTool", "format",
                             "--config", str(server), "--cluster-id", os.environ["CLUSTER_ID"],
                             "--ignore-formatted"), check=True)  # fmt: skip
    heap = os.environ.get("KAFKA_HEAP_OPTS", "-Xmx256m")
    os.execvp("java", _java(heap, log_opt, _classpath("kafka"), "kafka.Kafka", str(server)))


def kafka_health() -> int:
    """0 when this broker answers a metadata request and is registered in the cluster."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    node_id = int(os.environ["KAFKA_NODE_ID"])
    try:
        meta = AdminClient({"bootstrap.servers": "localhost:9092", "log_level": 0}).list_topics(timeout=8)
    except KafkaException as exc:
        log.error("metadata request failed: %s", exc)
        return 1
    if node_id not in meta.brokers:
        log.error("broker %d not registered (brokers %s)", node_id, sorted(meta.brokers))
        return 1
    return 0


def kafka_topic() -> int:
    """Create the topic (idempotent) with the replication and min.insync.replicas of the settings."""
    from btc_platform.ops.services.kafka import ensure_topic
    from btc_platform.settings import get_settings

    settings = get_settings()
    ensure_topic(settings, timeout=60.0, bootstrap=settings.kafka_bootstrap_servers)
    return 0


def _hadoop_conf() -> Path:
    from btc_platform.ops.services.hdfs import _xml

    conf = CONF_ROOT / "hadoop"
    conf.mkdir(parents=True, exist_ok=True)
    for name, props in hadoop_properties(dict(os.environ)).items():
        (conf / name.lower()).write_text(_xml(props))
    (conf / "log4j.properties").write_text(_LOG4J1)
    return conf


def _hdfs_java(conf: Path, main: str, *args: str) -> list[str]:
    opens = [f"--add-opens=java.base/{p}=ALL-UNNAMED" for p in
             ("java.lang", "java.util", "java.util.concurrent", "java.nio", "sun.nio.ch")]  # fmt: skip
    heap = os.environ.get("HADOOP_HEAPSIZE_MAX", "384m")
    return ["java", "-Xms64m", f"-Xmx{heap}", *opens, *_java("", f"-Dlog4j.configuration=file:{conf}/log4j.properties",
            f"{conf}:{_classpath('hadoop')}", main, *args)[1:]]  # fmt: skip


def run_namenode() -> None:
    conf = _hadoop_conf()
    name_dir = Path(os.environ.get("ENSURE_NAMENODE_DIR", "/data/hdfs/name"))
    if not (name_dir / "current" / "VERSION").is_file():
        subprocess.run(_hdfs_java(conf, "org.apache.hadoop.hdfs.server.namenode.NameNode", "-format",
                                  "-nonInteractive", "-clusterid", "btc-platform"), check=True)  # fmt: skip
    os.execvp("java", _hdfs_java(conf, "org.apache.hadoop.hdfs.server.namenode.NameNode"))


def run_datanode() -> None:
    conf = _hadoop_conf()
    os.execvp("java", _hdfs_java(conf, "org.apache.hadoop.hdfs.server.datanode.DataNode"))


def hdfs_init() -> int:
    """The storage root (``/bitcoin``) created and given to this user, as the NameNode's user
    (HDFS's superuser); permissions are on."""
    conf = _hadoop_conf()
    user = getpass.getuser()
    for args in (("-mkdir", "-p", "/bitcoin"), ("-chown", user, "/bitcoin")):
        subprocess.run(_hdfs_java(conf, "org.apache.hadoop.fs.FsShell", *args), check=True)
    return 0


def hdfs_health(datanode: bool) -> int:
    """0 when the NameNode is out of safe mode (and, with ``datanode``, has a live DataNode)."""
    url = "http://namenode:9870/jmx?qry=Hadoop:service=NameNode,name=NameNodeInfo"
    try:
        with urllib.request.urlopen(url, timeout=8) as response:  # noqa: S310  (fixed http URL)
            info = json.load(response)["beans"][0]
    except (OSError, ValueError, KeyError, IndexError) as exc:
        log.error("NameNode JMX not answering: %s", exc)
        return 1
    if info.get("Safemode"):
        log.error("NameNode in safe mode: %s", info["Safemode"])
        return 1
    if datanode and not json.loads(info.get("LiveNodes") or "{}"):
        log.error("no live DataNode")
        return 1
    return 0


def airflow_job_health(job_type: str, max_age_s: float) -> int:
    """0 when a running Airflow job of ``job_type`` on this host heartbeated within ``max_age_s``:
    what ``airflow jobs check --job-type X --hostname H`` answers, read from the metadata database
    without importing Airflow (its CLI costs seconds of CPU at every check)."""
    import socket

    import psycopg2

    dsn = re.sub(r"^postgresql\+\w+://", "postgresql://", os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    try:
        conn = psycopg2.connect(dsn, connect_timeout=5)
    except psycopg2.Error as exc:
        log.error("metadata database not answering: %s", exc)
        return 1
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM job WHERE job_type = %s AND state = 'running' AND hostname = %s"
                        " AND latest_heartbeat > now() - make_interval(secs => %s)",
                        (job_type, socket.getfqdn(), max_age_s))  # fmt: skip
            (alive,) = cur.fetchone()
    finally:
        conn.close()
    if not alive:
        log.error("no running %s on %s with a heartbeat in the last %.0f s", job_type, socket.getfqdn(), max_age_s)
        return 1
    return 0


def run_postgres() -> None:
    """Initialise once (into a side directory renamed when complete, so an interrupted first start
    is redone), then run. Network clients need the password; the container's own Unix socket
    (not reachable from elsewhere) trusts, as in the official image."""
    bin_dir = Path("/usr/lib/postgresql/15/bin")
    data = Path(os.environ.get("PGDATA", "/var/lib/postgresql/data/pgdata"))
    user, database = os.environ.get("POSTGRES_USER", "postgres"), os.environ.get("POSTGRES_DB", "postgres")
    if not (data / "PG_VERSION").is_file():
        password = os.environ.get("POSTGRES_PASSWORD")
        if not password:
            sys.exit("POSTGRES_PASSWORD is empty: the database is created with password authentication only")
        staging = data.with_name(data.name + ".init")
        subprocess.run(["rm", "-rf", str(staging), str(data)], check=True)
        staging.mkdir(parents=True, mode=0o700)
        with tempfile.NamedTemporaryFile("w", delete=False) as pwfile:
            pwfile.write(password + "\n")
        try:
            subprocess.run([str(bin_dir / "initdb"), "-D", str(staging), "-U", user, f"--pwfile={pwfile.name}",
                            "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--locale=C"],
                           check=True)  # fmt: skip
        finally:
            os.unlink(pwfile.name)
        with open(staging / "pg_hba.conf", "a") as hba:
            hba.write("host all all all scram-sha-256\n")
        server = subprocess.Popen([str(bin_dir / "postgres"), "-D", str(staging), "-c", "listen_addresses="])
        try:
            for _ in range(60):
                if subprocess.run(["pg_isready", "-q"], check=False).returncode == 0:
                    break
                time.sleep(0.5)
            subprocess.run(["psql", "-v", "ON_ERROR_STOP=1", "-U", user, "-d", "postgres", "-c",
                            f'CREATE DATABASE "{database}" OWNER "{user}"'], check=True)  # fmt: skip
        finally:
            server.terminate()
            server.wait(timeout=60)
        staging.rename(data)
    os.execvp(str(bin_dir / "postgres"), [str(bin_dir / "postgres"), "-D", str(data),
              "-c", "listen_addresses=*", "-c", "shared_buffers=32MB"])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m btc_platform.ops.compose.entry", description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["kafka", "kafka-health", "kafka-topic", "namenode", "datanode",
                                         "hdfs-init", "hdfs-health", "postgres", "airflow-job-health"])  # fmt: skip
    parser.add_argument("job_type", nargs="?", default="", help="airflow-job-health: TriggererJob, DagProcessorJob")
    parser.add_argument("--datanode", action="store_true", help="hdfs-health: also require a live DataNode")
    parser.add_argument("--max-age", type=float, default=60.0, help="airflow-job-health: heartbeat age limit, s")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    runners = {"kafka": run_kafka, "namenode": run_namenode, "datanode": run_datanode, "postgres": run_postgres}
    if args.what in runners:
        runners[args.what]()
        return 0
    if args.what == "kafka-health":
        return kafka_health()
    if args.what == "kafka-topic":
        return kafka_topic()
    if args.what == "hdfs-init":
        return hdfs_init()
    if args.what == "airflow-job-health":
        return airflow_job_health(args.job_type, args.max_age)
    return hdfs_health(args.datanode)


if __name__ == "__main__":
    sys.exit(main())
