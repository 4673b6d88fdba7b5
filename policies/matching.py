"""Linear-time matching for every pattern a policy holds: RE2, never Python's `re`.

Python's `re` backtracks. The stock `flatpak.* run .*\\b...` took over 40 s on a
7 KB command line that any user can give a process (the time is cubic in the
length, and the GIL is held throughout); a glob such as `*a*a*a*a*b` is as bad
against a path. The agent scans such processes and the server re-evaluates
their evidence in the impact preview, so both would stall. RE2 (google-re2)
runs in time linear in the input for every pattern it accepts and refuses the
constructs it cannot bound (backreferences, lookaround), so validation refuses
them too: whatever validates here, the engine matches in bounded time.

The command line is also cut to a window before matching (`command_line_window`):
that bounds the cost of a huge command line further, but the guarantee comes
from RE2, not from the cap.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import re2

# Far beyond any real signature (the stock catalog's longest is 60); keeps every
# compiled program, and so the per-character cost of matching, small.
MAX_PATTERN_CHARS = 512
# RE2's budget for one compiled pattern; a pattern needing more is refused.
_MAX_MEM = 1 << 20
# What of a command line the `cmdline` signatures see. The arguments that identify
# an app (the program, a launcher's subcommand, an app id) are short and come
# first; an argument longer than 1 KiB is data (a blob, an inline script), so only
# its start is kept and it cannot push the arguments after it out of the window.
# 8 KiB is four times the longest real launcher command line we know of.
MAX_ARG_CHARS = 1024
MAX_CMDLINE_CHARS = 8192
# No OS has a longer path (Windows' extended-length limit); a longer "path" is
# not one, so no glob is asked about it.
MAX_PATH_CHARS = 32_767
_SURROGATE = re.compile("[\ud800-\udfff]")

_HINT = (
    "Warden matches with RE2, which runs in linear time: backreferences (\\1), "
    "lookaround ((?=...), (?!...), (?<=...)), possessive or atomic groups and \\Z are "
    "not supported; write \\z for the end of the text, or escape special characters "
    "with a backslash"
)


class Pattern:
    """A compiled RE2 pattern, asked only whether it matches.

    Text goes to RE2 as UTF-8 bytes: the str interface costs twice as much per call
    (it maps byte offsets back to characters, which no caller here needs).
    """

    __slots__ = ("_compiled",)

    def __init__(self, compiled: re2._Regexp) -> None:
        self._compiled = compiled

    def search(self, text: str) -> bool:
        return self._compiled.search(utf8(text)) is not None

    def fullmatch(self, text: str) -> bool:
        return self._compiled.fullmatch(utf8(text)) is not None


def utf8(text: str) -> bytes:
    """`text` as UTF-8, lone surrogates as U+FFFD.

    Bytes that are not UTF-8 (a file name, a command line) reach Python as lone
    surrogates, which cannot be encoded; and RE2 lets no wildcard match invalid
    UTF-8, so a `**` would stop at them and an app in such a folder would hide.
    U+FFFD is a character like any other to every wildcard, as the surrogate was
    to Python's `re`.
    """
    try:
        return text.encode()
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text).encode()


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # errors become ValueErrors, not lines on stderr
    options.max_mem = _MAX_MEM
    return options


@lru_cache(maxsize=4096)
def compile_regex(pattern: str, caseless: bool = False) -> Pattern:
    """Compile `pattern` with RE2, or raise ValueError("what; how to fix")."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(
            f"pattern is {len(pattern)} characters long, more than {MAX_PATTERN_CHARS}; "
            "split it into several shorter signatures")
    if "\x00" in pattern:
        raise ValueError("pattern contains a NUL character; remove it")
    try:
        compiled = re2.compile(f"(?i){pattern}" if caseless else pattern, _options())
    except re2.error as exc:
        detail = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(
            exc.args[0], bytes) else str(exc)
        raise ValueError(f"bad regular expression {pattern!r}: {detail}; {_HINT}") from None
    return Pattern(compiled)


def command_line_window(args: Sequence[str]) -> list[str]:
    """The arguments the `cmdline` signatures see, and findings carry as evidence: each
    cut to MAX_ARG_CHARS, as many as fit in MAX_CMDLINE_CHARS once joined by spaces."""
    window: list[str] = []
    room = MAX_CMDLINE_CHARS
    for arg in args:
        if room <= 0:
            break
        part = arg[:min(MAX_ARG_CHARS, room)]
        window.append(part)
        room -= len(part) + 1
    return window


def command_line_text(args: Sequence[str]) -> str:
    """The text the `cmdline` signatures are searched in."""
    return " ".join(command_line_window(args))
