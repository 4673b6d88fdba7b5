"""The settings scale-out adds: which proxies are believed, and how many workers run."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from server.settings import ServerSettings

PG = "postgresql+psycopg://warden@db.internal/warden"


def test_trusted_proxies_come_as_a_comma_separated_variable_or_a_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ServerSettings(data_dir=tmp_path).trusted_proxies == []
    monkeypatch.setenv("WARDEN_TRUSTED_PROXIES", " 10.0.0.5, 10.1.0.0/24 ,::1")
    assert ServerSettings(data_dir=tmp_path).trusted_proxies == ["10.0.0.5", "10.1.0.0/24",
                                                                "::1"]
    assert ServerSettings(data_dir=tmp_path, trusted_proxies=["192.0.2.1"]).trusted_proxies \
        == ["192.0.2.1"]


@pytest.mark.parametrize("bad", ["lb.example.org", "10.0.0.300", "10.0.0.0/33", "*"])
def test_a_proxy_that_is_not_an_address_is_refused_by_name(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValidationError) as refused:
        ServerSettings(data_dir=tmp_path, trusted_proxies=["10.0.0.5", bad])
    message = str(refused.value)
    assert "trusted_proxies" in message and repr(bad) in message
    assert "IP address or network" in message


def test_several_workers_need_postgresql(tmp_path: Path) -> None:
    assert ServerSettings(data_dir=tmp_path, workers=4, database_url=PG).workers == 4
    assert ServerSettings(data_dir=tmp_path, workers=1).workers == 1
    with pytest.raises(ValidationError, match="3 workers need PostgreSQL"):
        ServerSettings(data_dir=tmp_path, workers=3)
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        ServerSettings(data_dir=tmp_path, workers=0, database_url=PG)
