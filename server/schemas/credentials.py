"""Enrollment secrets, API tokens and users: the records, and what creating one takes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from policies.vocabulary import Role
from server.crypto.hashing import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from server.schemas.common import Answer, Page, Timestamp


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SecretRequest(_Request):
    group: str | None = Field(default=None, min_length=1, max_length=255,
                              description="agents enrolled with this secret join this group")
    note: str | None = Field(default=None, max_length=255)


class SecretRecord(Answer):
    id: int
    group: str | None
    note: str | None
    created_by: str
    created_by_name: str = Field(default="", description="who created it, for people (`alice`)")
    created_at: Timestamp
    revoked_at: Timestamp | None
    uses: int


class NewSecret(SecretRecord):
    secret: str = Field(description="`wen_…`, shown this once; the server keeps its hash")


SecretPage = Page[SecretRecord]


class TokenRequest(_Request):
    name: str = Field(min_length=1, max_length=255, description="who or what uses it")
    role: Role


class TokenRecord(Answer):
    id: int
    name: str
    role: Role
    user_id: int | None
    created_at: Timestamp
    revoked_at: Timestamp | None
    last_used: Timestamp | None


class NewToken(TokenRecord):
    token: str = Field(description="`wat_…`, shown this once; the server keeps its hash")


TokenPage = Page[TokenRecord]


class UserRequest(_Request):
    username: str = Field(min_length=1, max_length=255, pattern=r"^\S+$")
    # One rule everywhere (server.crypto.hashing); long passphrases are welcome.
    password: str = Field(min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH)
    role: Role


class UserRecord(Answer):
    id: int
    username: str
    role: Role
    created_at: Timestamp
    disabled: bool


UserPage = Page[UserRecord]
