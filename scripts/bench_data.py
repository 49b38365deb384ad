#!/usr/bin/env python3
"""Mobile data and catching up, per backend, as a rider runs it: `tracker run` reading a pty and
sending to all four backends over TLS, every byte on the wire counted.

Each backend's server (the project's Map My Tracks, json-gpsr and OsmAnd test servers, and a
Mosquitto broker) sits behind two relays on 127.0.0.1: a counting relay (the "wire": what a SIM
card is billed for, TLS records and handshakes included) and a TLS terminator with a test CA made
here (the daemon trusts it through SSL_CERT_FILE; MQTT through `ca_file`). The wire relay holds
each reply back `--rtt-ms` (a mobile link's round trip, once per request and reply turn), and can
go down (connections refused, as with no coverage) and come back on the same port.

Two phases, each in a fresh daemon and database:
- live: `--live-s` seconds of a 1 Hz receiver written in real time; bytes per fix once every
  backend has delivered everything;
- catch-up: the wire down while `--backlog-s` seconds of GPS time (1 Hz) are written at once,
  then up while the receiver keeps going at 1 Hz: the seconds from the wire's return until each
  server holds a fix no more than 2 s older than the unit's newest ("present after"), until the
  whole backlog is on it ("history after"), and the bytes per fix of the catch-up.

The figures: bytes per fix (request + reply, headers and TLS included), connections, and the
megabytes a 2-hour ride at 1 Hz costs, beside the ~350 bytes of one OsmAnd report Traccar's
author quotes.

    .venv/bin/python scripts/bench_data.py [--live-s 120] [--backlog-s 3600] [--rtt-ms 150]
                                           [--only gpsr,traccar] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_mqtt import start_broker, stop_process  # noqa: E402
from benchkit import ride_epochs  # noqa: E402

from tracker.pty import PtyWriter  # noqa: E402
from tracker.testing.gpsr import GpsrServer  # noqa: E402
from tracker.testing.mapmytracks import MapMyTracksServer  # noqa: E402
from tracker.testing.osmand import OsmAndServer  # noqa: E402

USER = "rider"
PASSWORD = "bench-password"
TOKEN = "bench-post-token"
DEVICE = "tracker-1"
TOPIC = "owntracks/rider/bench"
OSMAND_REPORT_B = 350  # one OsmAnd report on the wire, by Traccar's author
RIDE_S = 2 * 3600  # the ride the megabytes are given for
BACKENDS = ("mapmytracks", "gpsr", "traccar", "mqtt")


# --- the wire ------------------------------------------------------------------------------


class Relay:
    """A TCP relay from a port on 127.0.0.1 to `target`, counting every byte both ways.

    `tls`: the relay terminates TLS with this context and forwards plain bytes (then it counts
    plain bytes; the counting relay in front of it sees the TLS records). `rtt_s`: the first
    chunk of each reply (server to client after client to server) is held back this long.
    `down()` closes the listener and every connection (a connect is refused, like a link with
    no coverage); `up()` listens on the same port again.
    """

    def __init__(self, target: int, *, tls: ssl.SSLContext | None = None,
                 rtt_s: float = 0.0) -> None:  # fmt: skip
        self.target = target
        self.tls = tls
        self.rtt_s = rtt_s
        self.port = 0
        self.sent = 0  # client -> server
        self.received = 0  # server -> client
        self.connections = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._stop = threading.Event()

    def up(self) -> Relay:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        s.settimeout(0.2)
        self.port = s.getsockname()[1]
        self._listener = s
        self._stop = threading.Event()
        threading.Thread(target=self._accept, args=(s, self._stop), daemon=True).start()
        return self

    def down(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            for c in list(self._open):
                with contextlib.suppress(OSError):
                    c.close()
            self._open.clear()

    def counts(self) -> tuple[int, int, int]:
        with self._lock:
            return self.sent, self.received, self.connections

    def _accept(self, listener: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client, stop), daemon=True).start()

    def _serve(self, client: socket.socket, stop: threading.Event) -> None:
        try:
            if self.tls is not None:
                client.settimeout(10)
                client = self.tls.wrap_socket(client, server_side=True)
            server = socket.create_connection(("127.0.0.1", self.target), timeout=10)
        except OSError:
            client.close()
            return
        with self._lock:
            self.connections += 1
            self._open.update((client, server))
        client.setblocking(False)
        server.setblocking(False)
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, server)
        sel.register(server, selectors.EVENT_READ, client)
        replying = False
        try:
            while not stop.is_set():
                for key, _ in sel.select(0.2):
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    try:
                        data = src.recv(65536)
                    except (BlockingIOError, ssl.SSLWantReadError):
                        continue
                    if not data:
                        return
                    if src is server and not replying and self.rtt_s:
                        time.sleep(self.rtt_s)
                    replying = src is server
                    key.data.setblocking(True)
                    key.data.sendall(data)
                    key.data.setblocking(False)
                    with self._lock:
                        if src is client:
                            self.sent += len(data)
                        else:
                            self.received += len(data)
        except OSError:
            return
        finally:
            sel.close()
            with self._lock:
                self._open.difference_update((client, server))
            client.close()
            server.close()


def make_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA and a certificate for 127.0.0.1 / localhost signed by it (openssl)."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=tracker bench CA")  # fmt: skip
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
        "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext")  # fmt: skip
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"


# --- the servers and what they hold --------------------------------------------------------


@dataclass
class Backend:
    name: str
    wire: Relay
    tls: Relay
    section: str
    newest: Callable[[], float | None]  # the newest fix time the server holds
    count: Callable[[], int]  # how many fixes it holds
    stop: Callable[[], None] = lambda: None
    mark: tuple[int, int, int] = (0, 0, 0)

    def since_mark(self) -> tuple[int, int, int]:
        s, r, c = self.wire.counts()
        return s - self.mark[0], r - self.mark[1], c - self.mark[2]


@dataclass
class Servers:
    backends: dict[str, Backend] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)  # more keys per section (--set)

    def stop(self) -> None:
        for b in self.backends.values():
            b.wire.down()
            b.tls.down()
            b.stop()


def start_servers(work: Path, names: list[str], rtt_s: float) -> Servers:
    ca, cert, key = make_ca(work)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    out = Servers()

    def front(port: int) -> tuple[Relay, Relay]:
        tls = Relay(port, tls=ctx).up()
        return Relay(tls.port, rtt_s=rtt_s).up(), tls

    if "mapmytracks" in names:
        mmt = MapMyTracksServer(users={USER: PASSWORD}).start()
        wire, tls = front(mmt.port)
        path = mmt.url.split("/", 3)[3] if mmt.url.count("/") >= 3 else ""

        def mmt_points() -> list[int]:
            return [p[0] for a in mmt.activities.values() for p in a.points]

        out.backends["mapmytracks"] = Backend(
            "mapmytracks", wire, tls,
            f'[mapmytracks]\nurl = "https://127.0.0.1:{wire.port}/{path}"\n'
            f'username = "{USER}"\npassword = "{PASSWORD}"\n',
            lambda: max(mmt_points(), default=None), lambda: len(mmt_points()), mmt.stop,
        )  # fmt: skip
    if "gpsr" in names:
        gpsr = GpsrServer(users={USER: "web-login"}, seed=5).start()
        gpsr.make_token(USER, "post", 0, 4_000_000_000, key=TOKEN)
        wire, tls = front(gpsr.port)
        out.backends["gpsr"] = Backend(
            "gpsr", wire, tls,
            f'[gpsr]\nurl = "https://127.0.0.1:{wire.port}/"\ntoken = "{TOKEN}"\n',
            lambda: max((f.t for f in gpsr.fixes(USER)), default=None),
            lambda: len(gpsr.fixes(USER)), gpsr.stop,
        )  # fmt: skip
    if "traccar" in names:
        osm = OsmAndServer(devices=[DEVICE]).start()
        wire, tls = front(osm.port)
        out.backends["traccar"] = Backend(
            "traccar", wire, tls,
            f'[traccar]\nurl = "https://127.0.0.1:{wire.port}/"\ndevice_id = "{DEVICE}"\n',
            lambda: max(osm.times(DEVICE), default=None), lambda: len(osm.times(DEVICE)),
            osm.stop,
        )  # fmt: skip
    if "mqtt" in names:
        broker, port = start_broker(work / "mosquitto")
        wire, tls = front(port)
        got = subscribe(port)
        out.backends["mqtt"] = Backend(
            "mqtt", wire, tls,
            f'[mqtt]\nurl = "mqtts://127.0.0.1:{wire.port}"\ntopic = "{TOPIC}"\n'
            f'ca_file = "{ca}"\n',
            lambda: max(got, default=None), lambda: len(got),
            lambda: stop_process(broker),
        )  # fmt: skip
    os.environ["SSL_CERT_FILE"] = str(ca)  # the daemon's HTTPS trusts the test CA
    return out


def subscribe(port: int) -> set[int]:
    """The `tst` of every location published to TOPIC, read by a plain subscriber (not through
    the relays: it is the map at home, not the unit)."""
    import paho.mqtt.client as mqtt

    got: set[int] = set()

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        if body.get("_type") == "location":
            got.add(int(body["tst"]))

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-home")
    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe(TOPIC, qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return got


# --- the daemon ----------------------------------------------------------------------------


def epochs(seconds: int, start: datetime) -> list[tuple[float, bytes]]:
    """`seconds` epochs at 1 Hz from `start` (benchkit's ride), each with its GPS time."""
    data = ride_epochs(seconds, 1.0, ("RMC", "GGA", "GSA", "VTG"), start=start)
    return [(start.timestamp() + i, d) for i, d in enumerate(data)]


class Unit:
    """`tracker run` reading a pty, with its config and database in `work`."""

    def __init__(self, work: Path, servers: Servers) -> None:
        work.mkdir(parents=True)
        self.work = work
        self.gps = PtyWriter.open(work / "gps0", timeout=5.0)
        self.db = work / "tracker.db"
        self.config = work / "tracker.toml"
        self.config.write_text(
            f'[gps]\ndevice = "{self.gps.path}"\n\n[storage]\npath = "{self.db}"\n\n'
            '[activity]\nstart = "always"\n\n'
            + "\n".join(b.section + servers.extra.get(n, "")
                        for n, b in servers.backends.items())
        )
        self.log = (work / "daemon.log").open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "tracker", "run", "-c",
                                      str(self.config)], cwd=ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT)  # fmt: skip
        wait(lambda: " open at " in (work / "daemon.log").read_text(), 30, "the GPS open")

    def pending(self) -> dict[str, int]:
        done = subprocess.run([sys.executable, "-m", "tracker", "status", "--json", "-c",
                               str(self.config)], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        try:
            return json.loads(done.stdout).get("pending", {})
        except json.JSONDecodeError:
            return {}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.gps.close()
        self.log.close()


def wait(cond: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def write_paced(gps: PtyWriter, ride: list[tuple[float, bytes]], tick: Callable[[], None]) -> None:
    """One epoch a second, on the wall clock; `tick` after each."""
    t0 = time.monotonic()
    for i, (_, data) in enumerate(ride):
        time.sleep(max(0.0, t0 + i - time.monotonic()))
        gps.write(data)
        tick()


# --- the phases ----------------------------------------------------------------------------


@dataclass
class Figures:
    fixes: int = 0
    sent: int = 0
    received: int = 0
    connections: int = 0
    present_s: float | None = None
    history_s: float | None = None

    @property
    def per_fix(self) -> float:
        return (self.sent + self.received) / self.fixes if self.fixes else float("nan")


def live(servers: Servers, work: Path, seconds: int) -> dict[str, Figures]:
    unit = Unit(work, servers)
    try:
        for b in servers.backends.values():
            b.mark = b.wire.counts()
        ride = epochs(seconds, datetime(2026, 6, 1, 8, tzinfo=UTC))
        write_paced(unit.gps, ride, lambda: None)
        wait(lambda: all(v == 0 for v in unit.pending().values()), 300, "live delivery")
        out = {}
        for name, b in servers.backends.items():
            s, r, c = b.since_mark()
            out[name] = Figures(b.count(), s, r, c)
        return out
    finally:
        unit.stop()


def catch_up(servers: Servers, work: Path, backlog_s: int, after_s: int) -> dict[str, Figures]:
    for b in servers.backends.values():
        b.wire.down()
    unit = Unit(work, servers)
    try:
        ride = epochs(backlog_s + after_s, datetime(2026, 6, 2, 8, tzinfo=UTC))
        held, rest = ride[:backlog_s], ride[backlog_s:]
        for i in range(0, len(held), 50):
            unit.gps.write(b"".join(d for _, d in held[i : i + 50]))
        wait(lambda: sum(unit.pending().values()) >= 0.95 * backlog_s * len(servers.backends),
             600, "the backlog stored")  # fmt: skip
        before = {n: b.count() for n, b in servers.backends.items()}
        for b in servers.backends.values():
            b.mark = b.wire.counts()
            b.wire.up()
        back = time.monotonic()
        out = {n: Figures() for n in servers.backends}
        newest = [held[-1][0]]

        def tick() -> None:
            now = time.monotonic() - back
            for n, b in servers.backends.items():
                f = out[n]
                got = b.newest()
                if f.present_s is None and got is not None and got >= newest[0] - 2:
                    f.present_s = now
                if f.history_s is None and b.count() - before[n] >= backlog_s:
                    f.history_s = now

        def write(data: bytes, t: float) -> None:
            unit.gps.write(data)
            newest[0] = t

        t0 = time.monotonic()
        for i, (t, data) in enumerate(rest):
            while time.monotonic() < t0 + i:
                tick()
                time.sleep(0.05)
            write(data, t)
            if all(f.present_s is not None and f.history_s is not None for f in out.values()):
                break
        wait(lambda: all(v == 0 for v in unit.pending().values()), 900, "the backlog delivered")
        tick()
        for n, b in servers.backends.items():
            s, r, c = b.since_mark()
            f = out[n]
            f.fixes, f.sent, f.received, f.connections = b.count() - before[n], s, r, c
        return out
    finally:
        unit.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--live-s", type=int, default=120)
    ap.add_argument("--backlog-s", type=int, default=3600)
    ap.add_argument("--after-s", type=int, default=300, help="the most seconds of 1 Hz "
                    "fixes written after the wire is back")  # fmt: skip
    ap.add_argument("--rtt-ms", type=float, default=150.0)
    ap.add_argument("--only", default=",".join(BACKENDS))
    ap.add_argument("--keep", type=Path, help="keep the work directory here")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help='a config key for one backend, e.g. traccar.catch_up="live_first" '
                         "or mqtt.backoff_max_s=1 (TOML value; repeatable)")  # fmt: skip
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n]
    if unknown := set(names) - set(BACKENDS):
        ap.error(f"--only: unknown backends {sorted(unknown)}")
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-data-"))
    work.mkdir(parents=True, exist_ok=True)
    extra: dict[str, str] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        if section not in names or not name or not value:
            ap.error(f"--set {item!r}: expected SECTION.KEY=VALUE for one of {names}")
        extra[section] = extra.get(section, "") + f"{name} = {value}\n"
    servers = start_servers(work, names, args.rtt_ms / 1000)
    servers.extra = extra
    try:
        lv = live(servers, work / "live", args.live_s)
        cu = catch_up(servers, work / "catch-up", args.backlog_s, args.after_s)
    finally:
        servers.stop()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"live {args.live_s} s at 1 Hz; catch-up: {args.backlog_s} s of backlog, replies "
          f"{args.rtt_ms:g} ms late; TLS, headers and handshakes counted"
          + (f"; {' '.join(args.set)}" if args.set else ""))  # fmt: skip
    print(f"{'backend':12s} {'live B/fix':>10s} {'conns':>5s} {'MB/2 h':>7s} "
          f"{'catch-up B/fix':>14s} {'conns':>5s} {'present after':>13s} "
          f"{'history after':>13s}")  # fmt: skip
    for n in names:
        a, c = lv[n], cu[n]

        def secs(x: float | None) -> str:
            return "-" if x is None else f"{x:.1f} s"

        print(f"{n:12s} {a.per_fix:10.0f} {a.connections:5d} "
              f"{a.per_fix * RIDE_S / 1e6:7.2f} {c.per_fix:14.0f} {c.connections:5d} "
              f"{secs(c.present_s):>13s} {secs(c.history_s):>13s}")  # fmt: skip
    print(f"(one OsmAnd report: ~{OSMAND_REPORT_B} B; MB/2 h = live B/fix x 7200 fixes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
