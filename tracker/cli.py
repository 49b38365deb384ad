"""The `tracker` command line: run the daemon, inspect and steer it, export, simulate, demo.

Exit codes: 0 success, 1 a runtime failure (database unreadable, daemon not answering),
2 a bad configuration or bad arguments (one line naming the key or the argument).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
from pathlib import Path

from tracker import __version__
from tracker.config import DEFAULT_PATH, Config, ConfigError, load

log = logging.getLogger("tracker")

REQUEST_WAIT_S = 10.0

# Commands whose module brings its own `add_arguments(parser)` and `main(args) -> int`.
MODULE_COMMANDS = (
    ("simulate", "tracker.simulate", "write a simulated ride as NMEA (for indoor tests)"),
    ("doctor", "tracker.doctor", "check the setup: config, GPS, backends, disk, clock"),
    ("sensors", "tracker.sensors", "fitness sensors: `tracker sensors scan` lists BLE ones"),
    ("demo", "tracker.demo", "a simulated ride through a pty into the daemon, to test servers"),
    ("serve-mapmytracks", "tracker.testing.mapmytracks", "run the Map My Tracks test server"),
    ("serve-gpsr", "tracker.testing.gpsr", "run the json-gpsr test server"),
)


def _config(args: argparse.Namespace) -> Config:
    return load(args.config)


def cmd_run(args: argparse.Namespace) -> int:
    from tracker import daemon, systemd

    cfg = _config(args)
    systemd.setup_logging(args.log_level or cfg.log.level)
    return daemon.run(cfg)


def _open_readonly(cfg: Config):
    from tracker.store import open_store

    return open_store(cfg.storage.path, readonly=True)


def cmd_status(args: argparse.Namespace) -> int:
    from tracker import status

    cfg = _config(args)
    store = _open_readonly(cfg)
    try:
        report = status.collect(store, cfg)
    finally:
        store.close()
    print(json.dumps(report, indent=2) if args.json else status.render(report))
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
    from tracker.export import write_gpx

    cfg = _config(args)
    store = _open_readonly(cfg)
    out_path = Path(args.gpx)
    tmp = out_path.with_name(out_path.name + ".part")  # never a half-written GPX under the name
    try:
        with tmp.open("w", encoding="utf-8") as out:
            n = write_gpx(store, out, args.activity)
        tmp.replace(out_path)
    except KeyError as e:
        print(f"tracker export: {e.args[0]}", file=sys.stderr)
        return 2
    finally:
        store.close()
        tmp.unlink(missing_ok=True)
    print(f"wrote {n} activit{'y' if n == 1 else 'ies'} to {out_path}")
    return 0






def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tracker",
        description="Serial GPS and fitness sensors into a durable queue, pushed to live tracking.",
    )
    parser.add_argument("--version", action="version", version=f"tracker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "-c", "--config", type=Path, default=DEFAULT_PATH,
            help=f"TOML configuration (default {DEFAULT_PATH})",
        )  # fmt: skip
        return p

    p = with_config(sub.add_parser("run", help="run the daemon in the foreground"))
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_run)

    p = with_config(sub.add_parser("status", help="what the unit is doing"))
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

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

    p = with_config(sub.add_parser("export", help="write activities as GPX 1.1"))
    p.add_argument("--gpx", required=True, help="output file")
    p.add_argument("--activity", type=int, action="append", help="activity id (repeatable)")
    p.set_defaults(func=cmd_export)

    for name, module_name, help_text in MODULE_COMMANDS:
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text)
        module.add_arguments(p)
        p.set_defaults(func=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"tracker: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # the store's and the OS's errors, as one line for the rider
        from tracker.store import StoreError

        if isinstance(e, StoreError | OSError):
            print(f"tracker: {e}", file=sys.stderr)
            return 1
        raise
