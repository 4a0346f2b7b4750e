"""Benchmark: the BTC dashboard's JSON endpoints on a year of hourly data and a week of minute data,
and the page load in headless Chromium.

Seeds Delta tables in a temporary directory with the dashboard's test data writer
(``btc_platform.testing.dashboard_testdata``: ``hourly_metrics`` 365 days x 24 h with a 3-hour gap, half
backfilled; ``minute_metrics`` 7 days x 1,440 minutes; forecasts, registry, quarantine, status
records), then:

* latency per endpoint through the app (FastAPI TestClient, Airflow's access check left out),
  ``--repeat`` requests each with the cache cleared before every request (what the first
  request after the TTL costs) and the same cached; p50 / p95 / max in ms;
* with ``--browser`` (default on; ``--no-browser`` to skip): the app served by uvicorn on
  127.0.0.1, Debian's Chromium (``btc_platform.dashboard.browser``) loads the page, time until
  every chart is drawn (``#dashboard[data-state=drawn]``), best and median of ``--page-loads``;
  then the time to redraw after choosing the widest ranges (history 365 d, market 168 h).

Run it under the shared lock (it starts a browser):

    flock /work/heavy.lock .venv/bin/python bench/bench_dashboard.py [--repeat 30]

With the platform live (``make run``): ``--seed-live`` first writes the same year of hourly rows,
week of minute rows, forecasts and registry into the platform's own storage (only when none of
those tables exists yet, i.e. a fresh ``.data``), then ``--live http://127.0.0.1:8080`` measures
through Airflow's API server: each endpoint with a bearer token from ``/auth/token``, every
request with a slightly different range so that none is answered from the app's 10 s cache; the
page in Chromium logged in through Airflow's login page, (a) from a click on the navigation entry
to every chart drawn in the frame, (b) ``/btc/`` opened alone, both in a fresh browser context
(nothing cached), and (c) ``/btc/`` reloaded in one context (a repeat visit: plotly.js from the
browser's cache). ``--app-on-live-data`` measures the app in this process on the running platform's
tables (no Airflow in between): with ``PYTHONPATH`` pointing at another checkout's ``plugins``, two
versions of the code compare on the same data, back to back.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger("bench.dashboard")

#: (endpoint, query) pairs measured: the widest ranges the data covers, and the page's defaults
#: (market 6 h, history 30 d, forecast 3 d, pipeline 1 d).
REQUESTS = (
    ("market", {"hours": 168}),
    ("market", {"hours": 6}),
    ("history", {"days": 365}),
    ("history", {"days": 30}),
    ("forecast", {"days": 7}),
    ("forecast", {"days": 3}),
    ("pipeline", {"days": 7}),
    ("pipeline", {"days": 1}),
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def seed(data_dir: Path):
    from btc_platform.settings import load_settings
    from btc_platform.testing import dashboard_testdata as td

    settings = load_settings(data_dir=data_dir)
    started = time.perf_counter()
    seeded = td.seed_all(settings, minutes=7 * 1440, hours=365 * 24)
    log.info("seeded %d minutes and %d hours in %.1f s", seeded.minutes, seeded.hours, time.perf_counter() - started)
    return settings, seeded


def endpoint_latency(settings, repeat: int) -> list[dict]:
    from fastapi.testclient import TestClient

    from btc_platform.dashboard.app import create_app

    app = create_app(lambda: settings, secured=False)
    client = TestClient(app)
    rows = []
    for name, params in REQUESTS:
        cold, warm, size = [], [], 0
        for _ in range(repeat):
            app.state.cache.clear()
            started = time.perf_counter()
            response = client.get(f"/api/{name}", params=params)
            cold.append(1000 * (time.perf_counter() - started))
            response.raise_for_status()
            size = len(response.content)
        for _ in range(repeat):
            started = time.perf_counter()
            client.get(f"/api/{name}", params=params).raise_for_status()
            warm.append(1000 * (time.perf_counter() - started))
        rows.append({"endpoint": f"/api/{name}?" + "&".join(f"{k}={v}" for k, v in params.items()),
                     "p50": statistics.median(cold), "p95": percentile(cold, 95), "max": max(cold),
                     "cached_p95": percentile(warm, 95), "kb": size / 1024})
    return rows


#: Where the time of a page load goes (ms since navigation start, from the browser's own timings).
PHASES = r"""() => {
  const at = (name) => (performance.getEntriesByName(name)[0] || {}).startTime;
  const js = performance.getEntriesByType('resource').find((r) => /plotly[^/]*\.js$/.test(r.name));
  const api = performance.getEntriesByType('resource').filter((r) => r.name.includes('/api/'));
  const draws = Object.fromEntries(performance.getEntriesByType('measure').filter((m) => m.name.startsWith('btc:draw:'))
    .map((m) => [m.name.replace('btc:', ''), m.duration]));
  return {plotly_downloaded: js && js.responseEnd, plotly_ready: at('btc:plotly-ready'),
          data_received: Math.max(...api.map((r) => r.responseEnd)), drawn: at('btc:drawn'), ...draws};
}"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def page_load(settings, loads: int) -> dict:
    import uvicorn
    from playwright.sync_api import sync_playwright

    from btc_platform.dashboard.app import create_app
    from btc_platform.dashboard.assets import ensure_bundle
    from btc_platform.dashboard.browser import ensure_chromium

    ensure_bundle(settings)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(lambda: settings, secured=False), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/"
    out: dict = {"loads": []}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=ensure_chromium(), args=["--no-sandbox", "--disable-gpu"])
            try:
                for _ in range(loads):
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    started = time.perf_counter()
                    page.goto(url)
                    page.wait_for_selector("#dashboard[data-state='drawn']", timeout=60_000)
                    out["loads"].append(time.perf_counter() - started)
                    out.setdefault("phases", []).append(page.evaluate(PHASES))
                    page.close()
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(url)
                page.wait_for_selector("#dashboard[data-state='drawn']", timeout=60_000)
                for view, value in (("history", "365"), ("market", "168")):
                    started = time.perf_counter()
                    page.select_option(f"select[data-view='{view}']", value)
                    page.wait_for_selector("#dashboard[data-state='drawn']", timeout=60_000)
                    out[f"{view}_{value}"] = time.perf_counter() - started
            finally:
                browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    return out


