"""The agent trusts only files and folders an administrator controls: real files, real owners.

The tests run as root (CI does): they hand files to `nobody` (uid 65534) and
open modes, then show the agent refusing them -- and accepting what root, or
the user the agent runs as, owns and nobody else may change.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.host.ownership import (
    PosixInspector,
    UntrustedPath,
    read_trusted,
    require_trusted,
    require_trusted_tree,
)
from agent.settings import SettingsError, load_settings
from agent.state import StateDir

NOBODY = 65534
OTHER_USER = 65533  # no account needed: a uid is enough to own a file

needs_root = pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0,
                                reason="handing a file to another user needs root")


@pytest.fixture
def private(tmp_path: Path) -> Path:
    """A root-owned 0700 folder; pytest's own folders above it are root's and 0700."""
    folder = tmp_path / "warden"
    folder.mkdir(mode=0o700)
    return folder


def config(folder: Path, text: str = 'server_url = "https://warden.example.org"\n',
           mode: int = 0o600) -> Path:
    path = folder / "agent.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_root_owned_private_config_is_read(private: Path) -> None:
    path = config(private)
    assert read_trusted(path, "the agent config file") == path.read_bytes()
    assert read_trusted(private / "absent.toml", "the agent config file") is None


@needs_root
def test_a_config_owned_by_another_user_is_refused_with_owner_mode_and_fix(
        private: Path) -> None:
    path = config(private)
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(UntrustedPath) as refused:
        read_trusted(path, "the agent config file")
    message = str(refused.value)
    assert f"refusing the agent config file {path}: it is owned by nobody (uid 65534)" in message
    assert "mode 0600, not by root" in message
    assert f"Fix: chown root:root {path} && chmod 600 {path}" in message


@pytest.mark.parametrize(("mode", "who"), [(0o602, "others"), (0o620, "its group"),
                                           (0o666, "its group and others")])
def test_a_config_others_may_write_is_refused(private: Path, mode: int, who: str) -> None:
    path = config(private, mode=mode)
    with pytest.raises(UntrustedPath, match=f"has mode {mode:04o} .*: {who} may change it"):
        read_trusted(path, "the agent config file")


def test_a_world_readable_config_is_fine(private: Path) -> None:
    assert read_trusted(config(private, mode=0o644), "the agent config file") is not None


def test_a_group_writable_parent_folder_is_refused(private: Path) -> None:
    path = config(private)
    private.chmod(0o770)  # its group could rename agent.toml away and put theirs
    with pytest.raises(UntrustedPath) as refused:
        read_trusted(path, "the agent config file")
    assert (f"the directory {private} on its path has mode 0770" in str(refused.value))
    assert f"Fix: chown root:root {private} && chmod go-w {private}" in str(refused.value)


@needs_root
def test_a_parent_folder_owned_by_another_user_is_refused(private: Path) -> None:
    inner = private / "etc"
    inner.mkdir(mode=0o755)
    os.chown(inner, NOBODY, NOBODY)  # its owner may chmod it and swap the file at will
    path = config(inner)
    with pytest.raises(UntrustedPath, match=f"the directory {inner} on its path is owned by "
                                            "nobody"):
        read_trusted(path, "the agent config file")


def test_a_sticky_world_writable_parent_is_fine_but_not_as_the_state_dir(
        private: Path) -> None:
    # Like /tmp: others may add names there but not move or delete root's entries.
    shared = private / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    assert read_trusted(config(shared), "the agent config file") is not None
    # The state dir itself is where the agent creates files: nobody else may add one.
    with pytest.raises(UntrustedPath, match="has mode 1777"):
        StateDir(shared)


@needs_root
def test_a_symlinked_config_pointing_to_another_users_file_is_refused(private: Path) -> None:
    theirs = private / "home"
    theirs.mkdir()
    target = config(theirs)
    os.chown(target, NOBODY, NOBODY)
    link = private / "agent.toml"
    link.symlink_to(target)
    with pytest.raises(UntrustedPath, match=f"refusing the agent config file {link}: it is "
                                            "owned by nobody"):
        read_trusted(link, "the agent config file")


@needs_root
def test_a_link_owned_by_another_user_in_a_sticky_folder_is_refused(private: Path) -> None:
    # In a sticky folder the link's owner may delete it and point a new one elsewhere.
    shared = private / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    target = config(private)
    link = shared / "agent.toml"
    link.symlink_to(target)
    os.lchown(link, NOBODY, NOBODY)
    with pytest.raises(UntrustedPath, match=f"the link {link} on its path is owned by nobody"):
        read_trusted(link, "the agent config file")


def test_every_folder_a_relative_link_passes_through_is_checked(private: Path) -> None:
    open_folder = private / "open"
    open_folder.mkdir()
    target = config(open_folder)
    open_folder.chmod(0o777)
    (private / "closed").mkdir()
    link = private / "closed" / "agent.toml"
    link.symlink_to(Path("..") / "open" / target.name)
    with pytest.raises(UntrustedPath, match=f"the directory {open_folder} on its path"):
        read_trusted(link, "the agent config file")


def test_a_link_loop_is_refused_not_followed_forever(private: Path) -> None:
    (private / "a").symlink_to(private / "b")
    (private / "b").symlink_to(private / "a")
    with pytest.raises(UntrustedPath, match="more than 40 symbolic links"):
        require_trusted(private / "a", "the agent config file", "file")


def test_a_missing_file_is_none_but_the_folders_before_it_are_checked(private: Path) -> None:
    assert require_trusted(private / "nothing", "the CA bundle", "file") is None
    private.chmod(0o777)
    with pytest.raises(UntrustedPath):
        require_trusted(private / "nothing", "the CA bundle", "file")


@needs_root
def test_an_ordinary_users_own_file_is_trusted_when_the_agent_runs_as_that_user(
        private: Path) -> None:
    path = config(private)
    os.chown(path, NOBODY, NOBODY)
    as_nobody = PosixInspector(frozenset({0, NOBODY}))  # what `scan` as nobody sees
    assert read_trusted(path, "the agent config file", as_nobody) is not None
    os.chown(path, OTHER_USER, OTHER_USER)
    with pytest.raises(UntrustedPath, match="owned by uid 65533 .*not by root or nobody "
                                            r"\(the user the agent runs as\)"):
        read_trusted(path, "the agent config file", as_nobody)


@needs_root
def test_a_tree_is_refused_for_any_file_inside_that_another_user_owns(private: Path) -> None:
    (private / "state").mkdir(mode=0o700)
    planted = private / "state" / "identity.json"
    planted.write_text("{}")
    require_trusted_tree(private, "the agent's folder")
    os.chown(planted, NOBODY, NOBODY)
    with pytest.raises(UntrustedPath, match=f"{planted}: it is owned by nobody"):
        require_trusted_tree(private, "the agent's folder")
    require_trusted_tree(private / "absent", "the agent's folder")  # nothing there yet


# -- the settings: the config file, and the files settings name ------------------


@needs_root
def test_settings_refuse_a_planted_config_before_reading_it(
        private: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = config(private, 'notify_command = "/tmp/their-program"\n')
    os.chown(path, NOBODY, NOBODY)
    monkeypatch.setenv("WARDEN_AGENT_CONFIG", str(path))
    with pytest.raises(SettingsError, match=f"refusing the agent config file {path}"):
        load_settings()


@needs_root
@pytest.mark.parametrize(("setting", "what"), [
    ("enroll_secret_file", "the enrollment secret file"),
    ("ca_bundle", "the CA bundle"),
])
def test_settings_refuse_a_secret_file_or_ca_bundle_another_user_owns(
        private: Path, monkeypatch: pytest.MonkeyPatch, setting: str, what: str) -> None:
    monkeypatch.setenv("WARDEN_AGENT_CONFIG", str(private / "absent.toml"))
    named = private / setting
    named.write_text("x\n")
    named.chmod(0o600)
    assert getattr(load_settings(**{setting: named}), setting) == named
    os.chown(named, NOBODY, NOBODY)
    with pytest.raises(SettingsError, match=f"refusing {what} .*{named}: it is owned by nobody"):
        load_settings(**{setting: named})


def test_the_enrollment_secret_is_read_from_a_trusted_file_only(
        private: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARDEN_AGENT_CONFIG", str(private / "absent.toml"))
    secret = private / "enroll-secret"
    secret.write_text("wen_abc\n")
    secret.chmod(0o600)
    settings = load_settings(enroll_secret_file=secret)
    assert settings.resolved_enroll_secret() == "wen_abc"
    secret.chmod(0o666)  # opened up after start: the next enrollment does not use it
    with pytest.raises(UntrustedPath, match="others may change it"):
        settings.resolved_enroll_secret()


def test_settings_refuse_a_notify_program_others_may_replace(
        private: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARDEN_AGENT_CONFIG", str(private / "absent.toml"))
    program = private / "notifier"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    assert load_settings(notify_command=f"{program} --flag").notify_program() == program
    program.chmod(0o777)
    with pytest.raises(SettingsError, match=f"refusing the notify_command program {program}"):
        load_settings(notify_command=f"{program} --flag")


def test_a_notify_command_that_is_not_a_command_line_names_the_setting(
        private: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARDEN_AGENT_CONFIG", str(private / "absent.toml"))
    with pytest.raises(SettingsError, match=r"notify_command .*must be a command line"):
        load_settings(notify_command="'unclosed")
