"""The compose stack running on this machine (issue 27), end to end: `make compose-test` builds and
starts it (dockerd of our own, local base when no registry image can be pulled, the simulate
source), checks it from the host, and removes it again (containers, network, volumes, daemon).
Marked ``compose`` and skipped unless COMPOSE_TEST=1 (set by `make compose-test`), so `make test`
does not start Docker.

In the order of the module:
1. only the Airflow API is published, on 127.0.0.1; a JWT signed with any string of the deployment
   files is refused; the secrets file is private; HDFS permissions are on;
2. the supervised producer and stream (``btc_stream_supervisor``, in the scheduler's container)
   write raw_data and minute_metrics on HDFS;
3. through the REST API: ``btc_backfill`` from a candle file on the read-only mount, one hour of
   ``btc_hourly_consolidation`` and a small ``btc_retrain``, all success, their rows in the tables;
4. the dashboard answers behind Airflow's login;
5. ``docker kill`` of a broker, a Spark worker and the scheduler's container (where the producer
   and the stream run), one after another, each started again as an operator would
   (``docker-compose up -d``: a killed container is a stopped one for Docker's restart policy)
   and data flowing again after each; then the producer is stopped, the
   stream drains Kafka, and the fault-injection suite's accounting (``bench.chaos.count``) over
   the producer's log of accepted ids and raw_data must find 0 lost, 0 duplicated, 0 extra.

Tables are read inside the stack (``btc_platform.testing.compose_probe`` run with ``docker
exec``): HDFS and Kafka are not published. Figures (up, first rows, each run, recovery after each
kill) are logged at INFO; `make compose-test` shows them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from bench import chaos
from btc_platform.ops.compose import dockerd, stack
from btc_platform.settings import get_settings
from btc_platform.testing.polling import free_ports, wait_until

log = logging.getLogger(__name__)

pytestmark = [
    pytest.mark.compose,
    pytest.mark.skipif(os.environ.get("COMPOSE_TEST") != "1", reason="compose stack test: make compose-test"),
]

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 600
#: deadline of one DAG run: two or three Spark applications, each with cold JVMs, on a 2-core
#: machine that other work may load (the backfill took 15 min at load 40-59)
RUN_TIMEOUT_S = 2400
#: hours of candles in the backfill file: enough for the small retrain below (test window 72 h)
HISTORY_HOURS = 500
CANDLE_FILE = "compose-test-candles.csv"
#: the producer's log of accepted ids, on the stack's data volume (shared by the Airflow containers)
ACCEPTED_LOG = "/opt/btc/.data/compose-test/accepted.ids"
#: the faults, one after another: (scenario, compose service whose container is killed); the ci
#: stack (BTC_COMPOSE_STACK=ci, `.ci/run`) has one broker, kafka-1
KILLS = (("broker_kill", "kafka-2"), ("spark_worker_kill", "spark-worker-1"), ("stream_kill", "airflow-scheduler"))
#: where the probes run: a container that shares the data volume and is never killed here
PROBE = "airflow-dag-processor"
RETRAIN_CONF = {"epochs": 2, "lookback": 12, "horizon": 24, "test_hours": 72, "force_promotion": True}
FIGURES: dict[str, float] = {}


def _this_hour() -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def _candles(end: datetime) -> str:
    """HISTORY_HOURS hourly candles ending at ``end`` (exclusive), the shared CSV layout."""
    from btc_platform.testing.models_testdata import candles_from_close, random_walk_close

    frame = candles_from_close(random_walk_close(HISTORY_HOURS, seed=7), start=end - timedelta(hours=HISTORY_HOURS))
    lines = ["open_time_utc,open,high,low,close,volume"]
    lines += [f"{r.hour_start.strftime('%Y-%m-%dT%H:%M:%SZ')},{r.open!r},{r.high!r},{r.low!r},{r.close!r},{r.volume!r}"
              for r in frame.itertuples()]  # fmt: skip
    return "\n".join(lines) + "\n"


#: the stack's settings under test (a stack already running with them is used as it is, and kept)
STACK_ENV = {
    "BTC_PRODUCER_SOURCE": "simulate",
    "BTC_PRODUCER_ACCEPTED_LOG": ACCEPTED_LOG,
    "BTC_SUPERVISOR_INTERVAL_S": "15",
    "BTC_FIRST_RUN_BACKFILL": "false",  # the test backfills from its own file through the API
}


@pytest.fixture(scope="module")
def running_stack():
    hour = _this_hour()
    env = STACK_ENV | {"BTC_AIRFLOW_PORT": os.environ.get("BTC_AIRFLOW_PORT") or str(free_ports(1)[0]),
                       # the consolidation DAG's start: a run needs a logical date from then on
                       "BTC_SCHEDULE_START_DATE": hour.isoformat()}
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    get_settings.cache_clear()
    settings = get_settings()
    candles = stack.backfill_dir(settings) / CANDLE_FILE  # mounted read-only at /opt/btc/backfill
    started_here = not (dockerd.daemon_answers(settings) and stack._running(settings))
    started = time.monotonic()
    try:
        stack.up(settings, rebuild=True, timings=FIGURES)
        FIGURES["make compose-up, s"] = time.monotonic() - started
        FIGURES["stack start"] = time.time()
        # the backfill's candles end at the hour the stack is up in: a build that crossed an hour
        # leaves the scheduler's run of the hour before it, which is not the backfill's
        hour = _this_hour()
        FIGURES["hour"] = hour.timestamp()
        candles.parent.mkdir(parents=True, exist_ok=True)
        candles.write_text(_candles(hour))
        candles.chmod(0o644)  # read by the containers' user
        yield settings
    finally:
        log.info("compose-test figures: %s", json.dumps({k: round(v, 1) for k, v in FIGURES.items()}))
        if started_here:
            stack.down(settings, volumes=True, stop_daemon=True)
        candles.unlink(missing_ok=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()


# ---------------------------------------------------------------------------------------------
# helpers: the REST API, the probes inside the stack, the containers
# ---------------------------------------------------------------------------------------------
def _api(settings) -> str:
    return f"http://127.0.0.1:{settings.airflow_port}"


def _token(settings) -> str:
    password = stack.ensure_secrets(settings)["AIRFLOW_ADMIN_PASSWORD"]
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            resp = requests.post(f"{_api(settings)}/auth/token", json={"username": "admin", "password": password},
                                 timeout=60)  # fmt: skip
            if resp.status_code in (200, 201):
                return resp.json()["access_token"]
        except (requests.ConnectionError, requests.Timeout):  # starting, or slow on a busy machine: again
            pass
        if time.monotonic() > deadline:
            raise AssertionError("no token from the Airflow API")
        time.sleep(3)


class Api:
    """The Airflow REST API (v2) of the stack, logged in as admin."""

    def __init__(self, settings):
        self.base = f"{_api(settings)}/api/v2"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {_token(settings)}"

    def get(self, path: str, **params) -> dict:
        response = self.session.get(self.base + path, params=params, timeout=(3, 60))
        response.raise_for_status()
        return response.json()

    def trigger(self, dag_id: str, conf: dict, **interval: str) -> str:
        body = {"logical_date": interval.get("logical_date"), "conf": conf}
        body |= {k: v for k, v in interval.items() if k != "logical_date"}
        response = self.session.post(f"{self.base}/dags/{dag_id}/dagRuns", json=body, timeout=(3, 60))
        assert response.status_code in (200, 201), response.text
        return response.json()["dag_run_id"]

    def wait_run(self, dag_id: str, run_id: str, timeout_s: float) -> str:
        path = f"/dags/{dag_id}/dagRuns/{run_id}"
        return wait_until(lambda: (s := self.get(path)["state"]) in ("success", "failed") and s, timeout_s,
                          f"{dag_id} run {run_id} to finish", interval_s=5.0)  # fmt: skip

    def task_log(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        tries = self.get(path + (f"/{map_index}" if map_index >= 0 else ""))["try_number"]
        params = {"full_content": "true"} | ({"map_index": map_index} if map_index >= 0 else {})
        response = self.session.get(f"{self.base}{path}/logs/{tries}", params=params,
                                    headers={"Accept": "application/json"}, timeout=(3, 60))  # fmt: skip
        response.raise_for_status()
        content = response.json().get("content")
        if isinstance(content, list):  # structured log events
            return "\n".join(item.get("event", "") if isinstance(item, dict) else str(item) for item in content)
        return str(content)

    def failures(self, dag_id: str, run_id: str) -> str:
        tis = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return "\n".join(f"--- {ti['task_id']} ({ti['state']})\n"
                         f"{self.task_log(dag_id, run_id, ti['task_id'], ti.get('map_index', -1))[-3000:]}"
                         for ti in tis if ti["state"] not in ("success", "skipped", None))  # fmt: skip

    def durations(self, dag_id: str, run_id: str) -> dict[str, float]:
        """{task id: seconds from its start to its end} of a finished run (figures for the docs)."""
        tis = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {ti["task_id"]: round(ti["duration"], 1) for ti in tis if ti.get("duration") is not None}

    def run(self, dag_id: str, conf: dict, timeout_s: float, **interval: str) -> str:
        started = time.monotonic()
        run_id = self.trigger(dag_id, conf, **interval)
        state = self.wait_run(dag_id, run_id, timeout_s)
        FIGURES[f"{dag_id}, s"] = time.monotonic() - started
        assert state == "success", self.failures(dag_id, run_id)
        return run_id


def _scheduled_run(api: Api, dag_id: str, start: datetime, end: datetime) -> str | None:
    """The id of ``dag_id``'s scheduled run of the data interval [start, end), if the scheduler made one."""
    for run in api.get(f"/dags/{dag_id}/dagRuns", run_type="scheduled")["dag_runs"]:
        interval = (run.get("data_interval_start"), run.get("data_interval_end"))
        if None not in interval and tuple(datetime.fromisoformat(v) for v in interval) == (start, end):
            log.info("%s: the scheduler's run %s of [%s, %s)", dag_id, run["dag_run_id"], start, end)
            return run["dag_run_id"]
    return None


