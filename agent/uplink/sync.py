"""Enrollment and check-ins with policy sync (the upload of events is agent.uplink.upload).

PolicySync runs on its own thread inside `warden-agent run` and sleeps on an
event that stopping (or SIGUSR1, "check in now") sets, so neither waits out
its interval.

Enrollment is signed with the machine's own key (agent.host.machine), which the
server binds to the agent: enrolling again as this machine needs that key or an
administrator's approval, which the agent waits for, asking again with backoff.

The policy-signing key the agent trusts (agent.uplink.trust) is pinned at enrollment —
checked against the `policy_public_key` setting when there is one — and moves
only when a policy answer's signed key rotations lead from it to a new key and
the policy verifies with that key. A check-in naming another key than the
pinned one is what makes the agent fetch the policy to look for them.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from agent.host.machine import MachineKey, MachineKeyError
from agent.state import (
    Activation,
    BundleRejected,
    Identity,
    StateDir,
    refuse_older,
    signing_key,
    verify_activation,
    verify_bundle,
)
from agent.uplink.backoff import Backoff
from agent.uplink.client import (
    AgentClient,
    ClientError,
    Enrollment,
    ReenrollmentPending,
    RetryLater,
    Unauthorized,
)
from agent.uplink.trust import UntrustedKey, key_b64, key_path
from policies.wire import AgentStatus, CheckinRequest, EnrollRequest

log = logging.getLogger("warden.agent.sync")
# How much of a refused policy's reason a check-in carries (policies.wire.AgentStatus).
POLICY_ERROR_CHARS = 1024


def _clip(text: str | None, limit: int) -> str | None:
    return text if text is None or len(text) <= limit else text[:limit - 1] + "…"


class KeyRefused(ClientError):
    """The server's policy key is not the configured one, nor one it leads to."""


