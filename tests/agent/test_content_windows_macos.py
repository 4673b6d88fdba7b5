"""Windows and macOS content signatures, on files built for the test and recorded output.

Windows programs are real PE files: assembled and linked with mingw-w64 binutils,
their VS_VERSIONINFO compiled by windres, Authenticode-signed by osslsigncode
with a certificate chain made here (CI installs both, .ci/run). macOS
signatures are matched on recorded `codesign -dv` output through the thin
reader interface, since this machine has no codesign.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from agent.sensors.content import ContentIdentifier
from agent.sensors.executable_meta import codesign_ids, pe_metadata
from policies.compiler import compact_app
from policies.content_match import ContentMatcher
from policies.loader import load_catalog

TOOLS = ("x86_64-w64-mingw32-windres", "x86_64-w64-mingw32-as", "x86_64-w64-mingw32-ld",
         "osslsigncode")
needs_tools = pytest.mark.skipif(any(shutil.which(tool) is None for tool in TOOLS),
                                 reason="needs mingw-w64 binutils and osslsigncode (.ci/run)")
DATA = Path(__file__).parent / "data"
TELEGRAM_RC = {"CompanyName": "Telegram FZ-LLC", "FileDescription": "Telegram Desktop",
               "ProductName": "Telegram Desktop", "OriginalFilename": "Telegram.exe"}
SIGNAL_RC = {"CompanyName": "Signal Messenger, LLC", "FileDescription": "Signal",
             "ProductName": "Signal", "OriginalFilename": "Signal.exe"}


def _matcher(os_name: str) -> ContentMatcher:
    apps = {app_id: compact_app(app) for app_id, app in load_catalog().items()}
    return ContentMatcher(apps, os_name)  # type: ignore[arg-type]


def _cert(subject: str, key: rsa.RSAPrivateKey, issuer: tuple[str, rsa.RSAPrivateKey] | None,
          ) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, subject)])
    issuer_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0]),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, issuer[0])]) \
        if issuer else name
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(issuer[1] if issuer else key, hashes.SHA256()))


def build_pe(folder: Path, name: str, fields: dict[str, str], signer: str | None) -> Path:
    """A minimal Windows program with this version resource, signed by `signer`."""
    folder.mkdir(parents=True, exist_ok=True)
    values = "\n".join(f'      VALUE "{key}", "{value}"' for key, value in fields.items())
    (folder / "version.rc").write_text(
        "1 VERSIONINFO\nFILEVERSION 5,1,0,0\nPRODUCTVERSION 5,1,0,0\nBEGIN\n"
        '  BLOCK "StringFileInfo"\n  BEGIN\n    BLOCK "040904b0"\n    BEGIN\n'
        f"{values}\n    END\n  END\n"
        '  BLOCK "VarFileInfo"\n  BEGIN\n    VALUE "Translation", 0x409, 1200\n  END\nEND\n')
    (folder / "entry.s").write_text(".globl _start\n_start:\n  ret\n")
    # windres preprocesses with mingw's gcc, which the test does not need: the .rc has
    # no directive, so the "preprocessor" passes it through (windres runs it as
    # `<program> -E -xc -DRC_INVOKED FILE`).
    passthrough = folder / "passthrough.sh"
    passthrough.write_text('#!/bin/sh\nfor arg; do file=$arg; done\nexec cat "$file"\n')
    passthrough.chmod(0o755)
    run = [lambda: ["x86_64-w64-mingw32-windres", f"--preprocessor={passthrough}",
                    "version.rc", "-O", "coff", "-o", "res.o"],
           lambda: ["x86_64-w64-mingw32-as", "entry.s", "-o", "entry.o"],
           lambda: ["x86_64-w64-mingw32-ld", "entry.o", "res.o", "-e", "_start",
                    "--subsystem", "windows", "-o", "unsigned.exe"]]
    for command in run:
        subprocess.run(command(), cwd=folder, check=True, capture_output=True)
    if signer is None:
        return (folder / "unsigned.exe").rename(folder / name)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = _cert("Test Code Signing CA", ca_key, None)
    leaf = _cert(signer, key, ("Test Code Signing CA", ca_key))
    (folder / "chain.pem").write_bytes(b"".join(
        cert.public_bytes(serialization.Encoding.PEM) for cert in (leaf, ca)))
    (folder / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    subprocess.run(["osslsigncode", "sign", "-certs", "chain.pem", "-key", "key.pem",
                    "-n", "test", "-in", "unsigned.exe", "-out", name],
                   cwd=folder, check=True, capture_output=True)
    return folder / name


@needs_tools
def test_a_renamed_signed_telegram_exe_is_known_by_version_resource_and_signer(
        tmp_path: Path) -> None:
    exe = build_pe(tmp_path / "t", "notes.exe", TELEGRAM_RC, "Telegram FZ-LLC")
    fields, signer = pe_metadata(exe.read_bytes())
    assert fields["CompanyName"] == "Telegram FZ-LLC"
    assert fields["OriginalFilename"] == "Telegram.exe"
    assert signer == "Telegram FZ-LLC"  # the leaf, not the CA that issued it
    content = ContentIdentifier(_matcher("windows"))
    assert content.identify_file(exe, beneath=tmp_path) == (
        "telegram/tdesktop-pe-version", "telegram/tdesktop-authenticode")


@needs_tools
def test_signal_and_telegram_programs_never_match_each_other(tmp_path: Path) -> None:
    content = ContentIdentifier(_matcher("windows"))
    signal = build_pe(tmp_path / "s", "Signal.exe", SIGNAL_RC, "Signal Messenger, LLC")
    assert content.identify_file(signal, beneath=tmp_path) == (
        "signal/signal-pe-version", "signal/signal-authenticode")
    # Telegram's version resource signed by someone else: the resource matches, not the signer.
    forged = build_pe(tmp_path / "f", "Telegram.exe", TELEGRAM_RC, "Example Corp")
    assert content.identify_file(forged, beneath=tmp_path) == ("telegram/tdesktop-pe-version",)
    unsigned = build_pe(tmp_path / "u", "tool.exe", {"CompanyName": "Example Corp",
                                                     "ProductName": "Example Tool"}, None)
    assert pe_metadata(unsigned.read_bytes()) == (
        {"CompanyName": "Example Corp", "ProductName": "Example Tool"}, None)
    assert content.identify_file(unsigned, beneath=tmp_path) == ()


def test_a_damaged_pe_gives_nothing_and_raises_nothing(tmp_path: Path) -> None:
    for data in (b"MZ", b"MZ" + b"\0" * 100, b"MZ" + b"\xff" * 5000):
        assert pe_metadata(data) == ({}, None)
    (tmp_path / "x.exe").write_bytes(b"MZ" + b"\0" * 70000)
    assert ContentIdentifier(_matcher("windows")).identify_file(
        tmp_path / "x.exe", beneath=tmp_path) == ()


@pytest.mark.parametrize(("recorded", "team", "identifier", "refs"), [
    ("codesign_signal.txt", "U68MSDN6DR", "org.whispersystems.signal-desktop",
     ("signal/signal-macos",)),
    ("codesign_telegram_swift.txt", "6N38VWS5BX", "ru.keepcoder.Telegram",
     ("telegram/telegram-swift-macos",)),
    ("codesign_adhoc.txt", None, "com.example.tool", ()),
])
def test_a_renamed_mac_program_is_known_by_its_code_signature(
        tmp_path: Path, recorded: str, team: str | None, identifier: str,
        refs: tuple[str, ...]) -> None:
    output = (DATA / recorded).read_text()
    assert codesign_ids(output) == (team, identifier)
    program = tmp_path / "Notes.app/Contents/MacOS/Notes"
    program.parent.mkdir(parents=True)
    program.write_bytes(b"\xcf\xfa\xed\xfe" + b"\0" * 4096)  # a Mach-O 64 header
    asked: list[Path] = []

    def codesign(path: Path) -> str:
        asked.append(path)
        return output

    content = ContentIdentifier(_matcher("macos"), codesign=codesign)
    assert content.identify_file(program, beneath=tmp_path) == refs
    assert asked == [program]