def _exec(settings, service: str, *cmd: str, timeout: float = 300) -> str:
    proc = dockerd.docker(settings, "exec", f"{stack.PROJECT}_{service}_1", *cmd, timeout=timeout)
    return proc.stdout


def _probe(settings, *args: str, service: str = PROBE, timeout: float = 300):
    return json.loads(_exec(settings, service, "python", "-m", "btc_platform.testing.compose_probe", *args,
                            timeout=timeout).strip().splitlines()[-1])  # fmt: skip


def _accepted_lines(settings) -> int:
    out = _exec(settings, PROBE, "sh", "-c", f"cat {ACCEPTED_LOG} 2>/dev/null | wc -l")
    return int(out.strip() or 0)


def _log_memory(settings, when: str) -> None:
    """``docker stats`` of every container, one line each (figures for docs/compose.md)."""
    stats = dockerd.docker(settings, "stats", "--no-stream", "--format", "{{.Name}}\t{{.MemUsage}}\t{{.CPUPerc}}",
                           check=False).stdout  # fmt: skip
    log.info("docker stats %s:\n%s", when, stats)


def _state(settings, service: str) -> str:
    return stack.container_states(settings).get(f"{stack.PROJECT}_{service}_1", "absent")


# ---------------------------------------------------------------------------------------------
# 1. secure by default
# ---------------------------------------------------------------------------------------------
def test_only_the_airflow_api_is_published_on_loopback(running_stack):
    proc = dockerd.docker(running_stack, "ps", "--filter", f"label=com.docker.compose.project={stack.PROJECT}",
                          "--format", "{{.Names}}\t{{.Ports}}")  # fmt: skip
    published = {}
    for line in proc.stdout.splitlines():
        name, _, ports = line.partition("\t")
        if "->" in ports:
            published[name] = ports
    assert len(published) == 1, published
    ((name, ports),) = published.items()
    assert "airflow-apiserver" in name
    assert ports == f"127.0.0.1:{running_stack.airflow_port}->8080/tcp"


