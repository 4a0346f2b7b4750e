"""Each alert rule raises and resolves on plain observations (btc_platform.monitoring.rules), and
the whole evaluation of a kill -9 of the stream opens one incident and closes it once."""

from __future__ import annotations

from datetime import UTC, datetime

from btc_platform.monitoring import rules
from btc_platform.monitoring.rules import DagRunObs, History, Observation, ProcessObs, QualityObs, RuleConfig

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC).timestamp()
UP = ProcessObs(True, 100, T0 - 3600)


def test_process_down_fires_on_a_dead_process_and_resolves_when_it_runs_again():
    dead = rules.process_down("stream", ProcessObs(False, 100, T0 - 60), T0, T0 - 3600, 300)
    assert dead.firing and dead.key == "process_down:stream" and "process 100 is not running" in dead.summary
    back = rules.process_down("stream", ProcessObs(True, 200, T0), T0 + 30, T0 - 3600, 300)
    assert not back.firing and "pid 200" in back.summary


def test_a_never_started_process_is_down_only_after_the_startup_grace():
    assert not rules.process_down("producer", ProcessObs(None), T0 + 299, T0, 300).firing
    assert rules.process_down("producer", ProcessObs(None), T0 + 301, T0, 300).firing


def test_restarts_fire_above_the_hourly_limit_and_resolve_as_they_age_out():
    times = [T0 - 3000, T0 - 2000, T0 - 1000, T0 - 10]
    assert rules.restarts("producer", times, T0, 3).firing
    assert not rules.restarts("producer", times, T0, 4).firing
    assert not rules.restarts("producer", times, T0 + 700, 3).firing  # the first one is over an hour old


def test_raw_data_stale_while_the_producer_runs_counted_from_the_last_row_or_a_start():
    stale = rules.raw_stale(UP, UP, T0 - 121, T0, 120)
    assert stale.firing and "no new row for 121 s" in stale.summary
    assert not rules.raw_stale(UP, UP, T0 - 60, T0, 120).firing
    fresh_stream = ProcessObs(True, 300, T0 - 30)  # restarted 30 s ago: its rows may not be there yet,
    assert rules.raw_stale(UP, fresh_stream, T0 - 600, T0, 120) is None  # and a restart resolves nothing
    # no row since its start: it is still starting for 2.5 limits (the supervisor's start grace)
    assert rules.raw_stale(UP, fresh_stream, T0 - 600, T0 + 91, 120) is None
    assert rules.raw_stale(UP, fresh_stream, None, T0 + 269, 120) is None
    late = rules.raw_stale(UP, fresh_stream, T0 - 600, T0 + 271, 120)
    assert late.firing and "no new row for 301 s (limit 300 s)" in late.summary
    assert not rules.raw_stale(UP, fresh_stream, T0 + 60, T0 + 91, 120).firing  # a row: resolved
    # rows since the start, then none: the plain limit again
    assert rules.raw_stale(UP, fresh_stream, T0 - 10, T0 + 111, 120).firing
    assert not rules.raw_stale(ProcessObs(None), UP, T0 - 600, T0, 120).firing  # no producer: nothing expected
    assert rules.raw_stale(UP, ProcessObs(False, 1), T0 - 600, T0, 120) is None  # process_down's incident


def test_lag_growing_needs_a_whole_window_above_the_minimum():
    growing = [(T0 - 330, 2000), (T0 - 200, 3000), (T0 - 100, 4000), (T0, 5000)]
    found = rules.lag_growing(growing, T0, 300, 1000)
    assert found.firing and "2000 -> 5000" in found.summary
    assert rules.lag_growing(growing[1:], T0, 300, 1000) is None  # less than a window observed
    shrinking = [*growing, (T0 + 300, 1500)]
    assert not rules.lag_growing(shrinking, T0 + 300, 300, 1000).firing
    caught_up = [*growing, (T0 + 10, 0)]
    assert not rules.lag_growing(caught_up, T0 + 10, 300, 1000).firing


