"""Run Python as an unprivileged user, from a copy of this checkout that user can read.

Some tests drop root to prove what an ordinary user sees or may not do. The
child must run this checkout's code, but the checkout, its `.venv` and even
the base interpreter may live where that user cannot enter: a clone in
`mktemp -d`, in `/root` or in a 0700 home. So, once per session, this stages
in a fresh world-readable folder everything the child imports: the running
interpreter's binary (and its libpython when built shared), its standard
library, this checkout's `policies` and `agent` packages, and the third-party
distributions the `agent` extra of pyproject.toml needs. The staged folder is
a small Python installation of its own: the interpreter finds its standard
library and `site-packages` next to itself, and runs isolated (`-I`), so
nothing leaks in from the environment or the checkout.

Every test that drops privileges does it through the `unprivileged` fixture
(tests/test_privilege_drops.py fails on any other way); the fixture marks its
tests `unprivileged`, so `pytest -m unprivileged` runs exactly them.
"""

from __future__ import annotations

import compileall
import importlib.metadata
import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
import tomllib
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import agent

PACKAGES = ("policies", "agent")
EXTRA = "agent"
CHECKOUT = Path(agent.__file__).resolve().parents[1]
# Parts of the standard library no child needs (a third of it is left to copy).
STDLIB_UNNEEDED = ("site-packages", "dist-packages", "test", "idlelib", "tkinter",
                   "turtledemo", "ensurepip", "lib2to3", "config-*", "*.opt-1.pyc",
                   "*.opt-2.pyc")


def the_user() -> tuple[int, int]:
    """`nobody`, or the kernel's overflow ids where the user database has no such entry."""
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return 65534, 65534
    return entry.pw_uid, entry.pw_gid