def _repository_strings() -> set[str]:
    """Every word-like string of the deployment files: what someone could try as the JWT secret."""
    texts = [(ROOT / name).read_text() for name in ("docker-compose.yml", "docker-compose.local.yml",
                                                    "Dockerfile", ".env.example")]  # fmt: skip
    texts += [p.read_text() for p in (ROOT / "infra" / "compose").glob("*.env")]
    found = {"change-me-btc-platform-jwt-secret", "secret", "airflow", "admin", ""}
    for text in texts:
        found |= set(re.findall(r"[A-Za-z0-9_.:/@+=-]{4,}", text))
    return found


def _signed(token: str, key: str) -> str:
    """``token`` with its header and claims unchanged, signed again with ``key`` (HMAC, by hand:
    PyJWT refuses an empty key, which is a candidate too)."""
    signing_input, _, _ = token.rpartition(".")
    alg = json.loads(base64.urlsafe_b64decode(signing_input.split(".")[0] + "=="))["alg"]
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signature = hmac.new(key.encode(), signing_input.encode(), digest).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def test_a_token_signed_with_any_string_of_the_repository_is_refused(running_stack):
    real = _token(running_stack)
    url = f"{_api(running_stack)}/api/v2/dags"
    ok = requests.get(url, headers={"Authorization": f"Bearer {real}"}, timeout=10)
    assert ok.status_code == 200
    assert "btc_stream_supervisor" in {d["dag_id"] for d in ok.json()["dags"]}
    secret = stack.ensure_secrets(running_stack)["AIRFLOW_JWT_SECRET"]
    resigned = _signed(real, secret)
    assert requests.get(url, headers={"Authorization": f"Bearer {resigned}"}, timeout=60).status_code == 200

    def status(candidate: str) -> int:
        """The API's answer to the token signed with ``candidate``; a request that times out (a
        busy 2-core machine) is neither a refusal nor an acceptance: it is sent again."""
        for attempt in range(3):
            try:
                return requests.get(url, headers={"Authorization": f"Bearer {_signed(real, candidate)}"},
                                    timeout=60).status_code  # fmt: skip
            except (requests.Timeout, requests.ConnectionError):
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    candidates = sorted(_repository_strings())
    with ThreadPoolExecutor(max_workers=4) as pool:  # ~1,400 strings
        statuses = list(pool.map(status, candidates))
    assert [c for c, code in zip(candidates, statuses, strict=True) if code not in (401, 403)] == []


