"""`tracker simulate`: its options, and the glue from them to a file, stdout, a serial port
or a pty."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from tracker.logutil import RateLimitedLog
from tracker.simulate.faults import FAULTS_HELP, parse_faults
from tracker.simulate.pacing import Summary, run
from tracker.simulate.phases import PHASES_HELP, Phase, parse_phases, simulate_phases
from tracker.simulate.receiver import Epoch
from tracker.simulate.routes import RoutePoint, demo_route, generated_loop, load_route
from tracker.simulate.sentences import DEFAULT_SENTENCES, SENTENCES
from tracker.simulate.steady import simulate

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `tracker simulate` options to `parser` (see `main`)."""
    src = parser.add_argument_group("route").add_mutually_exclusive_group()
    src.add_argument("--route", metavar="FILE.gpx", help="ride this GPX track/route/waypoints")
    src.add_argument(
        "--loop",
        metavar="LAT,LON[,RADIUS_M]",
        help="ride a generated loop around LAT,LON (radius default 1000 m)",
    )
    parser.epilog = (parser.epilog or "") + "Without --route or --loop: the bundled demo ride."
    nmea = parser.add_argument_group("receiver")
    nmea.add_argument(
        "--rate", type=float, default=1.0, metavar="HZ", help="epochs a second (default 1)"
    )
    nmea.add_argument("--speed", type=float, default=6.0, metavar="M/S", help="default 6")
    nmea.add_argument(
        "--noise",
        type=float,
        metavar="M",
        help="1-sigma error per axis, m (default 0)",
    )
    nmea.add_argument("--faults", default="", metavar="SPEC", help=FAULTS_HELP)
    nmea.add_argument(
        "--start",
        metavar="TIME",
        help="GPS time of the first epoch, ISO 8601, e.g. 2026-06-01T08:00:00Z (default: now)",
    )
    nmea.add_argument("--talker", default="GN", help="talker ID (default GN)")
    nmea.add_argument(
        "--glonass",
        action="store_true",
        help="a GPS + GLONASS receiver (talker GN): one GSA and one GSV group per constellation",
    )
    nmea.add_argument(
        "--sentences",
        default=",".join(DEFAULT_SENTENCES),
        metavar="LIST",
        help=f"comma-separated, in order, of {','.join(SENTENCES)} (default %(default)s)",
    )
    nmea.add_argument("--loops", type=int, help="times round the route, 0 = forever (default 1)")
    nmea.add_argument("--duration", type=float, metavar="S", help="ride this long instead")
    nmea.add_argument("--phases", metavar="SPEC", help=PHASES_HELP)
    nmea.add_argument("--seed", type=int, default=0, help="for noise, sky and faults")
    pace = parser.add_argument_group("pacing")
    pace.add_argument("--fast", action="store_true", help="no real-time pacing")
    pace.add_argument("--speedup", type=float, default=1.0, metavar="X", help="X times real time")
    out = parser.add_argument_group("output").add_mutually_exclusive_group()
    out.add_argument(
        "--out",
        metavar="PATH",
        help="a file, a serial device, a pty slave or a pyserial URL; - = stdout (default)",
    )
    out.add_argument(
        "--pty",
        nargs="?",
        const="",
        metavar="LINK",
        help="create a pty (and a symlink LINK to it), print its path, stream into it",
    )
    parser.add_argument("--baudrate", type=int, default=9600, help="for a real serial port")
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="with --pty: start at once instead of waiting for a reader to open it",
    )


def _error(msg: str) -> int:
    print(f"tracker simulate: error: {msg}", file=sys.stderr)
    return 2


def _parse_start(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC).replace(microsecond=0)
    t = datetime.fromisoformat(text.strip())
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _parse_loop(text: str) -> list[RoutePoint]:
    parts = [float(p) for p in text.split(",")]
    if len(parts) not in (2, 3):
        raise ValueError("expected LAT,LON[,RADIUS_M]")
    lat, lon = parts[0], parts[1]
    radius = parts[2] if len(parts) == 3 else 1000.0
    if not (-85.0 <= lat <= 85.0 and -180.0 <= lon <= 180.0 and radius > 0):
        raise ValueError("latitude within +-85, longitude within +-180, a positive radius")
    return generated_loop(lat, lon, radius)


