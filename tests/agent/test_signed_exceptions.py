"""The agent takes only exceptions the server signed for it, and decides on its own clock
which hold: a table of tampered, unsigned, misdirected and replayed documents, and of
moments around an exception's end."""

from __future__ import annotations

import base64
import copy
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from agent.responding.notify import RecordingNotifier
from agent.scanning.exceptions import ExceptionKeeper
from agent.uplink import exceptions as signed_exceptions
from agent.uplink.exceptions import ExceptionsRejected, verify
from policies.exceptions import ExceptionsDocument, in_force
from server.crypto.signing import PolicySigner

T0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
AGENT = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


def document(issued_at: dt.datetime = T0, agent_id: str = AGENT,
             until: dt.datetime = T0 + dt.timedelta(days=3)) -> dict[str, Any]:
    return ExceptionsDocument(agent_id=agent_id, issued_at=issued_at, exceptions=[
        {"id": 1, "app": "telegram", "until": until, "reason": "press office"}],
    ).model_dump(mode="json")


def signed(signer: PolicySigner, doc: dict[str, Any]) -> dict[str, Any]:
    return {"document": doc, "signature": signer.sign(doc)}


@pytest.fixture(scope="module")
def signer() -> PolicySigner:
    return PolicySigner.generate()


def raw_key(signer: PolicySigner) -> bytes:
    return base64.b64decode(signer.public_key_b64)


def test_a_signed_document_for_this_agent_is_taken(signer: PolicySigner) -> None:
    taken = verify(signed(signer, document()), raw_key(signer), AGENT)
    assert [item.app for item in taken.exceptions] == ["telegram"]


def _tampered_until(signer: PolicySigner) -> Any:
    offered = signed(signer, document())
    offered["document"]["exceptions"][0]["until"] = "2027-05-01T12:00:00Z"
    return offered


def _added_app(signer: PolicySigner) -> Any:
    offered = signed(signer, document())
    extra = copy.deepcopy(offered["document"]["exceptions"][0])
    offered["document"]["exceptions"].append({**extra, "app": "whatsapp", "id": 2})
    return offered


def _wrong_purpose(signer: PolicySigner) -> Any:
    doc = {**document(), "purpose": "warden.policy-key-rotation"}
    return signed(signer, doc)


@pytest.mark.parametrize(("offer", "why"), [
    # The until pushed a year on after signing.
    (_tampered_until, "signature"),
    # An app slipped in after signing.
    (_added_app, "signature"),
    # No signature at all; a signature that is not base64; nothing signed.
    (lambda s: {"document": document()}, "not a signed document"),
    (lambda s: {"document": document(), "signature": "%%%"}, "signature"),
    (lambda s: document(), "not a signed document"),
    # Signed by another key (someone else's server, or an attacker's).
    (lambda s: signed(PolicySigner.generate(), document()), "signature"),
    # Signed, but for another agent: one agent's grant is not another's.
    (lambda s: signed(s, document(agent_id="another")), "for agent another"),
    # Signed with the same key, but something else (a rotation statement's purpose).
    (_wrong_purpose, "not an exceptions document"),
])
def test_unsigned_tampered_or_misdirected_exceptions_are_refused(
        signer: PolicySigner, offer: Any, why: str) -> None:
    with pytest.raises(ExceptionsRejected, match=why):
        verify(offer(signer), raw_key(signer), AGENT)


def test_an_older_document_cannot_bring_back_a_revoked_exception(signer: PolicySigner) -> None:
    held = verify(signed(signer, document(issued_at=T0)), raw_key(signer), AGENT)
    replayed = signed(signer, document(issued_at=T0 - dt.timedelta(minutes=1)))
    with pytest.raises(ExceptionsRejected, match="an old copy"):
        verify(replayed, raw_key(signer), AGENT, held)


def test_a_kept_document_edited_on_disk_is_dropped(signer: PolicySigner,
                                                  tmp_path: Path) -> None:
    offered = signed(signer, document())
    signed_exceptions.save(tmp_path, offered)
    assert signed_exceptions.load(tmp_path, raw_key(signer), AGENT) is not None
    path = tmp_path / signed_exceptions.FILE_NAME
    path.write_text(path.read_text().replace("2026-05-04", "2027-05-04"))
    assert signed_exceptions.load(tmp_path, raw_key(signer), AGENT) is None


UNTIL = T0 + dt.timedelta(days=3)


@pytest.mark.parametrize(("now", "holds"), [
    (T0, True),                                  # granted
    (UNTIL - dt.timedelta(seconds=1), True),     # its last second
    (UNTIL, False),                              # `until` itself: over
    (UNTIL + dt.timedelta(days=1), False),       # long over
])
def test_an_exception_holds_until_its_time_by_the_clock_given(now: dt.datetime,
                                                              holds: bool) -> None:
    doc = ExceptionsDocument.model_validate(document(until=UNTIL))
    assert ("telegram" in in_force(doc.exceptions, now)) is holds


def test_the_keeper_rebuilds_on_lapse_and_warns_once_a_day_before(tmp_path: Path) -> None:
    now = [T0]
    changes: list[frozenset[str]] = []
    notifier = RecordingNotifier()
    keeper = ExceptionKeeper(notifier, changes.append, tmp_path, lambda app: "Telegram",
                             clock=lambda: now[0])
    keeper.take(ExceptionsDocument.model_validate(document(until=UNTIL)))
    assert changes == [frozenset({"telegram"})] and notifier.notices == []
    now[0] = UNTIL - dt.timedelta(hours=20)
    keeper.tick()
    keeper.tick()
    assert [n.title for n in notifier.notices] == ["Your exception for Telegram ends soon"]
    # A restarted agent (same state dir) does not say it again.
    again = ExceptionKeeper(notifier, changes.append, tmp_path, clock=lambda: now[0],
                            document=keeper.document)
    again.tick()
    assert len(notifier.notices) == 1
    now[0] = UNTIL
    assert keeper.tick() > 0
    assert changes == [frozenset({"telegram"}), frozenset()]
    assert keeper.granted() == frozenset()
