"""ServerSettings: every knob of the server, from `WARDEN_*` variables and a TOML file.

Built once in `main()` (or a test) and passed down; nothing here runs at import.
Precedence, highest first: values given in code (the CLI's flags), `WARDEN_*`
environment variables, the config file (`WARDEN_CONFIG_FILE`, else
`<data_dir>/warden.toml` when it exists), then the defaults below.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from server.siem.destinations import SiemDestination, unique_names

CONFIG_FILE_NAME = "warden.toml"
DATABASE_FILE_NAME = "warden.db"
SIGNING_KEY_FILE_NAME = "policy-signing.key"
MIB = 1024 * 1024
MIN_METRICS_TOKEN = 16


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WARDEN_", extra="forbid")

    data_dir: Path
    # None: the SQLite file `<data_dir>/warden.db`. Set a PostgreSQL URL to scale out.
    database_url: str | None = None
    config_file: Path | None = None
    environment: Literal["production", "development"] = "production"

    host: str = "127.0.0.1"
    port: int = Field(default=8700, ge=0, le=65535)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # The explicit escape hatch for plain HTTP beyond loopback (e.g. behind a TLS proxy).
    allow_insecure: bool = False
    # The load balancers or reverse proxies whose X-Forwarded-For / X-Forwarded-Proto the
    # server believes (addresses or networks, e.g. ["10.0.0.5", "10.1.0.0/24"]); from any
    # other peer those headers are ignored. Rate limits, enrollment records and logs then
    # see the real client. Empty: no proxy is trusted, the peer is the client.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Send Strict-Transport-Security on every answer. Always on when serving TLS itself;
    # set it behind a TLS-terminating proxy that does not add the header.
    hsts: bool = False

    # When set, GET /metrics wants `Authorization: Bearer <this>`; unset, it is open (and
    # the server warns at start when it listens beyond loopback).
    metrics_token: SecretStr | None = None

    # Server processes `warden server run` starts (one port, connections spread among
    # them). More than one needs PostgreSQL: see `_one_process_on_sqlite`.
    workers: int = Field(default=1, ge=1, le=64)

    max_body_bytes: int = Field(default=MIB, ge=1024)
    max_events_per_batch: int = Field(default=1000, ge=1)
    checkin_interval_seconds: int = Field(default=60, ge=5)
    # Each agent waits interval * (1 ± jitter) so a fleet restarted together spreads out.
    checkin_jitter_fraction: float = Field(default=0.2, ge=0, lt=1)
    # An agent not seen for this many check-in intervals is reported `silent`.
    silent_after_intervals: int = Field(default=3, ge=1)
    # Failed enrollments (unknown or revoked secret) one client address may make in the
    # window before it is answered 429 with Retry-After. Successes are never counted.
    enroll_failures_per_address: int = Field(default=20, ge=1)
    enroll_failure_window_seconds: float = Field(default=15 * 60, gt=0)

    alert_webhook_url: str | None = None
    # "udp://HOST:PORT" or "unix:///dev/log".
    alert_syslog_address: str | None = None
    alert_retry_max_seconds: float = Field(default=300.0, gt=0)
    # SIEM destinations, each in its format (CEF or ECS over syslog, ECS over HTTP, Splunk
    # HEC) with the streams it wants: see server.siem.destinations and docs/siem.md.
    siem_destinations: Annotated[list[SiemDestination], AfterValidator(unique_names)] = Field(
        default_factory=list)
    # Events and resolved findings older than this are pruned daily (open findings never).
    retention_days: int = Field(default=180, ge=1)
    # How often the server looks for MDM connectors due for a sync (each has its own
    # interval; this only bounds how late a due sync starts).
    connector_poll_seconds: float = Field(default=30.0, gt=0)
    # The weekly compliance report (PDF), written to <data_dir>/reports/ and announced to the
    # alert webhook when one is set: on this weekday (0 Monday .. 6 Sunday), or never if None.
    weekly_report_weekday: int | None = Field(default=None, ge=0, le=6)
    weekly_report_days: int = Field(default=30, ge=1, le=366)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file(init_settings)
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxy_list(cls, value: Any) -> Any:
        # WARDEN_TRUSTED_PROXIES="10.0.0.5, 10.0.0.6": a comma-separated list in the
        # environment; a TOML file or code gives a list.
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("trusted_proxies", mode="after")
    @classmethod
    def _proxy_addresses(cls, proxies: list[str]) -> list[str]:
        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"{proxy!r} is not an IP address or network (e.g. "
                    "10.0.0.5 or 10.0.0.0/24); name each load balancer by address") from None
        return proxies

    @field_validator("metrics_token", mode="after")
    @classmethod
    def _strong_metrics_token(cls, token: SecretStr | None) -> SecretStr | None:
        if token is None:
            return None
        # Stripped: a token pasted from a file Prometheus also reads (`credentials_file`,
        # which it trims) often ends with a newline.
        value = token.get_secret_value().strip()
        if len(value) < MIN_METRICS_TOKEN:
            raise ValueError(f"metrics_token must be at least {MIN_METRICS_TOKEN} characters "
                             "(e.g. the output of `openssl rand -hex 32`)")
        return SecretStr(value)

    @model_validator(mode="after")
    def _refuse_insecure(self) -> ServerSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both tls_cert and tls_key, or neither")
        if self.allow_insecure or self.environment == "development" or self.tls_cert:
            return self
        if not is_loopback(self.host):
            raise ValueError(
                f"refusing to serve plain HTTP on {self.host!r}: agent and admin tokens would "
                "cross the network in clear text. Give --tls-cert and --tls-key, bind to "
                "127.0.0.1, or set WARDEN_ALLOW_INSECURE=1 (--allow-insecure) if a TLS proxy "
                "sits in front"
            )
        return self

    @model_validator(mode="after")
    def _one_process_on_sqlite(self) -> ServerSettings:
        if self.workers > 1 and self.resolved_database_url.startswith("sqlite"):
            raise ValueError(
                f"{self.workers} workers need PostgreSQL: on the SQLite file every process "
                "would queue for its one write lock, so more processes would serve no more. "
                "Run one worker (--workers 1), or set WARDEN_DATABASE_URL to a PostgreSQL "
                "URL (docs/deploy.md, \"Scale out\")")
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / DATABASE_FILE_NAME}"

    @property
    def silent_after(self) -> dt.timedelta:
        """How long an agent may go without a check-in before it counts as silent: the one
        reckoning the API, the dashboard and the metrics share."""
        return dt.timedelta(seconds=self.checkin_interval_seconds * self.silent_after_intervals)

    @property
    def signing_key_path(self) -> Path:
        return self.data_dir / SIGNING_KEY_FILE_NAME

    @property
    def sends_hsts(self) -> bool:
        return self.hsts or self.tls_cert is not None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        # A name other than localhost may resolve anywhere: treat it as exposed.
        return False


def _config_file(init_settings: PydanticBaseSettingsSource) -> Path | None:
    given: dict[str, Any] = (
        init_settings.init_kwargs if isinstance(init_settings, InitSettingsSource) else {}
    )
    explicit = given.get("config_file") or os.environ.get("WARDEN_CONFIG_FILE")
    if explicit:
        return Path(explicit)
    data_dir = given.get("data_dir") or os.environ.get("WARDEN_DATA_DIR")
    if data_dir:
        candidate = Path(data_dir) / CONFIG_FILE_NAME
        if candidate.is_file():
            return candidate
    return None
