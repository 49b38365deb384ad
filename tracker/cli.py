"""The `tracker` command line: run the daemon, inspect and steer it, export, simulate, demo.

Exit codes: 0 success, 1 a runtime failure (database unreadable, daemon not answering),
2 a bad configuration or bad arguments (one line naming the key or the argument).

Start-up is paid by every command (a status from a cron job, each daemon restart on a Pi Zero),
so the top of this module imports argparse and nothing of tracker but the version: each command
imports what it needs when it runs, and a module command's module only when that command is the
one asked for (tests/test_imports.py checks what `tracker --help` and `tracker run` load).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tracker import __version__

if TYPE_CHECKING:
    from collections.abc import Callable

    from tracker.config import Config

REQUEST_WAIT_S = 10.0

# tracker.config.DEFAULT_PATH, spelled out so that building the parser does not import the
# config module (tests/test_imports.py keeps the two equal).
DEFAULT_CONFIG = "/etc/tracker/tracker.toml"

# Commands whose module brings its own `add_arguments(parser)` and `main(args) -> int`.
MODULE_COMMANDS = (
    ("simulate", "tracker.simulate", "write a simulated ride as NMEA (for indoor tests)"),
    ("doctor", "tracker.doctor", "check the setup: config, GPS, backends, disk, clock"),
    ("sensors", "tracker.sensors", "fitness sensors: `tracker sensors scan` lists BLE ones"),
    ("demo", "tracker.demo", "a simulated ride through a pty into the daemon, to test servers"),
    ("serve-mapmytracks", "tracker.testing.mapmytracks", "run the Map My Tracks test server"),
    ("serve-gpsr", "tracker.testing.gpsr", "run the json-gpsr test server"),
    ("serve-traccar", "tracker.testing.osmand", "run the OsmAnd (Traccar) test server"),
)


def _config(args: argparse.Namespace) -> Config:
    from tracker.config import load

    return load(args.config)


def cmd_run(args: argparse.Namespace) -> int:
    from tracker import daemon, systemd

    cfg = _config(args)
    systemd.setup_logging(args.log_level or cfg.log.level)
    from tracker.config import exposed_secrets

    warning = exposed_secrets(cfg)
    if warning:  # a warning, never a refusal: the unit must keep tracking
        import logging

        logging.getLogger("tracker.config").warning("%s", warning)
    return daemon.run(cfg)


def _open_readonly(cfg: Config):
    from tracker.store import open_store

    return open_store(cfg.storage.path, readonly=True)


def cmd_status(args: argparse.Namespace) -> int:

    from tracker import status

    cfg = _config(args)

    def show() -> str:
        report = status.report(cfg)
        if not args.json:
            return status.render(report)
        from tracker.plausible import json_text

        return json_text(report, indent=2)

    if not args.watch:
        print(show())
        return 0
    # --watch: in place on a terminal (home, clear to the end), one report after another
    # otherwise; Ctrl-C ends it.
    tty = sys.stdout.isatty()
    try:
        while True:
            text = show()
            print(("\x1b[H\x1b[J" + text) if tty else text + "\n", flush=True)
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0


def cmd_activities(args: argparse.Namespace) -> int:

    from tracker import rides
    from tracker.config import zone
    from tracker.plausible import json_text

    cfg = _config(args)
    tz = zone(cfg.activity.timezone)
    store = _open_readonly(cfg)
    try:
        items = rides.rides(store, cfg.activity.rules())
    finally:
        store.close()
    if args.json:
        print(json_text([rides.as_json(r, tz) for r in items], indent=2))
    else:
        print(rides.render(items, tz))
    return 0


def cmd_activity(args: argparse.Namespace) -> int:
    return _request(args, f"activity_{args.action}")


def cmd_poi(args: argparse.Namespace) -> int:
    text = " ".join(args.text).strip()
    if not text:
        print("tracker poi: the note is empty", file=sys.stderr)
        return 2
    return _request(args, "poi", text)


def _request(args: argparse.Namespace, command: str, arg: str | None = None) -> int:
    """Queue a control request for the daemon and wait up to --wait for its result."""
    from tracker.store import open_store

    cfg = _config(args)
    store = open_store(cfg.storage.path, check=False)
    try:
        request_id = store.add_request(command, arg)
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            req = store.request(request_id)
            if req is not None and req.done_at is not None:
                print(req.result)
                return 0
            time.sleep(0.2)
    finally:
        store.close()
    print(
        f"the daemon did not take the request within {args.wait:g} s (is it running?); "
        "it stays queued and is carried out when the daemon runs",
        file=sys.stderr,
    )
    return 1


def cmd_export(args: argparse.Namespace) -> int:
    import io
    import os

    from tracker import export

    def bad(message: str) -> int:
        print(f"tracker export: {message}", file=sys.stderr)
        return 2

    if args.gpx is not None:  # the older form, kept for scripts
        if args.output is not None or args.format not in (None, "gpx"):
            return bad("--gpx FILE means --format gpx -o FILE: give one form, not both")
        args.format, args.output = "gpx", args.gpx
    if args.output is None:
        return bad("no output: give -o FILE, or -o - for stdout")
    bounds: dict[str, float | None] = {}
    for name in ("since", "until"):
        text = getattr(args, name)
        try:
            until = name == "until"
            bounds[name] = None if text is None else export.parse_time(text, end_of_day=until)
        except ValueError as e:
            return bad(f"--{name}: {e}")
    writers: dict[str, Callable[..., int]] = {
        "gpx": export.write_gpx, "csv": export.write_csv, "geojson": export.write_geojson
    }  # fmt: skip
    write = writers[args.format or "gpx"]
    to_stdout = args.output == "-"
    # No progress line on a pipe, a log, or the terminal the export itself is printed on.
    show = sys.stderr.isatty() and not (to_stdout and sys.stdout.isatty())
    progress = export.TerminalProgress(sys.stderr if show else None)

    cfg = _config(args)
    store = _open_readonly(cfg)
    tmp = None
    try:
        try:
            selected = export.select_activities(store, args.activity, **bounds)
        except KeyError as e:
            return bad(e.args[0])
        ids = [a.id for a in selected]
        if to_stdout:
            # GPX declares UTF-8, and titles and notes are anyone's text, whatever the locale.
            stdout = sys.stdout
            if isinstance(stdout, io.TextIOWrapper) and stdout.encoding.lower() != "utf-8":
                stdout.reconfigure(encoding="utf-8")
            try:
                n = write(store, sys.stdout, ids, progress=progress)
                sys.stdout.flush()
            except BrokenPipeError:
                # The reader left (`| head`): not an error. Python flushes stdout again at exit;
                # pointed at devnull that flush cannot fail (the Python docs' SIGPIPE recipe).
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                return 0
        else:
            out_path = Path(args.output)
            tmp = out_path.with_name(out_path.name + ".part")  # never half a file under the name
            with tmp.open("w", encoding="utf-8", newline="") as out:
                n = write(store, out, ids, progress=progress)
            tmp.replace(out_path)
    finally:
        progress.done()
        store.close()
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    fixes = f"{progress.fixes:,} fix{'' if progress.fixes == 1 else 'es'}"
    where = "stdout" if to_stdout else args.output
    print(f"wrote {n} activit{'y' if n == 1 else 'ies'}, {fixes} to {where}", file=sys.stderr)
    return 0


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser. Every command is listed with its one-line help; a module
    command's own options (and its module) are loaded only if it is `command`, the one
    `main` found in the arguments: the others are never parsed."""
    parser = argparse.ArgumentParser(
        prog="tracker",
        description="Serial GPS and fitness sensors into a durable queue, pushed to live tracking.",
    )
    parser.add_argument("--version", action="version", version=f"tracker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "-c", "--config", type=Path, default=DEFAULT_CONFIG,
            help=f"TOML configuration (default {DEFAULT_CONFIG})",
        )  # fmt: skip
        return p

    p = with_config(sub.add_parser("run", help="run the daemon in the foreground"))
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_run)

    p = with_config(sub.add_parser("status", help="what the unit is doing"))
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--watch", type=float, nargs="?", const=2.0, default=None, metavar="S",
                   help="refresh every S seconds (default 2) until Ctrl-C")  # fmt: skip
    p.set_defaults(func=cmd_status)

    p = with_config(sub.add_parser("activities", help="the stored rides, with their figures"))
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_activities)

    p = with_config(sub.add_parser("activity", help="start or stop the current activity"))
    p.add_argument("action", choices=["start", "stop"])
    p.add_argument(
        "--wait", type=float, default=REQUEST_WAIT_S, help="seconds to wait for the daemon"
    )
    p.set_defaults(func=cmd_activity)

    p = with_config(sub.add_parser("poi", help="mark the next fix as a point of interest"))
    p.add_argument("text", nargs="+", help="the note (sent as the fix's poi to json-gpsr)")
    p.add_argument(
        "--wait", type=float, default=REQUEST_WAIT_S, help="seconds to wait for the daemon"
    )
    p.set_defaults(func=cmd_poi)

    p = with_config(sub.add_parser("export", help="write activities as GPX, CSV or GeoJSON"))
    p.add_argument("--format", choices=["gpx", "csv", "geojson"], help="default gpx")
    p.add_argument("-o", "--output", metavar="FILE", help="output file, - for stdout")
    p.add_argument("--gpx", metavar="FILE", help="the same as --format gpx -o FILE")
    p.add_argument("--activity", type=int, action="append", help="activity id (repeatable)")
    p.add_argument(
        "--since", metavar="WHEN",
        help="only activities that overlap this ISO 8601 date or time (UTC unless it has an "
        "offset) or later",
    )  # fmt: skip
    p.add_argument(
        "--until", metavar="WHEN",
        help="only activities that overlap this or earlier (a date: up to its end)",
    )  # fmt: skip
    p.set_defaults(func=cmd_export)

    for name, module_name, help_text in MODULE_COMMANDS:
        p = sub.add_parser(name, help=help_text)
        if name == command:
            import importlib

            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(func=module.main)
    return parser


