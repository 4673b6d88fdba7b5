"""The address -> domain table built from DNS answers, and its look-up: pure, as case tables."""

from __future__ import annotations

import ipaddress

import pytest

from agent.sensors.dns_table import IPAddress, build_table, host_for

APPS = {"whatsapp.com": "whatsapp", "whatsapp.net": "whatsapp", "discord.com": "discord"}
NOW = 1000.0
RETAIN = 3600.0


def _everything(address: IPAddress) -> bool:
    return True


# (answers: domain -> {address: when seen}, expected table)
CASES: list[tuple[dict[str, dict[str, float]], dict[str, str]]] = [
    # An answer names its address after the domain.
    ({"whatsapp.com": {"157.240.1.53": NOW}}, {"157.240.1.53": "whatsapp.com"}),
    ({"whatsapp.com": {"2a03:2880:f20c:e3:face:b00c:0:167": NOW}},
     {"2a03:2880:f20c:e3:face:b00c:0:167": "whatsapp.com"}),
    # Written any way, an address is keyed as the sensor writes it.
    ({"whatsapp.com": {"2A03:2880:F20C:00E3:FACE:B00C:0000:0167": NOW}},
     {"2a03:2880:f20c:e3:face:b00c:0:167": "whatsapp.com"}),
    ({"whatsapp.com": {"::ffff:157.240.1.53": NOW}}, {"157.240.1.53": "whatsapp.com"}),
    # Sinkhole and local answers never stand for an app's server.
    ({"whatsapp.com": {"0.0.0.0": NOW, "127.0.0.1": NOW, "::1": NOW, "::": NOW}}, {}),
    ({"whatsapp.com": {"10.20.30.40": NOW, "192.168.1.1": NOW, "172.16.0.9": NOW}}, {}),
    ({"whatsapp.com": {"169.254.1.1": NOW, "fe80::1": NOW, "fd00::1": NOW}}, {}),
    ({"whatsapp.com": {"100.64.0.1": NOW}}, {}),  # carrier-grade NAT
    # Not an address at all.
    ({"whatsapp.com": {"not-an-address": NOW}}, {}),
    # Aged out: last seen longer ago than RETAIN; at exactly RETAIN it still counts.
    ({"whatsapp.com": {"157.240.1.53": NOW - RETAIN - 1}}, {}),
    ({"whatsapp.com": {"157.240.1.53": NOW - RETAIN}}, {"157.240.1.53": "whatsapp.com"}),
    # A domain the policy no longer asks about.
    ({"viber.com": {"52.0.0.1": NOW}}, {}),
    # One app's two domains on one address: the first in sort order, always.
    ({"whatsapp.net": {"157.240.1.60": NOW}, "whatsapp.com": {"157.240.1.60": NOW}},
     {"157.240.1.60": "whatsapp.com"}),
    # Two apps on one address: shared infrastructure, so neither; their own ones stay.
    ({"whatsapp.com": {"104.16.0.1": NOW, "157.240.1.53": NOW},
      "discord.com": {"104.16.0.1": NOW, "162.159.135.232": NOW}},
     {"157.240.1.53": "whatsapp.com", "162.159.135.232": "discord.com"}),
]


@pytest.mark.parametrize(("answers", "expected"), CASES)
def test_build_table(answers: dict[str, dict[str, float]], expected: dict[str, str]) -> None:
    assert build_table(answers, APPS, now=NOW, retain=RETAIN) == expected


def test_admission_is_the_callers_choice() -> None:
    # What tests and labs do to put a listener on loopback behind a catalog domain.
    lab = ipaddress.ip_network("127.77.0.0/16")
    answers = {"whatsapp.com": {"127.77.0.1": NOW, "127.0.0.1": NOW}}
    assert build_table(answers, APPS, now=NOW, retain=RETAIN,
                       admit=lambda address: address in lab) == {"127.77.0.1": "whatsapp.com"}
    assert build_table(answers, APPS, now=NOW, retain=RETAIN, admit=_everything) == {
        "127.77.0.1": "whatsapp.com", "127.0.0.1": "whatsapp.com"}


TABLE = {"157.240.1.53": "whatsapp.com", "2a03:2880:f20c:e3:face:b00c:0:167": "whatsapp.com"}


@pytest.mark.parametrize(
    ("remote_ip", "expected"),
    [
        ("157.240.1.53", "whatsapp.com"),
        ("::ffff:157.240.1.53", "whatsapp.com"),  # IPv4 peer of a dual-stack socket
        ("2a03:2880:f20c:e3:face:b00c:0:167", "whatsapp.com"),
        ("157.240.1.54", None),
        ("::ffff:157.240.1.54", None),
        ("", None),
    ],
)
def test_host_for(remote_ip: str, expected: str | None) -> None:
    assert host_for(TABLE, remote_ip) == expected
