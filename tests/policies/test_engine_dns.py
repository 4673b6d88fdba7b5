"""The engine and DNS-inferred host names: which domains an agent resolves, how a match ranks."""

from __future__ import annotations

import datetime as dt

import pytest

from policies.compiler import compile_bundle
from policies.engine import Engine, HostContext
from policies.loader import load_catalog, parse_policy
from policies.observations import ConnectionObservation

POLICY = """
name: messengers
rules:
  - app: telegram
    verdict: deny
  - app: whatsapp
    verdict: deny
  - app: discord
    verdict: alert
  - app: viber
    verdict: deny
    exceptions:
      - groups: [sales]
        expires: 2999-01-01
  - app: signal
    verdict: allow
apps:
  - id: wildchat
    name: WildChat
    signatures:
      network:
        domains: ["*.wildchat.example", wildchat.example]
"""


def _engine(text: str = POLICY, **host: object) -> Engine:
    catalog = load_catalog()
    policy = parse_policy(text, "dns.yaml", catalog)
    return Engine(compile_bundle(policy, catalog), HostContext(**host))  # type: ignore[arg-type]


def _via_dns(ip: str, host: str, port: int = 443) -> ConnectionObservation:
    return ConnectionObservation(remote_ip=ip, remote_port=port, remote_host=host,
                                 host_from_dns=True)


def test_resolvable_domains_are_those_of_reported_apps() -> None:
    engine = _engine(groups=frozenset({"sales"}))
    domains = engine.resolvable_domains
    apps = set(domains.values())
    # deny and alert rules are reported; allow is not, nor an app excepted for this host.
    assert apps == {"telegram", "whatsapp", "discord"}
    assert domains["whatsapp.com"] == "whatsapp"
    assert domains["discord.com"] == "discord"
    assert "chat.signal.org" not in domains
    assert "viber.com" not in domains


def test_viber_is_resolved_where_its_exception_does_not_apply() -> None:
    assert _engine().resolvable_domains["viber.com"] == "viber"


def test_wildcard_domains_are_not_resolved() -> None:
    domains = _engine(POLICY.replace("  - app: signal\n", "  - app: wildchat\n"
                                     "    verdict: deny\n  - app: signal\n")).resolvable_domains
    assert domains["wildchat.example"] == "wildchat"
    assert "*.wildchat.example" not in domains


def test_nothing_is_resolved_out_of_scope() -> None:
    assert _engine(POLICY + "scope:\n  os: [windows]\n", os="linux").resolvable_domains == {}


# (observation, expected (app, confidence, matched) or None)
CASES: list[tuple[ConnectionObservation, tuple[str, str, str] | None]] = [
    # An address DNS gave for a WhatsApp domain: a finding, ranked below a CIDR match.
    (_via_dns("157.240.1.53", "whatsapp.com"),
     ("whatsapp", "medium", "network.domains: whatsapp.com (via DNS)")),
    (_via_dns("157.240.1.53", "whatsapp.com", port=5222),
     ("whatsapp", "medium", "network.domains: whatsapp.com (via DNS)")),  # no ports listed
    # Telegram lists ports: they qualify a DNS-named connection as they do a named one.
    (_via_dns("203.0.113.7", "telegram.org"),
     ("telegram", "medium", "network.domains: telegram.org (via DNS)")),
    (_via_dns("203.0.113.7", "telegram.org", port=22), None),
    # Inside a Telegram CIDR as well: the exact network match is the one kept.
    (_via_dns("149.154.167.99", "telegram.org"),
     ("telegram", "high", "network.cidrs: 149.154.160.0/20")),
    # The same name seen on the connection itself (a proxy log, the CLI) stays high.
    (ConnectionObservation(remote_ip="157.240.1.53", remote_port=443, remote_host="whatsapp.com"),
     ("whatsapp", "high", "network.domains: whatsapp.com")),
    # An allowed app's name gives no finding, inferred or not.
    (_via_dns("13.248.212.111", "chat.signal.org"), None),
]


@pytest.mark.parametrize(("observation", "expected"), CASES)
def test_dns_named_connections(
    observation: ConnectionObservation, expected: tuple[str, str, str] | None
) -> None:
    findings = _engine().evaluate(observation)
    got = [(f.app, f.confidence, f.matched) for f in findings]
    assert got == ([expected] if expected else [])


def test_evidence_says_the_name_was_inferred_and_the_key_keeps_the_address() -> None:
    [finding] = _engine().evaluate(_via_dns("157.240.1.53", "whatsapp.com"))
    assert finding.evidence["remote_address"] == "157.240.1.53:443"
    assert finding.evidence["remote_host"] == "whatsapp.com"
    assert finding.evidence["host_from_dns"] is True
    assert finding.key.endswith("->157.240.1.53:443:None")
    [named] = _engine().evaluate(ConnectionObservation(
        remote_ip="157.240.1.53", remote_port=443, remote_host="whatsapp.com"))
    assert "host_from_dns" not in named.evidence
    assert named.key.endswith("->whatsapp.com:443:None")


def test_expired_exception_makes_the_app_resolvable_again() -> None:
    later = _engine(groups=frozenset({"sales"}), today=dt.date(3000, 1, 1))
    assert later.resolvable_domains["viber.com"] == "viber"
