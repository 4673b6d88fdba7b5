"""Deliver an alert as a JSON POST with a Slack-compatible `text` field."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import requests

from server.alerts.delivery import DeliveryError, RetryableError
from server.alerts.summary import slack_text

# Receivers that are briefly overloaded say so with these; anything else in 4xx
# means the request itself is wrong and repeating it cannot help.
_RETRYABLE_STATUS = frozenset({408, 425, 429})


class WebhookSender:
    name = "webhook"

    def __init__(
        self,
        url: str,
        session: requests.Session | None = None,
        timeout: float = 10.0,
        app_names: Mapping[str, str] | None = None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"webhook URL {url!r} must be an http:// or https:// URL")
        self.url = url
        self.timeout = timeout
        self._app_names = dict(app_names or {})
        self._now = now
        self._owns_session = session is None
        self._session = session or requests.Session()

    def payload(self, finding: dict[str, Any]) -> dict[str, Any]:
        # A sick sensor (server.api.agent) is no finding: its own key says which it is.
        key = "sensor_alert" if finding.get("kind") == "sensor" else "finding"
        return {"text": slack_text(finding, self._app_names), key: finding}

    def send(self, finding: dict[str, Any]) -> None:
        try:
            # default=str: a finding straight from the database may carry datetimes.
            body = json.dumps(self.payload(finding), default=str).encode()
            response = self._session.post(self.url, data=body, timeout=self.timeout,
                                          headers={"Content-Type": "application/json"})
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise RetryableError(f"webhook {self.url}: {exc.__class__.__name__}: {exc}") from exc
        except requests.RequestException as exc:
            raise DeliveryError(f"webhook {self.url}: {exc}") from exc
        with response:
            status = response.status_code
            if status < 300:
                return
            message = f"webhook {self.url} answered HTTP {status}"
            if status >= 500 or status in _RETRYABLE_STATUS:
                raise RetryableError(message, parse_retry_after(
                    response.headers.get("Retry-After"), self._now()))
            raise DeliveryError(message)

    def close(self) -> None:
        if self._owns_session:
            self._session.close()


def parse_retry_after(value: str | None, now: dt.datetime) -> float | None:
    """Retry-After as seconds from `now`: either delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())
