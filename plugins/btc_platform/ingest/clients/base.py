"""What every exchange REST client shares: an :class:`~btc_platform.ingest.http.HttpClient` built
from the settings, and the check that a payload has the JSON shape an endpoint promises.

A client names itself (``name``: its log lines, its HTTP state file, its error messages) and the
setting of its base URL, and builds itself from an ``HttpClient`` and the settings
(:meth:`RestClient.from_http`); it may add request headers (an API key) with :meth:`headers`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar, Self

import requests

from btc_platform.ingest.http import HttpClient, InvalidResponse
from btc_platform.settings import Settings

_JSON_NAMES = {dict: "object", list: "array"}


class RestClient:
    """Base of the exchange clients (transport only: they return the exchanges' payloads)."""

    #: the client's name in log lines, error messages and its HTTP state file (``http_<name>.json``)
    name: ClassVar[str]
    #: the setting that holds the client's base URL
    base_url_setting: ClassVar[str]

    def __init__(self, http: HttpClient):
        self.http = http

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] = time.sleep,
        **http_kwargs,
    ) -> Self:
        """The client for ``settings``; ``session``, ``clock``, ``sleep`` and ``http_kwargs`` go to its
        ``HttpClient`` (tests pass a local server's session and a fake clock)."""
        http = HttpClient(
            getattr(settings, cls.base_url_setting), name=cls.name,
            connect_timeout_s=settings.http_connect_timeout_s, read_timeout_s=settings.http_read_timeout_s,
            max_retries=settings.http_max_retries, backoff_base_s=settings.http_backoff_base_s,
            backoff_max_s=settings.http_backoff_max_s,
            state_path=http_kwargs.pop("state_path", settings.status_dir / f"http_{cls.name}.json"),
            headers=cls.headers(settings), session=session, clock=clock, sleep=sleep, **http_kwargs,
        )  # fmt: skip
        return cls.from_http(http, settings)

    @classmethod
    def from_http(cls, http: HttpClient, settings: Settings) -> Self:
        """The client over ``http``, with its own settings."""
        raise NotImplementedError

    @classmethod
    def headers(cls, settings: Settings) -> dict[str, str]:
        """Headers sent with every request (none by default)."""
        return {}

    def _expect(self, payload: Any, kind: type, what: str, *, endpoint: str) -> Any:
        """``payload`` if it is a JSON ``kind`` (``dict`` or ``list``), else :class:`InvalidResponse`."""
        if not isinstance(payload, kind):
            raise InvalidResponse(f"{self.name} {what}: expected a JSON {_JSON_NAMES[kind]}, got "
                                  f"{type(payload).__name__}", endpoint=endpoint)  # fmt: skip
        return payload