@dataclass
class SyncStatus:
    """What `warden-agent status` and check-ins report; updated by the threads."""

    enrolled: bool = False
    agent_id: str | None = None
    policy_version: str | None = None
    # The server's number for the active version (v2) and that version's hash: shown by
    # `warden-agent status` when it is the bundle the agent runs.
    policy_number: int | None = None
    policy_number_of: str | None = None
    policy_error: str | None = None
    last_checkin: float | None = None
    last_upload: float | None = None
    last_error: str | None = None
    uploaded_events: int = 0
    # Events the server refused as invalid, one by one (logged, then let go).
    refused_events: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class PolicySync:
    """Enroll once, then check in with jitter and fetch the policy when its etag moves."""

    def __init__(
        self,
        client: AgentClient,
        state: StateDir,
        facts: Callable[[], dict[str, str]],
        enroll_secret: Callable[[], str | None],
        apply_bundle: Callable[[dict[str, Any]], None],
        agent_status: Callable[[], dict[str, Any]],
        status: SyncStatus,
        checkin_interval: float = 60.0,
        rng: random.Random | None = None,
        on_reachable: Callable[[], None] = lambda: None,
        on_failure: Callable[[], object] = lambda: None,
        trusted_key: bytes | None = None,
        take_exceptions: Callable[[Identity, Any], None] = lambda identity, signed: None,
    ) -> None:
        self.client = client
        # Handed the check-in answer's signed exceptions, once the policy key is settled.
        self._take_exceptions = take_exceptions
        # The `policy_public_key` setting: enrollment takes no other key (or one its signed
        # rotations lead to), and a state dir pinned to another is not used.
        self.trusted_key = trusted_key
        self._on_reachable = on_reachable
        # Told after every failed attempt, so `warden-agent status` can show why an
        # agent that never got to check in (bad CA, wrong secret) is not enrolled.
        self._on_failure = on_failure
        self.state = state
        self._facts = facts
        self._enroll_secret = enroll_secret
        self._apply_bundle = apply_bundle
        self._agent_status = agent_status
        self.status = status
        self.checkin_interval = checkin_interval
        self._rng = rng or random.Random()
        self._backoff = Backoff(base=2.0, cap=300.0, rng=self._rng)
        dropped = state.drop_untrusted_identity(trusted_key)
        if dropped:
            log.error("%s", dropped)
            status.last_error = dropped
        self.identity: Identity | None = state.load_identity()
        self.identity_ready = threading.Event()
        # Set to check in before the scheduled time (check_in_now).
        self.wake = threading.Event()
        # The activation of the policy in force: no bundle with a lower serial is taken.
        self.activation: Activation | None = None
        # Fetch the policy whatever its etag at the next check-in (after an enrollment).
        self._refetch = False
        # The server key a check-in named when the policy was last fetched because of it:
        # fetched once per key, not at every check-in while it cannot be followed.
        self._fetched_for_key: str | None = None
        # This machine's key pair, loaded (or made) when first needed: enrollment, check-in.
        self._machine_key: MachineKey | None = None
        if self.identity is not None:
            self._mark_enrolled(self.identity)
            self.activation = self._cached_activation(self.identity)

    def _cached_activation(self, identity: Identity) -> Activation | None:
        try:
            cached = self.state.load_signed_policy(identity.policy_public_key)
        except BundleRejected:
            return None  # the daemon reports the refused cache and runs its default
        if cached is None:
            return None
        if cached.public_key != identity.policy_public_key:
            # The agent stopped between saving a policy signed by a rotated-to key and
            # pinning that key: finish the move (the cached policy's rotations verified).
            self._pin(identity, cached.public_key, cached.key_rotations)
        return cached.activation

    def _mark_enrolled(self, identity: Identity) -> None:
        self.status.enrolled = True
        self.status.agent_id = identity.agent_id
        self.identity_ready.set()

    def run(self, stop: threading.Event) -> None:
        # Check in at once on start, then on the server's schedule.
        while not stop.is_set():
            try:
                delay = self._attempt()
            except Exception as exc:
                # Whatever it was, the thread must live: without it the agent
                # never checks in or takes a new policy again, silently.
                log.exception("check-in failed unexpectedly")
                delay = self._failed(exc, self._backoff.next_delay())
            self.wake.wait(delay)
            self.wake.clear()

    def check_in_now(self) -> None:
        """Cut the wait before the next check-in short (SIGUSR1, or the agent stopping)."""
        self.wake.set()

    def _attempt(self) -> float:
        """One sync; the delay before the next (the server's interval, or a backoff)."""
        try:
            delay = self.sync_once()
        except RetryLater as exc:
            delay = self._backoff.next_delay(exc.seconds)
            log.warning("server unreachable, retrying in %.0f s: %s", delay, exc)
            return self._failed(exc, delay)
        except ReenrollmentPending as exc:
            delay = self._backoff.next_delay()
            log.warning("waiting for an administrator to approve this machine's enrollment, "
                        "asking again in %.0f s: %s", delay, exc)
            return self._failed(exc, delay)
        except (KeyRefused, MachineKeyError) as exc:
            log.error("%s", exc)
            return self._failed(exc, self._backoff.next_delay())
        except Unauthorized as exc:
            log.error("the server no longer accepts this agent (%s); re-enrolling", exc)
            self.state.forget_identity()
            self.identity = None
            self.status.enrolled = False
            return self._failed(exc, self._backoff.next_delay())
        except ClientError as exc:
            log.error("check-in refused: %s", exc)
            return self._failed(exc, self._backoff.next_delay())
        except OSError as exc:
            # The state disk (full, read-only): retry later; the thread must live on.
            log.error("cannot write the agent's state: %s", exc)
            return self._failed(exc, self._backoff.next_delay())
        self._backoff.reset()
        self._on_reachable()
        return delay

    def _failed(self, exc: Exception, delay: float) -> float:
        self.status.last_error = str(exc)
        try:
            self._on_failure()
        except OSError as error:
            # Reporting the failure must not end the sync thread (e.g. a full disk).
            log.warning("cannot record the sync failure: %s", error)
        return delay

    def sync_once(self) -> float:
        """One enrollment (if needed) + check-in + policy fetch; returns the next delay."""
        identity = self.identity or self._enroll()
        pinned = key_b64(identity.policy_public_key)
        status = AgentStatus.model_validate({
            **self._agent_status(), "policy_public_key": pinned,
            # The wire keeps 1,024 characters of it; the status file keeps it whole.
            "policy_error": _clip(self.status.policy_error, POLICY_ERROR_CHARS)})
        # The machine's public key rides along: a server that has none bound to this agent
        # yet (enrolled before keys) binds it, authenticated by the token.
        answer = self.client.checkin(identity.agent_token, CheckinRequest(
            policy_version=self.status.policy_version, status=status,
            public_key=self._key().public_key))
        self.status.last_checkin = time.time()
        etag = answer.policy_etag
        if answer.policy_number is not None:
            self.status.policy_number, self.status.policy_number_of = (
                answer.policy_number, etag)
        announced = answer.policy_public_key
        other_key = announced != pinned
        rekeyed = self._refetch or (other_key and announced != self._fetched_for_key)
        if etag and (rekeyed or etag != self.status.policy_version):
            # After a key rotation the bundle is the same, its signature is not: no etag.
            # Fetched again, unconditionally, until the policy in force is saved too.
            self._refetch = not self._fetch_policy(identity, conditional=not rekeyed)
            self._fetched_for_key = announced if other_key else None
        elif etag and not other_key:
            # The server's active policy is the one in force: nothing is refused any more
            # (e.g. an admin rolled back to it after a bad bundle was offered).
            self.status.policy_error = None
        if self.identity is not None and answer.exceptions is not None:
            self._take_exceptions(self.identity, answer.exceptions.model_dump(mode="json"))
        interval = float(answer.next_checkin_seconds or self.checkin_interval)
        return max(1.0, interval)

    def _enroll(self) -> Identity:
        secret = self._enroll_secret()
        if not secret:
            raise ClientError("not enrolled and no enrollment secret: set "
                              "WARDEN_AGENT_ENROLL_SECRET or WARDEN_AGENT_ENROLL_SECRET_FILE")
        facts = self._facts()
        # Signed by this machine's key: how the server tells this machine from another
        # holder of the secret that names its machine_id (agent.host.machine).
        proof = self._key().proof(str(facts.get("machine_id")))
        try:
            request = EnrollRequest.model_validate({**facts, **proof})
        except ValidationError as exc:
            raise ClientError(f"this machine's facts cannot be sent to enroll: {exc}") from exc
        enrollment = self.client.enroll(secret, request)
        identity = Identity(enrollment.agent_id, enrollment.agent_token, self.client.server_url,
                            self._enrollment_key(enrollment), enrollment.group,
                            enrollment.key_rotations)
        self.state.save_identity(identity)
        self.identity = identity
        self._mark_enrolled(identity)
        # The policy in force was verified with the key pinned before, if any: fetch it again.
        self._refetch = True
        log.info("enrolled as agent %s (policy key %s)", identity.agent_id,
                 key_b64(identity.policy_public_key))
        return identity

    def _key(self) -> MachineKey:
        if self._machine_key is None:
            self._machine_key = MachineKey.load_or_create(self.state)
        return self._machine_key

    def _enrollment_key(self, enrollment: Enrollment) -> bytes:
        """The key to pin: where the answer's rotations lead from the configured key (or,
        with none configured, from the answered key); KeyRefused if the answered key is
        not on that way."""
        answered = enrollment.policy_public_key
        start = self.trusted_key or answered
        try:
            path = key_path(start, enrollment.key_rotations)
        except UntrustedKey as exc:
            raise KeyRefused(f"not enrolled: the server's key rotations are refused: {exc}") \
                from exc
        if answered not in path:
            raise KeyRefused(
                f"not enrolled: {self.client.server_url} signs policies with key "
                f"{key_b64(answered)}, not with the configured policy_public_key "
                f"{key_b64(start)} nor a key it was rotated to; compare "
                "WARDEN_AGENT_POLICY_PUBLIC_KEY with `warden server public-key` (or this is "
                "not your server)")
        return path[-1]

    def _pin(self, identity: Identity, key: bytes,
             rotations: tuple[dict[str, Any], ...]) -> None:
        moved = replace(identity, policy_public_key=key, key_rotations=rotations)
        self.state.save_identity(moved)
        self.identity = moved
        log.warning("the server's policy-signing key was rotated: now trusting %s (the "
                    "rotation was signed by %s)", key_b64(key),
                    key_b64(identity.policy_public_key))

    def _fetch_policy(self, identity: Identity, conditional: bool = True) -> bool:
        """Fetch, verify and apply the server's policy; False when it could not be saved."""
        signed = self.client.fetch_policy(identity.agent_token,
                                          self.status.policy_version if conditional else None)
        if signed is None:
            return True
        try:
            key = signing_key(identity.policy_public_key, signed.key_rotations)
            bundle = verify_bundle(signed.bundle, signed.signature, key)
            activation = verify_activation(signed.activation, signed.activation_signature, key,
                                           bundle)
            refuse_older(activation, self.activation)
        except BundleRejected as exc:
            # Keep enforcing the previous policy; say so at every check-in until fixed.
            self.status.policy_error = f"{exc} (offered version {signed.etag or '?'})"
            log.error("refused a policy bundle: %s", self.status.policy_error)
            return True
        saved = True
        try:
            # Saved together: the serial in force is the floor after a restart too. The
            # policy before the pin: it carries the rotations to its key (see agent.state).
            self.state.save_policy(bundle, signed.signature, activation, signed.key_rotations)
            if key != identity.policy_public_key:
                self._pin(identity, key, signed.key_rotations)
        except OSError as exc:
            # Verified, so enforced now; saved at the next check-in's fetch.
            log.error("applying policy %s, but cannot save it: %s", bundle["version"][:12], exc)
            saved = False
        if bundle["version"] != self.status.policy_version:
            self._apply_bundle(bundle)
        self.activation = activation
        self.status.policy_version = bundle["version"]
        self.status.policy_error = None
        log.info("applied policy %s (activation serial %s)", bundle["version"][:12],
                 activation.serial if activation else "none")
        return saved
