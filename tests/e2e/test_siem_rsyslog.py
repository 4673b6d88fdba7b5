"""The whole chain: a real agent sees a fake Telegram, a real `warden server run` configured
by its warden.toml sends CEF to Debian's rsyslogd, and the CEF read back names the host,
the process, the notification that was sent and the finding's resolution."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent.conftest import FakeProcesses, wait_for
from tests.e2e.conftest import AgentProcess, WardenServer, agent_factory
from tests.server.siem_support import RSYSLOGD, Rsyslog, parse_cef, start_rsyslog

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.access(RSYSLOGD, os.X_OK), reason="needs rsyslogd")]
SYNC = 45.0


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    yield from start_rsyslog(tmp_path / "rsyslog")


def test_a_fake_telegram_reaches_rsyslog_as_cef(
    tmp_path: Path, rsyslog: Rsyslog, fake: FakeProcesses
) -> None:
    server = WardenServer(tmp_path / "server", tmp_path / "server.log")
    (server.data_dir / "warden.toml").write_text(
        '[[siem_destinations]]\nname = "soc"\nformat = "cef"\n'
        f'address = "tcp://127.0.0.1:{rsyslog.tcp_port}"\n')
    server.start()
    try:
        with agent_factory(tmp_path, server) as make:
            agent: AgentProcess = make()
            agent.start()
            wait_for(lambda: agent.status().get("enrolled"), SYNC, "enrollment")
            telegram = fake.start("telegram-desktop")

            def cef(msgid: str) -> list[dict[str, str]]:
                return [parse_cef(m["msg"])[1] for m in rsyslog.received()
                        if m["msgid"] == msgid and f"spid={telegram.pid}" in m["msg"]]

            [opened] = wait_for(lambda: cef("finding-opened"), SYNC, "CEF finding-opened")
            [notified] = wait_for(lambda: cef("notify"), SYNC, "CEF for the notification")
            fake.stop(telegram)
            [resolved] = wait_for(lambda: cef("finding-resolved"), SYNC, "CEF resolved")
        finding: dict[str, Any] = server.findings(app="telegram")[0]
    finally:
        server.stop()
    assert opened["cs4"] == resolved["cs4"] == notified["cs4"] == str(finding["id"])
    assert opened["cs1"] == "telegram" and opened["cs2"] == "deny"
    assert opened["sproc"] == "telegram-desktop" and opened["filePath"].endswith(
        "/telegram-desktop")
    assert opened["shost"] == finding["host"]
    assert notified["outcome"] == "success" and notified["act"] == "notify"
