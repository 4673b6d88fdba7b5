"""The policy engine against the real stock catalog and default policy, as case tables."""

from __future__ import annotations

import datetime as dt

import pytest

from policies.compiler import compile_bundle
from policies.engine import Engine, HostContext
from policies.loader import default_policy_path, load_catalog, load_policy, parse_policy
from policies.observations import (
    ConnectionObservation,
    InstalledObservation,
    Observation,
    ProcessObservation,
)


@pytest.fixture(scope="module")
def bundle() -> dict:
    catalog = load_catalog()
    return compile_bundle(load_policy(default_policy_path(), catalog), catalog)


def _proc(name: str, exe: str | None = None, cmdline: tuple[str, ...] = ()) -> ProcessObservation:
    return ProcessObservation(pid=4242, name=name, create_time=1.0, exe=exe, cmdline=cmdline)


def _inst(source: str, ident: str, **extra: object) -> InstalledObservation:
    return InstalledObservation(source=source, id=ident, **extra)  # type: ignore[arg-type]


def _conn(ip: str, port: int = 443, host: str | None = None) -> ConnectionObservation:
    return ConnectionObservation(remote_ip=ip, remote_port=port, remote_host=host)


# (OS, observation, expected (app, verdict) or None when nothing is flagged)
CASES: list[tuple[str, Observation, tuple[str, str] | None]] = [
    # --- process names ---
    ("linux", _proc("telegram-desktop"), ("telegram", "deny")),  # Debian <= 5.14, snap
    ("linux", _proc("Telegram"), ("telegram", "deny")),  # tarball, flatpak, packaged >= 5.15
    ("linux", _proc("ayugram-desktop"), ("telegram", "deny")),  # fork
    ("linux", _proc("kotatogram-desktop"), ("telegram", "deny")),  # fork, 18 chars
    ("linux", _proc("kotatogram-desk"), ("telegram", "deny")),  # the same, truncated comm
    ("macos", _proc("kotatogram-desk"), None),  # truncation is a Linux-only rule
    ("linux", _proc("telegram"), None),  # Linux names are case-sensitive
    ("windows", _proc("TELEGRAM.EXE"), ("telegram", "deny")),  # Windows names are not
    ("windows", _proc("kotatogram.exe"), ("telegram", "deny")),
    ("linux", _proc("Updater"), None),  # generic helper name alone is not enough
    ("linux", _proc("bash"), None),
    # --- exe paths ---
    ("windows", _proc("x.exe", exe=r"C:\Users\Bob\AppData\Roaming\Telegram Desktop\Telegram.exe"),
     ("telegram", "deny")),
    ("windows", _proc("x.exe", exe=r"D:\Tools\Telegram\Updater.exe"), ("telegram", "deny")),
    ("macos", _proc("x", exe="/Applications/Telegram.app/Contents/MacOS/Telegram"),
     ("telegram", "deny")),
    ("linux", _proc("x", exe="/home/alice/Downloads/Telegram/Updater"), ("telegram", "deny")),
    ("windows", _proc("Signal.exe",
                      exe=r"C:\Users\Bob\AppData\Local\Programs\signal-desktop\Signal.exe"), None),
    # --- Signal is never Telegram ---
    ("linux", _proc("signal-desktop", exe="/opt/Signal/signal-desktop"), None),
    ("macos", _proc("Signal", exe="/Applications/Signal.app/Contents/MacOS/Signal"), None),
    # --- installed: specific identifiers ---
    ("linux", _inst("deb", "telegram-desktop"), ("telegram", "deny")),
    ("linux", _inst("snap", "telegram-desktop"), ("telegram", "deny")),
    ("linux", _inst("flatpak", "org.telegram.desktop"), ("telegram", "deny")),
    ("linux", _inst("flatpak", "io.github.tdesktop_x64.TDesktop"), ("telegram", "deny")),  # 64Gram
    ("linux", _inst("desktop", "org.telegram.desktop.desktop"), ("telegram", "deny")),
    ("linux", _inst("desktop", "org.telegram.desktop._0123456789abcdef.desktop"),
     ("telegram", "deny")),  # tarball self-created entry
    ("linux", _inst("desktop", "telegram-desktop_telegram-desktop.desktop"), ("telegram", "deny")),
    ("macos", _inst("app_bundle", "com.tdesktop.Telegram"), ("telegram", "deny")),
    ("macos", _inst("app_bundle", "ru.keepcoder.Telegram"), ("telegram", "deny")),  # Swift client
    ("macos", _inst("app_bundle", "com.example.Unknown", team_id="6N38VWS5BX"),
     ("telegram", "deny")),  # TeamID alone
    ("windows", _inst("windows_uninstall", "{53F49750-6209-4FBF-9CA8-7A333C87D1ED}_is1"),
     ("telegram", "deny")),
    ("windows", _inst("windows_uninstall", "{53f49750-6209-4fbf-9ca8-7a333c87d1ed}_IS1"),
     ("telegram", "deny")),  # registry key names are case-insensitive
    ("windows", _inst("windows_uninstall", "Other", display_name="AyuGram Desktop"),
     ("telegram", "deny")),
    ("windows", _inst("msix", "TelegramMessengerLLP.TelegramDesktop_t4vj0pshhgkwm"),
     ("telegram", "deny")),
    ("windows", _inst("msix", "38833FF26BA1D.UnigramPreview_g9c9v27vpyspw"), ("telegram", "deny")),
    ("macos", _inst("homebrew", "telegram-desktop"), ("telegram", "deny")),
    ("windows", _inst("winget", "Telegram.TelegramDesktop"), ("telegram", "deny")),
    ("linux", _inst("folder", "/home/alice/.local/share/TelegramDesktop",
                    path="/home/alice/.local/share/TelegramDesktop"), ("telegram", "deny")),
    ("linux", _inst("folder", "/home/alice/apps/tg", path="/home/alice/apps/tg",
                    contents=frozenset({"Telegram", "Updater"})), ("telegram", "deny")),
    ("linux", _inst("folder", "/home/alice/apps/x", path="/home/alice/apps/x",
                    contents=frozenset({"Updater"})), None),  # one marker file is not enough
    # --- installed: Signal and strangers ---
    ("linux", _inst("deb", "signal-desktop"), None),
    ("linux", _inst("flatpak", "org.signal.Signal"), None),
    ("linux", _inst("desktop", "signal-desktop.desktop"), None),
    ("macos", _inst("app_bundle", "org.whispersystems.signal-desktop", team_id="U68MSDN6DR"), None),
    ("windows", _inst("windows_uninstall", "7d96caee-06e6-597c-9f2f-c7bb2e0948b4",
                      display_name="Signal 7.60.0", publisher="Signal Messenger, LLC"), None),
    ("linux", _inst("deb", "telegram-desktop-theme"), None),
    # --- network ---
    ("linux", _conn("149.154.167.51"), ("telegram", "deny")),  # DC 2
    ("linux", _conn("91.108.56.130", 5222), ("telegram", "deny")),
    ("linux", _conn("95.161.76.100"), ("telegram", "deny")),  # DC 2 alternate (nDPI ASN range)
    ("linux", _conn("2001:b28:f23d:f001::a"), ("telegram", "deny")),  # DC 1 IPv6
    ("linux", _conn("2001:67c:4e8:f002::a"), ("telegram", "deny")),  # DC 2 IPv6
    ("linux", _conn("::ffff:149.154.175.50"), ("telegram", "deny")),  # v4-mapped socket address
    ("linux", _conn("149.154.167.51", 22), None),  # not an MTProto port
    ("linux", _conn("149.154.192.1"), None),  # just outside 149.154.160.0/20
    ("linux", _conn("8.8.8.8"), None),
    ("linux", _conn("", 443, host="web.telegram.org"), ("telegram", "deny")),
    ("linux", _conn("", 443, host="chat.signal.org"), None),
    ("linux", _conn("", 443, host="nottelegram.org"), None),  # suffix match is per label
]


