"""AgentSettings: one pydantic-settings class, built in main() and passed down.

Sources, strongest first: explicit arguments, `WARDEN_AGENT_*` environment
variables, then the config file (TOML) at the standard path for the OS, or the
one named by `WARDEN_AGENT_CONFIG`.

The config file, and every file a setting names whose content changes what the
agent trusts or runs, is used only when an administrator (or the user the agent
runs as) controls it and the folders leading to it (agent/host/ownership.py). The
environment is trusted as it is: whoever sets a process's environment started
that process, as that user, and so can already make it run anything; for the
services it comes from root-only files and the service's registry key.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import shlex
import shutil
import sys
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from agent.host.ownership import UntrustedPath, read_trusted, require_trusted


def default_config_dir() -> Path:
    """The agent's own folder: its config file, and on macOS and Windows its state too."""
    if sys.platform == "win32":
        return Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / "Warden"
    if sys.platform == "darwin":
        return Path("/Library/Application Support/Warden")
    return Path("/etc/warden")


def default_config_path() -> Path:
    override = os.environ.get("WARDEN_AGENT_CONFIG")
    return Path(override) if override else default_config_dir() / "agent.toml"


def service_env_path() -> Path | None:
    """The environment file the systemd unit gives the service (`EnvironmentFile=`), so a
    command run from a shell (`warden-agent status`) sees the service's settings too."""
    override = os.environ.get("WARDEN_AGENT_ENV_FILE")
    if override:
        return Path(override)
    return Path("/etc/warden/agent.env") if sys.platform.startswith("linux") else None


