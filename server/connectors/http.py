"""HTTP for the vendor APIs: HTTPS only, bearer tokens, throttling, clear errors.

Every failure becomes a SyncError whose message names the vendor URL, what went
wrong and what to do, so `warden connectors show`, the dashboard and the log say
the same thing. A `429` or `503` is retried after its `Retry-After` (capped); a
`401` mid-sync fetches a new token once, since tokens expire (Graph's last about
an hour) while a sync of a large fleet may take longer.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from server.connectors.inventory import SyncError

# How long one throttled request may wait in all, and how often it is retried.
MAX_RETRY_WAIT_SECONDS = 120.0
MAX_THROTTLED_RETRIES = 6
TIMEOUT_SECONDS = 30.0
# A token is renewed this long before the expiry its endpoint announced.
TOKEN_MARGIN_SECONDS = 60.0
_SNIPPET_CHARS = 200

Sleep = Callable[[float], None]


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float  # time.monotonic()


TokenSource = Callable[["VendorHttp"], Token]


def check_url(url: str, what: str) -> str:
    """`url` if it is HTTPS, or HTTP to a loopback address (a local stand-in); else SyncError."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url.rstrip("/")
    if parts.scheme == "http" and parts.hostname and _loopback(parts.hostname):
        return url.rstrip("/")
    raise SyncError(f"{what} {url!r} is not an https:// URL; secrets and inventory travel only "
                    "over HTTPS (plain http is allowed to loopback addresses only): fix the "
                    "connector's URL and add it again")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class VendorHttp:
    def __init__(self, vendor: str, token_source: TokenSource, *,
                 session: requests.Session | None = None, sleep: Sleep = time.sleep,
                 timeout: float = TIMEOUT_SECONDS) -> None:
        self.vendor = vendor
        self._token_source = token_source
        self.session = session or requests.Session()
        self._sleep = sleep
        self._timeout = timeout
        self._token: Token | None = None
        self.token_fetches = 0
        self.waited_seconds = 0.0

    # -- tokens ----------------------------------------------------------------

    def post_token(self, url: str, form: Mapping[str, str],
                   auth: tuple[str, str] | None = None) -> Token:
        """POST a token request (form-encoded); the answer's `access_token` (or `token`)."""
        response = self._send("POST", url, data=dict(form), auth=auth)
        if response.status_code in (400, 401, 403):
            raise SyncError(f"{self.vendor} refused the credentials at {url} (HTTP "
                            f"{response.status_code}{_oauth_reason(response)}): check the "
                            "client id and secret, and that the app may read devices")
        body = self._json(response, url)
        value = body.get("access_token") or body.get("token")
        if not isinstance(value, str) or not value:
            raise SyncError(f"{self.vendor}'s token endpoint {url} answered without a token")
        lifetime = body.get("expires_in")
        seconds = float(lifetime) if isinstance(lifetime, (int, float)) else 3600.0
        self.token_fetches += 1
        return Token(value, time.monotonic() + max(seconds - TOKEN_MARGIN_SECONDS, 1.0))

    def _bearer(self, renew: bool = False) -> str:
        if renew or self._token is None or time.monotonic() >= self._token.expires_at:
            self._token = self._token_source(self)
        return self._token.value

    # -- requests --------------------------------------------------------------

    def get_json(self, url: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """GET with the bearer token; a JSON object, or SyncError."""
        renewed = False
        throttled = 0
        while True:
            response = self._send("GET", url, params=params,
                                  headers={"Authorization": f"Bearer {self._bearer()}",
                                           "Accept": "application/json"})
            if response.status_code == 401 and not renewed:
                # The token expired mid-sync (or was revoked): one fresh token, then give up.
                renewed = True
                self._bearer(renew=True)
                continue
            if response.status_code in (429, 503) and throttled < MAX_THROTTLED_RETRIES:
                throttled += 1
                self._wait(response)
                continue
            if response.status_code != 200:
                raise SyncError(self._status_error(url, response))
            return self._json(response, url)

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        try:
            return self.session.request(method, url, timeout=self._timeout,
                                        allow_redirects=False, **kwargs)
        except requests.RequestException as exc:
            host = urlsplit(url).netloc
            raise SyncError(f"cannot reach {self.vendor} at {host} ({type(exc).__name__}): "
                            "check the URL and that this server can connect to it") from exc

    def _wait(self, response: requests.Response) -> None:
        seconds = _retry_after(response.headers.get("Retry-After"))
        budget = MAX_RETRY_WAIT_SECONDS - self.waited_seconds
        if budget <= 0:
            raise SyncError(f"{self.vendor} kept throttling (HTTP {response.status_code}) for "
                            f"{MAX_RETRY_WAIT_SECONDS:.0f} s; the next sync tries again")
        seconds = min(seconds, budget)
        self.waited_seconds += seconds
        self._sleep(seconds)

    def _status_error(self, url: str, response: requests.Response) -> str:
        where = urlsplit(url).path
        if response.status_code == 401:
            return (f"{self.vendor} refused a fresh token at {where} (HTTP 401): the "
                    "credentials no longer work; check them and the app's permissions")
        if response.status_code == 403:
            return (f"{self.vendor} denied {where} (HTTP 403{_oauth_reason(response)}): grant "
                    "the app read access to managed devices")
        if response.status_code in (429, 503):
            return (f"{self.vendor} kept answering HTTP {response.status_code} at {where} "
                    "after retries; the next sync tries again")
        return (f"{self.vendor} answered HTTP {response.status_code} at {where}"
                f"{_oauth_reason(response)}; the sync stopped and changed nothing")

    def _json(self, response: requests.Response, url: str) -> dict[str, Any]:
        try:
            body = response.json()
        except (json.JSONDecodeError, ValueError) as exc:
            raise SyncError(f"{self.vendor} answered malformed JSON at {urlsplit(url).path} "
                            "(HTTP 200); the sync stopped and changed nothing") from exc
        if not isinstance(body, dict):
            raise SyncError(f"{self.vendor} answered JSON that is not an object at "
                            f"{urlsplit(url).path}; the sync stopped and changed nothing")
        return body


def _retry_after(value: str | None) -> float:
    """Seconds to wait: Retry-After is delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return 1.0
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 1.0
    return max(when.timestamp() - time.time(), 0.0)


def _oauth_reason(response: requests.Response) -> str:
    """`: <error>` from an OAuth or Graph error body, cut short; the vendor's text is
    shown to administrators only."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    error = body.get("error")
    if isinstance(error, dict):  # Graph and Google: {"error": {"code", "message"}}
        error = error.get("code") or error.get("message") or error.get("status")
    reason = body.get("error_description") or error or body.get("message")
    return f": {str(reason)[:_SNIPPET_CHARS]}" if reason else ""