def test_secrets_file_is_private(running_stack):
    path = stack.secrets_file(running_stack)
    assert path.stat().st_mode & 0o777 == 0o600
    assert subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", str(path)], check=False).returncode == 0


def test_hdfs_permissions_are_on_and_the_root_belongs_to_the_platform(running_stack):
    status = json.loads(_exec(running_stack, "namenode", "curl", "-fsS",
                              "http://namenode:9870/webhdfs/v1/bitcoin?op=GETFILESTATUS&user.name=nobody"))  # fmt: skip
    assert status["FileStatus"]["owner"] == "btc" and status["FileStatus"]["permission"] == "755"
    denied = _exec(running_stack, "namenode", "curl", "-sS", "-X", "PUT",
                   "http://namenode:9870/webhdfs/v1/bitcoin/intruder?op=MKDIRS&user.name=nobody")  # fmt: skip
    assert "AccessControlException" in denied


# ---------------------------------------------------------------------------------------------
# 2. the supervised stream writes on HDFS
# ---------------------------------------------------------------------------------------------
def test_the_stream_writes_raw_data_and_minute_metrics_on_hdfs(running_stack):
    def rows():
        counts = _probe(running_stack, "tables")
        return counts["raw_data"] > 0 and counts["minute_metrics"] > 0 and counts

    counts = wait_until(rows, READY_TIMEOUT_S, "rows in raw_data and minute_metrics", interval_s=5.0)
    FIGURES["stack up to raw_data and minute_metrics rows, s"] = time.time() - FIGURES["stack start"]
    _log_memory(running_stack, "with the stream running, before any batch job")
    assert counts["latest_ingest"] > FIGURES["stack start"] - 600  # written by this stack's stream


