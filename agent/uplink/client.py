"""The agent's side of the agent API (docs/api.md): enroll, check in, fetch policy, upload.

A thin layer over one `requests.Session` (injected, so tests and the service
share one pool). It turns HTTP outcomes into a few exceptions the service
loop acts on: `RetryLater` (back off), `Unauthorized` (re-enroll), `ReenrollmentPending`
(wait for an administrator), `ClientError`.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from policies.wire import CheckinRequest, CheckinResponse, EnrollRequest, EventsResponse

API = "/api/v1/agent"


class ClientError(Exception):
    """The server refused a request for a reason retrying will not fix."""


class Unauthorized(ClientError):
    """The agent token (or enrollment secret) is not accepted any more."""


class ReenrollmentPending(ClientError):
    """The server knows this machine under another key (or none): enrolling again waits
    for an administrator's approval. The agent's current token, if any, still works."""


class Refused(ClientError):
    """The server found the request itself invalid (422): sending it again cannot help."""


class RetryLater(Exception):
    """The server is unreachable or busy; try again after `seconds` (None: use backoff)."""

    def __init__(self, message: str, seconds: float | None = None) -> None:
        super().__init__(message)
        self.seconds = seconds


@dataclass(frozen=True)
class Enrollment:
    agent_id: str
    agent_token: str
    policy_public_key: bytes
    group: str | None
    # The server's signed key rotations, oldest first; not verified yet (agent.uplink.trust does).
    key_rotations: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class SignedBundle:
    """`GET policy` as received: nothing here is verified yet (agent.state does that)."""

    bundle: dict[str, Any]
    signature: bytes
    etag: str
    # The signed activation (serial, time, version); None from a server before serials.
    activation: dict[str, Any] | None = None
    activation_signature: bytes | None = None
    # Present once the server's signing key was rotated: how to get from ours to its key.
    key_rotations: tuple[dict[str, Any], ...] = ()


class AgentClient:
    def __init__(
        self,
        server_url: str,
        session: requests.Session | None = None,
        timeout: float = 15.0,
        ca_bundle: Path | None = None,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self.session = session or requests.Session()
        self.timeout = timeout
        # A pinned CA bundle replaces the system store for this server only.
        self.verify: bool | str = str(ca_bundle) if ca_bundle else True

    def close(self) -> None:
        self.session.close()

    def enroll(self, secret: str, request: EnrollRequest) -> Enrollment:
        response = self._call("POST", "/enroll", secret,
                              json_body=request.model_dump(mode="json", exclude_none=True),
                              expect=(200, 201))
        with _warden_answer(response):
            # Read by hand, not through EnrollResponse: the key rotations are kept exactly as
            # sent, so agent.uplink.trust can refuse a malformed one with its reason.
            body = response.json()
            return Enrollment(
                agent_id=body["agent_id"],
                agent_token=body["agent_token"],
                policy_public_key=base64.b64decode(body["policy_public_key"]),
                group=body.get("group"),
                key_rotations=_rotations(body),
            )

    def checkin(self, token: str, request: CheckinRequest) -> CheckinResponse:
        response = self._call("POST", "/checkin", token,
                              json_body=request.model_dump(mode="json"))
        with _warden_answer(response):
            return CheckinResponse.model_validate(response.json())

    def fetch_policy(self, token: str, etag: str | None) -> SignedBundle | None:
        """The signed bundle, or None when the server says ours is current (304)."""
        headers = {"If-None-Match": f'"{etag}"'} if etag else {}
        response = self._call("GET", "/policy", token, headers=headers, expect=(200, 304))
        if response.status_code == 304:
            return None
        with _warden_answer(response):
            body = response.json()
            activation_signature = body.get("activation_signature")
            return SignedBundle(
                bundle=body["bundle"], signature=base64.b64decode(body["signature"]),
                etag=response.headers.get("ETag", "").strip('"'),
                activation=body.get("activation"),
                activation_signature=base64.b64decode(activation_signature)
                if activation_signature is not None else None,
                key_rotations=_rotations(body))

    def post_events(self, token: str, events: list[dict[str, Any]]) -> set[str]:
        """Upload one batch gzip-compressed; return the ids the server committed.

        The events are policies.wire.AgentEvent dumps, as the daemon spooled them."""
        raw = json.dumps({"events": events}, separators=(",", ":")).encode()
        response = self._call(
            "POST", "/events", token, data=gzip.compress(raw, compresslevel=6),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        with _warden_answer(response):
            answer = EventsResponse.model_validate(response.json())
            # Duplicates were committed by an earlier try: they are acknowledged too.
            return set(answer.accepted) | set(answer.duplicates)

    def _call(
        self,
        method: str,
        path: str,
        token: str,
        json_body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        expect: tuple[int, ...] = (200,),
    ) -> requests.Response:
        url = f"{self.server_url}{API}{path}"
        all_headers = {"Authorization": f"Bearer {token}", **(headers or {})}
        try:
            response = self.session.request(method, url, json=json_body, data=data,
                                            headers=all_headers, timeout=self.timeout,
                                            verify=self.verify)
        except requests.exceptions.SSLError as exc:
            raise ClientError(f"TLS verification of {self.server_url} failed: {exc}") from exc
        except requests.RequestException as exc:
            raise RetryLater(f"{method} {url}: {exc.__class__.__name__}") from exc
        if response.status_code in expect:
            return response
        message = _error_message(response)
        if response.status_code in (429, 502, 503, 504) or response.status_code >= 500:
            raise RetryLater(f"{method} {url}: {response.status_code} {message}",
                             _retry_after(response))
        if response.status_code == 401:
            raise Unauthorized(f"{method} {url}: {message}")
        if response.status_code == 409 and _error_code(response) == "reenrollment_pending":
            raise ReenrollmentPending(message)
        if response.status_code == 422:
            raise Refused(f"{method} {url}: 422 {message}")
        raise ClientError(f"{method} {url}: {response.status_code} {message}")


@contextlib.contextmanager
def _warden_answer(response: requests.Response) -> Iterator[None]:
    """A success that is not Warden's JSON (a captive portal's page, a misrouted proxy):
    treated like an unreachable server, so the caller backs off and tries again."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RetryLater(f"{response.request.method} {response.url}: {response.status_code} "
                         f"but not Warden's answer ({exc.__class__.__name__}: {exc})") from exc


def _rotations(body: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    rotations = body.get("key_rotations") or []
    # Kept as sent, whatever is inside: agent.uplink.trust refuses a malformed one with a reason.
    return tuple(rotations) if isinstance(rotations, list) else (rotations,)


def _error_code(response: requests.Response) -> str | None:
    try:
        code = response.json().get("error", {}).get("code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, str) else None


def _error_message(response: requests.Response) -> str:
    try:
        error = response.json().get("error", {})
        return str(error.get("message", response.reason))
    except (ValueError, AttributeError):
        return str(response.reason)


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