@pytest.mark.parametrize(("os_name", "observation", "expected"), CASES)
def test_engine_case_table(
    bundle: dict, os_name: str, observation: Observation, expected: tuple[str, str] | None
) -> None:
    engine = Engine(bundle, HostContext(os=os_name))  # type: ignore[arg-type]
    findings = engine.evaluate(observation)
    got = [(finding.app, finding.verdict) for finding in findings]
    assert got == ([expected] if expected else [])


@pytest.mark.parametrize(
    ("observation", "confidence"),
    [
        (_proc("telegram-desktop"), "medium"),  # a name alone
        (_inst("deb", "telegram-desktop"), "high"),
        (_inst("app_bundle", "x", team_id="C67CF9S4VU"), "high"),
        (_conn("149.154.167.51"), "high"),
        (_proc("x", exe="/home/a/Downloads/Telegram/Telegram"), "high"),
    ],
)
def test_confidence(bundle: dict, observation: Observation, confidence: str) -> None:
    [finding] = Engine(bundle).evaluate(observation)
    assert finding.confidence == confidence


def test_finding_carries_alternative_evidence_and_stable_key(bundle: dict) -> None:
    observation = _proc("telegram-desktop", exe="/usr/bin/telegram-desktop")
    [finding] = Engine(bundle).evaluate(observation)
    assert finding.alternative == "signal"
    assert finding.action == "notify"
    assert finding.mode == "audit"
    assert finding.evidence["pid"] == 4242
    assert finding.evidence["exe"] == "/usr/bin/telegram-desktop"
    assert finding.key == "telegram|process|pid:4242:1.00"
    assert "Signal" in finding.message
    assert Engine(bundle).evaluate(observation)[0].key == finding.key


