"""The SIEM destinations an administrator configures: where, in which format, what.

In the server's TOML file (or `WARDEN_SIEM_DESTINATIONS` as a JSON list)::

    [[siem_destinations]]
    name = "qradar"
    format = "cef"                      # cef | ecs | hec
    address = "tcp://siem.example:514"  # udp://, tcp:// (octet counting), unix://
    streams = ["alerts", "findings", "actions"]

    [[siem_destinations]]
    name = "splunk"
    format = "hec"
    address = "https://splunk.example:8088"
    token = "…"
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from server.alerts.syslog import parse_address
from server.siem.records import STREAMS, Stream

SiemFormat = Literal["cef", "ecs", "hec"]
HEC_EVENT_PATH = "/services/collector/event"


class SiemDestination(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Names the destination in logs and in warden_alerts_total{destination="siem:NAME"}.
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
    format: SiemFormat
    # cef: a syslog address; ecs: a syslog address or an http(s):// URL taking NDJSON;
    # hec: the Splunk HEC base URL (https://splunk:8088) or its full event endpoint.
    address: str
    # hec: the HEC token (sent as "Authorization: Splunk TOKEN"); ecs over HTTP: sent as
    # "Authorization: Bearer TOKEN" when set.
    token: SecretStr | None = None
    # hec only: where Splunk files the events. sourcetype `_json` is extracted at search
    # time by every Splunk without any props.conf.
    index: str | None = None
    source: str = "warden"
    sourcetype: str = "_json"
    streams: list[Stream] = Field(default_factory=lambda: list(STREAMS), min_length=1)
    # Records held while the destination is unreachable; when full the oldest is dropped.
    queue_size: int = Field(default=10_000, ge=1, le=1_000_000)
    # UDP: the largest datagram to send. A record longer than this has its values shortened
    # (never cut mid-JSON). 8 KiB is rsyslog's default maxMessageSize; RFC 5424 only
    # promises 2048 octets, so lower it for a receiver that takes no more.
    max_datagram_bytes: int = Field(default=8192, ge=480, le=65_000)
    # HTTPS destinations signed by a private CA: its PEM bundle.
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _address_fits_format(self) -> SiemDestination:
        scheme = urlsplit(self.address).scheme
        web = scheme in ("http", "https")
        where = f"siem destination {self.name!r}"
        if self.format == "hec":
            if not web or not urlsplit(self.address).hostname:
                raise ValueError(f"{where}: a Splunk HEC address is an https:// URL, e.g. "
                                 "https://splunk.example:8088")
            if self.token is None or not self.token.get_secret_value().strip():
                raise ValueError(f"{where}: format hec needs `token` (the HEC token Splunk "
                                 "shows under Settings > Data inputs > HTTP Event Collector)")
        elif web:
            if self.format == "cef":
                raise ValueError(f"{where}: CEF goes over syslog: use udp://, tcp:// or "
                                 "unix:// (e.g. tcp://siem.example:514)")
            if not urlsplit(self.address).hostname:
                raise ValueError(f"{where}: {self.address!r} has no host")
        else:
            try:
                parse_address(self.address)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from exc
        if len(set(self.streams)) != len(self.streams):
            raise ValueError(f"{where}: a stream is listed twice in `streams`")
        return self

    @property
    def over_http(self) -> bool:
        return urlsplit(self.address).scheme in ("http", "https")

    @property
    def hec_url(self) -> str:
        parts = urlsplit(self.address)
        if parts.path.rstrip("/"):
            return self.address
        return f"{parts.scheme}://{parts.netloc}{HEC_EVENT_PATH}"


def unique_names(destinations: list[SiemDestination]) -> list[SiemDestination]:
    names = [destination.name for destination in destinations]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"siem_destinations: each needs its own name; {', '.join(twice)} "
                         "is used more than once")
    return destinations
