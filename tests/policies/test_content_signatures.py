"""Content signatures in the catalog and in policies: validation, matching, findings."""

from __future__ import annotations

import pytest

from policies.compiler import compact_app, compile_bundle
from policies.content_match import ContentMatcher, match_bytes
from policies.engine import Engine, HostContext
from policies.errors import PolicyError
from policies.loader import load_catalog, parse_policy
from policies.observations import InstalledObservation, ProcessObservation

ORG_BUILD = """\
name: org
rules:
  - app: telegram
    verdict: deny
  - app: inhouse-chat
    verdict: deny
apps:
  - id: inhouse-chat
    name: In-house chat
    signatures:
      content:
        - id: build-marker
          strings: [ExampleCorpChatClient-v2, example.internal/chat/api]
          source: our own build 2.3.1, strings -n 8 on chat-client
"""


def _matcher(os_name: str = "linux") -> ContentMatcher:
    apps = {app_id: compact_app(app) for app_id, app in load_catalog().items()}
    return ContentMatcher(apps, os_name)  # type: ignore[arg-type]


def test_every_stock_content_signature_says_where_it_came_from() -> None:
    catalog = load_catalog()
    telegram = catalog["telegram"].signatures.content
    assert {"tdesktop-theme-format", "tdesktop-app-identity"} <= {sig.id for sig in telegram}
    for app in catalog.values():
        for signature in app.signatures.content:
            assert len(signature.source) > 30, (app.id, signature.id)
    assert "4.6.5+ds-2+deb12u1" in next(
        sig.source for sig in telegram if sig.id == "tdesktop-theme-format")


@pytest.mark.parametrize(("data", "found"), [
    # every string present: a match
    (b"\0colors.tdesktop-theme\0application/x-tgtheme-tdesktop\0:/gui/night.tdesktop-theme",
     {"telegram/tdesktop-theme-format"}),
    # one string missing: no match (all are required)
    (b"colors.tdesktop-theme application/x-tgtheme-tdesktop", set()),
    # Qt's QStringLiteral keeps UTF-16: found in either encoding
    ("TelegramDesktop".encode("utf-16-le") + b"\xff" + b"TelegramForcePortable",
     {"telegram/tdesktop-app-identity"}),
    (b"Telegram Desktop telegram-desktop TelegramDesktop", set()),
])
def test_strings_all_must_appear_in_either_encoding(data: bytes, found: set[str]) -> None:
    assert set(match_bytes(_matcher(), data)) == found


def test_a_string_cut_by_a_chunk_boundary_is_found() -> None:
    matcher = _matcher()
    scan = matcher.scan()
    whole = b"x" * 1000 + b"TelegramForcePortable" + b"y" * 50 + "TelegramDesktop".encode(
        "utf-16-le")
    for cut in range(0, len(whole), 7):
        scan.feed(whole[cut:cut + 7])
    assert scan.matches() == ("telegram/tdesktop-app-identity",)


@pytest.mark.parametrize("size", [1, 7, 40, 41, 42, 43, 64, 1000])
def test_chunks_read_into_one_reused_buffer_find_what_the_whole_file_holds(size: int) -> None:
    # The agent reads a file into one buffer, hands the scan a view of it, then overwrites
    # it with the next chunk: nothing the scan keeps may point into it. Chunk sizes around
    # the longest form (TelegramForcePortable in UTF-16: 42 bytes) cut it every way.
    whole = (b"x" * 333 + "TelegramForcePortable".encode("utf-16-le") + b"y" * 50
             + b"TelegramDesktop" + b"z" * 77)
    scan = _matcher().scan()
    buffer = bytearray(size)
    view = memoryview(buffer)
    for cut in range(0, len(whole), size):
        piece = whole[cut:cut + size]
        buffer[:len(piece)] = piece
        scan.feed(view[:len(piece)])
        buffer[:] = b"\0" * size  # the next read overwrites it
    assert scan.matches() == ("telegram/tdesktop-app-identity",)
    assert match_bytes(_matcher(), whole) == ("telegram/tdesktop-app-identity",)


