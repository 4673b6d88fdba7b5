"""Which mounts the blocker marks, read from a recorded /proc/self/mountinfo."""

from __future__ import annotations

from pathlib import Path

from agent.prevention.fanotify import Mount, local_mounts

MOUNTINFO = """\
22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:21 / /proc rw,nosuid - proc proc rw
24 22 0:5 / /dev/shm rw - tmpfs tmpfs rw
25 22 0:40 / /run/user/1000 rw,nosuid,nodev shared:90 - tmpfs tmpfs rw,size=1620000k
26 22 0:41 / /mnt/My\\040Disk rw - xfs /dev/vdb rw
27 22 0:42 / /home/alice rw - nfs4 server:/home/alice rw
28 22 0:43 / /media/app rw - fuse.appimage /dev/fuse rw
29 22 0:44 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
"""


def test_local_filesystems_are_marked_and_network_and_pseudo_ones_are_not(
    tmp_path: Path
) -> None:
    recorded = tmp_path / "mountinfo"
    recorded.write_text(MOUNTINFO)
    assert list(local_mounts(str(recorded))) == [
        Mount(22, "/", "ext4"),
        Mount(24, "/dev/shm", "tmpfs"),
        Mount(25, "/run/user/1000", "tmpfs"),
        Mount(26, "/mnt/My Disk", "xfs"),  # mountinfo's octal escape undone
        Mount(28, "/media/app", "fuse.appimage"),  # an AppImage's FUSE mount
    ]