def test_allowed_apps_are_reported_only_when_asked(bundle: dict) -> None:
    engine = Engine(bundle)
    signal = _proc("signal-desktop")
    assert engine.evaluate(signal) == []
    [finding] = engine.evaluate(signal, include_allowed=True)
    assert (finding.app, finding.verdict) == ("signal", "allow")


def _bundle_from(text: str) -> dict:
    catalog = load_catalog()
    return compile_bundle(parse_policy(text, "test.yaml", catalog, dt.date(2026, 1, 1)), catalog)


EXCEPTION_POLICY = """
name: lab
rules:
  - app: telegram
    verdict: deny
    exceptions:
      - hosts: [lab-01]
        expires: 2026-06-30
      - groups: [press-office]
        expires: 2026-12-31
"""


@pytest.mark.parametrize(
    ("hostname", "groups", "today", "verdict"),
    [
        ("lab-01", set(), dt.date(2026, 6, 1), "excepted"),  # host exception in force
        ("lab-01", set(), dt.date(2026, 7, 1), "deny"),  # ... and after it expired
        ("pc-07", {"press-office"}, dt.date(2026, 6, 1), "excepted"),  # group exception
        ("pc-07", {"finance"}, dt.date(2026, 6, 1), "deny"),
    ],
)
def test_exceptions(hostname: str, groups: set[str], today: dt.date, verdict: str) -> None:
    host = HostContext(hostname=hostname, groups=frozenset(groups), today=today)
    engine = Engine(_bundle_from(EXCEPTION_POLICY), host)
    [finding] = engine.evaluate(_proc("telegram-desktop"), include_allowed=True)
    assert finding.verdict == verdict
    assert bool(engine.evaluate(_proc("telegram-desktop"))) == (verdict == "deny")


def test_scope_limits_the_policy_to_its_machines() -> None:
    bundle = _bundle_from("name: x\nscope:\n  os: [windows]\n  groups: [ministry]\n"
                          "rules:\n  - app: telegram\n    verdict: deny\n")
    outside = Engine(bundle, HostContext(os="linux", groups=frozenset({"ministry"})))
    inside = Engine(bundle, HostContext(os="windows", groups=frozenset({"ministry"})))
    assert outside.evaluate(_proc("Telegram.exe")) == []
    assert [f.verdict for f in inside.evaluate(_proc("Telegram.exe"))] == ["deny"]


def test_policy_defined_app_with_loopback_cidr_and_hash() -> None:
    digest = "a" * 64
    bundle = _bundle_from(f"""
name: custom
apps:
  - id: lab-chat
    name: Lab chat
    signatures:
      process:
        names: [lab-chat-desktop-app]
        sha256: ["{digest}"]
      network:
        cidrs: [127.0.0.0/8, "::1/128"]
        ports: [9999]
rules:
  - app: lab-chat
    verdict: alert
""")
    engine = Engine(bundle)
    assert engine.needs_sha256
    assert [f.verdict for f in engine.evaluate(_conn("127.0.0.1", 9999))] == ["alert"]
    assert [f.verdict for f in engine.evaluate(_conn("::1", 9999))] == ["alert"]
    assert engine.evaluate(_conn("127.0.0.1", 9998)) == []
    hashed = ProcessObservation(pid=1, name="innocent", sha256=digest)
    assert [f.matched for f in engine.evaluate(hashed)] == [f"process.sha256: {digest}"]
    # 20 characters: the kernel keeps 15, psutil usually restores the full name.
    assert engine.evaluate(_proc("lab-chat-desktop-app"))
    assert engine.evaluate(_proc("lab-chat-deskto"))


def test_engine_exposes_what_sensors_need(bundle: dict) -> None:
    engine = Engine(bundle)
    assert not engine.needs_sha256  # the stock catalog ships no hashes
    assert {"Telegram", "Updater"} <= engine.folder_marker_files
    assert "~/.local/share/TelegramDesktop" in engine.folder_marker_globs
