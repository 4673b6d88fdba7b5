"""What a destination tells the dispatcher when a delivery fails."""

from __future__ import annotations

from typing import Any, Protocol


class DeliveryError(Exception):
    """A delivery that will not succeed however often it is retried (e.g. HTTP 400)."""


class RetryableError(DeliveryError):
    """A delivery worth retrying: the receiver is down, overloaded or rate-limiting us.

    `retry_after` is the receiver's own wish (HTTP Retry-After), in seconds, when it
    stated one; the dispatcher honours it instead of its own backoff.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Sender(Protocol):
    """One alert destination. `send` returns on success and raises DeliveryError otherwise."""

    name: str

    def send(self, finding: dict[str, Any]) -> None: ...

    def close(self) -> None: ...
