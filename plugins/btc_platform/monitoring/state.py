"""Alert state: open incidents, recently resolved ones, the outbox of each channel, and the
history of the windowed rules; persisted as one JSON record under ``<data_dir>/monitoring/``.

:func:`apply` turns the rules' findings into incidents: a key that starts firing opens one and
queues one "firing" message per channel; while it keeps firing only its summary is updated (no
message); when its rule says it is fine again the incident closes with one "resolved" message.
Unknown (no finding) changes nothing. So an incident is told once and its end once, whatever the
number of evaluations in between.

Delivery (``btc_platform.monitoring.channels``) takes a channel's due messages with
:func:`due`: at most ``max_per_hour`` sends per channel and hour (what is due beyond that waits
and goes out with the next send, several messages in one digest), except the first "firing"
message of an incident key in the hour, which never waits for the budget (a process death after a
storm of other alerts is told at once; a flapping key is still held back), and reports back with
:func:`delivered` or :func:`failed` (next attempt after a doubling pause up to ``retry_max_s``;
given up after ``give_up_s``, logged as an error and listed in ``undelivered``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from btc_platform.monitoring.rules import Finding, History, iso
from btc_platform.settings import Settings

log = logging.getLogger(__name__)

#: Resolved incidents and given-up deliveries kept for the dashboard.
RECENT = 50
FIRST_RETRY_S = 5.0
HOUR_S = 3600.0


def state_path(settings: Settings) -> Path:
    return settings.data_dir / "monitoring" / "alerts.json"


@dataclass
class AlertState:
    open: dict[str, dict[str, Any]] = field(default_factory=dict)
    recent: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    sent: dict[str, list[float]] = field(default_factory=dict)
    undelivered: list[dict[str, Any]] = field(default_factory=list)
    history: History = field(default_factory=History)
    next_id: int = 1
    #: per channel, when a "firing" message of each incident key was last delivered
    fired: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"open": self.open, "recent": self.recent, "outbox": self.outbox, "sent": self.sent,
                "undelivered": self.undelivered, "history": self.history.to_json(), "next_id": self.next_id,
                "fired": self.fired}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> AlertState:
        data = data or {}
        return cls(open=dict(data.get("open") or {}), recent=list(data.get("recent") or []),
                   outbox=list(data.get("outbox") or []), sent={k: list(v) for k, v in (data.get("sent") or {}).items()},
                   undelivered=list(data.get("undelivered") or []), history=History.from_json(data.get("history")),
                   next_id=int(data.get("next_id") or 1),
                   fired={k: dict(v) for k, v in (data.get("fired") or {}).items()})  # fmt: skip


def load(settings: Settings) -> AlertState:
    from btc_platform.status import read_status

    return AlertState.from_json(read_status(state_path(settings)))


def save(settings: Settings, state: AlertState) -> None:
    from btc_platform.status import write_status

    write_status(state_path(settings), state.to_json())


def _queue(state: AlertState, message: dict[str, Any], channels: Iterable[str], now: float) -> None:
    for channel in channels:
        state.outbox.append({"channel": channel, "message": message, "created": now, "attempts": 0, "next_at": now,
                             "last_error": None})  # fmt: skip


def apply(state: AlertState, findings: Iterable[Finding], now: float, channels: Iterable[str]) -> list[dict[str, Any]]:
    """Open, update and close incidents from ``findings``; queue one message per channel for
    each incident opened or closed; return those messages."""
    channels = list(channels)
    messages = []
    for finding in findings:
        incident = state.open.get(finding.key)
        if finding.firing and incident is None:
            incident = {"id": state.next_id, "key": finding.key, "rule": finding.rule, "opened_at": now,
                        "summary": finding.summary, "updated_at": now}  # fmt: skip
            state.next_id += 1
            state.open[finding.key] = incident
            message = {"kind": "firing", **incident, "at": now}
        elif finding.firing:
            incident.update(summary=finding.summary, updated_at=now)
            continue
        elif incident is not None:
            del state.open[finding.key]
            closed = {**incident, "resolved_at": now, "resolution": finding.summary}
            state.recent = [closed, *state.recent][:RECENT]
            message = {"kind": "resolved", **closed, "at": now}
        else:
            continue
        log.warning("alert %s %s: %s", message["kind"], finding.key, finding.summary)
        messages.append(message)
        _queue(state, message, channels, now)
    return messages


# ---- delivery bookkeeping -------------------------------------------------------------------------
def _first_firing(state: AlertState, channel: str, entry: dict[str, Any], now: float) -> bool:
    """A "firing" message whose key had no firing delivered on ``channel`` in the last hour."""
    message = entry["message"]
    told = state.fired.get(channel, {}).get(message["key"])
    return message["kind"] == "firing" and (told is None or now - told >= HOUR_S)


def due(state: AlertState, channel: str, now: float, max_per_hour: int) -> list[dict[str, Any]]:
    """The channel's entries to send now (one send), or none when nothing is due. An entry that
    is due takes the others of the channel along (one digest); when the hourly budget is used,
    only the due first firings of their key in the hour go."""
    mine = [e for e in state.outbox if e["channel"] == channel]
    if not mine or min(e["next_at"] for e in mine) > now:
        return []
    state.sent[channel] = [t for t in state.sent.get(channel, []) if now - t < HOUR_S]
    if len(state.sent[channel]) >= max_per_hour:
        return [e for e in mine if e["next_at"] <= now and _first_firing(state, channel, e, now)]
    return mine


def budget_free_at(state: AlertState, channel: str, max_per_hour: int) -> float | None:
    """When the channel may send again (None: now)."""
    sent = sorted(state.sent.get(channel, []))
    return sent[-max_per_hour] + HOUR_S if len(sent) >= max_per_hour else None


def next_due_at(state: AlertState, channel: str, now: float, max_per_hour: int) -> float | None:
    """When the channel has something to send next (None: its outbox is empty)."""
    mine = [e for e in state.outbox if e["channel"] == channel]
    if not mine:
        return None
    earliest = min(e["next_at"] for e in mine)
    free = budget_free_at(state, channel, max_per_hour)
    if free is None:
        return earliest
    first = [e["next_at"] for e in mine if _first_firing(state, channel, e, now)]
    return min([max(earliest, free), *first])


def delivered(state: AlertState, channel: str, entries: list[dict[str, Any]], now: float) -> None:
    ids = {id(e) for e in entries}
    state.outbox = [e for e in state.outbox if id(e) not in ids]
    state.sent.setdefault(channel, []).append(now)
    fired = state.fired.setdefault(channel, {})
    for entry in entries:
        if entry["message"]["kind"] == "firing":
            fired[entry["message"]["key"]] = now
    for key in [k for k, t in fired.items() if now - t >= HOUR_S]:
        del fired[key]


def failed(state: AlertState, channel: str, entries: list[dict[str, Any]], now: float, error: str,
           retry_max_s: float, give_up_s: float) -> float:  # fmt: skip
    """Schedule the next attempt of ``entries`` (doubling pause); entries older than
    ``give_up_s`` are dropped from the outbox into ``undelivered`` with an error log. Returns
    the pause."""
    pause = 0.0
    for entry in list(entries):
        entry["attempts"] += 1
        entry["last_error"] = error
        if now - entry["created"] >= give_up_s:
            state.outbox.remove(entry)
            state.undelivered = [{**entry, "given_up_at": now}, *state.undelivered][:RECENT]
            log.error("alert %s %s: not delivered by %s after %d attempts since %s (%s): given up",
                      entry["message"]["kind"], entry["message"]["key"], channel, entry["attempts"],
                      iso(entry["created"]), error)  # fmt: skip
            continue
        pause = min(retry_max_s, FIRST_RETRY_S * 2 ** (entry["attempts"] - 1))
        entry["next_at"] = now + pause
    return pause


def render(messages: list[dict[str, Any]]) -> tuple[str, str]:
    """Subject and plain-text body of one send (one message, or a digest of several)."""

    def line(m: dict[str, Any]) -> str:
        if m["kind"] == "firing":
            return f"FIRING {m['key']}: {m['summary']} (since {iso(m['opened_at'])})"
        return (f"RESOLVED {m['key']}: {m['resolution']} (was: {m['summary']}; open "
                f"{iso(m['opened_at'])} .. {iso(m['resolved_at'])})")  # fmt: skip

    if len(messages) == 1:
        m = messages[0]
        subject = f"[BTC {m['kind'].upper()}] {m['key']}: {m['summary'] if m['kind'] == 'firing' else m['resolution']}"
        return subject[:200], line(m)
    kinds = {k: sum(1 for m in messages if m["kind"] == k) for k in ("firing", "resolved")}
    subject = f"[BTC] {len(messages)} alerts: {kinds['firing']} firing, {kinds['resolved']} resolved"
    return subject, "\n".join(line(m) for m in messages)
