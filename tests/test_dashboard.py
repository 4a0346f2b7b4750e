"""The BTC dashboard (``btc_platform.dashboard``): its endpoints on seeded Delta tables, and the page
in a real browser inside a real Airflow.

The browser test starts Airflow's API server (``airflow api-server``, this repo's plugins, its own
AIRFLOW_HOME and SQLite DB) on seeded tables, drives Debian's Chromium with Playwright (the
system binary, ``executable_path``; ``make test`` installs the package when missing), logs in
through Airflow's login page, clicks the navigation entry and checks what is drawn against what
the endpoints returned. Screenshots of each view go to the test's tmp_path
(``.../test_dashboard_in_a_browser0/screenshots/``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest

import btc_platform
from btc_platform.testing import dashboard_testdata as td

ENDPOINTS = ("market", "history", "forecast", "pipeline", "config")


# ---- the endpoints on seeded tables (no Airflow) ---------------------------------------------------
@pytest.fixture
def seeded(settings_env):
    settings = settings_env()
    return settings, td.seed_all(settings, minutes=90, hours=72)


@pytest.fixture
def client(settings_env):
    from fastapi.testclient import TestClient

    from btc_platform.dashboard.app import create_app
    from btc_platform.settings import get_settings

    return TestClient(create_app(get_settings, secured=False))


def test_endpoints_return_the_seeded_rows(seeded, client):
    settings, seeded = seeded
    market = client.get("/api/market", params={"hours": 6}).json()
    assert market["count"] == seeded.minutes == len(market["minutes"]["time"]) == len(market["minutes"]["mid_close"])
    assert market["reason"] is None
    assert market["latest_tick"]["reason"] is None and 0 <= market["latest_tick"]["age_s"] < 60
    # a shorter range: only the minutes inside it
    one_hour = client.get("/api/market", params={"hours": 1}).json()
    assert 59 <= one_hour["count"] <= 60

    history = client.get("/api/history", params={"days": 30}).json()
    assert history["count"] == seeded.hours
    assert sum(history["sources"].values()) == seeded.hours and set(history["sources"]) == {"stream", "backfill"}
    missing = [pd.Timestamp(g["start"]) + pd.Timedelta(hours=i) for g in history["gaps"] for i in range(g["hours"])]
    assert missing == seeded.gap_hours

    forecast = client.get("/api/forecast", params={"days": 3}).json()
    future = forecast["future"]
    assert future["count"] == 24 and len(future["lower"]) == len(future["upper"]) == 24
    assert all(lo < p < up for lo, p, up in zip(future["lower"], future["predicted"], future["upper"], strict=True))
    assert future["model_version"] == td.MODEL and forecast["registry"]["current"]["version"] == td.MODEL
    assert [v["status"] for v in forecast["registry"]["versions"]] == ["promoted", "rejected"]
    assert len(forecast["per_horizon"]["rows"]) == 24
    past = forecast["past"]
    assert past["count"] > 0 and len(past["actual"]) == past["count"]
    hourly = dict(zip(history["candles"]["time"], history["candles"]["close"], strict=True))
    # the actual close is the hourly close of the target hour; a missing hour stays null
    for target, actual in zip(past["target"], past["actual"], strict=True):
        assert actual == hourly.get(target)
    assert any(a is None for a in past["actual"])  # the gap and the current hour

    pipeline = client.get("/api/pipeline", params={"days": 1}).json()
    quarantine = pipeline["quarantine"]
    assert quarantine["total"] == seeded.quarantined
    assert sum(sum(v) for v in quarantine["series"].values()) == seeded.quarantined
    assert set(quarantine["series"]) == {"unparseable_json", "missing_field", "ask_below_bid"}
    assert len(quarantine["sample"]) == 5 and len(quarantine["sample"][0]["value_text"]) == 300
    assert "data_quality does not exist yet" in pipeline["data_quality"]["reason"]
    assert [(e["action"], e["reason"]) for e in pipeline["restarts"]] == [
        ("restarted", td.RESTART_REASON), ("started", "no pid record")]
    assert pipeline["producer"]["published"] == 1234 and pipeline["stream"]["queries"][0]["name"] == "ingest"
    # the producer's last publish (the key its status record uses) 3 s before the seeding
    assert 3 <= pipeline["producer"]["last_publish_age_s"] < 60
    tables = {d["table"]: d for d in pipeline["datasets"]}
    assert tables["hourly_metrics"]["version"] == 0 and tables["data_quality"]["version"] is None
    # the exact DAG run and task log behind a table (recorded in its commit) and behind a restart
    produced = tables["hourly_metrics"]["produced_by"]
    assert produced["airflow"] == td.BACKFILL_TASK and produced["version"] == 0
    assert produced["task_log"] == "../dags/btc_backfill/runs/manual__2026-01-01T00%3A00%3A00%2B00%3A00/tasks/backfill?try_number=2"
    assert produced["run"] == "../dags/btc_backfill/runs/manual__2026-01-01T00%3A00%3A00%2B00%3A00"
    assert tables["minute_metrics"]["produced_by"]["airflow"] is None
    # a mapped task instance (the retrain's, one per symbol): its own page, by map index
    forecast_writer = tables["future_predictions"]["produced_by"]
    assert forecast_writer["airflow"] == td.RETRAIN_TASK
    assert forecast_writer["task_log"] == ("../dags/btc_retrain/runs/scheduled__2026-01-01T00%3A05%3A00%2B00%3A00"
                                           "/tasks/forecast.predict_next_24h/mapped/0?try_number=1")
    assert tables["minute_metrics"]["reason"].startswith("written by the streaming job, a process the supervisor")
    restart, start = pipeline["restarts"]
    assert restart["airflow"] == td.SUPERVISOR_TASK and restart["task_log"].endswith(
        "/runs/scheduled__2026-01-01T00%3A01%3A00%2B00%3A00/tasks/ensure_stream?try_number=1")
    assert start["task_log"] is None  # recorded outside Airflow: no link invented


def test_maintenance_commits_do_not_hide_the_writer(settings_env, client):
    """The newest commit of a compacted table is OPTIMIZE (no data, no Airflow task of its own
    here): the table still links the task that wrote its data; the last commit is shown as such."""
    from btc_platform.lakehouse import lake

    settings = settings_env()
    now = pd.Timestamp.now(tz="UTC")
    with td.airflow_task_env(td.BACKFILL_TASK):
        td.hourly_metrics(settings, now, 24)
        td.hourly_metrics(settings, now - pd.Timedelta(days=2), 24)  # a second file to compact
    table = lake.open_table("hourly_metrics", settings)
    table.optimize.compact()
    tables = {d["table"]: d for d in client.get("/api/pipeline").json()["datasets"]}
    entry = tables["hourly_metrics"]
    assert entry["version"] == 2 and entry["last_commit"]["operation"] == "OPTIMIZE"
    assert entry["last_commit"]["airflow"] is None
    assert entry["produced_by"]["version"] == 1 and entry["produced_by"]["operation"] == "WRITE"
    assert entry["produced_by"]["airflow"] == td.BACKFILL_TASK and entry["reason"] is None


def test_answers_and_plotly_are_sent_compressed_once(seeded, client):
    """The app gzips an answer once per cached answer (Airflow's GZip middleware then leaves it
    alone); a client without gzip gets the same JSON; plotly.js is revalidated by its ETag."""
    from btc_platform.dashboard.assets import ensure_bundle

    settings, seeded = seeded
    zipped = client.get("/api/market", params={"hours": 6}, headers={"Accept-Encoding": "gzip"})
    plain = client.get("/api/market", params={"hours": 6}, headers={"Accept-Encoding": "identity"})
    assert zipped.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
    assert zipped.json() == plain.json() and plain.json()["count"] == seeded.minutes

    bundle = ensure_bundle(settings)
    script = client.get("/static/plotly.js", headers={"Accept-Encoding": "gzip"})
    assert script.status_code == 200 and script.headers["content-encoding"] == "gzip"
    assert script.content == bundle.read_bytes()  # httpx decodes: the installed bundle, byte for byte
    assert int(script.headers["content-length"]) < len(script.content) / 2
    again = client.get("/static/plotly.js", headers={"If-None-Match": script.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_empty_storage_gives_reasons_not_errors(client):
    for name in ENDPOINTS:
        response = client.get(f"/api/{name}")
        assert response.status_code == 200, (name, response.text)
    market = client.get("/api/market").json()
    assert market["count"] == 0 and "minute_metrics does not exist yet" in market["reason"]
    assert "raw_data does not exist yet" in market["latest_tick"]["reason"]
    forecast = client.get("/api/forecast").json()
    assert "future_predictions does not exist yet" in forecast["future"]["reason"]
    assert f"no model of {td.SYMBOL} in the registry yet" in forecast["registry"]["reason"]
    assert "no such" not in json.dumps(forecast)


def test_forecast_without_band_columns_says_so(settings_env, client):
    """Another version of future_predictions (no lower/upper): the line is drawn, the band's absence explained."""
    settings = settings_env()
    now = pd.Timestamp.now(tz="UTC").floor("h")
    frame = pd.DataFrame({"symbol": td.SYMBOL, "target_hour_start": pd.date_range(now, periods=5, freq="h"),
                          "predicted_close": [1.0, 2.0, 3.0, 4.0, 5.0]})
    from btc_platform.lakehouse import lake

    lake.write_table("future_predictions", frame, settings)
    future = client.get("/api/forecast").json()["future"]
    assert future["count"] == 5 and future["lower"] == [] and "no lower/upper" in future["band_reason"]


