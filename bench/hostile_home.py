"""Installed-apps scan time of a home with every hostile kind planted, against a clean one.

The home holds a realistic spread (a flatpak with its metainfo, .desktop files,
Downloads with unpacked folders); the hostile copy adds, at each read site in
it, one of each kind from tests/agent/hostile_support.py: FIFO, socket, links
to /dev/zero, to / and in a loop, a 2 GiB sparse file, a file that keeps
vanishing (one, from its own process), an unreadable file. Prints a markdown
table: median and p95 of a full scan (sensor + engine), and the ratio
hostile / clean.

Run: .venv/bin/python bench/hostile_home.py [--runs 30]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

from agent.sensors.installed import InstalledAppsSensor
from policies.compiler import compile_bundle
from policies.engine import Engine, HostContext
from policies.loader import default_policy_path, load_catalog, load_policy
from tests.agent.hostile_support import KINDS, planted

HOME = "home/alice"
FLATPAK = f"{HOME}/.local/share/flatpak/app/org.telegram.desktop"
METAINFO = f"{FLATPAK}/x86_64/stable/abc/files/share/metainfo"
# Where each kind is planted: a file read, a folder listed, a folder searched.
SITES = (METAINFO, f"{HOME}/.local/share/applications", f"{HOME}/Downloads",
         f"{HOME}/Downloads/tools", f"{HOME}/.local/share/flatpak/app")


def build(root: Path) -> None:
    files = {"etc/passwd": "alice:x:1000:1000::/home/alice:/bin/sh\n",
             f"{METAINFO}/org.telegram.desktop.metainfo.xml": '<release version="5.2"/>'}
    files |= {f"{HOME}/.local/share/applications/app{i}.desktop": "[Desktop Entry]\n"
              for i in range(40)}
    files |= {f"{HOME}/Downloads/tools/t{i}/d{j}/readme": "" for i in range(20) for j in range(5)}
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / FLATPAK / "current").symlink_to("x86_64/stable")
    (root / FLATPAK / "x86_64/stable/active").symlink_to("abc")


def timed_scans(root: Path, engine: Engine, runs: int) -> list[float]:
    sensor = InstalledAppsSensor(root, "linux", engine.folder_marker_files,
                                 engine.folder_marker_globs)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        engine.evaluate_all(sensor.scan())
        samples.append(time.perf_counter() - start)
    return samples


def row(label: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"| {label} | {statistics.median(samples) * 1000:.1f} | {p95 * 1000:.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    catalog = load_catalog()
    engine = Engine(compile_bundle(load_policy(default_policy_path(), catalog), catalog),
                    HostContext(os="linux"))
    with tempfile.TemporaryDirectory() as tree:
        clean_root, hostile_root = Path(tree) / "clean", Path(tree) / "hostile"
        build(clean_root)
        build(hostile_root)
        clean = timed_scans(clean_root, engine, args.runs)
        with contextlib.ExitStack() as stack:
            for site in SITES:
                for kind in KINDS:
                    # One file that keeps vanishing is enough: each is a process busy on
                    # its own, and more would measure the machine's cores, not the scan.
                    if kind != "vanishing" or site == SITES[0]:
                        stack.enter_context(planted(kind, hostile_root / site / f"hostile-{kind}"))
            # And the site itself replaced: the metainfo file as a FIFO, Downloads as a link to /.
            stack.enter_context(planted(
                "fifo", hostile_root / METAINFO / "org.telegram.desktop.metainfo.xml"))
            stack.enter_context(planted("link_to_root", hostile_root / HOME / "Desktop"))
            hostile = timed_scans(hostile_root, engine, args.runs)
    print(f"{args.runs} full installed-apps scans (sensor + engine) of one home\n")
    print("| home | median ms | p95 ms |\n| --- | --- | --- |")
    print(row("clean", clean))
    print(row(f"{len(KINDS)} hostile kinds at {len(SITES)} sites (one vanishing file)", hostile))
    print(f"\nratio hostile / clean (median): "
          f"{statistics.median(hostile) / statistics.median(clean):.2f}")


if __name__ == "__main__":
    main()