def main(args: argparse.Namespace) -> int:
    """Run `tracker simulate` with options from `add_arguments`; return the exit status.

    2 for bad options (one line on stderr), 1 when the output cannot be opened or fails, else 0
    (also when interrupted by SIGINT/SIGTERM, which stop the ride at once). The summary goes to
    stderr at the end.
    """
    try:
        faults = parse_faults(args.faults or "")
    except ValueError as e:
        return _error(f"--faults: {e}")
    try:
        start = _parse_start(args.start)
    except ValueError:
        return _error(f"--start: {args.start!r} is not an ISO 8601 time like 2026-06-01T08:00:00Z")
    sentences = [s.strip().upper() for s in args.sentences.split(",") if s.strip()]
    bad = [s for s in sentences if s not in SENTENCES]
    if bad or not sentences:
        return _error(f"--sentences: unknown sentence {bad[0]!r}" if bad else "--sentences: none")
    if not re.fullmatch(r"[A-Z]{2}", args.talker):
        return _error(f"--talker: {args.talker!r} is not two capital letters")
    if args.glonass and args.talker != "GN":
        return _error(f"--glonass: needs --talker GN, not {args.talker!r}")
    phases: list[Phase] | None = None
    if args.phases is not None:
        try:
            phases = parse_phases(args.phases)
        except ValueError as e:
            return _error(f"--phases: {e}")
        for name, value in (("--loops", args.loops), ("--duration", args.duration)):
            if value is not None:
                return _error(f"--phases: not with {name} (the phases set the length)")
        if args.noise is not None:
            return _error("--phases: not with --noise (each kind of phase has its own)")
    noise = args.noise if args.noise is not None else 0.0
    loops = args.loops if args.loops is not None else 1
    for name, ok in (
        ("--rate", args.rate > 0),
        ("--speed", args.speed >= 0),
        ("--noise", noise >= 0),
        ("--loops", loops >= 0),
        ("--speedup", args.speedup > 0),
        ("--duration", args.duration is None or args.duration > 0),
        ("--baudrate", args.baudrate > 0),
    ):
        if not ok:
            return _error(f"{name}: out of range")
    try:
        if args.route:
            route = load_route(args.route)
        elif args.loop:
            route = _parse_loop(args.loop)
        else:
            route = demo_route()
    except (OSError, ValueError) as e:
        what = "--route" if args.route else "--loop" if args.loop else "demo route"
        return _error(f"{what}: {e}")

    def epochs(start: datetime) -> Iterator[Epoch]:
        if phases is not None:
            return simulate_phases(
                route,
                phases,
                rate_hz=args.rate,
                speed_mps=args.speed,
                start_time=start,
                talker=args.talker,
                sentences=sentences,
                faults=faults,
                seed=args.seed,
                glonass=args.glonass,
            )
        return simulate(
            route,
            rate_hz=args.rate,
            speed_mps=args.speed,
            start_time=start,
            noise_m=noise,
            talker=args.talker,
            sentences=sentences,
            faults=faults,
            seed=args.seed,
            glonass=args.glonass,
            loops=loops,
            duration_s=args.duration,
        )

    try:
        epochs(start)  # check the arguments now, before any output is opened
    except ValueError as e:
        return _error(str(e))

    stop = threading.Event()
    with _stop_on_signals(stop):
        if args.pty is not None:
            return _main_pty(args, epochs, start, stop)
        return _main_out(args, epochs(start), stop)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM only set `stop` (the run ends at its next wait); restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, lambda *_: stop.set())
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _report(summary: Summary, extra: str = "") -> None:
    print(f"tracker simulate: {summary.format()}{extra}", file=sys.stderr)


def _main_pty(
    args: argparse.Namespace,
    epochs: Callable[[datetime], Iterator[Epoch]],
    start: datetime,
    stop: threading.Event,
) -> int:
    from tracker.pty import PtyWriter

    try:
        writer = PtyWriter.open(args.pty or None)
    except OSError as e:
        return _error(f"--pty: {e}")
    with writer:
        where = f"{writer.slave_path}" + (f" (link {writer.link})" if writer.link else "")
        print(f"tracker simulate: NMEA on {where}", file=sys.stderr, flush=True)
        if not args.no_wait:
            print("tracker simulate: waiting for a reader to open it", file=sys.stderr, flush=True)
            if not writer.wait_for_reader(stop=stop):
                return 0
            if not args.start:
                start = _parse_start(None)  # "now" is when the ride really starts
        summary = run(
            epochs(start),
            writer.write,
            realtime=not args.fast,
            speedup=args.speedup,
            stop=stop,
        )
        _report(summary, f"; pty: {writer.dropped} bytes dropped in {writer.drops} writes")
    return 0


def _main_out(args: argparse.Namespace, epochs: Iterator[Epoch], stop: threading.Event) -> int:
    import serial

    target = args.out or "-"
    ratelog = RateLimitedLog(log, interval_s=60.0)
    closer: Callable[[], object]
    try:
        if target == "-":
            stream = sys.stdout.buffer

            def write(data: bytes) -> None:
                stream.write(data)
                stream.flush()

            closer = stream.flush
        elif "://" in target or (os.path.exists(target) and not os.path.isfile(target)):
            port = serial.serial_for_url(target, baudrate=args.baudrate, write_timeout=2.0)

            def write(data: bytes) -> None:
                try:
                    port.write(data)
                except serial.SerialTimeoutException:
                    ratelog.warning("timeout", "%s: write timed out, epoch dropped", target)

            closer = port.close
            first = next(epochs, None)
            if first is not None:
                needed = len(first.data) * args.rate * 10  # 10 bits a byte on a UART
                # A pty ignores the baud rate; a UART that is too slow falls behind.
                real_uart = "://" not in target and not os.path.realpath(target).startswith(
                    "/dev/pts/"
                )
                if needed > args.baudrate and real_uart:
                    log.warning(
                        "%s: %d bit/s needed at %g Hz, more than %d baud",
                        target,
                        needed,
                        args.rate,
                        args.baudrate,
                    )
                epochs = itertools.chain([first], epochs)
        else:
            fh = open(Path(target), "wb")  # noqa: SIM115 - closed in the finally below

            def write(data: bytes) -> None:
                fh.write(data)
                if not args.fast:
                    fh.flush()  # someone may be tailing it

            closer = fh.close
    except (OSError, serial.SerialException) as e:
        print(f"tracker simulate: cannot open {target}: {e}", file=sys.stderr)
        return 1
    summary = Summary()  # filled as we go, so a failed write still reports what went out
    status = 0
    try:
        run(
            epochs,
            write,
            realtime=not args.fast,
            speedup=args.speedup,
            stop=stop,
            progress=summary.add,
        )
    except BrokenPipeError:
        # The reader of stdout went away (| head): stop quietly, and keep Python's exit flush
        # from failing on the same pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, serial.SerialException) as e:
        print(f"tracker simulate: writing to {target} failed: {e}", file=sys.stderr)
        status = 1
    finally:
        with contextlib.suppress(OSError, serial.SerialException):
            closer()
    _report(summary)
    return status
