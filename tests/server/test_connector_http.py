"""The vendor HTTP rules in isolation: HTTPS only (loopback excepted), Retry-After forms."""

from __future__ import annotations

import email.utils
import time

import pytest

from server.connectors.http import _retry_after, check_url
from server.connectors.inventory import SyncError


@pytest.mark.parametrize("url", ["https://graph.microsoft.com", "https://acme.jamfcloud.com/",
                                 "http://127.0.0.1:8080", "http://localhost:9", "http://[::1]:5"])
def test_https_or_loopback_urls_are_taken(url: str) -> None:
    assert check_url(url, "URL") == url.rstrip("/")


@pytest.mark.parametrize("url", ["http://graph.example.org", "http://10.0.0.5", "ftp://x",
                                 "graph.microsoft.com", "https://", "http://127.0.0.1.evil.org"])
def test_other_urls_are_refused_with_the_fix(url: str) -> None:
    with pytest.raises(SyncError, match=r"not an https:// URL.*loopback"):
        check_url(url, "Graph URL")


def test_retry_after_takes_seconds_or_an_http_date() -> None:
    assert _retry_after("7") == 7.0
    assert _retry_after(None) == 1.0 and _retry_after("soon") == 1.0
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= _retry_after(later) <= 31
    assert _retry_after(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0.0