def default_state_dir() -> Path:
    if sys.platform in ("win32", "darwin"):
        return default_config_dir() / "state"
    return Path("/var/lib/warden-agent")


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WARDEN_AGENT_", extra="forbid")

    server_url: str | None = None
    enroll_secret: str | None = Field(default=None, repr=False)
    enroll_secret_file: Path | None = None
    group: str | None = None
    state_dir: Path = Field(default_factory=default_state_dir)
    ca_bundle: Path | None = None
    # The server's policy-signing public key, given out of band with the enrollment secret
    # (`warden server public-key`): base64 of the raw Ed25519 key. Set, the agent enrolls
    # only with a server that signs with it, or with a key its signed rotations lead to.
    policy_public_key: bytes | None = None
    # Intervals in seconds.
    process_interval: float = Field(default=0.25, gt=0, le=60)
    network_interval: float = Field(default=10.0, gt=0, le=3600)
    installed_rescan_interval: float = Field(default=3600.0, gt=0)
    # How often the policy's messenger domains are looked up again, to know their
    # addresses (agent.sensors.dns); 0 turns DNS correlation off.
    dns_refresh_interval: float = Field(default=900.0, ge=0, le=86400)
    # How long one scan of one sensor may run before it is reported stalled (check-in,
    # `warden-agent status`); it is not started again until it returns.
    sensor_deadline: float = Field(default=60.0, gt=0, le=3600)
    checkin_interval: float = Field(default=60.0, gt=0, le=86400)
    upload_interval: float = Field(default=1.0, gt=0, le=3600)
    request_timeout: float = Field(default=15.0, gt=0, le=300)
    # The spool keeps events while the server is unreachable; bounded, oldest dropped first.
    spool_max_events: int = Field(default=100_000, ge=100)
    spool_max_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024)
    upload_batch_events: int = Field(default=500, ge=1, le=1000)
    notify_cooldown: float = Field(default=3600.0, ge=0)
    # A site's own notifier program, run with title, body and link as arguments;
    # empty: the desktop's (notify-send, Notification Centre, a Windows toast).
    notify_command: str = ""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    # Standard error when unset (journald, launchd's log); the Windows service has
    # no console, so its install script sets %ProgramData%\Warden\logs\agent.log.
    log_file: Path | None = None
    network: bool = True
    installed: bool = True
    # Content signatures (agent/sensors/content.py): identify executables by their bytes,
    # reading at most `content_read_rate` bytes a second (after a burst that lets one new
    # big program be identified at once) and at most `content_max_file_bytes` of a file.
    content: bool = True
    content_read_rate: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)
    content_max_file_bytes: int = Field(default=512 * 1024 * 1024, ge=1024 * 1024)
    # Skip programs dpkg installed and that are unchanged since (their ctime says so).
    content_skip_packaged: bool = True
    # The Unix socket where people at the machine ask for an exception
    # (`warden-agent request-exception`); unset: no requests. The service sets
    # /run/warden-agent/request.sock (agent.service.install).
    request_socket: Path | None = None

    @field_validator("server_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("https://", "http://")):
            raise ValueError("must start with https:// (or http:// for a server on loopback)")
        return value.rstrip("/")

    @field_validator("notify_command")
    @classmethod
    def _command_line(cls, value: str) -> str:
        try:
            shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"must be a command line, quoted as a POSIX shell would: {exc}") \
                from exc
        return value

    @field_validator("policy_public_key", mode="before")
    @classmethod
    def _raw_ed25519_key(cls, value: object) -> bytes | None:
        text = value.strip() if isinstance(value, str | bytes) else value
        if not text:
            return None
        try:
            raw = base64.b64decode(text, validate=True) if isinstance(text, str | bytes) else b""
        except binascii.Error:
            raw = b""
        if len(raw) != 32:
            raise ValueError("must be the server's policy public key as `warden server "
                             "public-key` prints it: base64 of the 32-byte Ed25519 key")
        return raw

    @model_validator(mode="after")
    def _refuse_plain_http_beyond_loopback(self) -> AgentSettings:
        url = self.server_url or ""
        loopback = ("http://127.", "http://localhost", "http://[::1]")
        insecure_ok = os.environ.get("WARDEN_AGENT_ALLOW_INSECURE") == "1"
        if url.startswith("http://") and not url.startswith(loopback) and not insecure_ok:
            raise ValueError(
                f"server_url {url} is plain HTTP beyond loopback: tokens would travel in "
                "clear text; use https:// (or set WARDEN_AGENT_ALLOW_INSECURE=1 for a lab)"
            )
        return self

    def resolved_enroll_secret(self) -> str | None:
        if self.enroll_secret:
            return self.enroll_secret
        if self.enroll_secret_file:
            content = read_trusted(self.enroll_secret_file, "the enrollment secret file")
            if content is None:
                raise FileNotFoundError(2, "the enrollment secret file does not exist",
                                        str(self.enroll_secret_file))
            return content.decode("utf-8").strip() or None
        return None

    def require_trusted_files(self) -> None:
        """Refuse (UntrustedPath) a file a setting names that someone else could change."""
        if self.enroll_secret_file:
            require_trusted(self.enroll_secret_file,
                            "the enrollment secret file (enroll_secret_file)", "file")
        if self.ca_bundle:
            require_trusted(self.ca_bundle, "the CA bundle (ca_bundle)", "file")
        program = self.notify_program()
        if program is not None:
            require_trusted(program, "the notify_command program", "file")

    def notify_program(self) -> Path | None:
        """The program `notify_command` runs, where it is found now (None: unset or absent;
        the notifier then reports it missing)."""
        words = shlex.split(self.notify_command)
        found = shutil.which(words[0]) if words else None
        return Path(found) if found else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The process's environment wins; then the service's environment file (what the
        # service itself runs with); then the config file.
        return (init_settings, env_settings, ServiceEnvSource(settings_cls, service_env_path()),
                TrustedTomlSource(settings_cls, default_config_path()))


class TrustedTomlSource(InitSettingsSource):
    """The config file's settings, read only after the file and the folders leading to it
    proved to be an administrator's; none when the file does not exist."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        content = read_trusted(path, "the agent config file")
        super().__init__(settings_cls, tomllib.loads(content.decode("utf-8")) if content else {})


class ServiceEnvSource(InitSettingsSource):
    """`WARDEN_AGENT_*="value"` lines of the service's environment file (as
    agent.service.render writes them), read only once proven an administrator's."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        try:
            content = read_trusted(path, "the service environment file") if path else None
        except PermissionError:
            # Root only (0600): a user's own `warden-agent scan` goes on without it.
            content = None
        values = parse_env_file(content.decode("utf-8")) if content else {}
        super().__init__(settings_cls, {name: value for name, value in values.items()
                                        if name in settings_cls.model_fields})


_ENV_LINE = re.compile(r'^WARDEN_AGENT_([A-Z0-9_]+)="((?:[^"\\]|\\.)*)"$')


def parse_env_file(text: str) -> dict[str, str]:
    """Settings by field name from an environment file; other variables are not ours."""
    values = {}
    for line in text.splitlines():
        found = _ENV_LINE.match(line.strip())
        if found:
            values[found.group(1).lower()] = re.sub(r"\\(.)", r"\1", found.group(2))
    return values


class SettingsError(Exception):
    """Bad settings, explained per setting (env var name and config-file key)."""


def load_settings(**overrides: object) -> AgentSettings:
    """The settings, from trusted sources only; SettingsError saying what to fix."""
    try:
        settings = AgentSettings(**overrides)  # type: ignore[arg-type]
        settings.require_trusted_files()
        return settings
    except UntrustedPath as exc:
        raise SettingsError(str(exc)) from exc
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]) or "settings"
            env = f"WARDEN_AGENT_{name.upper()}" if error["loc"] else ""
            message = error["msg"].removeprefix("Value error, ")
            where = f"{name} ({env} or `{name}` in {default_config_path()})" if env else name
            lines.append(f"{where}: {message}")
        raise SettingsError("invalid agent settings:\n  " + "\n  ".join(lines)) from exc
    except (OSError, ValueError) as exc:  # ValueError: not TOML (or not UTF-8)
        raise SettingsError(f"cannot read the agent config file {default_config_path()}: "
                            f"{exc}") from exc
