"""The catalog: how one messaging app looks on each OS, per sensor.

One YAML file per app in ``policies/catalog/``. Every list is optional; an app
with no signature for a sensor is simply never seen by that sensor.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from policies.content_model import ContentSignature, check_unique_ids
from policies.patterns import check_glob, check_network, check_port, check_regex

# An app's id: what findings, rules and metrics name it by.
APP_ID_PATTERN = r"^[a-z][a-z0-9_-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProcessSignatures(_Strict):
    # Matched against the full process name. Windows compares case-insensitively;
    # Linux also matches a name the kernel truncated to 15 characters (comm).
    names: list[str] = Field(default_factory=list)
    # Path globs: `~` is any user's home, %APPDATA%, %LOCALAPPDATA%, %ProgramFiles%
    # expand to every user's Windows folders; `*` stays inside one folder, `**` crosses.
    exe_globs: list[str] = Field(default_factory=list)
    # Regular expressions searched in the command line joined by spaces.
    cmdline: list[str] = Field(default_factory=list)
    # Lower-case hex SHA-256 of known binaries.
    sha256: list[str] = Field(default_factory=list)

    @field_validator("exe_globs")
    @classmethod
    def _globs(cls, value: list[str]) -> list[str]:
        return [check_glob(item) for item in value]

    @field_validator("cmdline")
    @classmethod
    def _regexes(cls, value: list[str]) -> list[str]:
        return [check_regex(item) for item in value]

    @field_validator("sha256")
    @classmethod
    def _hashes(cls, value: list[str]) -> list[str]:
        for item in value:
            if len(item) != 64 or any(c not in "0123456789abcdef" for c in item):
                raise ValueError(f"{item!r} is not a lower-case hex SHA-256 (64 characters)")
        return value


class FolderMarker(_Strict):
    """A per-user or portable install that no package manager knows about.

    `path` is a folder glob that exists only when the app was used or unpacked
    (e.g. a `TelegramDesktop` data folder); `contains` names files that together
    mark an unpacked app wherever it lies (e.g. `Telegram` next to `Updater`).
    """

    path: str | None = None
    contains: list[str] = Field(default_factory=list)
    note: str = ""

    @field_validator("path")
    @classmethod
    def _glob(cls, value: str | None) -> str | None:
        return None if value is None else check_glob(value)

    @model_validator(mode="after")
    def _needs_something(self) -> FolderMarker:
        if not self.path and not self.contains:
            raise ValueError("a folder marker needs `path` or `contains`")
        return self


class InstalledSignatures(_Strict):
    deb: list[str] = Field(default_factory=list)
    rpm: list[str] = Field(default_factory=list)
    snap: list[str] = Field(default_factory=list)
    flatpak: list[str] = Field(default_factory=list)
    # File-name globs of .desktop entries (system, per-user, autostart, exports).
    desktop_files: list[str] = Field(default_factory=list)
    bundle_ids: list[str] = Field(default_factory=list)
    team_ids: list[str] = Field(default_factory=list)
    # Windows "Add/Remove Programs": key names exact (case-insensitive),
    # DisplayName and Publisher as case-insensitive globs.
    windows_uninstall_keys: list[str] = Field(default_factory=list)
    windows_display_names: list[str] = Field(default_factory=list)
    windows_publishers: list[str] = Field(default_factory=list)
    msix_families: list[str] = Field(default_factory=list)
    winget: list[str] = Field(default_factory=list)
    homebrew: list[str] = Field(default_factory=list)
    folders: list[FolderMarker] = Field(default_factory=list)

    @field_validator("desktop_files", "windows_display_names", "windows_publishers")
    @classmethod
    def _globs(cls, value: list[str]) -> list[str]:
        return [check_glob(item) for item in value]


class NetworkSignatures(_Strict):
    cidrs: list[str] = Field(default_factory=list)
    # When set, a CIDR match also needs one of these remote ports.
    ports: list[int] = Field(default_factory=list)
    # Matched as suffixes ("telegram.org" matches "web.telegram.org").
    domains: list[str] = Field(default_factory=list)

    @field_validator("cidrs")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        return [check_network(item) for item in value]

    @field_validator("ports")
    @classmethod
    def _ports(cls, value: list[int]) -> list[int]:
        return [check_port(item) for item in value]

    @field_validator("domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        return [item.lower().strip(".") for item in value]


class MobileSignatures(_Strict):
    """How an MDM's app inventory names the app on a phone or tablet (sensor `mdm`).

    Jamf and the Android Management API give the bundle or package id: matched exactly.
    Intune's `detectedApp` has no id, only a display name and a publisher: matched as
    case-insensitive globs, and only on the platforms the name was sourced for.
    """

    android_packages: list[str] = Field(default_factory=list)
    ios_bundle_ids: list[str] = Field(default_factory=list)
    display_names: list[str] = Field(default_factory=list)
    publishers: list[str] = Field(default_factory=list)

    @field_validator("display_names", "publishers")
    @classmethod
    def _globs(cls, value: list[str]) -> list[str]:
        return [check_glob(item) for item in value]


class Signatures(_Strict):
    process: ProcessSignatures = Field(default_factory=ProcessSignatures)
    installed: InstalledSignatures = Field(default_factory=InstalledSignatures)
    network: NetworkSignatures = Field(default_factory=NetworkSignatures)
    mobile: MobileSignatures = Field(default_factory=MobileSignatures)
    # What the executable is (policies/content_model.py), for renamed copies.
    content: list[ContentSignature] = Field(default_factory=list)

    @field_validator("content")
    @classmethod
    def _content(cls, value: list[ContentSignature]) -> list[ContentSignature]:
        return check_unique_ids(value)


class InstallHints(_Strict):
    """Short, plain instructions shown to a user told to switch to this app."""

    linux: str = ""
    macos: str = ""
    windows: str = ""
    # Phones: the app's store page (App Store, Google Play), shown as the place to get it.
    ios: str = ""
    android: str = ""


# An app's name reaches desktop notifiers (a title, a subtitle) and every page that
# shows findings; these characters are neither code nor an option to any of them.
_NAME_PUNCTUATION = frozenset(" ._+()-")
MAX_NAME_CHARS = 64


def check_app_name(name: str) -> str:
    # The name itself stays out of the message: it may hold the "; " that separates
    # a message from its hint. The file, line and field say which name it is.
    hint = (f"use 1 to {MAX_NAME_CHARS} letters, digits, spaces and . _ + ( ) -, starting "
            "with a letter or a digit")
    if not name or len(name) > MAX_NAME_CHARS:
        raise ValueError(f"app name is {len(name)} characters long; {hint}")
    bad = sorted({char for char in name if not (char.isalnum() or char in _NAME_PUNCTUATION)})
    if bad or not name[0].isalnum():
        what = (f"has {', '.join(repr(char) for char in bad)}" if bad
                else f"starts with {name[0]!r}")
        raise ValueError(f"app name {what}, which a notifier could take for code or an "
                         f"option; {hint}")
    return name


class AppDefinition(_Strict):
    id: str = Field(pattern=APP_ID_PATTERN, max_length=64)
    name: str
    vendor: str = ""
    category: str = "messenger"
    homepage: str = ""
    download_url: str = ""
    install_hints: InstallHints = Field(default_factory=InstallHints)
    signatures: Signatures = Field(default_factory=Signatures)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_app_name(value)

    def signature_counts(self) -> dict[str, int]:
        process = self.signatures.process
        installed = self.signatures.installed
        network = self.signatures.network
        return {
            "process": len(process.names) + len(process.exe_globs) + len(process.cmdline)
            + len(process.sha256),
            "installed": sum(
                len(getattr(installed, name)) for name in InstalledSignatures.model_fields
            ),
            "network": len(network.cidrs) + len(network.domains),
            "mobile": sum(len(getattr(self.signatures.mobile, name))
                          for name in MobileSignatures.model_fields),
            "content": len(self.signatures.content),
        }
