"""Incidents are told once and resolved once, deliveries are rate-limited into digests, retried
with a doubling pause and given up with a trace (btc_platform.monitoring.state)."""

from __future__ import annotations

import logging

from btc_platform.monitoring import state as alert_state
from btc_platform.monitoring.rules import Finding

T0 = 1_800_000_000.0
DOWN = Finding("process_down", "process_down:stream", True, "stream is down: process 7 is not running")
UP = Finding("process_down", "process_down:stream", False, "stream is running (pid 8)")


def test_an_incident_is_told_once_while_it_lasts_and_resolved_once():
    state = alert_state.AlertState()
    first = alert_state.apply(state, [DOWN], T0, ["email", "webhook"])
    again = alert_state.apply(state, [Finding(DOWN.rule, DOWN.key, True, "still down")], T0 + 10, ["email", "webhook"])
    unknown = alert_state.apply(state, [], T0 + 20, ["email", "webhook"])  # the rule could not tell
    assert [m["kind"] for m in first] == ["firing"] and again == [] and unknown == []
    assert state.open["process_down:stream"]["summary"] == "still down"
    resolved = alert_state.apply(state, [UP], T0 + 30, ["email", "webhook"])
    assert [(m["kind"], m["resolution"]) for m in resolved] == [("resolved", "stream is running (pid 8)")]
    assert alert_state.apply(state, [UP], T0 + 40, ["email", "webhook"]) == []
    assert state.open == {} and state.recent[0]["resolved_at"] == T0 + 30
    assert [(e["channel"], e["message"]["kind"]) for e in state.outbox] == [
        ("email", "firing"), ("webhook", "firing"), ("email", "resolved"), ("webhook", "resolved")]


def test_the_hourly_budget_turns_a_storm_into_digests():
    state = alert_state.AlertState()
    alert_state.apply(state, [Finding("r", f"r:{i}", True, f"problem {i}") for i in range(5)], T0, ["email"])
    batch = alert_state.due(state, "email", T0, max_per_hour=1)
    assert len(batch) == 5  # one send carries all five
    subject, body = alert_state.render([e["message"] for e in batch])
    assert subject == "[BTC] 5 alerts: 5 firing, 0 resolved" and body.count("FIRING r:") == 5
    alert_state.delivered(state, "email", batch, T0 + 1)
    alert_state.apply(state, [Finding("r", "r:0", False, "fine")], T0 + 60, ["email"])
    assert alert_state.due(state, "email", T0 + 60, max_per_hour=1) == []  # budget used: it waits
    assert alert_state.budget_free_at(state, "email", 1) == T0 + 1 + 3600
    assert len(alert_state.due(state, "email", T0 + 3602, max_per_hour=1)) == 1


def test_a_new_incident_is_told_at_once_after_a_storm_but_a_flapping_one_waits():
    state = alert_state.AlertState()
    alert_state.apply(state, [Finding("r", "r:0", True, "problem 0")], T0, ["email"])
    alert_state.delivered(state, "email", alert_state.due(state, "email", T0, max_per_hour=1), T0)
    alert_state.apply(state, [Finding("r", "r:0", False, "fine"), DOWN], T0 + 60, ["email"])  # budget used
    urgent = alert_state.due(state, "email", T0 + 60, max_per_hour=1)
    assert [(e["message"]["kind"], e["message"]["key"]) for e in urgent] == [("firing", "process_down:stream")]
    alert_state.delivered(state, "email", urgent, T0 + 61)
    assert [e["message"]["kind"] for e in state.outbox] == ["resolved"]  # waits for the budget
    assert alert_state.next_due_at(state, "email", T0 + 62, 1) == T0 + 61 + 3600  # that send counts too
    alert_state.apply(state, [Finding("r", "r:0", True, "problem 0 again")], T0 + 120, ["email"])  # r:0 flaps
    assert alert_state.due(state, "email", T0 + 120, max_per_hour=1) == []
    assert alert_state.next_due_at(state, "email", T0 + 120, 1) == T0 + 61 + 3600
    state = alert_state.AlertState.from_json(state.to_json())  # the monitor restarts: still held back
    assert alert_state.due(state, "email", T0 + 121, max_per_hour=1) == []
    assert len(alert_state.due(state, "email", T0 + 3662, max_per_hour=1)) == 2  # then one digest


def test_a_failing_channel_backs_off_and_gives_up_with_a_trace(caplog):
    state = alert_state.AlertState()
    alert_state.apply(state, [DOWN], T0, ["webhook"])
    pauses = []
    now = T0
    for _ in range(5):
        entries = alert_state.due(state, "webhook", now, 20)
        assert len(entries) == 1
        pauses.append(alert_state.failed(state, "webhook", entries, now, "ConnectionError: refused", 30.0, 3600.0))
        assert alert_state.due(state, "webhook", now + pauses[-1] - 0.1, 20) == []  # not before its time
        now += pauses[-1]
    assert pauses == [5.0, 10.0, 20.0, 30.0, 30.0]
    with caplog.at_level(logging.ERROR, logger="btc_platform.monitoring.state"):
        alert_state.failed(state, "webhook", state.outbox[:], T0 + 3600, "ConnectionError: refused", 30.0, 3600.0)
    assert state.outbox == [] and state.undelivered[0]["attempts"] == 6
    assert "given up" in caplog.text and "process_down:stream" in caplog.text


def test_the_state_survives_a_restart_of_the_monitor(settings_env):
    settings = settings_env()
    state = alert_state.AlertState()
    alert_state.apply(state, [DOWN], T0, ["email"])
    alert_state.save(settings, state)
    loaded = alert_state.load(settings)
    assert alert_state.apply(loaded, [DOWN], T0 + 10, ["email"]) == []  # still the same incident
    assert loaded.outbox[0]["message"]["key"] == "process_down:stream" and loaded.next_id == 2


def test_the_dashboard_lists_open_alerts_before_the_recently_resolved(settings_env):
    from btc_platform.dashboard.data import health

    settings = settings_env()
    state = alert_state.AlertState()
    alert_state.apply(state, [DOWN], T0, [])
    alert_state.apply(state, [UP], T0 + 60, [])
    alert_state.apply(state, [Finding("disk_free", "disk_free", True, "5.0% free")], T0 + 120, [])
    alert_state.save(settings, state)
    shown = health.alerts(settings)
    assert [(a["key"], a["resolved_at"]) for a in shown["open"]] == [("disk_free", None)]
    assert [(a["key"], a["resolution"], a["resolved_at"]) for a in shown["recent"]] == [
        ("process_down:stream", "stream is running (pid 8)", "2027-01-15T08:01:00Z")]
