"""SparkSession construction shared by every Spark job, the models and the tests.

The session gets the Kafka connector jars that infra/ resolved with Maven (``spark.jars``),
UTC as its time zone, few shuffle partitions (2-core machines) and the master from settings.
pyspark is imported inside the function so that importing this module stays cheap.
"""

from __future__ import annotations

import logging

from btc_platform.settings import Settings, get_settings

log = logging.getLogger(__name__)


def build_session(
    app_name: str,
    settings: Settings | None = None,
    *,
    master: str | None = None,
    extra_conf: dict[str, str] | None = None,
    with_kafka: bool = True,
):
    """Create (or return the active) SparkSession configured for this platform."""
    from pyspark.sql import SparkSession

    s = settings or get_settings()
    builder = (
        SparkSession.builder.appName(app_name)
        .master(master or s.spark_master)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(s.spark_shuffle_partitions))
        .config("spark.driver.memory", s.spark_driver_memory)
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
    )
    if with_kafka:
        jars = s.spark_jars()
        if not jars:
            log.warning(
                "no Spark connector jars under %s: the Kafka source will be unavailable "
                "(run `make jars`)",
                s.jars_dir / "spark",
            )
        else:
            builder = builder.config("spark.jars", ",".join(jars))
    for key, value in (extra_conf or {}).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    log.info("spark session %s on %s (version %s)", app_name, session.sparkContext.master, session.version)
    return session