# ---- with the platform live -------------------------------------------------------------------------
LIVE_TABLES = ("minute_metrics", "hourly_metrics", "future_predictions", "prediction_metrics")


def seed_live(settings) -> str:
    """A year of hourly rows, a week of minute rows, forecasts and registry in the platform's own
    (fresh) storage; refuses when one of those tables exists (it never adds to real data)."""
    import pandas as pd

    from btc_platform.lakehouse import lake
    from btc_platform.testing import dashboard_testdata as td

    existing = sorted(set(LIVE_TABLES) & set(lake.existing_tables(settings)))
    if existing:
        raise SystemExit(f"--seed-live: {', '.join(existing)} already exist under {settings.storage_root}: "
                         "seed only a fresh data directory")
    now = pd.Timestamp.now(tz="UTC")
    minutes = td.minute_metrics(settings, now, 7 * 1440)
    hours, _ = td.hourly_metrics(settings, now, 365 * 24)
    td.forecasts(settings, now)
    td.registry(settings, now)
    return f"seeded {minutes} minute rows and {hours} hourly rows, forecasts and registry under {settings.storage_root}"


def _login(page, url: str, password: str) -> None:
    page.goto(url + "/", wait_until="domcontentloaded")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="BTC dashboard").wait_for(timeout=60_000)


def task_links(url: str, session) -> list[str]:
    """Each table's and restart's task instance as the pipeline endpoint links it, looked up in
    Airflow's REST API (``/api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}``): does it exist?"""
    from urllib.parse import quote

    pipeline = session.get(f"{url}/btc/api/pipeline", params={"days": 1}, timeout=(3, 60)).json()
    linked = [(d["table"], (d.get("produced_by") or {}).get("airflow"), d.get("reason")) for d in pipeline["datasets"]]
    linked += [(f"restart of {e['name']} at {e['time']}", e.get("airflow"), None) for e in pipeline["restarts"][:3]]
    lines = ["links of the pipeline view to the task instance behind each table / restart, checked in /api/v2:"]
    for what, task, reason in linked:
        if not task:
            lines.append(f"  {what}: no task instance ({reason})")
            continue
        path = "/".join(quote(task[k], safe="") for k in ("dag_id", "run_id", "task_id"))
        dag, run, ti = path.split("/")
        mapped = f"/{task['map_index']}" if task.get("map_index") is not None else ""
        found = session.get(f"{url}/api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{ti}{mapped}", timeout=(3, 30))
        state = found.json().get("state") if found.ok else f"HTTP {found.status_code}"
        lines.append(f"  {what}: {task['dag_id']} {task['run_id']} {task['task_id']}{mapped} "
                     f"try {task.get('try_number')} -> {state}")
    return lines