def _consolidation_run(hour: float, state: str) -> DagRunObs:
    return DagRunObs("btc_hourly_consolidation", f"scheduled__{hour}", state, hour + 3600, interval_start=hour)


def test_an_hour_not_consolidated_20_minutes_after_its_end_fires_until_its_run_succeeds():
    first = T0 - 3 * 3600  # 07:00; hours 07, 08 due at 10:00 (+20 min: 07 and 08 ended by 09:20)
    runs = [_consolidation_run(first, "success"), _consolidation_run(first + 3600, "failed")]
    late = rules.consolidation(runs, first, T0, 1200)
    assert late.firing and "08:00 (failed)" in late.summary and "07:00" not in late.summary
    assert "09:00" not in late.summary  # 09:00-10:00 is due at 10:20
    at_1021 = rules.consolidation(runs, first, T0 + 1260, 1200)
    assert "09:00 (no run)" in at_1021.summary
    runs += [_consolidation_run(first + 3600, "success"), _consolidation_run(first + 7200, "success")]
    assert not rules.consolidation(runs, first, T0 + 1260, 1200).firing
    assert rules.consolidation(None, first, T0, 1200) is None  # Airflow not answering: cannot tell


def test_a_failed_dag_run_fires_until_a_later_run_of_that_dag_succeeds():
    failed = DagRunObs("btc_backfill", "manual_1", "failed", T0 - 600, start=T0 - 600, end=T0 - 500)
    ok_other = DagRunObs("btc_retrain", "r1", "success", T0 - 600, start=T0 - 600, end=T0 - 100)
    found = {f.key: f for f in rules.dag_failed([failed, ok_other], T0)}
    assert found["dag_failed:btc_backfill"].firing and not found["dag_failed:btc_retrain"].firing
    later = DagRunObs("btc_backfill", "manual_2", "success", T0 - 100, start=T0 - 100, end=T0 - 50)
    assert not {f.key: f for f in rules.dag_failed([failed, later], T0)}["dag_failed:btc_backfill"].firing


def test_the_supervisor_dag_recovers_when_its_next_run_keeps_running():
    failed = DagRunObs("btc_stream_supervisor", "r1", "failed", T0 - 900, start=T0 - 900, end=T0 - 800)
    running = DagRunObs("btc_stream_supervisor", "r2", "running", T0 - 790, start=T0 - 790)
    assert not rules.dag_failed([failed, running], T0)[0].firing  # running for 790 s
    assert rules.dag_failed([failed, running], T0 - 400)[0].firing  # running for 390 s: not yet


def test_data_quality_fires_on_failed_error_checks_of_the_newest_hour():
    found = rules.data_quality(QualityObs(T0, ("coverage_min", "ohlc_consistent")))
    assert found.firing and "coverage_min, ohlc_consistent" in found.summary
    assert not rules.data_quality(QualityObs(T0 + 3600, ())).firing
    assert rules.data_quality(None) is None


def test_quarantine_rate_over_the_window_counts_across_a_stream_restart():
    counts = [(T0 - 700, "job1", 1000, 0), (T0 - 300, "job1", 1500, 10), (T0 - 100, "job2", 300, 2)]
    found = rules.quarantine_rate(counts, T0, 600, 0.01, 100)
    # in the window: job1 +500 valid +10 quarantined, then job2 from zero: +300 +2 -> 12 / 812
    assert found.firing and "1.5% of 812 records" in found.summary
    calm = [(T0 - 700, "job1", 1000, 0), (T0, "job1", 2000, 5)]
    assert not rules.quarantine_rate(calm, T0, 600, 0.01, 100).firing
    assert rules.quarantine_rate(calm[1:], T0, 600, 0.01, 100) is None  # less than a window observed
    few = [(T0 - 700, "job1", 0, 0), (T0, "job1", 10, 5)]
    assert not rules.quarantine_rate(few, T0, 600, 0.01, 100).firing  # 15 records: not judged