def test_the_latest_forecast_is_shown_with_its_age_and_served_point_model(settings_env, client):
    """A forecast that no longer covers the current hour (history ends days ago) is still shown,
    with its age and why; the card data names the served point model as its rows do, not "none"."""
    from btc_platform.lakehouse import lake

    settings = settings_env()
    origin = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(days=40)
    steps = np.arange(1, 25)
    reason = "persistence — LSTM candidate rejected: only 48 test windows, promotion needs 504"
    lake.write_table("future_predictions", pd.DataFrame({
        "symbol": td.SYMBOL, "model_version": "v1", "issue_time": origin + pd.Timedelta(minutes=5),
        "origin_hour_start": origin, "horizon": steps.astype("int32"),
        "target_hour_start": origin + pd.to_timedelta(steps, unit="h"), "predicted_close": 100.0,
        "lower": 90.0, "upper": 110.0, "interval_level": 0.8, "point_model": "persistence", "point_reason": reason,
        "band_model": "ewma_t", "band_reason": "EWMA of the 30 hourly returns available"}), settings)
    future = client.get("/api/forecast").json()["future"]
    assert future["count"] == 24 and future["covers_now"] is False
    assert 40 * 86400 - 600 < future["age_s"] < 40 * 86400 + 3600
    assert "no forecast of BTCUSDT covers the current hour" in future["reason"]
    assert future["served_by"] == {"point_model": "persistence", "point_reason": reason, "band_model": "ewma_t",
                                   "band_reason": "EWMA of the 30 hourly returns available"}
    assert future["target"][0] == (origin + pd.Timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_history_falls_back_to_the_latest_data_when_the_range_is_empty(settings_env, client):
    """History that ends long before now (a candle file of past years): the latest ``days`` are
    shown and the answer says so; a range with data is shown as it is."""
    settings = settings_env()
    ended = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(days=400)
    hours, _ = td.hourly_metrics(settings, ended, hours=24 * 10, gap=(0, 0))
    history = client.get("/api/history", params={"days": 7}).json()
    assert history["latest_fallback"] is True
    assert "showing the latest 7 days" in history["reason"] and "no hourly metrics of BTCUSDT since" in history["reason"]
    times = pd.to_datetime(history["candles"]["time"], utc=True)
    assert history["count"] == 7 * 24 == len(times)
    assert times[-1] == ended - pd.Timedelta(hours=1)  # the newest hour the table holds
    assert times[0] == ended - pd.Timedelta(days=7) and pd.Timestamp(history["from"]) == times[0]
    assert pd.Timestamp(history["to"]) == ended and history["gaps"] == []
    # a range that reaches the data: no fallback
    wide = client.get("/api/history", params={"days": 420}).json()
    assert wide["latest_fallback"] is False and wide["reason"] is None and wide["count"] == hours


def test_history_without_any_hour_says_so(settings_env, client):
    assert "hourly_metrics does not exist yet" in client.get("/api/history").json()["reason"]
    settings = settings_env()
    td.hourly_metrics(settings, pd.Timestamp.now(tz="UTC").floor("h"), hours=5, gap=(0, 0))
    other = client.get("/api/history", params={"symbol": "ETHUSDT"}).json()
    assert other["count"] == 0 and other["latest_fallback"] is False
    assert other["reason"].startswith("no hourly metrics of ETHUSDT since")


def test_range_bounds_and_symbol_are_checked(client):
    assert client.get("/api/market", params={"hours": 0}).status_code == 422
    assert client.get("/api/history", params={"days": 10_000}).status_code == 422
    assert client.get("/api/market", params={"symbol": "BTC'--"}).status_code == 422


def test_cache_reuses_an_answer_within_its_ttl():
    from btc_platform.dashboard.app import TTLCache

    now = [0.0]
    cache = TTLCache(10.0, clock=lambda: now[0])
    calls = []
    assert cache.get(("a",), lambda: calls.append(1) or len(calls)) == 1
    now[0] = 9.0
    assert cache.get(("a",), lambda: calls.append(1) or len(calls)) == 1
    now[0] = 10.5
    assert cache.get(("a",), lambda: calls.append(1) or len(calls)) == 2


def test_the_page_preloads_each_views_first_request(seeded, client):
    """The page names each view's first data request (its default range, the URL as dashboard.js
    builds it) as a preload, so the browser fetches it while the scripts load; each is an answer."""
    import re

    page = client.get("/").text
    hrefs = re.findall(r'<link rel="preload" as="fetch" crossorigin href="([^"]+)">', page)
    assert hrefs == ["api/market?hours=6&amp;symbol=BTCUSDT", "api/history?days=30&amp;symbol=BTCUSDT",
                     "api/forecast?days=3&amp;symbol=BTCUSDT", "api/pipeline?days=1"]
    config = json.loads(re.search(r'<script id="btc-config" type="application/json">(.*?)</script>', page).group(1))
    assert config["defaults"] == {"market": 6, "history": 30, "forecast": 3, "pipeline": 1}
    market = client.get("/" + hrefs[0].replace("&amp;", "&")).json()
    assert market["hours"] == 6 and market["count"] == seeded[1].minutes


def test_kept_tables_see_every_new_commit_and_a_replaced_table(settings_env):
    """The dashboard keeps its opened tables between requests and brings them up to date: rows
    written after the first read are in the next one; a table whose directory was replaced (its
    log starts again at version 0) is opened again instead of being read at its old version."""
    import shutil

    from btc_platform.dashboard.data import tables
    from btc_platform.lakehouse import lake

    settings = settings_env()
    now = pd.Timestamp.now(tz="UTC").floor("min")

    def minutes():
        got = tables.read("minute_metrics", settings, required=("window_start",), filters=[("symbol", "=", td.SYMBOL)])
        return 0 if got.empty else len(got.frame)

    assert td.minute_metrics(settings, now, 30) == 30
    assert minutes() == 30
    kept = lake.table_uri("minute_metrics", settings)
    td.minute_metrics(settings, now - pd.Timedelta(hours=1), 10)  # a second commit, after the first read
    assert minutes() == 40
    with tables.TABLES.latest("minute_metrics", settings) as table:
        assert int(table.version()) == 1 and table.table_uri.rstrip("/").endswith(kept.removeprefix("file://").rstrip("/"))
    shutil.rmtree(kept.removeprefix("file://"))
    td.minute_metrics(settings, now - pd.Timedelta(hours=3), 5)  # version 0 of a new table at the same place
    td.minute_metrics(settings, now - pd.Timedelta(hours=4), 5)
    assert minutes() == 10


def test_plugin_app_and_nav_entry(tmp_path):
    """The plugin as Airflow loads it, and the app as the API server builds it: in a subprocess
    with its own AIRFLOW_HOME (importing Airflow configures it)."""
    from btc_platform.ops.airflow_env import airflow_env
    from btc_platform.settings import load_settings

    script = """
import json
import btc_platform_plugin
from btc_platform.dashboard.app import create_app

plugin = btc_platform_plugin.BtcPlatformPlugin
app = create_app()
print(json.dumps({
    "apps": [{**a, "app": type(a["app"]).__module__ + "." + type(a["app"]).__qualname__} for a in plugin.fastapi_apps],
    "views": plugin.external_views,
    "appbuilder": len(getattr(plugin, "appbuilder_views", [])),
    "docs": [app.openapi_url, app.docs_url, app.redoc_url],
    "deps": [getattr(d.dependency, "__qualname__", "") for d in app.router.dependencies],
    "routes": sorted(r.path for r in app.routes),
}))
"""
    env = airflow_env(load_settings(data_dir=tmp_path / "data"))
    # btc_platform_plugin is the one module of plugins/ outside the installed package: run where
    # Airflow's plugin loader finds it
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=Path(btc_platform.__file__).parents[1],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["apps"] == [{"app": "btc_platform.dashboard.LazyApp", "url_prefix": "/btc", "name": "BTC dashboard"}]
    (view,) = out["views"]
    assert view["href"] == "btc/" and view["url_route"] == "btc" and view["nav_top_level"] is True
    assert out["appbuilder"] == 0
    assert out["docs"] == [None, None, None]
    assert any("requires_access_view" in d for d in out["deps"]), out["deps"]
    assert out["routes"] == sorted(["/", "/static/plotly.js", "/static/{name}", "/api/config", "/api/market",
                                    "/api/history", "/api/forecast", "/api/pipeline"])


# ---- the page in a real browser inside Airflow -------------------------------------------------------
class AirflowApiServer:
    """``airflow api-server`` with this repo's plugins, on seeded tables, in ``base``."""

    def __init__(self, base: Path):
        from btc_platform.settings import load_settings
        from btc_platform.testing.polling import free_ports

        (port,) = free_ports(1)
        self.settings = load_settings(data_dir=base / "data", airflow_port=port)
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        from btc_platform.ops.airflow_env import airflow_env, airflow_home
        from btc_platform.ops.services import base

        env = {**base.base_env(), **airflow_env(self.settings)}
        home = airflow_home(self.settings)
        home.mkdir(parents=True, exist_ok=True)
        airflow = str(Path(sys.executable).parent / "airflow")
        done = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        record = base.spawn(self.settings, "airflow", [airflow, "api-server"], env, home)
        deadline = time.monotonic() + 180
        import requests

        while True:
            try:
                if requests.get(f"{self.url}/api/v2/monitor/health", timeout=(2, 5)).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"api-server not healthy: {base.log_path(self.settings, 'airflow')}"
            from btc_platform.ops import process

            assert process.is_alive(record), process.log_tail(base.log_path(self.settings, "airflow"), 40)
            time.sleep(1)

    def password(self) -> str:
        from btc_platform.ops.airflow_env import password_file

        return json.loads(password_file(self.settings).read_text())["admin"]

    def stop(self) -> None:
        from btc_platform.ops import services

        services.stop("airflow", self.settings)


@pytest.fixture(scope="module")
def airflow_dashboard(tmp_path_factory):
    from btc_platform.dashboard.assets import ensure_bundle

    server = AirflowApiServer(tmp_path_factory.mktemp("dashboard-airflow"))
    ensure_bundle(server.settings)  # plotly.js (`make js`): installs it with npm when missing, or fails saying so
    seeded = td.seed_all(server.settings, minutes=120, hours=96)
    try:
        server.start()
        yield server, seeded
    finally:
        server.stop()


@pytest.fixture(scope="module")
def chromium():
    from btc_platform.dashboard.browser import ensure_chromium

    return ensure_chromium()  # installs the Debian package or fails naming it: never a skip


ROUTES = ("/btc/", "/btc/static/dashboard.js", "/btc/static/dashboard.css", "/btc/static/plotly.js",
          *(f"/btc/api/{name}" for name in ENDPOINTS))


@pytest.mark.integration
@pytest.mark.slow
def test_every_route_needs_a_session(airflow_dashboard):
    import requests

    server, _ = airflow_dashboard
    for route in ROUTES:
        anonymous = requests.get(server.url + route, timeout=(3, 30), allow_redirects=False)
        assert anonymous.status_code in (401, 403), (route, anonymous.status_code)
        forged = requests.get(server.url + route, cookies={"_token": "forged"}, timeout=(3, 30), allow_redirects=False)
        assert forged.status_code in (401, 403), (route, forged.status_code)
    for route in ("/btc/docs", "/btc/openapi.json", "/btc/redoc"):
        assert requests.get(server.url + route, timeout=(3, 30)).status_code in (401, 403, 404), route
    token = requests.post(f"{server.url}/auth/token", json={"username": "admin", "password": server.password()},
                          timeout=(3, 30)).json()["access_token"]
    for route in ROUTES:
        response = requests.get(server.url + route, headers={"Authorization": f"Bearer {token}"}, timeout=(3, 60))
        assert response.status_code == 200, (route, response.status_code, response.text[:300])


# what each chart draws: (chart element id, endpoint, function of the endpoint's JSON -> points per trace)
CHARTS = {
    "chart-market-price": ("market", lambda d: [d["count"]]),
    "chart-market-spread": ("market", lambda d: [d["count"]] * 2),
    "chart-market-liquidity": ("market", lambda d: [d["count"]] * 2),
    "chart-market-activity": ("market", lambda d: [d["count"]] * 2),
    "chart-history-candles": ("history", lambda d: [d["sources"][s] for s in d["sources"]]),
    "chart-history-volume": ("history", lambda d: [d["count"], d["count"]]),
    # the band's two bounds are lines without markers (the band itself is checked below)
    "chart-forecast": ("forecast", lambda d: [0, 0, d["future"]["count"]]),
    "chart-forecast-past": ("forecast", lambda d: [d["past"]["count"]] * 2),
    "chart-quarantine": ("pipeline", lambda d: [len(d["quarantine"]["hours"])] * len(d["quarantine"]["series"])),
}

#: Points drawn per trace, counted in the SVG plotly rendered: markers of a scatter trace, boxes of
#: a candlestick, bars of non-zero height of a bar trace (a null value draws nothing).
COUNT_DRAWN = r"""
(id) => {
  const gd = document.getElementById(id);
  return [...gd.querySelectorAll('.cartesianlayer g.trace')].map((g) => {
    if (g.classList.contains('boxes')) return g.querySelectorAll('path.box').length;
    if (g.classList.contains('bars')) {  // a null or zero value keeps a bar of zero height: not drawn
      return [...g.querySelectorAll('g.point path')].filter((p) => {
        const m = /^M[-\d.]+,([-\d.]+)V([-\d.]+)/.exec(p.getAttribute('d') || '');
        return m && Math.abs(Number(m[1]) - Number(m[2])) > 0.01;
      }).length;
    }
    const points = g.querySelectorAll('g.points path.point');
    return points.length;
  });
}
"""


def _nonnull(values):
    return sum(v is not None for v in values)


@pytest.mark.integration
@pytest.mark.slow
def test_dashboard_in_a_browser(airflow_dashboard, chromium, tmp_path):
    from playwright.sync_api import sync_playwright

    server, seeded = airflow_dashboard
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 1500})  # tall enough for a whole view
        try:
            page.goto(server.url + "/", wait_until="domcontentloaded")
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(server.password())
            page.get_by_role("button", name="Sign in").click()
            nav = page.get_by_role("link", name="BTC dashboard")
            nav.wait_for(timeout=60_000)
            started = time.monotonic()
            nav.click()
            page.wait_for_url("**/plugin/btc", timeout=30_000)
            frame_el = page.wait_for_selector("iframe[title='BTC dashboard']", timeout=30_000)
            frame = frame_el.content_frame()
            frame.wait_for_selector("#dashboard[data-state='drawn']", timeout=60_000)
            drawn_s = time.monotonic() - started
            page.screenshot(path=str(shots / "airflow-nav.png"))

            # what the endpoints returned, fetched with the page's own session
            answers = {name: frame.evaluate(
                "async (p) => (await fetch(p, {credentials: 'same-origin'})).json()", f"api/{name}?{query}")
                for name, query in (("market", "hours=6"), ("history", "days=30"), ("forecast", "days=3"),
                                    ("pipeline", "days=1"))}
            assert answers["market"]["count"] == seeded.minutes
            assert answers["history"]["count"] == seeded.hours
            for chart, (endpoint, expected) in CHARTS.items():
                drawn = frame.evaluate(COUNT_DRAWN, chart)
                want = expected(answers[endpoint])
                if chart == "chart-history-volume":  # volume is null for stream hours: no bar there
                    want = [_nonnull(answers["history"]["candles"]["volume"]), answers["history"]["count"]]
                if chart == "chart-forecast-past":  # actual close is null in the gap and the current hour
                    want = [want[0], _nonnull(answers["forecast"]["past"]["actual"])]
                if chart == "chart-quarantine":  # an hour without a record of that reason draws no bar
                    want = [sum(1 for v in counts if v) for counts in answers["pipeline"]["quarantine"]["series"].values()]
                assert drawn == want, (chart, drawn, want)
            # the forecast band: a filled area over the forecast's hours, lower bound to upper bound
            band = frame.evaluate("""() => {
                const gd = document.getElementById('chart-forecast');
                const fills = [...gd.querySelectorAll('path.js-fill')].filter((p) => (p.getAttribute('d') || '').length > 20);
                const xs = [...gd.querySelectorAll('g.points path.point')].map((p) => p.getBoundingClientRect())
                    .map((r) => r.x + r.width / 2);
                return {fills: fills.length, box: fills.length ? fills[0].getBoundingClientRect().toJSON() : null,
                        first: Math.min(...xs), last: Math.max(...xs)};
            }""")
            assert band["fills"] == 1, band
            assert abs(band["box"]["x"] - band["first"]) < 2 and abs(band["box"]["right"] - band["last"]) < 2, band
            assert band["box"]["height"] > 5, band
            # the gaps of the history are shaded, one rectangle each
            gaps = frame.evaluate("() => document.querySelectorAll('#chart-history-candles .shapelayer path').length")
            assert gaps == len(answers["history"]["gaps"]) >= 1
            # the empty data_quality table says why, and draws nothing
            dq = frame.locator(".reason[data-for='data-quality']")
            assert "table data_quality does not exist yet" in dq.inner_text()
            assert dq.is_visible() and not frame.locator("#chart-quality").is_visible()
            # restarts with their reasons
            assert td.RESTART_REASON in frame.locator("#restarts").inner_text()
            # the latest tick and its age are shown
            assert "age" in frame.locator("#tick").inner_text()
            # links to the runs of the DAGs that write each table
            assert frame.locator("#datasets a[href='../dags/btc_hourly_consolidation/runs']").count() == 2
            # and to the exact run and task log that wrote a table's data, and that restarted the stream
            pipeline = answers["pipeline"]
            produced = next(d for d in pipeline["datasets"] if d["table"] == "hourly_metrics")["produced_by"]
            for href in (produced["task_log"], produced["run"], pipeline["restarts"][0]["task_log"]):
                assert frame.locator(f"#datasets a[href='{href}'], #restarts a[href='{href}']").count() == 1, href
            assert "backfill (try 2) log" in frame.locator("#datasets").inner_text()
            assert "written by the streaming job" in frame.locator("#datasets").inner_text()
            promoted = frame.locator("#forecast-model .card", has_text="promoted LSTM").locator("b").inner_text()
            assert promoted.startswith(answers["forecast"]["registry"]["current"]["promoted_at"])
            # the audit card is red only on a failed audit (the seeded data has none)
            assert frame.locator("#pipeline-state .card.bad", has_text="ingest audit").count() == 0
            # the chart library is the finance bundle installed by `make js`, not the full plotly.js
            traces = set(frame.evaluate("() => Object.keys(Plotly.PlotSchema.get().traces)"))
            assert {"scatter", "bar", "candlestick"} <= traces and not {"scatter3d", "scattergl", "sankey"} & traces

            for view in ("market", "history", "forecast", "pipeline"):
                frame.locator(f"section#{view}").screenshot(path=str(shots / f"{view}.png"))
            # the range selector redraws from the endpoint
            frame.select_option("select[data-view='market']", "1")
            frame.wait_for_selector("#dashboard[data-state='drawn']")
            frame.wait_for_function("() => document.querySelectorAll('#chart-market-price g.points path.point').length < 100")
            one_hour = frame.evaluate(COUNT_DRAWN, "chart-market-price")
            assert one_hour == [frame.evaluate(
                "async () => (await fetch('api/market?hours=1')).json()")["count"]]
            # a task log link opens that page in the Airflow UI itself (not a second UI in the frame)
            frame.locator(f"#datasets a[href='{produced['task_log']}']").click()
            task_page = unquote(produced["task_log"].removeprefix(".."))
            page.wait_for_url(lambda url: unquote(url).endswith(task_page), timeout=30_000)
            page.wait_for_selector("iframe[title='BTC dashboard']", state="detached", timeout=30_000)
        finally:
            browser.close()
    sys.stdout.write(f"\ndashboard: all charts drawn {drawn_s:.2f} s after the click; screenshots in {shots}\n")
    assert sorted(p.name for p in shots.iterdir()) == sorted(
        ["airflow-nav.png", "market.png", "history.png", "forecast.png", "pipeline.png"])