# ---------------------------------------------------------------------------------------------
# 3. the DAGs through the REST API
# ---------------------------------------------------------------------------------------------
def test_backfill_consolidation_and_retrain_through_the_rest_api(running_stack):
    api = Api(running_stack)
    hour = datetime.fromtimestamp(FIGURES["hour"], UTC)
    first = hour - timedelta(hours=HISTORY_HOURS)

    backfill = api.run("btc_backfill", {"source": "file", "file_path": f"/opt/btc/backfill/{CANDLE_FILE}"},
                        RUN_TIMEOUT_S)  # fmt: skip
    log.info("btc_backfill's tasks, s: %s", api.durations("btc_backfill", backfill))
    log.info("the backfill task's log (Spark's start on the cluster):\n%s",
             api.task_log("btc_backfill", backfill, "backfill")[-12000:])  # fmt: skip
    rows = _probe(running_stack, "hourly", first.isoformat(), hour.isoformat())
    expected = [line.split(",") for line in _candles(hour).splitlines()[1:]]
    assert [r["source"] for r in rows] == ["backfill"] * HISTORY_HOURS
    assert [r["close"] for r in rows] == [float(line[4]) for line in expected]

    # at the same time (Spark jobs the one, Keras in the scheduler's task the other): the last
    # full hour, [now - 1 h, now), whose end the stream's watermark has passed (backfilled, or the
    # stream's when the test crossed an hour), and the retrain. The scheduler runs that hour itself
    # once the stack has crossed its end (the DAG starts at the test's first hour): that run is the
    # one checked; else a triggered one, whose logical date is the interval's end (no scheduled
    # run has it: the scheduler's logical date is its interval's start, and a run's is unique).
    end = _this_hour()
    previous = end - timedelta(hours=1)
    started = time.monotonic()
    consolidation = _scheduled_run(api, "btc_hourly_consolidation", previous, end) or api.trigger(
        "btc_hourly_consolidation", {}, logical_date=end.isoformat(), data_interval_start=previous.isoformat(),
        data_interval_end=end.isoformat())  # fmt: skip
    retrain = api.trigger("btc_retrain", RETRAIN_CONF)
    for dag_id, run_id in (("btc_hourly_consolidation", consolidation), ("btc_retrain", retrain)):
        state = api.wait_run(dag_id, run_id, RUN_TIMEOUT_S)
        FIGURES[f"{dag_id} (with the other), s"] = time.monotonic() - started
        assert state == "success", api.failures(dag_id, run_id)
    for dag_id, run_id in (("btc_hourly_consolidation", consolidation), ("btc_retrain", retrain)):
        log.info("%s's tasks, s: %s", dag_id, api.durations(dag_id, run_id))
    # the sensor let the hour through: the stream's watermark passed its end, or (the scheduler's
    # run of the hour the stack started in, before the stream's first batch) its deadline
    waited = api.task_log("btc_hourly_consolidation", consolidation, "wait_for_minutes")
    assert "has passed" in waited or "consolidating the minutes that exist" in waited, waited[-3000:]
    (row,) = _probe(running_stack, "hourly", previous.isoformat(), end.isoformat())
    assert row["source"] in ("backfill", "stream")  # stream when the stack ran during that hour

    run = retrain
    evaluate = api.task_log("btc_retrain", run, "forecast.evaluate", map_index=0)
    assert "vs baselines" in evaluate and "persistence" in evaluate, evaluate[-3000:]
    decision = api.task_log("btc_retrain", run, "forecast.promote_or_keep", map_index=0)
    assert "promotion decision for" in decision and "promoted" in decision, decision[-3000:]


# ---------------------------------------------------------------------------------------------
# 4. the dashboard behind login
# ---------------------------------------------------------------------------------------------
def test_the_dashboard_answers_behind_login(running_stack):
    base = f"{_api(running_stack)}/btc"
    assert requests.get(f"{base}/api/market", params={"hours": 1}, timeout=30).status_code == 401
    forged = {"Authorization": "Bearer not-a-token"}
    assert requests.get(f"{base}/api/market", params={"hours": 1}, headers=forged, timeout=30).status_code in (401, 403)
    auth = {"Authorization": f"Bearer {_token(running_stack)}"}
    page = requests.get(f"{base}/", headers=auth, timeout=60)
    assert page.status_code == 200 and "<html" in page.text.lower()
    market = requests.get(f"{base}/api/market", params={"hours": 1, "symbol": "BTCUSDT"}, headers=auth, timeout=120)
    assert market.status_code == 200 and market.json()["count"] > 0, market.text[:2000]
    history = requests.get(f"{base}/api/history", params={"days": 30, "symbol": "BTCUSDT"}, headers=auth, timeout=120)
    assert history.status_code == 200 and history.json()["count"] >= 24 * 20, history.text[:2000]
    _log_memory(running_stack, "at rest after the DAG runs (the stream running)")