@dataclass(frozen=True)
class Unprivileged:
    """A staged interpreter, and the user who runs it."""

    python: Path
    env: Mapping[str, str]
    uid: int
    gid: int

    def command(self, code: str, *args: str) -> list[str]:
        return [str(self.python), "-I", "-c", code, *args]

    def run(self, code: str, *args: str, env: Mapping[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run `code` (with `args` in sys.argv[1:]) as the user; output as text."""
        return subprocess.run(
            self.command(code, *args), capture_output=True, text=True, timeout=timeout,
            check=False, cwd="/", env={**os.environ, **self.env, **(env or {})},
            user=self.uid, group=self.gid, extra_groups=[])


def requirements_of(extra: str) -> list[Requirement]:
    """The base dependencies and those of `extra`, as this checkout declares them."""
    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in
            [*project["dependencies"], *project["optional-dependencies"][extra]]]


def distributions_needed(extra: str) -> list[importlib.metadata.Distribution]:
    """The installed distributions behind `extra`, with everything they depend on."""
    found: dict[str, importlib.metadata.Distribution] = {}
    done: set[tuple[str, str]] = set()
    pending = [r for r in requirements_of(extra)
               if r.marker is None or r.marker.evaluate({"extra": ""})]
    while pending:
        requirement = pending.pop()
        key = requirement.name.lower().replace("_", "-")
        extras = ("", *sorted(requirement.extras))
        if all((key, wanted) in done for wanted in extras):
            continue
        done.update((key, wanted) for wanted in extras)
        try:
            distribution = found.setdefault(key, importlib.metadata.distribution(key))
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{requirement.name} (needed by the {extra!r} extra) is not installed; "
                        f"install the checkout with `pip install -e '.[{extra},dev]'`")
        for text in distribution.requires or []:
            dependency = Requirement(text)
            # A dependency's own extras (`uvicorn[standard]`) bring requirements of their own.
            if dependency.marker is None or any(
                    dependency.marker.evaluate({"extra": wanted}) for wanted in extras):
                pending.append(dependency)
    return list(found.values())


def copy_file(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # copy2 keeps modification times, which keeps the cached bytecode valid.
    shutil.copy2(source, target, follow_symlinks=True)


def stage_distribution(distribution: importlib.metadata.Distribution, site: Path) -> None:
    files = distribution.files
    if files is None:
        pytest.fail(f"{distribution.metadata['Name']} was installed without a file list "
                    "(RECORD); reinstall it with pip")
    for name in files:
        # Scripts and headers sit outside site-packages (`../../../bin/…`); no child runs them.
        if name.parts[0] == "..":
            continue
        source = Path(str(distribution.locate_file(name)))
        if source.is_file():
            copy_file(source, site / name)


def stage_interpreter(root: Path) -> tuple[Path, dict[str, str]]:
    """Copy the interpreter and its standard library to `root`; return it and its env."""
    version = sysconfig.get_python_version()
    python = root / "bin" / f"python{version}"
    copy_file(Path(os.path.realpath(sys.executable)), python)
    env: dict[str, str] = {}
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        # The binary's search path for libpython names the base install, which the
        # user may not reach; LD_LIBRARY_PATH is searched before it (RUNPATH) or after
        # the denied entries of it (RPATH), either way before the system's own.
        library = sysconfig.get_config_var("INSTSONAME")
        copy_file(Path(sysconfig.get_config_var("LIBDIR"), library), root / "lib" / library)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            [str(root / "lib"), *filter(None, [os.environ.get("LD_LIBRARY_PATH")])])
    # The interpreter looks for its library at ../<platlibdir>/pythonX.Y beside itself.
    stdlib = root / sys.platlibdir / f"python{version}"
    shutil.copytree(sysconfig.get_paths()["stdlib"], stdlib, symlinks=False,
                    ignore=shutil.ignore_patterns(*STDLIB_UNNEEDED))
    extensions = Path(sysconfig.get_config_var("DESTSHARED"))
    if not (stdlib / "lib-dynload").is_dir() and extensions.is_dir():
        shutil.copytree(extensions, stdlib / "lib-dynload")
    return python, env


def open_to_everyone(root: Path) -> None:
    """Folders 0755, files 0644 (0755 if executable), whatever the umask or the sources had."""
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        executable = path.is_dir() or path.stat().st_mode & stat.S_IXUSR
        path.chmod(0o755 if executable else 0o644)


def closed_ancestors(path: Path) -> Iterable[Path]:
    """The folders above `path` that other users may not enter."""
    return [folder for folder in path.parents if not folder.stat().st_mode & stat.S_IXOTH]


def stage(root: Path) -> Unprivileged:
    closed = closed_ancestors(root)
    if closed:
        pytest.fail(f"{root} is under {', '.join(map(str, closed))}, which other users cannot "
                    "enter; point TMPDIR at a folder they can (such as /tmp)")
    python, env = stage_interpreter(root)
    # Where the staged interpreter itself looks (distributions patch site.py differently).
    site = Path(subprocess.run(
        [str(python), "-I", "-c", "import site; print(site.getsitepackages()[0])"],
        env={**os.environ, **env}, capture_output=True, text=True, check=True,
    ).stdout.strip())
    for distribution in distributions_needed(EXTRA):
        stage_distribution(distribution, site)
    for package in PACKAGES:
        shutil.copytree(CHECKOUT / package, site / package,
                        ignore=shutil.ignore_patterns("*.opt-?.pyc"))
        # Compiled here, once: `nobody` cannot write the cache, and would compile every run.
        compileall.compile_dir(site / package, quiet=1)
    open_to_everyone(root)
    uid, gid = the_user()
    staged = Unprivileged(python, env, uid, gid)
    # The same interpreter (not a system libpython found instead), its own library, our code.
    check = staged.run(
        "import sys, agent, policies; print(sys.version, sys.prefix, agent.__file__)")
    expected = f"{sys.version} {root} {site / 'agent' / '__init__.py'}"
    if check.returncode != 0 or check.stdout.strip() != expected:
        pytest.fail(f"the interpreter staged in {root} does not run as uid {uid}, or runs "
                    f"something else than {expected!r}:\n{check.stdout}{check.stderr}")
    return staged


def fork_as(run: Callable[[], object], what: str, deadline: float) -> None:
    """`run` in a forked child that has become `nobody`; fails on an exception or a hang.

    For a call that must run in this very process image (objects built by the test, no
    exec): the caller makes sure it needs no import the child cannot read, e.g. by
    running it once as root first. Anything that can be a program goes through the
    `unprivileged` fixture instead.
    """
    uid, gid = the_user()
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork in a threaded process; the child only runs
        # `run` and leaves with os._exit.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            run()
            status = 0
        except BaseException:
            # The parent only sees the exit status; the traceback goes to the captured
            # stderr, which pytest shows with the failure.
            traceback.print_exc()
            sys.stderr.flush()
        finally:
            os._exit(status)
    end = time.monotonic() + deadline
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > end:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail(f"{what} did not end within {deadline} s (a hang)")
        time.sleep(0.02)  # polling a child's exit, not a synchronisation sleep
    assert os.waitstatus_to_exitcode(done[1]) == 0, f"{what} raised as nobody"


@pytest.fixture(scope="session")
def unprivileged() -> Iterator[Unprivileged]:
    """Python that runs this checkout's code as `nobody`; needs root to switch user."""
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("needs root, to run code as the ordinary user `nobody`")
    root = Path(tempfile.mkdtemp(prefix="warden-unprivileged-")).resolve()
    try:
        yield stage(root)
    finally:
        shutil.rmtree(root)


def pytest_itemcollected(item: pytest.Item) -> None:
    if "unprivileged" in getattr(item, "fixturenames", ()):
        item.add_marker(pytest.mark.unprivileged)
