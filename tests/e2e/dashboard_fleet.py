"""A believable fleet for the dashboard's screenshots: a dozen machines, a month of findings.

Everything goes in through the real HTTP APIs of a running server, as agents and
an administrator would send it: hosts enroll with a (group-scoped) secret and
check in, findings are what the policy engine makes of real-looking
observations, sent as agent events; a second policy version is uploaded and
activated; reviewers triage a few findings. Random choices use a fixed seed,
so every run draws the same fleet (only "now" moves).
"""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from policies.observations import (
    ConnectionObservation,
    InstalledObservation,
    Observation,
    ProcessObservation,
)
from tests.server.admin_support import finding_for

# The organisation's second policy version: WhatsApp banned too, Discord watched.
POLICY_V2 = """\
# Messaging policy, second revision: WhatsApp joins Telegram on the banned list
# (customer data left the company through it twice); Discord is watched.
name: org-messaging
description: >-
  Telegram and WhatsApp are banned on official devices. Use Signal instead.
mode: audit
rules:
  - app: telegram
    verdict: deny
    action: notify
    alternative: signal
    message: >-
      Telegram is not allowed on official devices. Please remove it and use
      Signal for work conversations.
  - app: whatsapp
    verdict: deny
    action: notify
    alternative: signal
    message: WhatsApp is not allowed on official devices. Use Signal instead.
  - app: discord
    verdict: alert
    action: report
  - app: signal
    verdict: allow
"""


@dataclass(frozen=True)
class Host:
    hostname: str
    group: str
    os: str
    os_version: str
    user: str


HOSTS = [
    Host("fin-lt-0142", "finance", "windows", "Windows 11 Pro 23H2", "m.keller"),
    Host("fin-lt-0178", "finance", "windows", "Windows 11 Pro 23H2", "s.romano"),
    Host("fin-ws-0031", "finance", "linux", "Ubuntu 24.04 LTS", "j.okafor"),
    Host("eng-ws-0077", "engineering", "linux", "Debian 12", "a.novak"),
    Host("eng-ws-0081", "engineering", "linux", "Fedora 40", "l.chen"),
    Host("eng-mb-0019", "engineering", "macos", "macOS 14.5", "p.silva"),
    Host("eng-mb-0023", "engineering", "macos", "macOS 15.1", "r.haddad"),
    Host("sales-mb-0031", "sales", "macos", "macOS 14.6", "e.larsen"),
    Host("sales-lt-0054", "sales", "windows", "Windows 10 Pro 22H2", "k.tanaka"),
    Host("sales-lt-0060", "sales", "windows", "Windows 11 Pro 24H2", "d.mensah"),
    Host("hr-lt-0009", "hr", "windows", "Windows 11 Pro 23H2", "c.dubois"),
    Host("hr-mb-0004", "hr", "macos", "macOS 14.5", "b.ivanova"),
    Host("ops-ws-0102", "operations", "linux", "Rocky Linux 9.4", "t.fischer"),
    Host("ops-ws-0110", "operations", "linux", "Debian 12", "n.ahmed"),
]


def observation_for(app: str, sensor: str, host: Host, pid: int) -> Observation:
    """What an agent on `host` would have seen of `app` through `sensor`."""
    home = f"/home/{host.user}"
    if sensor == "network":
        return ConnectionObservation(remote_ip="149.154.167.51", remote_port=443,
                                     local_ip="10.20.4.17", local_port=50000 + pid % 9000,
                                     pid=pid, process_name="telegram-desktop")
    if sensor == "installed":
        if host.os == "macos":
            return InstalledObservation(source="app_bundle", id="ru.keepcoder.Telegram",
                                        path="/Applications/Telegram.app", version="11.2")
        if host.os == "windows":
            return InstalledObservation(source="winget", id="Telegram.TelegramDesktop",
                                        version="5.3.1")
        return InstalledObservation(source="deb", id="telegram-desktop",
                                    path="/usr/bin/telegram-desktop", version="4.16.8")
    names = {
        ("telegram", "linux"): ("telegram-desktop", "/usr/bin/telegram-desktop"),
        ("telegram", "macos"): ("Telegram", "/Applications/Telegram.app/Contents/MacOS/Telegram"),
        ("telegram", "windows"): ("Telegram.exe", f"C:/Users/{host.user}/AppData/Roaming/"
                                                  "Telegram Desktop/Telegram.exe"),
        ("whatsapp", "windows"): ("WhatsApp.exe", f"C:/Users/{host.user}/AppData/Local/"
                                                  "WhatsApp/WhatsApp.exe"),
        ("whatsapp", "macos"): ("WhatsApp", "/Applications/WhatsApp.app/Contents/MacOS/WhatsApp"),
        ("discord", "windows"): ("Discord.exe", f"C:/Users/{host.user}/AppData/Local/Discord/"
                                                "app-1.0.9163/Discord.exe"),
        ("discord", "macos"): ("Discord", "/Applications/Discord.app/Contents/MacOS/Discord"),
        ("discord", "linux"): ("Discord", "/usr/share/discord/Discord"),
    }
    # Anything else: the Telegram tarball unpacked in Downloads, as people do.
    tarball = ("telegram-desktop", f"{home}/Downloads/Telegram/Telegram")
    name, exe = names.get((app, host.os), tarball)
    return ProcessObservation(pid=pid, name=name, create_time=1_700_000_000.0 + pid, exe=exe,
                              cmdline=(exe,), username=host.user)


