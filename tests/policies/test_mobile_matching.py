"""Apps an MDM lists on a phone (sensor `mdm`), judged by the engine against the catalog's
mobile identifiers, with a policy that denies every messenger the catalog has."""

from __future__ import annotations

from typing import Any

import pytest

from policies.compiler import compile_bundle
from policies.engine import Engine, HostContext
from policies.loader import load_catalog, parse_policy
from policies.observations import MobileAppObservation
from policies.vocabulary import MobileOsName

POLICY = """
name: phones
rules:
  - {app: telegram, verdict: deny, alternative: signal}
  - {app: whatsapp, verdict: deny}
  - {app: viber, verdict: deny}
  - {app: wechat, verdict: deny}
  - {app: discord, verdict: alert}
  - {app: signal, verdict: allow}
"""


@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    catalog = load_catalog()
    return compile_bundle(parse_policy(POLICY, "phones.yaml", catalog), catalog)


def _app(platform: MobileOsName, app_id: str | None = None, name: str | None = None,
         publisher: str | None = None) -> MobileAppObservation:
    return MobileAppObservation(connector="c", device_id="d", platform=platform,
                                app_id=app_id, display_name=name, publisher=publisher,
                                version="1")


CASES = [
    # (observation, expected app or None, confidence) — ids and packages are exact.
    (_app("android", "org.telegram.messenger"), "telegram", "high"),
    (_app("android", "org.telegram.messenger.web"), "telegram", "high"),
    (_app("android", "org.thunderdog.challegram"), "telegram", "high"),  # Telegram X
    (_app("android", "tw.nekomimi.nekogram"), "telegram", "high"),  # Nekogram
    (_app("android", "org.telegram.plus"), "telegram", "high"),  # Plus Messenger
    (_app("ios", "ph.telegra.Telegraph"), "telegram", "high"),
    (_app("ipados", "ph.telegra.Telegraph"), "telegram", "high"),
    (_app("android", "com.whatsapp.w4b"), "whatsapp", "high"),
    (_app("ios", "net.whatsapp.WhatsApp"), "whatsapp", "high"),
    (_app("android", "com.viber.voip"), "viber", "high"),
    (_app("ios", "com.tencent.xin"), "wechat", "high"),
    (_app("ios", "com.hammerandchisel.discord"), "discord", "high"),
    # A bundle id is not a package name: the iOS id on Android matches nothing.
    (_app("android", "ph.telegra.Telegraph"), None, None),
    # Case matters for ids (the stores treat them so).
    (_app("android", "ORG.TELEGRAM.MESSENGER"), None, None),
    # Intune: names and publishers only, case-insensitive, weaker evidence.
    (_app("ios", None, "telegram messenger"), "telegram", "medium"),
    (_app("android", None, "Plus Messenger"), "telegram", "medium"),
    (_app("ios", None, "Some App", "Telegram FZ-LLC"), "telegram", "medium"),
    (_app("ios", None, "Rakuten Viber Messenger"), "viber", "medium"),
    (_app("ios", None, "Discord - Chat, Talk & Hangout"), "discord", "medium"),
    (_app("ios", None, "Telegraph"), None, None),
    # Signal is allowed: no finding.
    (_app("android", "org.thoughtcrime.securesms"), None, None),
    (_app("ios", None, "Signal - Private Messenger"), None, None),
]


@pytest.mark.parametrize(("observation", "app", "confidence"), CASES)
def test_mobile_apps_are_judged_by_their_mobile_identifiers(
        bundle: dict[str, Any], observation: MobileAppObservation, app: str | None,
        confidence: str | None) -> None:
    engine = Engine(bundle, HostContext(os=observation.platform))  # type: ignore[arg-type]
    findings = engine.evaluate(observation)
    assert [f.app for f in findings] == ([app] if app else [])
    if findings:
        finding = findings[0]
        assert finding.sensor == "mdm" and finding.confidence == confidence
        assert finding.key == f"{app}|mdm|{observation.identity}"
        assert finding.evidence["connector"] == "c"
        assert finding.evidence["platform"] == observation.platform


def test_a_policy_scoped_to_desktops_leaves_phones_out(bundle: dict[str, Any]) -> None:
    catalog = load_catalog()
    scoped = compile_bundle(parse_policy(POLICY + "scope: {os: [windows, macos]}\n",
                                         "scoped.yaml", catalog), catalog)
    observation = _app("android", "org.telegram.messenger")
    assert Engine(bundle, HostContext(os="android")).evaluate(observation)
    assert Engine(scoped, HostContext(os="android")).evaluate(observation) == []
