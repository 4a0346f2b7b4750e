# Project image of the BTC market-data platform: Python 3.11 + Java 17 + the pinned requirements
# + the repository code. One image runs Airflow (api-server, scheduler, dag-processor,
# triggerer), the Spark standalone master/worker (pyspark's spark-class) and, through the
# supervisor DAG, the producer and the streaming job. It also carries the Kafka and Hadoop jars
# the local profile uses and Debian's PostgreSQL server, so that where the official images
# cannot be pulled, docker-compose.local.yml runs the brokers, HDFS and the metadata DB from it
# (btc_platform.ops.compose.entry). See docker-compose.yml and docs/compose.md.
#
#   docker build -t btc-platform:latest .
#   docker build --build-arg BASE_IMAGE=btc-base:bookworm -t btc-platform:latest .   (no registry)
#
# Behind a TLS-intercepting proxy: put its CA certificate(s) (*.crt, PEM) into
# infra/compose/ca-certificates/ before building (`make compose-up` copies the host's
# /usr/local/share/ca-certificates/*.crt there, or those of COMPOSE_CA_CERTS=dir); apt, pip, npm
# and Maven inside the build then trust them.
#
# PREBUILT_URL (`make compose-up` with BTC_COMPOSE_BUILD=prebuilt, the default): an HTTP folder on the
# host's 127.0.0.1 (the build runs with --network host) that serves what the host already has:
# venv.tar (the packages of the host's .venv as installed), jars.tar and js.tar (its `make jars js`).
# Each piece the folder lacks comes from the registries as without PREBUILT_URL (pip's index,
# Maven Central, npm). One image, no multi-stage build: the legacy builder would run every stage
# one after another, Maven's and npm's included, even when their output is not needed.

# the stock image; `make compose-up` builds a Debian bookworm base with debootstrap when it
# cannot be pulled and passes it here
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
ARG BTC_UID=50000
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    JAVA_HOME=/usr/lib/jvm/default-java \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
    DEBIAN_FRONTEND=noninteractive \
    PATH=/opt/venv/bin:/usr/lib/postgresql/15/bin:$PATH
COPY infra/compose/ca-certificates/ /usr/local/share/ca-certificates/btc-build/
# the state directories of the services docker-compose.local.yml runs from this image, owned by
# the image's user so that new named volumes mounted there are writable by it
RUN update-ca-certificates \
    && apt-get update \
    && apt-get install -y --no-install-recommends default-jre-headless procps curl tini \
       postgresql-15 postgresql-client-15 \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && useradd --create-home --uid "${BTC_UID}" --gid 0 btc \
    && mkdir -p /opt/btc/.data /opt/btc/.cache /opt/airflow/logs /var/lib/kafka/data \
       /var/lib/postgresql/data /data/hdfs/name /data/hdfs/data /var/run/postgresql \
    && chown -R btc:0 /opt/btc /opt/airflow /var/lib/kafka /var/lib/postgresql /data/hdfs /var/run/postgresql
WORKDIR /opt/btc
ARG PREBUILT_URL=

# ---- Python packages: the host's venv as it is installed, else pip's index ----------------------
# venv.tar: the host venv's site-packages with their bytecode and its scripts (btc_platform.ops.
# compose.prebuilt.venv_tar), the same minor Python on the same platform: nothing to resolve,
# unpack or compile here
COPY requirements.txt constraints.txt ./
RUN if [ -n "$PREBUILT_URL" ] && curl -fsS "$PREBUILT_URL/venv.tar" | tar -x -C /opt/venv \
       && python -c "import pyspark, pandas, pyarrow"; \
    then echo "Python packages from $PREBUILT_URL/venv.tar"; \
    else pip install -r requirements.txt -c constraints.txt; fi

# ---- jars: Spark's Kafka connector, Kafka and Hadoop (infra/pom.xml): the host's, else Maven ----
# only what the resolver reads (the pom, the settings and the resolver itself), so that a change
# of the platform's code does not resolve the jars again
COPY infra/pom.xml infra/pom.xml
COPY plugins/btc_platform/__init__.py plugins/btc_platform/topology.py plugins/btc_platform/
COPY plugins/btc_platform/settings/ plugins/btc_platform/settings/
COPY plugins/btc_platform/ops/__init__.py plugins/btc_platform/ops/jars.py plugins/btc_platform/ops/
RUN if [ -n "$PREBUILT_URL" ] && curl -fsS "$PREBUILT_URL/jars.tar" -o /tmp/jars.tar; \
    then tar -xf /tmp/jars.tar -C .cache && rm /tmp/jars.tar && echo "jars from $PREBUILT_URL"; \
    else apt-get update && apt-get install -y --no-install-recommends maven \
       && (cd plugins && BTC_CACHE_DIR=/opt/btc/.cache python -m btc_platform.ops.jars --group spark --group kafka --group hadoop) \
       && apt-get purge -y --auto-remove maven && rm -rf /var/lib/apt/lists/* /opt/btc/.cache/m2 /root/.m2; fi \
    && chown -R btc:0 .cache

# ---- js: the dashboard's chart library (infra/js/package-lock.json): the host's, else npm ------
COPY infra/js/package.json infra/js/package-lock.json .cache/js/
RUN if [ -n "$PREBUILT_URL" ] && curl -fsS "$PREBUILT_URL/js.tar" -o /tmp/js.tar; \
    then tar -xf /tmp/js.tar -C .cache/js && rm /tmp/js.tar && echo "js from $PREBUILT_URL"; \
    else apt-get update && apt-get install -y --no-install-recommends npm \
       && (cd .cache/js && npm ci --omit=dev --ignore-scripts --no-audit --no-fund) \
       && apt-get purge -y --auto-remove npm && rm -rf /var/lib/apt/lists/* /root/.npm; fi \
    && chown -R btc:0 .cache/js

# ---- the repository ---------------------------------------------------------------------------
COPY --chown=btc:0 . /opt/btc
# the project as an editable install over the copied tree (console scripts btc-*, packages
# btc_platform, spark_jobs, models importable by every process; DAGs and jobs run from /opt/btc;
# its build backend, setuptools, comes from pip's index)
RUN pip install --no-deps -e /opt/btc
ENV BTC_CACHE_DIR=/opt/btc/.cache \
    BTC_DATA_DIR=/opt/btc/.data \
    AIRFLOW_HOME=/opt/airflow \
    PYSPARK_PYTHON=/opt/venv/bin/python \
    PYSPARK_DRIVER_PYTHON=/opt/venv/bin/python \
    SPARK_WORKER_DIR=/opt/btc/.data/spark-worker
USER btc
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["airflow", "version"]
