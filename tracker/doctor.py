"""`tracker doctor`: check a unit's setup and say how to fix each problem.

Run it on the Pi (as root, or as the service user) with the service's config:

    tracker doctor -c /etc/tracker/tracker.toml

It checks, in order: the config; then each part with its own check, as the daemon would open
it: the GPS source (tracker/gps.py: the device exists and the service user may open it, NMEA
arrives, how fast, and at which baud rate, trying the common rates when nothing decodes at the
configured one; with `gpsd://`, tracker/gpsd.py: gpsd answers, has a receiver and reports
fixes); each `[[inputs]]` stream (tracker/inputs.py); the `[share]` port (tracker/share.py);
each configured backend's probe (`probe(settings)` in its module, tracker/backends.py); the
sensor hardware (tracker/sensors/manager.py); then the installed unit, the storage
(tracker/store/check.py: the rights on its directory, the database read only, its version,
integrity and queue, the free space), and the system clock (against GPS time or a backend's).
Each part's `check(ctx)` yields its Checks (tracker/checks.py); this module only loads the
config, runs them in order and prints.

Every failure is one line naming what is wrong and one line with the fix, printed as soon as
its check is done (the GPS and backend checks take seconds each); `--json` prints instead, at the
end, a list of the checks (`name`, `result`, `detail`, `fix`). The exit code is 0 only when every
check passed (a check that could not run, e.g. the clock without GPS time or a backend, is shown
as "skip" and does not fail).

The GPS checks read the device for a few seconds: stop the service first
(`systemctl stop tracker`) or they compete with it for the bytes. gpsd and a TCP multiplexer
serve any number of clients, so those checks may run beside the service, and a `[share]` port
the running service holds is reported as served by it, not as taken.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

from tracker.checks import FAIL, LISTEN_S, OK, PROBE_S, SKIP, UNIT, Check, Context
from tracker.config import DEFAULT_PATH, Config, ConfigError, load

CLOCK_TOLERANCE_S = 60.0


# --- the config -----------------------------------------------------------------------------------


def check_config(path: Path) -> tuple[Config, Check]:
    try:
        cfg = load(path)
    except ConfigError as e:
        fix = (
            f"copy the example: install -m 640 /etc/tracker/tracker.toml.example {path}"
            if "not found" in str(e)
            else "correct the key named above (every key is described in tracker.toml.example)"
        )
        return Config(), Check("config", FAIL, f"{e} (checking with the defaults)", fix)
    return cfg, Check("config", OK, f"{path} is valid")


def check_secrets(ctx: Context) -> list[Check]:
    """A password or token inline in a config file that every user may read."""
    from tracker.config import exposed_secrets

    warning = exposed_secrets(ctx.cfg)
    if warning is None:
        return []
    text, _, fix = warning.partition(": chmod")
    return [Check("config secrets", FAIL, text, "chmod" + fix)]


# --- backends -------------------------------------------------------------------------------------


def check_backend(ctx: Context, section: str) -> list[Check]:
    """One backend's own probe (in its module); [] when its section is absent or disabled."""
    from tracker.backends import module

    settings = ctx.cfg.backends.get(section)
    if settings is None or not settings.enabled:
        return []
    probe = module(section).probe(settings)
    if probe.server_offset_s is not None:
        ctx.server_time_offset_s[section] = probe.server_offset_s
    return probe.checks


# --- the installed unit and the clock ------------------------------------------------------------


def check_unit(ctx: Context) -> list[Check]:
    """The systemd unit scripts/install-pi.sh installs: there, and the one of this release."""
    installed = ctx.root / UNIT
    if not installed.exists():
        return [Check("service", SKIP, f"/{UNIT} not installed (running by hand?)",
                      "sudo scripts/install-pi.sh to run tracker as a service")]  # fmt: skip
    shipped = Path(__file__).resolve().parents[1] / "systemd" / "tracker.service"
    if shipped.exists() and _unit_directives(installed) != _unit_directives(shipped):
        return [Check(
            "service", FAIL, f"/{UNIT} differs from this release's unit",
            "sudo scripts/install-pi.sh again (it keeps the config and the data), or put your "
            "changes in a drop-in: systemctl edit tracker",
        )]  # fmt: skip
    return [Check("service", OK, f"/{UNIT} installed")]


def _unit_directives(path: Path) -> list[str]:
    """The unit's settings, without comments and blank lines (the installer may reword
    paths: ExecStart= and the like are compared by their key only)."""
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, _, value = line.partition("=")
        out.append(key if key in ("ExecStart", "User", "Group", "ReadWritePaths") else line)
    return out