# ---------------------------------------------------------------------------------------------
# 5. docker kill: a broker, a Spark worker, the scheduler's container (producer and stream)
# ---------------------------------------------------------------------------------------------
def _kill_and_recover(settings, service: str, result: chaos.Result) -> None:
    name = f"{stack.PROJECT}_{service}_1"
    killed = time.time()
    dockerd.docker(settings, "kill", name)
    # docker kill is a manual stop for the restart policy: the container stays down until someone
    # starts it, here as an operator would (the triggerer, in the killed scheduler's pid namespace,
    # lost its processes too and is started again with it)
    wait_until(lambda: not _state(settings, service).startswith("Up"), 60, f"{name} to stop", interval_s=1.0)
    stack.compose(settings, stack.current_base(settings), "up", "-d", "--no-build")
    wait_until(lambda: not stack.not_ready(stack.container_states(settings)), 300, "every container healthy again",
               interval_s=2.0)  # fmt: skip
    result.recovery_s = wait_until(
        lambda: ((_probe(settings, "tables")["latest_ingest"] or 0) > killed) and time.time() - killed,
        600, f"rows ingested after the kill of {name}", interval_s=3.0)  # fmt: skip
    result.recovered_by = "docker-compose up -d" + (", the supervisor DAG" if service == "airflow-scheduler" else "")
    FIGURES[f"recovery after docker kill {service}, s"] = result.recovery_s


def _end_supervision(api: Api) -> None:
    """Pause the supervisor DAG and end its running task, so that nothing restarts the producer."""
    dag = "btc_stream_supervisor"
    response = api.session.patch(f"{api.base}/dags/{dag}", json={"is_paused": True}, timeout=(3, 60))
    assert response.status_code == 200, response.text
    for run in api.get(f"/dags/{dag}/dagRuns", state="running")["dag_runs"]:
        response = api.session.patch(f"{api.base}/dags/{dag}/dagRuns/{run['dag_run_id']}/taskInstances/supervise",
                                     json={"new_state": "success"}, timeout=(3, 60))  # fmt: skip
        assert response.status_code == 200, response.text
    time.sleep(10)  # the triggerer drops the trigger of a task that is no longer deferred


class _Stack:
    """What ``chaos.count`` reads of a platform: the accepted ids' log and raw_data's ids (no side
    publisher here: every id comes from the supervised producer)."""

    burst = None
    side_ids: tuple[str, ...] = ()

    def __init__(self, accepted_log: Path, raw: Counter):
        self.accepted_log = accepted_log
        self._raw = raw

    def raw_ids(self) -> Counter:
        return self._raw


def test_docker_kill_of_a_broker_a_worker_and_the_stream_loses_and_duplicates_nothing(running_stack, tmp_path):
    results = []
    ci = running_stack.compose_stack == "ci"
    for scenario, service in KILLS:
        service = "kafka-1" if ci and service == "kafka-2" else service
        result = chaos.Result(scenario, start_line=_accepted_lines(running_stack))
        _kill_and_recover(running_stack, service, result)
        result.end_line = _accepted_lines(running_stack)
        results.append(result)
    _end_supervision(Api(running_stack))
    drained = _probe(running_stack, "drain", "--timeout", "300", service="airflow-scheduler", timeout=400)
    assert drained["lag"] == 0, drained
    raw = Counter(_probe(running_stack, "raw-ids"))
    accepted = tmp_path / "accepted.ids"
    accepted.write_text(_exec(running_stack, PROBE, "cat", ACCEPTED_LOG))
    chaos.count(_Stack(accepted, raw), results)
    table = chaos.table(results)
    log.info("docker kill accounting:\n%s", table)
    for result in results:
        assert result.accepted > 0, table
        assert (result.lost, result.duplicated, result.extra) == (0, 0, 0), table
        assert result.recovery_s is not None, table