def test_pe_and_code_signatures_apply_on_their_os_only() -> None:
    windows, macos, linux = _matcher("windows"), _matcher("macos"), _matcher("linux")
    fields = {"CompanyName": "Telegram FZ-LLC", "ProductName": "telegram desktop",
              "OriginalFilename": "Telegram.exe"}
    assert windows.match_pe(fields, "Telegram FZ-LLC") == (
        "telegram/tdesktop-pe-version", "telegram/tdesktop-authenticode")
    assert windows.match_pe({"CompanyName": "Signal Messenger, LLC", "ProductName": "Signal"},
                            None) == ("signal/signal-pe-version",)
    assert linux.match_pe(fields, "Telegram FZ-LLC") == ()
    assert macos.match_codesign("C67CF9S4VU", "com.tdesktop.Telegram") == (
        "telegram/tdesktop-macos-team",)
    # The team alone is not enough where the signature names the identifier too.
    assert macos.match_codesign("C67CF9S4VU", "com.example.other") == ()
    assert macos.match_codesign("U68MSDN6DR", "org.whispersystems.signal-desktop") == (
        "signal/signal-macos",)


def test_a_content_match_is_a_high_confidence_deny_naming_the_signature() -> None:
    catalog = load_catalog()
    policy = parse_policy(ORG_BUILD, "org.yaml", catalog)
    engine = Engine(compile_bundle(policy, catalog), HostContext(os="linux"))
    running = ProcessObservation(pid=7, name="notes", exe="/home/a/tools/notes",
                                 content=("telegram/tdesktop-theme-format",))
    [finding] = engine.evaluate(running)
    assert (finding.app, finding.verdict, finding.confidence, finding.sensor) == (
        "telegram", "deny", "high", "process")
    assert finding.matched == "content: telegram/tdesktop-theme-format"
    assert finding.evidence["content_signatures"] == ["telegram/tdesktop-theme-format"]
    at_rest = InstalledObservation(source="file", id="/home/a/Downloads/x", path="/home/a/x",
                                   content=("inhouse-chat/build-marker",))
    [finding] = engine.evaluate(at_rest)
    assert (finding.app, finding.matched) == ("inhouse-chat", "content: inhouse-chat/build-marker")
    # The organisation's own signature is compiled for the agent like the catalog's.
    matcher = ContentMatcher(engine.apps, "linux")
    assert match_bytes(matcher, b"..ExampleCorpChatClient-v2..example.internal/chat/api") == (
        "inhouse-chat/build-marker",)
    # A reference the bundle does not hold (an older policy's) names nothing.
    assert engine.evaluate(ProcessObservation(pid=8, name="x", content=("telegram/gone",))) == []


@pytest.mark.parametrize(("signature", "line", "field", "message"), [
    ("        - id: short\n          strings: [tdesktop]\n          source: a build, strings",
     13, "apps[0].signatures.content[0].strings", "shorter than 12"),
    ("        - id: pe\n          pe: {Company: Example}\n          source: a build, strings",
     13, "apps[0].signatures.content[0].pe", "unknown version-resource field 'Company'"),
    ("        - id: both\n          strings: [ExampleCorpChatClient]\n          team_id: ABCDE12345"
     "\n          source: a build, strings",
     12, "apps[0].signatures.content[0]", "exactly one kind of evidence"),
    ("        - id: team\n          team_id: abc\n          source: a build, codesign -dv",
     13, "apps[0].signatures.content[0].team_id", "not an Apple Team ID"),
    ("        - id: nosource\n          strings: [ExampleCorpChatClient]",
     12, "apps[0].signatures.content[0].source", "Field required"),
    ("        - id: twice\n          strings: [ExampleCorpChatClient]\n          source: a build"
     " 1.0, strings\n        - id: twice\n          strings: [ExampleCorpChatServer]\n"
     "          source: a build 1.0, strings",
     11, "apps[0].signatures.content", "used twice"),
])
def test_a_bad_signature_in_a_policy_is_an_error_with_file_line_and_field(
        signature: str, line: int, field: str, message: str) -> None:
    text = ORG_BUILD.split("      content:\n")[0] + "      content:\n" + signature + "\n"
    with pytest.raises(PolicyError) as raised:
        parse_policy(text, "org.yaml", load_catalog())
    [issue] = raised.value.issues
    assert (issue.file, issue.line, issue.field) == ("org.yaml", line, field)
    assert message in issue.message
    assert issue.hint
