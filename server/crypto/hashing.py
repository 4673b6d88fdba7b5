"""Secrets: random tokens, their stored hashes, and people's passwords.

Tokens are 256-bit random strings, so a plain SHA-256 is enough to store them:
nobody can guess an input to brute-force. Passwords are chosen by people and
get argon2 instead. A prefix tells the kinds apart at a glance (and lets a
leaked token be recognised by secret scanners): `wag_` agent tokens, `wen_`
enrollment secrets, `wat_` API tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# The one password rule, for the API, the CLI and the store: long enough to resist
# guessing (NIST SP 800-63B asks at least 8; passphrases are welcome), capped so that
# nobody makes the server hash megabytes.
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024


def password_problem(password: str) -> str | None:
    """Why `password` is refused, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"the password must have at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"the password must have at most {MAX_PASSWORD_LENGTH} characters"
    return None


AGENT_TOKEN_PREFIX = "wag_"
ENROLL_SECRET_PREFIX = "wen_"
API_TOKEN_PREFIX = "wat_"
_TOKEN_BYTES = 32


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(_TOKEN_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_equal(left: str, right: str) -> bool:
    """Compare secrets (or their hashes) in constant time."""
    return hmac.compare_digest(left.encode(), right.encode())


def token_matches(token: str, stored_hash: str) -> bool:
    return tokens_equal(hash_token(token), stored_hash)


# argon2-cffi's defaults: RFC 9106's low-memory profile (argon2id, 64 MiB, 3 passes, 4
# lanes). A verification reads the cost from the stored hash, so hashes made at another
# cost still verify.
_HASHER = PasswordHasher()


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
