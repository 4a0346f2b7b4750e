# Project image of the BTC market-data platform: Python 3.11 + Java 17 + the pinned requirements
# + the repository code. One image runs Airflow (api-server, scheduler, dag-processor,
# triggerer), the Spark standalone master/worker (pyspark's spark-class) and, through the
# supervisor DAG, the producer and the streaming job. See docker-compose.yml.
#
#   docker build -t btc-platform:latest .

# ---- base: OS packages + Python dependencies ----------------------------------------------
FROM python:3.11-slim-bookworm AS base
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    JAVA_HOME=/usr/lib/jvm/default-java
RUN apt-get update \
    && apt-get install -y --no-install-recommends default-jre-headless procps curl tini \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/btc
COPY requirements.txt constraints.txt ./
RUN pip install -r requirements.txt -c constraints.txt

# ---- jars: resolve the Spark Kafka connector (and Kafka/HDFS jars) from Maven Central -----
FROM base AS jars
RUN apt-get update \
    && apt-get install -y --no-install-recommends maven \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml requirements.txt ./
COPY infra/ infra/
COPY plugins/ plugins/
COPY spark_jobs/ spark_jobs/
COPY models/ models/
RUN pip install --no-deps -e . && BTC_CACHE_DIR=/opt/btc/.cache btc-jars --group spark

# ---- js: the dashboard's chart library from the npm registry (pinned by infra/js/package-lock.json)
FROM node:22-bookworm-slim AS js
WORKDIR /opt/btc/.cache/js
COPY infra/js/package.json infra/js/package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# ---- runtime -------------------------------------------------------------------------------
FROM base
ARG BTC_UID=50000
RUN useradd --create-home --uid "${BTC_UID}" --gid 0 btc \
    && mkdir -p /opt/btc/.data /opt/btc/.cache /opt/airflow/logs \
    && chown -R btc:0 /opt/btc /opt/airflow
COPY --chown=btc:0 . /opt/btc
COPY --chown=btc:0 --from=jars /opt/btc/.cache/jars /opt/btc/.cache/jars
COPY --chown=btc:0 --from=js /opt/btc/.cache/js /opt/btc/.cache/js
# the project as an editable install over the copied tree (console scripts btc-*, packages
# btc_platform, spark_jobs, models importable by every process; DAGs and jobs run from /opt/btc)
RUN pip install --no-deps -e /opt/btc
ENV BTC_CACHE_DIR=/opt/btc/.cache \
    BTC_DATA_DIR=/opt/btc/.data \
    AIRFLOW_HOME=/opt/airflow \
    PYSPARK_PYTHON=/usr/local/bin/python \
    PYSPARK_DRIVER_PYTHON=/usr/local/bin/python
USER btc
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["airflow", "version"]