def test_latest_tick_beyond_the_recent_window(settings_env):
    """The newest tick is looked for in the last minutes first; an older one (still today or
    yesterday) is found by reading the two days whole, and the newest of those wins."""
    from btc_platform.dashboard import data

    settings = settings_env()
    now = pd.Timestamp("2026-03-02 01:00", tz="UTC")
    for age_s in (3 * 3600, 2 * 3600):  # the newer one in yesterday's partition too
        td.raw_tick(settings, now, age_s=age_s)
    tick = data.latest_tick(settings, td.SYMBOL, now)
    assert tick["reason"] is None and tick["age_s"] == 2 * 3600.0
    assert tick["event_time"] == "2026-03-01T23:00:00Z"

    td.raw_tick(settings, now, age_s=30)  # inside the window
    assert data.latest_tick(settings, td.SYMBOL, now)["age_s"] == 30.0


def test_kafka_lag_is_reused_for_a_few_seconds(settings_env, monkeypatch):
    from btc_platform.dashboard import data
    from btc_platform.ops.supervisor import health

    settings = settings_env()
    asked = []
    monkeypatch.setattr(health, "stream_offsets", lambda s: {0: 10})
    monkeypatch.setattr(health, "stream_lag", lambda s: asked.append(1) or 7 * len(asked))
    clock = [1000.0]
    monkeypatch.setattr("time.monotonic", lambda: clock[0])
    assert data.kafka_lag(settings) == {"messages": 7, "reason": None}
    clock[0] += data.KAFKA_LAG_TTL_S / 2
    assert data.kafka_lag(settings)["messages"] == 7 and len(asked) == 1  # Kafka not asked again
    clock[0] += data.KAFKA_LAG_TTL_S
    assert data.kafka_lag(settings)["messages"] == 14 and len(asked) == 2
