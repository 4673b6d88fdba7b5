"""What an executable says about itself: header kind, PE version resource and signer, and
a macOS code signature, for the content sensor (agent/sensors/content.py).

PE files are parsed with `pefile` (pure Python, the field's long-standing PE
parser, maintained since 2004, no native code: it fits the agent's light
dependency budget and reads any OS's copy of a Windows program). The
Authenticode signature is the PKCS#7 SignedData in the security directory;
its certificates are read with `cryptography` (already the agent's), and the
signer is the certificate that issued no other one in the set: the leaf.

Everything here is pure: bytes or text in, values out. A malformed file gives
empty values, never an exception.
"""

from __future__ import annotations

import re
import struct
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509

_MACHO = {b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe",
          b"\xca\xfe\xba\xbe"}
_SECURITY = 4  # IMAGE_DIRECTORY_ENTRY_SECURITY
_WIN_CERT_PKCS_SIGNED_DATA = 0x0002
_TEAM_ID = re.compile(r"^TeamIdentifier=(\S+)\s*$", re.MULTILINE)
_IDENTIFIER = re.compile(r"^Identifier=(\S+)\s*$", re.MULTILINE)


def is_executable_header(header: bytes) -> bool:
    """ELF, PE (MZ) or Mach-O (thin or universal)."""
    return header[:4] == b"\x7fELF" or header[:2] == b"MZ" or header[:4] in _MACHO


def pe_metadata(data: bytes) -> tuple[dict[str, str], str | None]:
    """(version-resource string fields, Authenticode signer) of a PE file."""
    import pefile  # imported here: only PE files, on machines whose policy asks, need it

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pe = pefile.PE(data=data, fast_load=True)
            pe.parse_data_directories(directories=[
                pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_RESOURCE"]])
    except (pefile.PEFormatError, ValueError, struct.error, IndexError):
        return {}, None
    fields: dict[str, str] = {}
    for file_info in getattr(pe, "FileInfo", None) or ():
        for entry in file_info:
            for table in getattr(entry, "StringTable", ()):
                for name, value in table.entries.items():
                    fields.setdefault(_text(name), _text(value))
    return fields, _signer(pe, data)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _signer(pe: object, data: bytes) -> str | None:
    try:
        directory = pe.OPTIONAL_HEADER.DATA_DIRECTORY[_SECURITY]  # type: ignore[attr-defined]
    except (AttributeError, IndexError):
        return None
    # The security directory holds a file offset (not an address): WIN_CERTIFICATE
    # records, each length (4), revision (2), type (2), then the PKCS#7 blob.
    start, size = int(directory.VirtualAddress), int(directory.Size)
    if not start or size < 8 or start + size > len(data):
        return None
    length, _, cert_type = struct.unpack_from("<IHH", data, start)
    if cert_type != _WIN_CERT_PKCS_SIGNED_DATA or not 8 < length <= size:
        return None
    blob = _der_sequence(data[start + 8:start + length])
    # Imported here: only signed PE files need X.509, and it is 1 MiB more of the agent's
    # memory on every machine otherwise (Linux and macOS meet PE files only in homes).
    from cryptography.hazmat.primitives.serialization import pkcs7

    try:
        with warnings.catch_warnings():
            # A BER-encoded blob (indefinite lengths) is parsed all the same, with a warning.
            warnings.simplefilter("ignore")
            certificates = pkcs7.load_der_pkcs7_certificates(blob)
    except ValueError:
        return None
    return _leaf_subject(certificates)


def _der_sequence(blob: bytes) -> bytes:
    """The outer ASN.1 SEQUENCE of `blob`, without the zero padding that rounds a
    WIN_CERTIFICATE up to 8 bytes (a DER parser refuses trailing bytes)."""
    if len(blob) < 2 or blob[0] != 0x30 or blob[1] == 0x80:
        return blob  # not a definite-length SEQUENCE: let the parser say
    if blob[1] < 0x80:
        return blob[:2 + blob[1]]
    count = blob[1] & 0x7F
    if count > 4 or len(blob) < 2 + count:
        return blob
    return blob[:2 + count + int.from_bytes(blob[2:2 + count], "big")]


def _leaf_subject(certificates: list[x509.Certificate]) -> str | None:
    from cryptography.x509.oid import NameOID

    issuers = {cert.issuer for cert in certificates if cert.issuer != cert.subject}
    leaves = [cert for cert in certificates if cert.subject not in issuers]
    for cert in leaves or certificates:
        for oid in (NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME):
            names = cert.subject.get_attributes_for_oid(oid)
            if names:
                value = names[0].value
                return value.decode() if isinstance(value, bytes) else value
    return None


def codesign_ids(output: str | None) -> tuple[str | None, str | None]:
    """(TeamIdentifier, Identifier) from `codesign -dv` output; None for what is absent.

    An ad-hoc signature says "TeamIdentifier=not set": no team.
    """
    if not output:
        return None, None
    team = _TEAM_ID.search(output)
    ident = _IDENTIFIER.search(output)
    team_id = team.group(1) if team and team.group(1) != "not" else None
    return team_id, ident.group(1) if ident else None


_PT_LOAD, _PF_X, _PF_W = 1, 1, 2


def read_order(header: bytes, size: int) -> list[tuple[int, int]]:
    """The (offset, length) ranges of a file worth searching, in the order worth reading.

    A 64-bit little-endian ELF laid out with separate code (binutils' default since
    2.31: read-only data in segments of their own) keeps its string literals, Qt's
    UTF-16 ones and compiled-in resources in its read-only data segments, never in its
    machine code: those segments are read first, then the writable data, and the code
    segment (most of a program: 46 of Telegram's 75 MB) is not read. Any other file,
    and an ELF whose read-only data shares the code's segment, is read whole, in order.
    A header that does not add up is read whole too.
    """
    whole = [(0, size)]
    if header[:6] != b"\x7fELF\x02\x01" or len(header) < 64:
        return whole
    phoff, = struct.unpack_from("<Q", header, 0x20)
    entsize, count = struct.unpack_from("<HH", header, 0x36)
    if entsize < 56 or phoff + entsize * count > len(header):
        return whole
    read_only: list[tuple[int, int]] = []
    writable: list[tuple[int, int]] = []
    for index in range(count):
        kind, flags, offset = struct.unpack_from("<IIQ", header, phoff + index * entsize)
        filesz, = struct.unpack_from("<Q", header, phoff + index * entsize + 0x20)
        if kind != _PT_LOAD or filesz == 0 or flags & _PF_X:
            continue
        if offset + filesz > size:
            return whole
        (writable if flags & _PF_W else read_only).append((offset, filesz))
    # Read-only data past the ELF header's own page: the code has a segment of its own.
    if not any(offset > 0 for offset, _ in read_only):
        return whole
    return sorted(read_only, key=lambda item: -item[1]) + writable
