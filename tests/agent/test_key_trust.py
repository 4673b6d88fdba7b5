"""The agent's trust in a policy-signing key: pinned once, moved only along the server's
signed rotation statements (agent.uplink.trust), kept in the state dir (agent.state)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent.settings import SettingsError, load_settings
from agent.state import BundleRejected, Identity, StateDir
from agent.uplink.trust import ROTATION_PURPOSE, UntrustedKey, follow, key_path
from policies.compiler import canonical_json, compile_bundle
from policies.loader import default_policy_path, load_catalog, load_policy

KEYS = [Ed25519PrivateKey.generate() for _ in range(4)]
K0, K1, K2, OTHER = (key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
                     for key in KEYS)
PRIVATE = dict(zip((K0, K1, K2, OTHER), KEYS, strict=True))
# Test ids name the keys, not their random bytes: every pytest-xdist worker must collect
# the same ids.
KEY_NAMES = {K0: "K0", K1: "K1", K2: "K2", OTHER: "OTHER"}


def key_id(value: Any) -> str | None:
    return KEY_NAMES.get(value) if isinstance(value, bytes) else None


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def rotation(previous: bytes, new: bytes, signed_by: bytes | None = None,
             **changes: Any) -> dict[str, Any]:
    """The server's `{"statement", "signature"}`; `changes` are made after signing."""
    statement = {"purpose": ROTATION_PURPOSE, "previous_public_key": b64(previous),
                 "public_key": b64(new), "created_at": "2026-01-20T10:00:00.000+00:00"}
    signature = PRIVATE[signed_by or previous].sign(canonical_json(statement))
    return {"statement": {**statement, **changes}, "signature": b64(signature)}


def wrong_purpose(previous: bytes, new: bytes) -> dict[str, Any]:
    statement = {"purpose": "warden.policy-activation", "previous_public_key": b64(previous),
                 "public_key": b64(new), "created_at": "2026-01-20T10:00:00.000+00:00"}
    return {"statement": statement,
            "signature": b64(PRIVATE[previous].sign(canonical_json(statement)))}


# (trusted key, rotations as served, the key trusted afterwards — or the refusal's words)
CASES = [
    (K0, [], K0),  # never rotated
    (K0, [rotation(K0, K1)], K1),  # one rotation, signed by the key the agent pins
    (K0, [rotation(K0, K1), rotation(K1, K2)], K2),  # offline through two: both, in order
    (K1, [rotation(K0, K1), rotation(K1, K2)], K2),  # enrolled after the first: skips it
    (K2, [rotation(K0, K1), rotation(K1, K2)], K2),  # up to date: nothing to follow
    # A statement by a key this agent never trusted is not its chain: passed over.
    (K0, [rotation(OTHER, K2)], K0),
    (K0, [rotation(OTHER, K2), rotation(K0, K1)], K1),
    # Served newest first, the second is for a key the agent reaches only after it.
    (K0, [rotation(K1, K2), rotation(K0, K1)], K1),
    # Naming the pinned key but signed by another: a forgery, the whole answer is refused.
    (K0, [rotation(K0, OTHER, signed_by=OTHER)], "does not verify"),
    # Changed after signing: the new key swapped for another.
    (K0, [rotation(K0, K1, public_key=b64(OTHER))], "does not verify"),
    (K0, [rotation(K0, K1), rotation(K1, OTHER, signed_by=K0)], "does not verify"),
    # Signed by the pinned key, but some other document of the server's.
    (K0, [wrong_purpose(K0, K1)], "not a rotation statement"),
    (K0, [{"statement": "text", "signature": "AA=="}], "malformed"),
    (K0, [{"statement": {"public_key": b64(K1)}, "signature": "AA=="}], "malformed"),
    (K0, [rotation(K0, K1, previous_public_key="not base64!")], "malformed"),
    (K0, [rotation(K0, K1, public_key=b64(b"short"))], "not 32 bytes"),
    (K0, [["a", "list"]], "malformed"),
    (K0, {"not": "a list"}, "not a list"),
]


@pytest.mark.parametrize(("trusted", "rotations", "expected"), CASES, ids=key_id)
def test_the_trusted_key_moves_only_along_statements_it_signed(
    trusted: bytes, rotations: Any, expected: bytes | str
) -> None:
    if isinstance(expected, bytes):
        assert follow(trusted, rotations) == expected
    else:
        with pytest.raises(UntrustedKey, match=expected):
            follow(trusted, rotations)


def test_the_path_lists_every_key_on_the_way() -> None:
    assert key_path(K0, [rotation(K0, K1), rotation(K1, K2)]) == [K0, K1, K2]


@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    catalog = load_catalog()
    return compile_bundle(load_policy(default_policy_path(), catalog), catalog)


def signature(key: bytes, document: dict[str, Any]) -> bytes:
    return PRIVATE[key].sign(canonical_json(document))


def identity(key: bytes, rotations: tuple[dict[str, Any], ...] = ()) -> Identity:
    return Identity("agent-1", "wag_token", "https://warden.example", key, None, rotations)