def test_forecast_not_refreshed_for_two_hours():
    assert rules.forecast_stale(True, T0 - 7300, T0, 7200).firing
    assert not rules.forecast_stale(True, T0 - 60, T0, 7200).firing
    assert rules.forecast_stale(False, None, T0, 7200) is None  # no forecast made yet


def test_disk_free_below_ten_percent():
    assert rules.disk_free(0.05, 0.10).firing
    assert not rules.disk_free(0.5, 0.10).firing


def test_spool_not_empty_for_five_minutes_via_the_history():
    cfg = RuleConfig(spool_s=300)
    history = History()
    for at, size in ((T0, 100), (T0 + 200, 300), (T0 + 301, 300)):
        history = rules.remember(history, Observation(at=at, monitor_started_at=T0, spool_bytes=size), cfg)
    assert history.spool_since == T0
    assert rules.spool(history.spool_since, 300, T0 + 301, 300).firing
    history = rules.remember(history, Observation(at=T0 + 310, monitor_started_at=T0, spool_bytes=0), cfg)
    assert history.spool_since is None and not rules.spool(None, 0, T0 + 310, 300).firing


def test_the_history_keeps_one_sample_older_than_the_window():
    cfg = RuleConfig(lag_window_s=300)
    history = History()
    for i in range(12):
        history = rules.remember(history, Observation(at=T0 + 60 * i, monitor_started_at=T0, lag=i), cfg)
    assert [t for t, _ in history.lag] == [T0 + 60 * i for i in range(6, 12)]  # 360 s back: one sample before


def test_evaluate_on_a_healthy_platform_fires_nothing():
    obs = Observation(at=T0, monitor_started_at=T0 - 3600, processes={"producer": UP, "stream": UP},
                      last_rows_at=T0 - 5, lag=10, spool_bytes=0, disk_free_ratio=0.5)  # fmt: skip
    findings = rules.evaluate(obs, rules.remember(History(), obs, RuleConfig()), RuleConfig())
    assert [f.key for f in findings if f.firing] == []
    assert {"process_down:producer", "process_down:stream", "raw_stale", "disk_free", "spool"} <= {f.key for f in findings}


def _tick(history: History, at: float, stream: ProcessObs, deaths=()) -> tuple[History, rules.Finding]:
    obs = Observation(at=at, monitor_started_at=T0 - 3600, processes={"producer": UP, "stream": stream},
                      deaths={"stream": list(deaths)})  # fmt: skip
    history = rules.remember(history, obs, RuleConfig())
    return history, next(f for f in rules.evaluate(obs, history, RuleConfig()) if f.key == "process_down:stream")


def test_a_death_the_supervisor_repaired_between_two_observations_is_told_once_and_resolved_once():
    died = (T0 + 4, "process 100 is not running (died)")  # the supervisor's restart event
    history, first = _tick(History(), T0, UP)
    history, seen = _tick(history, T0 + 10, ProcessObs(True, 200, T0 + 4), [died])  # never observed down
    assert not first.firing and seen.firing and "died (process 100 is not running (died))" in seen.summary
    history, later = _tick(history, T0 + 20, ProcessObs(True, 200, T0 + 4), [died])
    assert not later.firing  # the same event again: resolved, not told twice
    # a death the monitor saw (down at one observation) is not told again when the restart comes
    history, down = _tick(history, T0 + 30, ProcessObs(False, 200, T0 + 4), [died])
    history, back = _tick(history, T0 + 40, ProcessObs(True, 300, T0 + 35),
                          [died, (T0 + 35, "process 200 is not running (died)")])  # fmt: skip
    assert down.firing and not back.firing
    assert History.from_json(history.to_json()) == history  # kept across restarts of the monitor
