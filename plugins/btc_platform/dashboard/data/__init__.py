"""What the dashboard's JSON endpoints return: the platform's tables and status records, read
with filters pushed down, as plain JSON-ready dicts (columnar lists, ISO UTC times).

Every function takes the settings and the range, reads only the rows of that range (delta-rs
through :mod:`btc_platform.lakehouse.lake`: one SQL query per table, the range as its WHERE clause) and
never raises for data that is simply not there yet: a table that does not exist, an empty range
or a column this version of the table does not have gives that part no rows and a ``reason``
string the page shows. Nothing is filled in: a missing value is ``null``.

One module per view: ``minutes`` (market), ``hours`` (history), ``forecasts`` (forecast),
``health`` (pipeline); ``tables`` reads a table and converts its values. This package exports
each view's entry point.
"""

from __future__ import annotations

from btc_platform.dashboard.data.forecasts import forecast
from btc_platform.dashboard.data.health import KAFKA_LAG_TTL_S, kafka_lag, pipeline
from btc_platform.dashboard.data.hours import history
from btc_platform.dashboard.data.minutes import latest_tick, market

__all__ = [
    "DEFAULT_RANGES", "FORECAST_DAYS", "HISTORY_DAYS", "KAFKA_LAG_TTL_S", "MARKET_HOURS", "MAX_DAYS", "MAX_MARKET_HOURS",
    "PIPELINE_DAYS", "forecast", "history", "kafka_lag", "latest_tick", "market", "pipeline",
]  # fmt: skip

#: Choices of the page's range selectors (the endpoints accept any value within the bounds).
MARKET_HOURS = (1, 3, 6, 12, 24, 72, 168)
HISTORY_DAYS = (7, 30, 90, 180, 365)
FORECAST_DAYS = (1, 3, 7, 14)
PIPELINE_DAYS = (1, 3, 7, 30)
#: Each view's range when the page opens: (query parameter, value).
DEFAULT_RANGES = {"market": ("hours", 6), "history": ("days", 30), "forecast": ("days", 3), "pipeline": ("days", 1)}
#: Upper bounds of the ranges (hours for market, days for the others).
MAX_MARKET_HOURS = 24 * 14
MAX_DAYS = 3 * 366
