"""What to use instead of a banned app, per the active policy."""

from __future__ import annotations

from pydantic import Field

from server.schemas.common import Answer


class InstallHints(Answer):
    linux: str
    macos: str
    windows: str
    ios: str = Field(default="", description="the App Store page, for iPhones and iPads")
    android: str = Field(default="", description="the Google Play page")


class Alternative(Answer):
    id: str
    name: str
    homepage: str
    download_url: str
    install_hints: InstallHints


class Recommendations(Answer):
    app: str
    app_name: str
    verdict: str | None = Field(description="the active policy's rule for the app, if any")
    alternatives: list[Alternative] = Field(description="the rule's own alternative first")
