"""The organisation policy: which apps are denied, allowed or alerted on, and how."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from policies.catalog_model import AppDefinition
from policies.vocabulary import Action, Mode, OsName, Verdict


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Scope(_Strict):
    """Which machines the policy applies to; an empty list means "all"."""

    groups: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    os: list[OsName] = Field(default_factory=list)


class RuleException(_Strict):
    """Hosts or groups the rule does not apply to, until a date."""

    hosts: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    expires: dt.date
    reason: str = ""


class Rule(_Strict):
    app: str
    verdict: Verdict
    action: Action = "report"
    alternative: str | None = None
    message: str = ""
    exceptions: list[RuleException] = Field(default_factory=list)


class Policy(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    mode: Mode = "audit"
    scope: Scope = Field(default_factory=Scope)
    # Apps an organisation defines itself, beside the stock catalog.
    apps: list[AppDefinition] = Field(default_factory=list)
    rules: list[Rule] = Field(min_length=1)
