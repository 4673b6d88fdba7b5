"""Where the `warden` CLI finds its server and token: flags, then the environment
(WARDEN_URL, WARDEN_TOKEN, WARDEN_CA_BUNDLE), then ~/.config/warden/cli.json."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from server.api_client import WardenClientError

DEFAULT_URL = "http://127.0.0.1:8700"


@dataclass(frozen=True)
class Credentials:
    url: str
    token: str | None
    ca_bundle: str | None = None


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "warden" / "cli.json"


def resolve_credentials(
    url: str | None = None,
    token: str | None = None,
    ca_bundle: str | None = None,
    env: Mapping[str, str] | None = None,
    path: Path | None = None,
) -> Credentials:
    """Flags first, then WARDEN_URL / WARDEN_TOKEN / WARDEN_CA_BUNDLE, then the config file."""
    env = os.environ if env is None else env
    path = path or config_path(env)
    config = _read_config(path)
    return Credentials(
        url=url or env.get("WARDEN_URL") or config.get("url") or DEFAULT_URL,
        token=token or env.get("WARDEN_TOKEN") or config.get("token"),
        ca_bundle=ca_bundle or env.get("WARDEN_CA_BUNDLE") or config.get("ca_bundle"),
    )


def _read_config(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise WardenClientError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise WardenClientError(f"{path} is not valid JSON ({exc}); expected "
                                '{"url": "...", "token": "..."}') from exc
    if not isinstance(data, dict):
        raise WardenClientError(f'{path} must hold a JSON object: {{"url": ..., "token": ...}}')
    return {key: value for key, value in data.items() if isinstance(value, str)}
