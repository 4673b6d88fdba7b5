"""Recommendations from the real stock catalog and policies compiled by the real compiler."""

from __future__ import annotations

import json
from typing import Any

import pytest

from policies.catalog_model import AppDefinition
from policies.compiler import compile_bundle
from policies.loader import default_policy_path, load_catalog, parse_policy
from server.recommendations import UnknownApp, recommendations_for


@pytest.fixture(scope="module")
def catalog() -> dict[str, AppDefinition]:
    return load_catalog()


def compiled(text: str, catalog: dict[str, AppDefinition]) -> dict[str, Any]:
    bundle = compile_bundle(parse_policy(text, "test.yaml", catalog), catalog)
    # The server stores bundles as JSON; recommend from what comes back out.
    return json.loads(json.dumps(bundle))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def default_bundle(catalog: dict[str, AppDefinition]) -> dict[str, Any]:
    return compiled(default_policy_path().read_text(encoding="utf-8"), catalog)


def test_telegram_gets_signal_with_download_link_and_hints(
    default_bundle: dict[str, Any], catalog: dict[str, AppDefinition]
) -> None:
    answer = recommendations_for("telegram", default_bundle, catalog)
    assert (answer["app"], answer["app_name"], answer["verdict"]) == ("telegram", "Telegram",
                                                                     "deny")
    signal = answer["alternatives"][0]
    assert (signal["id"], signal["name"]) == ("signal", "Signal")
    assert signal["download_url"] == "https://signal.org/download/"
    assert signal["homepage"] == "https://signal.org/"
    assert set(signal["install_hints"]) == {"linux", "macos", "windows", "ios", "android"}
    assert all(hint.strip() for hint in signal["install_hints"].values())
    assert "winget install" in signal["install_hints"]["windows"]
    # Phones are pointed at Signal's store pages.
    assert signal["install_hints"]["ios"] == (
        "https://apps.apple.com/app/signal-private-messenger/id874139669")
    assert signal["install_hints"]["android"] == (
        "https://play.google.com/store/apps/details?id=org.thoughtcrime.securesms")
    # Signal is the only app the default policy allows.
    assert [alt["id"] for alt in answer["alternatives"]] == ["signal"]


POLICY = """
name: several
apps:
  - id: element
    name: Element
    category: messenger
    homepage: https://element.io/
    download_url: https://element.io/download
    install_hints:
      linux: Install the element-desktop package.
  - id: thunderbird
    name: Thunderbird
    category: email
rules:
  - app: telegram
    verdict: deny
    alternative: signal
  - app: wechat
    verdict: deny
  - app: whatsapp
    verdict: allow
  - app: signal
    verdict: allow
  - app: discord
    verdict: allow
  - app: element
    verdict: allow
  - app: thunderbird
    verdict: allow
"""


@pytest.mark.parametrize(
    ("app_id", "verdict", "expected"),
    [
        # The rule's alternative first, then the other allowed messengers by name;
        # never a denied app (wechat) nor one of another category (thunderbird).
        ("telegram", "deny", ["signal", "discord", "element", "whatsapp"]),
        # A denied app whose rule names no alternative still gets the allowed ones.
        ("wechat", "deny", ["discord", "element", "signal", "whatsapp"]),
        # An allowed app is not its own alternative.
        ("signal", "allow", ["discord", "element", "whatsapp"]),
        # A catalog app the policy has no rule for.
        ("viber", None, ["discord", "element", "signal", "whatsapp"]),
        # Nothing else allowed in the email category.
        ("thunderbird", "allow", []),
    ],
)
def test_alternatives_order(
    catalog: dict[str, AppDefinition], app_id: str, verdict: str | None, expected: list[str]
) -> None:
    answer = recommendations_for(app_id, compiled(POLICY, catalog), catalog)
    assert answer["verdict"] == verdict
    assert [alt["id"] for alt in answer["alternatives"]] == expected


def test_a_policy_defined_app_is_described_from_the_bundle(
    catalog: dict[str, AppDefinition],
) -> None:
    answer = recommendations_for("telegram", compiled(POLICY, catalog), catalog)
    element = next(alt for alt in answer["alternatives"] if alt["id"] == "element")
    assert element == {
        "id": "element",
        "name": "Element",
        "homepage": "https://element.io/",
        "download_url": "https://element.io/download",
        "install_hints": {"linux": "Install the element-desktop package.", "macos": "",
                          "windows": "", "ios": "", "android": ""},
    }


def test_unknown_app(default_bundle: dict[str, Any], catalog: dict[str, AppDefinition]) -> None:
    with pytest.raises(UnknownApp) as caught:
        recommendations_for("icq", default_bundle, catalog)
    assert isinstance(caught.value, KeyError)
    assert caught.value.app_id == "icq"
    assert str(caught.value) == ("unknown app 'icq': it is neither in the catalog nor in the "
                                 "active policy")
