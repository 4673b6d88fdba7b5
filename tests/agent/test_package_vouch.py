"""The dpkg index the content sensor skips packaged programs by, on real list files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.sensors.package_vouch import DpkgVouch


def _list(root: Path, package: str, lines: list[str], listed_at: float) -> None:
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True, exist_ok=True)
    path = info / f"{package}.list"
    path.write_text("".join(f"{line}\n" for line in lines))
    os.utime(path, (listed_at, listed_at))


def _stat(ctime_before: float) -> os.stat_result:
    """A stat result whose ctime is `ctime_before` seconds before now."""
    real = os.stat("/")
    fields = list(real)
    fields[9] = int(real.st_ctime - ctime_before)  # st_ctime as the tuple holds it
    return os.stat_result(fields, {"st_ctime": real.st_ctime - ctime_before})


def test_programs_listed_before_they_changed_are_vouched_for_and_nothing_else(
        tmp_path: Path) -> None:
    now = os.stat("/").st_ctime
    # Lists written an hour ago (coreutils) and just now (chat, after its file's ctime).
    _list(tmp_path, "coreutils", ["/.", "/usr", "/usr/bin", "/usr/bin/ls", "/usr/bin/cat",
                                  "/etc/coreutils.conf", "/usr/share/doc/coreutils"],
          now - 3600)
    _list(tmp_path, "chat", ["/opt/chat", "/opt/chat/chat", "/usr/lib/chat/helper"], now + 60)
    (tmp_path / "var/lib/dpkg/info/chat.md5sums").write_text("/opt/chat/chat\n")
    vouch = DpkgVouch(tmp_path).load()
    # Program folders only; the md5sums file is no list.
    assert len(vouch) == 5
    older, newer = _stat(7200), _stat(60)
    assert vouch("/usr/bin/ls", older)
    assert vouch("/bin/ls", older)  # the same file on a merged-/usr system
    assert not vouch("/usr/bin/ls", newer)  # changed after dpkg listed it
    assert vouch("/opt/chat/chat", newer) and vouch("/usr/lib/chat/helper", newer)
    assert not vouch("/usr/bin/telegram-desktop", older)  # no package lists it
    assert not vouch("/etc/coreutils.conf", older)  # not a program folder: not indexed
    assert not vouch("/opt/chat/cha", older) and not vouch("/opt/chat/chat2", older)


@pytest.mark.parametrize("later", ["a", "z"])  # listed first or last by name
def test_a_path_two_packages_list_takes_the_later_of_their_lists(
        tmp_path: Path, later: str) -> None:
    now = os.stat("/").st_ctime
    earlier = "z" if later == "a" else "a"
    _list(tmp_path, earlier, ["/usr/bin/shared", f"/usr/bin/only-{earlier}"], now - 3600)
    _list(tmp_path, later, ["/usr/bin/shared"], now + 60)
    vouch = DpkgVouch(tmp_path).load()
    assert vouch("/usr/bin/shared", _stat(60))
    assert not vouch(f"/usr/bin/only-{earlier}", _stat(60))
    assert vouch(f"/usr/bin/only-{earlier}", _stat(7200))


def test_the_index_is_rebuilt_when_dpkg_changes_its_lists(tmp_path: Path) -> None:
    now = os.stat("/").st_ctime
    _list(tmp_path, "a", ["/usr/bin/a"], now - 3600)
    vouch = DpkgVouch(tmp_path).load()
    assert not vouch("/usr/bin/b", _stat(7200))
    _list(tmp_path, "b", ["/usr/bin/b"], now - 3600)
    os.utime(tmp_path / "var/lib/dpkg/info", (now + 120, now + 120))
    assert vouch("/usr/bin/b", _stat(7200)) and len(vouch) == 2


def test_no_dpkg_means_nothing_is_vouched_for(tmp_path: Path) -> None:
    vouch = DpkgVouch(tmp_path).load()
    assert len(vouch) == 0
    assert not vouch("/usr/bin/ls", _stat(7200))
