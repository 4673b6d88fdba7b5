"""Content signatures: knowing an app by what its executable is, not what it is called.

A renamed file keeps its bytes, its Windows version resource and Authenticode
signer, and its macOS code signature. One `ContentSignature` names exactly one
of these kinds of evidence:

- `strings`: byte strings that must ALL appear in the file (any OS, any binary
  format). Each is looked for both as UTF-8 and as UTF-16LE, because Qt keeps
  its `QStringLiteral`s as UTF-16 in the binary. Short strings are refused: a
  signature must not match unrelated programs.
- `pe`: Windows version-resource fields (CompanyName, ProductName,
  OriginalFilename, ...) that must all equal the file's, ignoring case; and/or
  `pe_signer`: the Authenticode signer's subject (its CN or O).
- `team_id` / `signing_id`: a macOS code signature (`codesign -dv`'s TeamIdentifier
  and Identifier); both given means both must match.

Every signature says where it came from (`source`): the build, its version and
how the values were extracted, so a reviewer can redo it.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from policies.vocabulary import OsName

# A string shorter than this is too likely to occur in some unrelated program.
MIN_STRING_BYTES = 12
MAX_STRING_BYTES = 256
MAX_STRINGS = 16
# The version-resource fields Windows defines (VS_VERSIONINFO StringFileInfo).
PE_FIELDS = frozenset({
    "CompanyName", "FileDescription", "InternalName", "LegalCopyright",
    "OriginalFilename", "ProductName",
})
_SIGNATURE_ID = r"^[a-z][a-z0-9_.-]*$"
_TEAM_ID = re.compile(r"^[A-Z0-9]{10}$")


class ContentSignature(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=_SIGNATURE_ID, max_length=64)
    # Where it applies; empty: every OS (byte strings hold across formats).
    os: list[OsName] = Field(default_factory=list)
    strings: list[str] = Field(default_factory=list)
    pe: dict[str, str] = Field(default_factory=dict)
    pe_signer: str = ""
    team_id: str = ""
    signing_id: str = ""
    # The build it was taken from (name, version) and how: required.
    source: str = Field(min_length=10)

    @field_validator("strings")
    @classmethod
    def _strings(cls, value: list[str]) -> list[str]:
        if len(value) > MAX_STRINGS:
            raise ValueError(f"{len(value)} strings, more than {MAX_STRINGS}; "
                             "split them into several signatures")
        for item in value:
            size = len(item.encode())
            if size < MIN_STRING_BYTES:
                raise ValueError(
                    f"string {item!r} is {size} bytes long, shorter than {MIN_STRING_BYTES}; "
                    "a short string also occurs in unrelated programs: pick a longer one")
            if size > MAX_STRING_BYTES:
                raise ValueError(f"string {item[:40]!r}... is {size} bytes long, more than "
                                 f"{MAX_STRING_BYTES}; keep the distinctive part")
            if "\x00" in item:
                raise ValueError("string contains a NUL character; remove it (UTF-16 forms "
                                 "are looked for automatically)")
        return value

    @field_validator("pe")
    @classmethod
    def _pe(cls, value: dict[str, str]) -> dict[str, str]:
        for name, wanted in value.items():
            if name not in PE_FIELDS:
                raise ValueError(f"unknown version-resource field {name!r}; use one of "
                                 f"{', '.join(sorted(PE_FIELDS))}")
            if not wanted.strip():
                raise ValueError(f"version-resource field {name!r} is empty; give its value")
        return value

    @field_validator("team_id")
    @classmethod
    def _team(cls, value: str) -> str:
        if value and not _TEAM_ID.match(value):
            raise ValueError(f"team_id {value!r} is not an Apple Team ID; write its 10 "
                             "upper-case letters and digits, e.g. C67CF9S4VU")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> ContentSignature:
        kinds = [name for name, present in (
            ("strings", bool(self.strings)),
            ("pe/pe_signer", bool(self.pe or self.pe_signer)),
            ("team_id/signing_id", bool(self.team_id or self.signing_id)),
        ) if present]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            raise ValueError(f"a content signature needs exactly one kind of evidence (found: "
                             f"{found}); give `strings`, or `pe`/`pe_signer`, or "
                             "`team_id`/`signing_id`, and split the rest into other signatures")
        return self

    @property
    def kind(self) -> str:
        if self.strings:
            return "strings"
        return "pe" if self.pe or self.pe_signer else "codesign"


def check_unique_ids(signatures: list[ContentSignature]) -> list[ContentSignature]:
    seen: set[str] = set()
    for signature in signatures:
        if signature.id in seen:
            raise ValueError(f"content signature id {signature.id!r} is used twice; "
                             "give each signature of an app its own id")
        seen.add(signature.id)
    return signatures
