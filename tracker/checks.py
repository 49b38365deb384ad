"""What `tracker doctor` reports: one Check per thing looked at, with the fix when it failed.

A leaf module, so each part can carry its own check without importing the doctor command: a
backend module its `probe(settings) -> Probe`, a source or the store its `check(ctx)`, which
yields its Checks one by one (doctor prints each as soon as it is done) and may leave what it
learnt for a later check in the shared `Context` (the GPS time, for the clock check).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OK, FAIL, SKIP = "ok", "FAIL", "skip"

LISTEN_S = 5.0  # how long the GPS check reads at the configured rate
PROBE_S = 2.0  # how long it reads at each other rate
# The installed unit, under Context.root (scripts/install-pi.sh puts it there): the service
# check compares it with the shipped one, the storage check reads where it may write.
UNIT = Path("etc/systemd/system/tracker.service")
INPUT_LISTEN_S = 2.0  # how long a TCP input is read (instruments send every second or so)


@dataclass
class Check:
    name: str
    result: str  # OK, FAIL or SKIP
    detail: str
    fix: str | None = None


@dataclass
class Context:
    """What the checks are given and learn: the config, the service user, times seen."""

    # A tracker.config.Config; not imported, even for typing: config imports sources (gpsd.py)
    # whose checks import this module.
    cfg: Any
    user: str
    listen_s: float = LISTEN_S
    probe_s: float = PROBE_S
    input_s: float = INPUT_LISTEN_S
    gps_time_offset_s: float | None = None  # GPS time minus the system clock
    server_time_offset_s: dict[str, float] = field(default_factory=dict)
    root: Path = Path("/")  # where /sys, /dev and /etc are (tests give a made-up tree)


def unreachable(name: str, url: str, detail: str, section: str) -> Check:
    """A backend server that could not be reached, with the fix a rider can try."""
    return Check(
        name, FAIL, f"{url} unreachable: {detail}",
        f"check the network (ping the host), DNS and the url in [{section}]",
    )  # fmt: skip


@dataclass
class Probe:
    """A backend's answer to `tracker doctor`: its checks, and the server's clock when it
    told it (server minus system clock, seconds), for the clock check."""

    checks: list[Check] = field(default_factory=list)
    server_offset_s: float | None = None


# --- helpers the parts' checks share ---------------------------------------------------------


def may_open(st: os.stat_result, user: pwd.struct_passwd, *, directory: bool = False) -> bool:
    """Whether `user` may open a file with this stat for reading and writing (mode bits); with
    `directory`, whether it may create files in the directory (write and search)."""
    if user.pw_uid == 0:
        return True
    need = stat.S_IWUSR | stat.S_IXUSR if directory else stat.S_IRUSR | stat.S_IWUSR
    if st.st_uid == user.pw_uid:
        return st.st_mode & need == need
    gids = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem}
    if st.st_gid in gids:
        need >>= 3  # the same bits for the group
        return st.st_mode & need == need
    need >>= 6
    return st.st_mode & need == need


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def reason(e: BaseException) -> str:
    """An error in a few words, for a check's detail line."""
    text = getattr(e, "strerror", None) or str(e)
    return text.splitlines()[0] if text else type(e).__name__


def bind_fix(code: int | None, port: int, find: str, key: str) -> str:
    """The fix for a port that could not be bound (`code` its errno), naming the command that
    finds its holder and the config key that moves it."""
    import errno

    if code == errno.EADDRINUSE:
        return f"another program holds the port ({find}): stop it or change {key}"
    if code == errno.EADDRNOTAVAIL:
        return f"the address is not this machine's (ip -brief addr): change {key}"
    if code == errno.EACCES:
        return f"port {port} needs root (below 1024): use 10110, the NMEA convention, in {key}"
    return f"change {key}"
