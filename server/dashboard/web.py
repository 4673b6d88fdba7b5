"""What every dashboard page shares: templates, security headers, HTML errors, URLs.

The dashboard answers people in browsers, so its failures are HTML pages, not
the API's JSON: a missing session redirects to the login page, a role that may
not do something gets a 403 page. Those are raised as the exceptions below and
turned into pages by the handlers `install` registers; they never reach the
API's handlers, which keep answering JSON for `/api/`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Coroutine, Mapping
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlencode

import jinja2
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from markupsafe import Markup

from server.actors import actor_name
from server.dashboard.verify_slots import VerifySlots
from server.store.outcomes import state_of

if TYPE_CHECKING:
    from server.dashboard.sessions import Person, SessionKeeper
    from server.throttling import LoginThrottle

# `frame-ancestors` is what browsers now obey; X-Frame-Options covers older ones.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class LoginRequired(Exception):
    """No valid session: send the browser to the login page, then back here."""


class PageError(Exception):
    """Answer with an HTML error page (403 for a role refusal, 404, 400...)."""

    def __init__(self, status: int, message: str, title: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.title = title or _TITLES.get(status, "Something went wrong")


_TITLES = {400: "Bad request", 403: "Not allowed", 404: "Not found",
           429: "Too many attempts"}


class Dashboard:
    """The dashboard's long-lived parts, built once by `install` and kept on app.state."""

    def __init__(self, templates: jinja2.Environment, sessions: SessionKeeper,
                 throttle: LoginThrottle, verify_slots: VerifySlots | None = None) -> None:
        self.templates = templates
        self.sessions = sessions
        self.throttle = throttle
        self.verify_slots = verify_slots or VerifySlots()

    def page(self, request: Request, template: str, status: int = 200,
             headers: Mapping[str, str] | None = None, **values: Any) -> HTMLResponse:
        person: Person | None = getattr(request.state, "person", None)
        context = {
            "person": person,
            "csrf_token": self.sessions.csrf_token(person) if person else "",
            "path": request.url.path,
            **values,
        }
        body = self.templates.get_template(template).render(context)
        response = HTMLResponse(body, status_code=status, headers=dict(headers or {}))
        secure(response)
        return response


def get_dashboard(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


DashboardDep = Annotated[Dashboard, Depends(get_dashboard)]


def secure(response: Response) -> Response:
    """Security headers, and no caching: every page shows data only its viewer may see."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


class DashboardRoute(APIRoute):
    """Every dashboard route: security headers on the answer, and the renewed session cookie."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            response = await handler(request)
            secure(response)
            renewed = getattr(request.state, "renewed_session", None)
            if renewed is not None:
                request.app.state.dashboard.sessions.set_cookie(request, response, renewed)
            return response

        return handle


def redirect(url: str) -> RedirectResponse:
    # 303: after a POST the browser follows with a GET (post/redirect/get).
    return RedirectResponse(url, status_code=303)


def with_query(path: str, params: Mapping[str, Any]) -> str:
    """`path?k=v…`, leaving out empty values so links stay short and readable."""
    kept = {key: value for key, value in params.items() if value not in (None, "")}
    return f"{path}?{urlencode(kept)}" if kept else path


def problem_text(error: Any) -> str:
    """A FilterError's problems as one sentence for an error page."""
    return "; ".join(f"{name}: {message}" for name, message in error.problems) + "."


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site only (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


# -- templates ------------------------------------------------------------------------------


def build_templates() -> jinja2.Environment:
    directory = resources.files("server") / "templates"
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory)),
        autoescape=True,
        # A misspelt variable is a bug to see in tests, not an empty cell in production.
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = format_time
    env.filters["iso"] = iso_time
    env.filters["ago"] = time_ago
    env.filters["pretty_json"] = pretty_json
    env.filters["thousands"] = thousands
    env.filters["choices"] = choices
    env.filters["duration"] = duration
    env.filters["short_path"] = short_path
    env.filters["when_short"] = format_time_short
    env.filters["person"] = actor_name
    env.globals["with_query"] = with_query
    env.globals["outcome_label"] = outcome_label
    env.globals["now"] = lambda: dt.datetime.now(dt.UTC)
    return env


def outcome_label(result: Mapping[str, Any]) -> str:
    """An action event's result in a timeline: done, failed, or would have (audit mode)."""
    return state_of(result).replace("_", " ")


def format_time(value: dt.datetime | str | None) -> str:
    moment = _as_datetime(value)
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "—"


def format_time_short(value: dt.datetime | str | None) -> str:
    """For table cells, where the column header says the zone."""
    moment = _as_datetime(value)
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "—"


def iso_time(value: dt.datetime | str | None) -> str:
    moment = _as_datetime(value)
    return moment.isoformat(timespec="seconds") if moment else ""


def time_ago(value: dt.datetime | str | None, now: dt.datetime | None = None) -> str:
    moment = _as_datetime(value)
    if moment is None:
        return "never"
    seconds = int(((now or dt.datetime.now(dt.UTC)) - moment).total_seconds())
    if seconds < 60:
        return "just now"
    for size, unit in ((86_400, "day"), (3_600, "hour"), (60, "minute")):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


def _as_datetime(value: dt.datetime | str | None) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)


def duration(seconds: float) -> str:
    """A span in the largest unit that keeps it a whole number: "15 s", "3 min", "2 h"."""
    whole = int(seconds)
    for size, unit in ((86_400, "d"), (3_600, "h"), (60, "min")):
        if whole >= size and whole % size == 0:
            return f"{whole // size} {unit}"
    return f"{whole // 60} min" if whole >= 120 else f"{whole} s"


def short_path(value: object, keep: int = 2) -> str:
    """The last `keep` parts of a path (either slash), for a narrow table cell.

    Any value is shown as its text: evidence stored before ingest checked its types may
    hold a number or a list where a path belongs.
    """
    path = value if isinstance(value, str) else str(value)
    parts = [part for part in path.replace("\\", "/").split("/") if part]
    return path if len(parts) <= keep else "…/" + "/".join(parts[-keep:])


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def choices(values: Any) -> list[tuple[str, str]]:
    """(value, label) pairs for a <select>: `false_positive` reads "false positive"."""
    return [(value, value.replace("_", " ")) for value in values]


def thousands(value: int) -> Markup:
    # A thin space groups digits without suggesting a decimal separator to anyone.
    return Markup(f"{value:,}".replace(",", "&#8239;"))