def live(url: str, password: str, repeat: int, loads: int, browser_too: bool, shots: Path | None = None) -> list[str]:
    import requests

    token = requests.post(f"{url}/auth/token", json={"username": "admin", "password": password},
                          timeout=(3, 30)).json()["access_token"]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    lines = [f"load average at the start: {' / '.join(f'{v:.1f}' for v in os.getloadavg())} (1 / 5 / 15 min, "
             f"{os.cpu_count()} cores)",
             f"dashboard endpoints through Airflow's API server at {url}, {repeat} requests each, every one with "
             "a new range (no cache hit) (ms):",
             f"{'endpoint':<32} {'p50':>7} {'p95':>7} {'max':>7} {'cached p95':>11} {'KiB':>7}"]
    from btc_platform.dashboard import data

    defaults_p95: dict[str, float] = {}
    for name, params in REQUESTS:
        cold, warm, size = [], [], 0
        (key, value), *_ = params.items()
        for i in range(repeat):
            started = time.perf_counter()
            response = session.get(f"{url}/btc/api/{name}", params={key: value - 1e-4 * (i + 1)}, timeout=(3, 60))
            cold.append(1000 * (time.perf_counter() - started))
            response.raise_for_status()
            size = len(response.content)
        for _ in range(repeat):
            started = time.perf_counter()
            session.get(f"{url}/btc/api/{name}", params=params, timeout=(3, 60)).raise_for_status()
            warm.append(1000 * (time.perf_counter() - started))
        lines.append(f"{f'/btc/api/{name}?{key}={value}':<32} {statistics.median(cold):7.1f} "
                     f"{percentile(cold, 95):7.1f} {max(cold):7.1f} {percentile(warm, 95):11.1f} {size / 1024:7.0f}")
        if data.DEFAULT_RANGES[name] == (key, value):
            defaults_p95[name] = percentile(cold, 95)
    worst = max(defaults_p95, key=defaults_p95.get)
    lines.append(f"at the page's default ranges, the slowest p95: {worst} {defaults_p95[worst]:.1f} ms (target <= 200 ms)")
    lines += task_links(url, session)
    if not browser_too:
        return lines
    from playwright.sync_api import sync_playwright

    from btc_platform.dashboard.browser import ensure_chromium

    viewport = {"width": 1400, "height": 1000}
    nav, direct, repeat_visit, phases = [], [], [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=ensure_chromium(), args=["--no-sandbox", "--disable-gpu"])
        try:
            context = browser.new_context(viewport=viewport)
            _login(context.new_page(), url, password)
            state = context.storage_state()
            context.close()
            for _ in range(loads):  # a click on the navigation entry, nothing cached
                context = browser.new_context(viewport=viewport, storage_state=state)
                page = context.new_page()
                page.goto(url + "/", wait_until="domcontentloaded")
                entry = page.get_by_role("link", name="BTC dashboard")
                entry.wait_for(timeout=60_000)
                started = time.perf_counter()
                entry.click()
                frame = page.wait_for_selector("iframe[title='BTC dashboard']", timeout=30_000).content_frame()
                frame.wait_for_selector("#dashboard[data-state='drawn']", timeout=60_000)
                nav.append(time.perf_counter() - started)
                if shots and len(nav) == 1:  # the dashboard inside the Airflow UI
                    page.screenshot(path=str(shots / "airflow-nav.png"))
                phases.append(frame.evaluate(PHASES))
                context.close()
            for _ in range(loads):  # /btc/ alone, nothing cached
                context = browser.new_context(viewport=viewport, storage_state=state)
                page = context.new_page()
                started = time.perf_counter()
                page.goto(url + "/btc/")
                page.wait_for_selector("#dashboard[data-state='drawn']", timeout=60_000)
                direct.append(time.perf_counter() - started)
                context.close()
            context = browser.new_context(viewport=viewport, storage_state=state)
            page = context.new_page()
            page.goto(url + "/btc/")
            page.wait_for_selector("#dashboard[data-state='drawn']", timeout=60_000)
            if shots:  # every view, and the task page the pipeline view's first table link opens
                for view in ("market", "history", "forecast", "pipeline"):
                    page.locator(f"section#{view}").screenshot(path=str(shots / f"{view}.png"))
                page.locator("section#pipeline").screenshot(path=str(shots / "live-pipeline.png"))
                href = page.locator("#datasets a[href*='/tasks/']").first.get_attribute("href")
                task_page = context.new_page()
                task_page.goto(url + "/btc/" + href)
                task_page.wait_for_timeout(5_000)
                task_page.screenshot(path=str(shots / "live-task-log.png"))
                task_page.close()
            for _ in range(loads):  # repeat visits: the browser's cache is warm
                started = time.perf_counter()
                page.reload()
                page.wait_for_selector("#dashboard[data-state='drawn']", timeout=60_000)
                repeat_visit.append(time.perf_counter() - started)
            context.close()
        finally:
            browser.close()
    for label, values in (("click on the nav entry -> all charts drawn in the frame", nav),
                          ("/btc/ alone, fresh browser context", direct), ("/btc/ reloaded (repeat visit)", repeat_visit)):
        lines.append(f"page load, {label}, {len(values)} loads: best {min(values):.2f} s, "
                     f"median {statistics.median(values):.2f} s, all " + " ".join(f"{v:.2f}" for v in values))
    median = {k: statistics.median(p[k] for p in phases if p.get(k) is not None) for k in phases[0]
              if any(p.get(k) is not None for p in phases)}
    lines.append("  nav loads, median ms after the frame's navigation start: "
                 + ", ".join(f"{k} {v:.0f}" for k, v in median.items()))
    lines.append(f"load average at the end: {' / '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return lines


def _latency_table(rows: list[dict]) -> list[str]:
    return [f"{'endpoint':<32} {'p50':>7} {'p95':>7} {'max':>7} {'cached p95':>11} {'KiB':>7}",
            *(f"{r['endpoint']:<32} {r['p50']:7.1f} {r['p95']:7.1f} {r['max']:7.1f} {r['cached_p95']:11.1f} "
              f"{r['kb']:7.0f}" for r in rows)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=30, help="requests per endpoint (default 30)")
    parser.add_argument("--page-loads", type=int, default=5, help="page loads in Chromium (default 5)")
    parser.add_argument("--browser", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--live", metavar="URL", help="measure the running platform's Airflow at URL instead")
    parser.add_argument("--screenshots", type=Path, help="with --live: save every view, the dashboard in the Airflow UI and a linked task page here")
    parser.add_argument("--app-on-live-data", action="store_true",
                        help="the app in this process (no Airflow, no browser) on the running platform's tables "
                        "(read only, settings from the BTC_* environment): the server's own time per endpoint, "
                        "to compare two versions of the code on the same data back to back")
    parser.add_argument("--seed-live", action="store_true",
                        help="seed a year of hourly and a week of minute rows into the platform's fresh storage")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("btc_platform").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.app_on_live_data:
        from btc_platform.settings import get_settings

        rows = endpoint_latency(get_settings(), args.repeat)
        lines = [f"load average at the start: {' / '.join(f'{v:.1f}' for v in os.getloadavg())}",
                 f"dashboard app in-process on the live platform's tables, {args.repeat} requests each, cache "
                 "cleared before each (ms):"]
        lines += _latency_table(rows)
        sys.stdout.write("\n".join(lines) + "\n")
        return 0
    if args.seed_live or args.live:
        import json

        from btc_platform.ops.airflow_env import password_file
        from btc_platform.settings import get_settings

        settings = get_settings()
        if args.seed_live:
            sys.stdout.write(seed_live(settings) + "\n")
        if args.live:
            password = json.loads(password_file(settings).read_text())["admin"]
            lines = live(args.live.rstrip("/"), password, args.repeat, args.page_loads, args.browser, args.screenshots)
            sys.stdout.write("\n".join(lines) + "\n")
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        settings, seeded = seed(Path(tmp))
        rows = endpoint_latency(settings, args.repeat)
        lines = [f"dashboard endpoints, {seeded.hours} hourly rows (a year) and {seeded.minutes} minute rows "
                 f"(a week), {args.repeat} requests each, cache cleared before each (ms):"]
        lines += _latency_table(rows)
        if args.browser:
            page = page_load(settings, args.page_loads)
            lines.append(f"page load to all charts drawn (headless Chromium, default ranges), {len(page['loads'])} "
                         f"loads: best {min(page['loads']):.2f} s, median {statistics.median(page['loads']):.2f} s")
            median = {k: statistics.median(p[k] for p in page["phases"] if p.get(k) is not None)
                      for k in page["phases"][0] if any(p.get(k) is not None for p in page["phases"])}
            lines.append("  median ms after navigation start: " + ", ".join(f"{k} {v:.0f}" for k, v in median.items()))
            lines.append(f"redraw after choosing history 365 d: {page['history_365']:.2f} s; "
                         f"market 168 h: {page['market_168']:.2f} s")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