def check_clock(ctx: Context) -> list[Check]:
    refs = []
    if ctx.gps_time_offset_s is not None:
        refs.append(("GPS time", ctx.gps_time_offset_s))
    refs += [(f"{k} server time", v) for k, v in ctx.server_time_offset_s.items()]
    if not refs:
        return [Check("clock", SKIP, "no GPS time or server time to compare with")]
    source, offset = refs[0]
    if abs(offset) > CLOCK_TOLERANCE_S:
        return [
            Check(
                "clock", FAIL,
                f"the system clock is {abs(offset):.0f} s {'behind' if offset > 0 else 'ahead of'} "
                f"{source}",
                "enable time sync: timedatectl set-ntp true (systemd-timesyncd); a Pi has no "
                "real-time clock (tracker itself uses GPS time for fixes)",
            )
        ]  # fmt: skip
    return [Check("clock", OK, f"within {abs(offset):.0f} s of {source}")]


# --- the command ----------------------------------------------------------------------------------


def parts() -> list[Callable[[Context], Iterable[Check]]]:
    """Every check after the config's, in the order shown: each part's own (the sources', the
    backends' probes, the sensors', the store's), then the unit and the clock, which compares
    the times the others saw."""
    from tracker import gps, inputs, share
    from tracker.backends import REGISTRY
    from tracker.sensors import manager
    from tracker.store import check as storage

    return [
        check_secrets,
        gps.check,  # and gpsd's, for a gpsd:// source
        inputs.check,
        share.check,
        *(partial(check_backend, section=section) for section in REGISTRY),
        manager.check,
        check_unit,
        storage.check,
        check_clock,
    ]


def run_checks(
    ctx: Context, config_check: Check, on_check: Callable[[Check], None] | None = None
) -> list[Check]:
    """Every check, in order; `on_check(check)` is called with each as soon as it is done
    (before the next one starts), so a caller can show progress."""
    checks: list[Check] = []

    def add(c: Check) -> None:
        checks.append(c)
        if on_check is not None:
            on_check(c)

    for part in [lambda _: [config_check], *parts()]:
        try:
            for c in part(ctx):
                add(c)
        except Exception as e:  # a bug in one part's check must not hide the other checks
            add(Check(_part_name(part), FAIL, repr(e), None))
    return checks


def _part_name(part: Callable[[Context], Iterable[Check]]) -> str:
    """A backend's section, else where the check is written (gps.check, doctor.check_unit)."""
    if isinstance(part, partial):
        return str(part.keywords["section"])
    return f"{part.__module__.removeprefix('tracker.')}.{part.__qualname__}"


def render_check(c: Check) -> str:
    """One check as the checklist shows it: its line, and its fix on the next when it failed."""
    mark = {OK: "[ ok ]", FAIL: "[FAIL]", SKIP: "[skip]"}[c.result]
    line = f"{mark} {c.name}: {c.detail}"
    return line + f"\n       fix: {c.fix}" if c.result == FAIL and c.fix else line


def summary(checks: list[Check]) -> str:
    failed = sum(c.result == FAIL for c in checks)
    return "all checks passed" if not failed else f"{failed} check(s) failed"


def render(checks: list[Check]) -> str:
    return "\n".join([*map(render_check, checks), summary(checks)])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", type=Path, default=DEFAULT_PATH,
        help=f"TOML configuration (default {DEFAULT_PATH})",
    )  # fmt: skip
    parser.add_argument("--user", default="tracker", help="the service user (default tracker)")
    parser.add_argument(
        "--listen", type=float, default=LISTEN_S, metavar="S",
        help=f"seconds to read the GPS at its configured rate (default {LISTEN_S:g})",
    )  # fmt: skip
    parser.add_argument(
        "--probe", type=float, default=PROBE_S, metavar="S",
        help=f"seconds to try each other baud rate when nothing decodes (default {PROBE_S:g})",
    )  # fmt: skip
    parser.add_argument(
        "--json", action="store_true",
        help="print the checks as a JSON list at the end (name, result, detail, fix)",
    )  # fmt: skip


def main(args: argparse.Namespace) -> int:
    import logging

    logging.getLogger("tracker").setLevel(logging.ERROR)  # the checklist says it all
    cfg, config_check = check_config(args.config)
    ctx = Context(cfg, args.user, listen_s=args.listen, probe_s=args.probe)
    if args.json:
        import json

        checks = run_checks(ctx, config_check)
        print(json.dumps([dataclasses.asdict(c) for c in checks], indent=2))
    else:
        checks = run_checks(ctx, config_check, lambda c: print(render_check(c), flush=True))
        print(summary(checks))
    return 0 if all(c.result != FAIL for c in checks) else 1