def test_a_policy_saved_with_its_rotations_loads_with_the_key_pinned_before(
    tmp_path: Path, bundle: dict[str, Any]
) -> None:
    # The agent stopped after saving a policy signed by the new key, before pinning it.
    state = StateDir(tmp_path)
    rotations = (rotation(K0, K1),)
    state.save_policy(bundle, signature(K1, bundle), key_rotations=rotations)
    loaded = state.load_signed_policy(K0)
    assert loaded is not None
    assert loaded.bundle == bundle and loaded.public_key == K1
    assert loaded.key_rotations == rotations
    assert state.load_signed_policy(K1) is not None  # and once pinned, as well
    with pytest.raises(BundleRejected, match="pinned key"):
        state.load_signed_policy(OTHER)


def test_rotations_in_policy_json_cannot_lead_to_a_key_of_the_editors_choice(
    tmp_path: Path, bundle: dict[str, Any]
) -> None:
    state = StateDir(tmp_path)
    relaxed = {**bundle, "name": "edited"}
    state.save_policy(relaxed, signature(OTHER, relaxed),
                      key_rotations=(rotation(K0, OTHER, signed_by=OTHER),))
    with pytest.raises(BundleRejected, match="does not verify"):
        state.load_signed_policy(K0)


def test_the_identity_keeps_its_rotations(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    saved = identity(K2, (rotation(K0, K1), rotation(K1, K2)))
    state.save_identity(saved)
    assert state.load_identity() == saved
    on_disk = json.loads((tmp_path / "identity.json").read_text())
    assert on_disk["policy_public_key"] == b64(K2)
    # An identity.json from before rotations loads with none.
    del on_disk["key_rotations"]
    (tmp_path / "identity.json").write_text(json.dumps(on_disk))
    assert state.load_identity() == identity(K2)


# (pinned key, its rotations, the configured key, still trusted?)
TRUST_CASES = [
    (K0, (), K0, True),
    (K1, (rotation(K0, K1),), K0, True),  # configured before a rotation: the chain leads on
    (K2, (rotation(K0, K1), rotation(K1, K2)), K0, True),
    (K2, (rotation(K0, K1), rotation(K1, K2)), K1, True),
    (K0, (), OTHER, False),  # enrolled with another server, or an impostor's key
    (K1, (), K0, False),  # no statement says K0 led to K1
    (K0, (rotation(K0, K1),), K1, False),  # configured newer than the pin: enroll again
    (K1, (rotation(K0, K1, signed_by=OTHER),), K0, False),  # a forged statement
]


@pytest.mark.parametrize(("pinned", "rotations", "configured", "trusted"), TRUST_CASES,
                         ids=key_id)
def test_a_state_dir_is_kept_only_when_the_configured_key_leads_to_its_pin(
    tmp_path: Path, bundle: dict[str, Any], pinned: bytes,
    rotations: tuple[dict[str, Any], ...], configured: bytes, trusted: bool
) -> None:
    state = StateDir(tmp_path)
    state.save_identity(identity(pinned, rotations))
    state.save_policy(bundle, signature(pinned, bundle))
    dropped = state.drop_untrusted_identity(configured)
    if trusted:
        assert dropped is None
        assert state.load_identity() == identity(pinned, rotations)
        assert (tmp_path / "policy.json").exists()
    else:
        assert dropped is not None and b64(configured) in dropped and b64(pinned) in dropped
        assert state.load_identity() is None
        assert not (tmp_path / "policy.json").exists()  # verified with the distrusted key
        # Set aside, not destroyed: an admin who pushed a wrong key can move them back.
        kept = json.loads((tmp_path / "identity.json.untrusted").read_text())
        assert kept["policy_public_key"] == b64(pinned)
        assert (tmp_path / "policy.json.untrusted").exists()


def test_without_a_configured_key_any_pin_is_kept(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.save_identity(identity(OTHER))
    assert state.drop_untrusted_identity(None) is None
    assert state.load_identity() == identity(OTHER)


@pytest.mark.parametrize("bad", ["abc", b64(b"x" * 31), b64(b"x" * 33), "not base64!"])
def test_the_setting_refuses_anything_but_a_raw_ed25519_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bad: str
) -> None:
    monkeypatch.setenv("WARDEN_AGENT_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("WARDEN_AGENT_POLICY_PUBLIC_KEY", bad)
    with pytest.raises(SettingsError, match=r"policy_public_key \(WARDEN_AGENT_POLICY_PUBLIC"
                                            r"_KEY .*base64 of the 32-byte Ed25519 key"):
        load_settings()


def test_the_setting_takes_the_key_as_the_server_prints_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'policy_public_key = "{b64(K1)}"\n')
    monkeypatch.setenv("WARDEN_AGENT_CONFIG", str(config))
    assert load_settings().policy_public_key == K1
    monkeypatch.setenv("WARDEN_AGENT_POLICY_PUBLIC_KEY", f" {b64(K0)}\n")
    assert load_settings().policy_public_key == K0
    monkeypatch.setenv("WARDEN_AGENT_POLICY_PUBLIC_KEY", "")
    assert load_settings().policy_public_key is None  # unset: trust on first use