class FleetSeeder:
    def __init__(self, url: str, admin_token: str, now: dt.datetime,
                 seed: int = 20251128) -> None:
        self.url = url
        self.admin = {"Authorization": f"Bearer {admin_token}"}
        self.now = now
        self.random = random.Random(seed)
        self.agents: dict[str, dict[str, Any]] = {}

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = requests.request(method, f"{self.url}{path}", timeout=30,
                                    headers={**self.admin, **kwargs.pop("headers", {})},
                                    **kwargs)
        assert response.status_code < 300, (path, response.status_code, response.text)
        return response.json() if response.content else None

    def enroll_all(self) -> None:
        secrets: dict[str, str] = {}
        for host in HOSTS:
            if host.group not in secrets:
                secrets[host.group] = self.api("POST", "/api/v1/secrets",
                                               json={"group": host.group})["secret"]
            facts = {"hostname": host.hostname, "machine_id": uuid.uuid4().hex, "os": host.os,
                     "os_version": host.os_version, "arch": "x86_64",
                     "agent_version": "0.1.0", "user": host.user}
            answer = requests.post(f"{self.url}/api/v1/agent/enroll", json=facts, timeout=30,
                                   headers={"Authorization": f"Bearer {secrets[host.group]}"})
            assert answer.status_code == 201, answer.text
            self.agents[host.hostname] = {"host": host, **answer.json()}

    def report(self, hostname: str, app: str, sensor: str, days_ago: float,
               resolved_after_hours: float | None = None, policy: str | None = None) -> None:
        agent = self.agents[hostname]
        host: Host = agent["host"]
        pid = self.random.randint(1200, 65000)
        finding = finding_for(observation_for(app, sensor, host, pid), host.os, policy)
        opened = self.now - dt.timedelta(days=days_ago)
        events = [{"id": str(uuid.uuid4()), "type": "finding_opened",
                   "time": opened.isoformat(), "finding": finding}]
        if resolved_after_hours is not None:
            events.append({"id": str(uuid.uuid4()), "type": "finding_resolved",
                           "time": (opened + dt.timedelta(hours=resolved_after_hours))
                           .isoformat(), "finding": finding})
        answer = requests.post(f"{self.url}/api/v1/agent/events", json={"events": events},
                               timeout=30,
                               headers={"Authorization": f"Bearer {agent['agent_token']}"})
        assert answer.status_code == 200, answer.text

    def month_of_findings(self) -> None:
        """Telegram all month under v1; WhatsApp and Discord in the last week, under v2."""
        pick: Callable[[list[str]], str] = self.random.choice
        for _ in range(60):
            hostname = pick([host.hostname for host in HOSTS])
            sensor = pick(["process"] * 5 + ["network"] * 2 + ["installed"])
            days_ago = self.random.uniform(0.05, 29.5)
            # Most sightings end: the person quits the app, or IT removes it.
            resolved = (self.random.uniform(0.2, 30) if days_ago > 2
                        and self.random.random() < 0.85 else None)
            self.report(hostname, "telegram", sensor, days_ago, resolved)
        for app, hosts in (("whatsapp", ["fin-lt-0142", "sales-lt-0054", "sales-mb-0031",
                                         "hr-lt-0009", "hr-mb-0004"]),
                           ("discord", ["eng-mb-0019", "eng-ws-0077", "sales-lt-0060"])):
            for hostname in hosts:
                self.report(hostname, app, "process", self.random.uniform(0.1, 6.5),
                            policy=POLICY_V2)

    def second_policy(self) -> int:
        created = self.api("POST", "/api/v1/policies", data=POLICY_V2.encode(),
                           headers={"Content-Type": "application/yaml"})
        number: int = created["version_number"]
        self.api("POST", f"/api/v1/policies/{number}/activate")
        return number

    def check_in(self, current: str, outdated: str, stale: set[str]) -> None:
        """Every agent checks in, two still on the old bundle; `stale` ones do not."""
        for index, (hostname, agent) in enumerate(sorted(self.agents.items())):
            if hostname in stale:
                continue
            body = {"policy_version": outdated if index % 6 == 5 else current,
                    "status": {"spool_depth": 0, "dropped_events": 0, "open_findings": 0,
                               "cpu_percent": round(self.random.uniform(0.1, 1.5), 2),
                               "rss_bytes": self.random.randint(28, 46) * 1_000_000,
                               "uptime_seconds": self.random.randint(3600, 900_000)}}
            answer = requests.post(f"{self.url}/api/v1/agent/checkin", json=body, timeout=30,
                                   headers={"Authorization": f"Bearer {agent['agent_token']}"})
            assert answer.status_code == 200, answer.text

    def triage_some(self) -> None:
        comments = {"acknowledged": "Called the user; uninstall scheduled with IT.",
                    "false_positive": "Build server test fixture, not a real client.",
                    "resolved": "Removed remotely; user moved to Signal."}
        items = self.api("GET", "/api/v1/findings", params={"limit": 40})["items"]
        for item, state in zip(items[3::4], ["acknowledged", "resolved", "false_positive",
                                             "acknowledged", "resolved"], strict=False):
            self.api("POST", f"/api/v1/findings/{item['id']}/triage",
                     json={"state": state, "comment": comments[state]})


def make_silent(database: Path, hostnames: set[str], since: dt.datetime) -> None:
    """Backdate these agents' last check-in: waiting two days is not a test's business."""
    stamp = since.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")
    with sqlite3.connect(database) as connection:
        connection.executemany("UPDATE agents SET last_seen = ? WHERE hostname = ?",
                               [(stamp, hostname) for hostname in hostnames])