def _command_in(argv: list[str]) -> str | None:
    """The command word: the first argument that is not an option (the top level has no option
    that takes a value, so no option's value can come first)."""
    return next((a for a in argv if not a.startswith("-")), None)


def _reader_left() -> None:
    """Stdout's reader is gone (`tracker status --json | head -n 0`): not an error, and nothing
    to say. Python flushes stdout again at exit; pointed at devnull that flush cannot fail (the
    Python docs' SIGPIPE recipe)."""
    import contextlib
    import os

    # ValueError, OSError: stdout is no file (replaced in-process), there is nothing to flush
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # What tracker creates (the database, its -wal and -shm, exports) is the owner's and the
    # group's only, as under the unit's UMask=0027, also when run by hand.
    os.umask(os.umask(0o027) | 0o027)
    args = build_parser(_command_in(argv)).parse_args(argv)
    code = 0
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, not at exit, so a reader that left is caught below
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _reader_left()
        return code  # 0, or what the command returned before the last flush failed
    except Exception as e:  # a bad config, the store's and the OS's errors: one line each
        # Imported here, not at the top: only a failing command pays for them.
        from tracker.validate import ConfigError

        if isinstance(e, ConfigError):
            print(f"tracker: {e}", file=sys.stderr)
            return 2
        from tracker.store import StoreError

        if isinstance(e, StoreError | OSError):
            print(f"tracker: {e}", file=sys.stderr)
            return 1
        raise
