"""A small typed client for Warden's admin API (docs/api.md), used by the `warden` CLI.

Every failure surfaces as a `WardenClientError` whose str() is one line fit for a
terminal: the server's own error message for API errors, and for a server that
cannot be reached, which URL was tried and how to point the CLI elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import IO, Any, TypeVar
from urllib.parse import quote

import requests
from pydantic import BaseModel, ValidationError

from server.client_errors import (
    ApiError,
    ConnectionFailed,
    WardenClientError,
    api_error,
    json_body,
    reason,
)
from server.schemas.agents import AgentPage, AgentView
from server.schemas.audit import AuditEntry, AuditPage
from server.schemas.common import Page
from server.schemas.connectors import ConnectorPage, ConnectorRecord, SyncCounts
from server.schemas.credentials import (
    NewSecret,
    NewToken,
    SecretPage,
    SecretRecord,
    TokenPage,
    TokenRecord,
    UserPage,
    UserRecord,
)
from server.schemas.exceptions import ExceptionPage, ExceptionView, GrantAnswer, RequestPage
from server.schemas.exceptions import RequestView as ExceptionRequest
from server.schemas.findings import BulkTriageResult, Finding, FindingDetail, FindingPage
from server.schemas.policies import (
    ImpactPreview,
    PolicyDetail,
    PolicyDiff,
    PolicyPage,
    PolicySummary,
)
from server.schemas.reenrollments import Reenrollment, ReenrollmentPage
from server.schemas.violations import Violation, ViolationDetail, ViolationPage

API_PREFIX = "/api/v1/"
# The server's largest page; a bigger `limit` is followed through cursors.
# The errors are defined in server.client_errors; callers import them from here.
__all__ = ["ApiError", "ConnectionFailed", "WardenClient", "WardenClientError"]

MAX_PAGE = 500

AnswerT = TypeVar("AnswerT", bound=BaseModel)
ItemT = TypeVar("ItemT")


class WardenClient:
    def __init__(
        self,
        base_url: str,
        token: str | None,
        session: requests.Session | None = None,
        timeout: float = 10.0,
        ca_bundle: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.ca_bundle = ca_bundle
        self._owns_session = session is None
        self._session = session or requests.Session()

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> WardenClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- policies -----------------------------------------------------------------

    def push_policy(self, text: str) -> PolicySummary:
        """Upload a policy (YAML or JSON text); answers the new version's metadata."""
        return self._object(PolicySummary, "POST", "policies", data=text.encode("utf-8"),
                            headers={"Content-Type": "application/yaml"})

    def list_policies(self) -> list[PolicySummary]:
        return list(self._paged(PolicyPage, "policies"))

    def diff_policies(self, a: int, b: int) -> str:
        return self._object(PolicyDiff, "GET", "policies/diff", params={"from": a, "to": b}).diff

    def get_policy(self, number: int) -> PolicyDetail:
        return self._object(PolicyDetail, "GET", f"policies/{number}")

    def activate_policy(self, number: int) -> PolicySummary:
        return self._object(PolicySummary, "POST", f"policies/{number}/activate")

    def rollback_policy(self) -> PolicySummary:
        return self._object(PolicySummary, "POST", "policies/rollback")

    def policy_impact(self, number: int) -> ImpactPreview:
        return self._object(ImpactPreview, "GET", f"policies/{number}/impact")

    # --- findings -----------------------------------------------------------------

    def iter_findings(self, page_size: int = 100, **filters: str | None) -> Iterator[Finding]:
        """Every finding matching the filters, page after page (cursors followed)."""
        return self._paged(FindingPage, "findings",
                           {**filters, "limit": min(page_size, MAX_PAGE)})

    def list_findings(self, limit: int | None = None, **filters: str | None) -> list[Finding]:
        """At most `limit` findings (all of them when None)."""
        if limit is not None and limit < 1:
            return []
        page_size = MAX_PAGE if limit is None else min(limit, MAX_PAGE)
        found: list[Finding] = []
        for finding in self.iter_findings(page_size, **filters):
            found.append(finding)
            if len(found) == limit:
                break  # before the generator fetches a page nobody will read
        return found

    def get_finding(self, finding_id: str) -> FindingDetail:
        return self._object(FindingDetail, "GET", f"findings/{_segment(finding_id)}")

    def triage_finding(self, finding_id: str, state: str, comment: str = "") -> Finding:
        return self._object(Finding, "POST", f"findings/{_segment(finding_id)}/triage",
                            json={"state": state, "comment": comment})

    def triage_findings(self, finding_ids: list[int], state: str,
                        comment: str = "") -> list[Finding]:
        """Several findings to `state` at once: all, or (an id unknown: ApiError 404) none."""
        return self._object(BulkTriageResult, "POST", "findings/triage",
                            json={"ids": finding_ids, "state": state,
                                  "comment": comment}).items

    def export_findings(self, format: str, **filters: str | None) -> bytes:
        with self._request("GET", "findings/export",
                           params={**filters, "format": format}) as response:
            return response.content

    def stream_export(self, format: str, out: IO[bytes], *, what: str | None = None,
                      **filters: str | None) -> int:
        """Write the export of `what` (findings, the default, or violations) to `out` as it
        arrives; answers the number of bytes written."""
        return self.stream_download(f"{what or 'findings'}/export", out,
                                    **{**filters, "format": format})

    def stream_download(self, path: str, out: IO[bytes], **params: str | None) -> int:
        """Write the answer to GET `path` to `out` as it arrives; answers the bytes written."""
        written = 0
        with self._request("GET", path, params=params, stream=True) as response:
            try:
                for chunk in response.iter_content(chunk_size=64 * 1024):
                    out.write(chunk)
                    written += len(chunk)
            except requests.RequestException as exc:
                raise ConnectionFailed(f"the download from {self.base_url} broke off after "
                                       f"{written} bytes: {exc}") from exc
        return written

    # --- violations ---------------------------------------------------------------

    def list_violations(self, limit: int | None = None,
                        **filters: str | None) -> list[Violation]:
        """At most `limit` violations (all of them when None), cursors followed."""
        page_size = MAX_PAGE if limit is None else min(max(limit, 1), MAX_PAGE)
        found: list[Violation] = []
        for item in self._paged(ViolationPage, "violations", {**filters, "limit": page_size}):
            found.append(item)
            if len(found) == limit:
                break
        return found

    def get_violation(self, violation_id: str) -> ViolationDetail:
        return self._object(ViolationDetail, "GET", f"violations/{_segment(violation_id)}")

    def triage_violation(self, violation_id: str, state: str, comment: str = "") -> Violation:
        return self._object(Violation, "POST", f"violations/{_segment(violation_id)}/triage",
                            json={"state": state, "comment": comment})

    # --- agents, secrets, tokens, audit -------------------------------------------

    def list_agents(self, host: str | None = None) -> list[AgentView]:
        """Every agent, or those with hostname `host` (ignoring case; `desk-*` a prefix)."""
        return list(self._paged(AgentPage, "agents", {"host": host} if host else None))

    def revoke_agent(self, agent_id: str) -> AgentView:
        return self._object(AgentView, "POST", f"agents/{_segment(agent_id)}/revoke")

    def readmit_agent(self, agent_id: str) -> AgentView:
        return self._object(AgentView, "POST", f"agents/{_segment(agent_id)}/readmit")

    def get_agent(self, agent_id: str) -> AgentView:
        return self._object(AgentView, "GET", f"agents/{_segment(agent_id)}")

    def list_reenrollments(self) -> list[Reenrollment]:
        return list(self._paged(ReenrollmentPage, "reenrollments"))

    def approve_reenrollment(self, agent_id: str, public_key: str | None) -> Reenrollment:
        """Approve the held request if it still carries `public_key` (the key reviewed)."""
        return self._object(Reenrollment, "POST",
                            f"agents/{_segment(agent_id)}/reenrollment/approve",
                            json={"public_key": public_key})

    def reject_reenrollment(self, agent_id: str) -> Reenrollment:
        return self._object(Reenrollment, "POST",
                            f"agents/{_segment(agent_id)}/reenrollment/reject")

    def grant_exception(self, **body: str | None) -> GrantAnswer:
        return self._object(GrantAnswer, "POST", "exceptions", json=body)

    def list_exceptions(self, **filters: str | None) -> list[ExceptionView]:
        query = {name: value for name, value in filters.items() if value is not None}
        return list(self._paged(ExceptionPage, "exceptions", query))

    def revoke_exception(self, exception_id: str) -> ExceptionView:
        return self._object(ExceptionView, "POST", f"exceptions/{_segment(exception_id)}/revoke")

    def list_exception_requests(self, status: str | None) -> list[ExceptionRequest]:
        return list(self._paged(RequestPage, "exception-requests",
                                {"status": status} if status else {}))

    def decide_exception_request(self, request_id: str, decision: str,
                                 **body: object) -> ExceptionRequest:
        """`decision`: approve (body: days, comment) or deny (body: comment)."""
        return self._object(ExceptionRequest, "POST",
                            f"exception-requests/{_segment(request_id)}/{decision}", json=body)

    def create_secret(self, group: str | None = None) -> NewSecret:
        return self._object(NewSecret, "POST", "secrets", json={"group": group})

    def list_secrets(self) -> list[SecretRecord]:
        return list(self._paged(SecretPage, "secrets"))

    def revoke_secret(self, secret_id: str) -> SecretRecord:
        return self._object(SecretRecord, "POST", f"secrets/{_segment(secret_id)}/revoke")

    def create_token(self, name: str, role: str) -> NewToken:
        return self._object(NewToken, "POST", "tokens", json={"name": name, "role": role})

    def list_tokens(self) -> list[TokenRecord]:
        return list(self._paged(TokenPage, "tokens"))

    def revoke_token(self, token_id: str) -> TokenRecord:
        return self._object(TokenRecord, "POST", f"tokens/{_segment(token_id)}/revoke")

    def add_connector(self, body: dict[str, Any]) -> ConnectorRecord:
        return self._object(ConnectorRecord, "POST", "connectors", json=body)

    def list_connectors(self) -> list[ConnectorRecord]:
        return list(self._paged(ConnectorPage, "connectors"))

    def get_connector(self, name: str) -> ConnectorRecord:
        return self._object(ConnectorRecord, "GET", f"connectors/{_segment(name)}")

    def remove_connector(self, name: str) -> ConnectorRecord:
        return self._object(ConnectorRecord, "DELETE", f"connectors/{_segment(name)}")

    def sync_connector(self, name: str) -> SyncCounts:
        return self._object(SyncCounts, "POST", f"connectors/{_segment(name)}/sync")

    def create_user(self, username: str, password: str, role: str) -> UserRecord:
        return self._object(UserRecord, "POST", "users",
                            json={"username": username, "password": password, "role": role})

    def list_users(self) -> list[UserRecord]:
        return list(self._paged(UserPage, "users"))

    def set_user_disabled(self, user_id: int, disabled: bool) -> UserRecord:
        verb = "disable" if disabled else "enable"
        return self._object(UserRecord, "POST", f"users/{user_id}/{verb}")

    def audit(self) -> list[AuditEntry]:
        return list(self._paged(AuditPage, "audit"))

    # --- plumbing -----------------------------------------------------------------

    def _paged(self, page_model: type[Page[ItemT]], path: str,
               params: Mapping[str, Any] | None = None) -> Iterator[ItemT]:
        query = dict(params or {})
        seen: set[str] = set()
        while True:
            page = self._object(page_model, "GET", path, params=query)
            yield from page.items
            cursor = page.next_cursor
            if not cursor:
                return
            if cursor in seen:
                raise WardenClientError(f"the server repeated page cursor {cursor!r}")
            seen.add(cursor)
            query["cursor"] = cursor

    def _object(self, model: type[AnswerT], method: str, path: str, **kwargs: Any) -> AnswerT:
        """The answer parsed into `model`, the same model the server answers with."""
        with self._request(method, path, **kwargs) as response:
            body = json_body(response)
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(part) for part in error['loc']) or 'body'}: "
                                 f"{error['msg']}" for error in exc.errors()[:3])
            raise WardenClientError(f"the server's answer to {method} {API_PREFIX}{path} is "
                                    f"not what the API documents ({problems}); is the CLI "
                                    "the server's version?") from exc

    def _request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None, stream: bool = False,
                 **kwargs: Any) -> requests.Response:
        url = f"{self.base_url}{API_PREFIX}{path}"
        all_headers = {"Accept": "application/json", **(headers or {})}
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        query = {key: value for key, value in (params or {}).items() if value is not None}
        try:
            response = self._session.request(
                method, url, params=query, headers=all_headers, timeout=self.timeout,
                verify=self.ca_bundle or True, stream=stream, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise ConnectionFailed(
                f"TLS with {self.base_url} failed ({reason(exc)}); if the server uses a private "
                "CA, pass --ca-bundle FILE or set WARDEN_CA_BUNDLE") from exc
        except requests.ConnectionError as exc:
            raise ConnectionFailed(
                f"cannot reach the Warden server at {self.base_url} ({reason(exc)}). Is it "
                "running (`warden server run`)? If it listens elsewhere, pass --url or set "
                "WARDEN_URL") from exc
        except requests.Timeout as exc:
            raise ConnectionFailed(f"the Warden server at {self.base_url} did not answer "
                                   f"within {self.timeout:g}s") from exc
        except requests.RequestException as exc:
            raise WardenClientError(f"{method} {url}: {exc}") from exc
        if response.status_code >= 400:
            with response:
                raise api_error(response)
        return response


def _segment(value: str) -> str:
    # An id is one path segment: never let "../x" or "a/b" reach another route.
    return quote(str(value), safe="")
