"""NMEA inputs besides the GPS (`[[inputs]]`, tracker/inputs.py): a TCP multiplexer and UDP
broadcast on 127.0.0.1, in-process and behind a real `tracker run` (issue 15)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest
from support import epochs, free_port, stored_times, stream, wait_for

from tracker.inputs import InputReader
from tracker.inputs_config import InputConfig
from tracker.inputs_config import check_input_url as check_url
from tracker.pty import PtyWriter
from tracker.simulate import nmea_checksum
from tracker.store import open_store


def nmea(body: str) -> bytes:
    return f"${body}*{nmea_checksum(body):02X}\r\n".encode()


DEPTH = nmea("SDDPT,12.5,0.3")  # depth 12.5 m, depth_surface 12.8 m
WIND = nmea("WIMWV,45.0,R,10.5,N,A")
HEADING = nmea("HCHDT,123.4,T")


class Mux:
    """A NMEA multiplexer's TCP port: sends `sentence` every `every_s` to each connection, until
    `drop()` closes them and the port; `restore()` listens on the same port again."""

    def __init__(self, sentence: bytes, every_s: float = 0.02) -> None:
        self.sentence = sentence
        self.every_s = every_s
        self.port = free_port()
        self.accepted = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.restore()

    def restore(self) -> None:
        self._stop.clear()
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._listener.settimeout(0.1)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conns: list[socket.socket] = []
        try:
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    conn, _ = self._listener.accept()
                    conns.append(conn)
                    self.accepted += 1
                for conn in list(conns):
                    try:
                        conn.sendall(self.sentence)
                    except OSError:
                        conns.remove(conn)
                self._stop.wait(self.every_s)
        finally:
            for conn in conns:
                conn.close()
            self._listener.close()

    def drop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=5)

    close = drop


class Broadcaster:
    """Broadcasts `datagram` on 127.255.255.255:`port` every `every_s` (the loopback's
    broadcast address: real broadcast, and it never leaves the machine)."""

    def __init__(self, port: int, datagram: bytes, every_s: float = 0.02) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self._stop = threading.Event()

        def send() -> None:
            while not self._stop.wait(every_s):
                self.sock.sendto(datagram, ("127.255.255.255", port))

        self._thread = threading.Thread(target=send, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """An InputReader in its own thread, collecting its readings and shared lines."""

    def __init__(self, name: str, url: str, **kw) -> None:
        self.readings: list = []
        self.shared: list[bytes] = []
        self.stop = threading.Event()
        self.reader = InputReader(
            InputConfig(name, url),
            self.readings.extend,
            self.stop,
            share=self.shared.append,
            reconnect_max_s=0.5,
            **kw,
        )
        self.reader.thread.start()

    def kinds(self) -> set[str]:
        return {r.kind for r in list(self.readings)}

    def close(self) -> None:
        self.stop.set()
        self.reader.thread.join(timeout=5)
        assert not self.reader.thread.is_alive()
        assert self.reader.status.state == "stopped"


@pytest.fixture
def running():
    made: list[Running] = []

    def make(*a, **kw) -> Running:
        r = Running(*a, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def test_tcp_input_reconnects_and_ignores_positions(running):
    gps_epoch = epochs(2)[0].data + epochs(2)[1].data  # a plotter echoing a position
    mux = Mux(gps_epoch + DEPTH + WIND)
    try:
        r = running("mux", f"tcp://127.0.0.1:{mux.port}")
        wait_for(lambda: {"depth", "wind_angle_app"} <= r.kinds(), what="readings over TCP")
        depth = next(x for x in r.readings if x.kind == "depth")
        assert (depth.value, depth.sensor) == (12.5, "mux")
        wait_for(lambda: r.reader.status.positions_ignored > 0, what="the echoed fixes seen")
        st = r.reader.status
        assert st.state == "open" and st.connects == 1 and st.sentences > 0
        assert st.last_seen is not None and st.bytes_read > 0
        # Whole lines to the share, as read.
        shared = b"".join(r.shared)
        assert shared.startswith(gps_epoch) and all(
            line.endswith(b"\r\n") for line in shared.splitlines(True)
        )
        mux.drop()
        wait_for(lambda: r.reader.status.state in ("lost", "connecting") and r.reader.status.error,
                 what="the input to see the multiplexer go")  # fmt: skip
        before = len(r.readings)
        mux.restore()
        wait_for(lambda: r.reader.status.connects >= 2, what="the input to reconnect")
        wait_for(lambda: len(r.readings) > before, what="readings after the reconnect")
        assert r.reader.status.error is None
    finally:
        mux.close()


def test_udp_input_takes_broadcast_datagrams(running):
    port = free_udp_port()
    r = running("compass", f"udp://:{port}")
    wait_for(lambda: r.reader.status.state == "open", what="the UDP port bound")
    # One datagram with two sentences, one without its line end: both are read.
    sender = Broadcaster(port, HEADING + DEPTH.rstrip())
    try:
        wait_for(lambda: {"heading_true", "depth"} <= r.kinds(), what="readings over UDP")
        assert all(x.sensor == "compass" for x in r.readings)
        assert b"".join(r.shared).startswith(HEADING + DEPTH)  # line end added: whole lines
    finally:
        sender.close()


class UdpLine:
    """Datagrams to an input's `udp://` port."""

    def __init__(self, tmp_path) -> None:
        self.port = free_udp_port()
        self.url = f"udp://127.0.0.1:{self.port}"
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def ready(self, r: Running) -> bool:
        return r.reader.status.state == "open"

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, ("127.0.0.1", self.port))

    def close(self) -> None:
        self.sock.close()


class TcpLine:
    """A multiplexer's TCP port the input connects to; sends on the connection it accepted."""

    def __init__(self, tmp_path) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.url = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.conn: socket.socket | None = None

    def ready(self, r: Running) -> bool:
        if self.conn is None:
            self.conn, _ = self.listener.accept()
        return r.reader.status.state == "open"

    def send(self, data: bytes) -> None:
        assert self.conn is not None
        self.conn.sendall(data)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


class SerialLine:
    """A serial instrument: a pty the input opens as a device."""

    def __init__(self, tmp_path) -> None:
        self.pty = PtyWriter.open(tmp_path / "sounder0")
        self.url = self.pty.path

    def ready(self, r: Running) -> bool:
        return r.reader.status.state == "open" and self.pty.reader_connected()

    def send(self, data: bytes) -> None:
        self.pty.write(data)

    def close(self) -> None:
        self.pty.close()


@pytest.mark.parametrize("line_class", [UdpLine, TcpLine, SerialLine], ids=["udp", "tcp", "serial"])
def test_a_reading_that_ends_an_idle_wait_is_stamped_when_it_arrived(running, tmp_path,
                                                                      line_class):  # fmt: skip
    """docs/boats.md: readings are stamped when they arrive. A sentence that ends a read's idle
    wait (up to 1 s) was stamped when the wait began, up to a second early, so it went with the
    previous second's fix (issue 23: 11 of 12 such UDP readings). The source session stamps
    after the read returns, the same for every transport: never before the sentence was sent,
    and within 50 ms of it."""
    line = line_class(tmp_path)
    try:
        r = running("compass", line.url)
        wait_for(lambda: line.ready(r), what="the input open")
        sent: list[float] = []
        for i in range(6):
            # Wait until the reader has taken the previous one: each sentence then arrives
            # while the reader waits idle in its read.
            wait_for(lambda i=i: len(r.readings) >= i, what=f"reading {i}")
            threading.Event().wait(0.3)  # into the reader's idle wait: the case under test
            sent.append(time.monotonic())
            line.send(HEADING)
        wait_for(lambda: len(r.readings) >= len(sent), what="every reading")
    finally:
        line.close()
    stamps = [x.mono for x in r.readings if x.kind == "heading_true"]
    assert len(stamps) == len(sent)
    late = sorted(stamp - at for at, stamp in zip(sent, stamps, strict=True))
    assert late[0] >= 0, f"stamped before the sentence was sent, by {-late[0]:.3f} s"
    # The median, not each: a loaded machine may hold the reader's thread back now and then.
    assert late[len(late) // 2] < 0.05, f"stamped late by {late} s"


def test_a_missing_serial_input_retries_quietly_and_stops_at_once(running, caplog):
    r = running("sounder", "/dev/does-not-exist-tracker")
    wait_for(lambda: r.reader.status.error, what="the first failed open")
    assert r.reader.status.state == "connecting" and r.reader.status.connects == 0
    wait_for(lambda: sum("not available" in m for m in caplog.messages) == 1, what="one warning")
    started = time.monotonic()
    r.close()
    assert time.monotonic() - started < 5  # bounded by the stop event, not the backoff


def test_urls():
    assert check_url("tcp://192.168.1.10:10110") == "tcp://192.168.1.10:10110"
    assert check_url("udp://:10110") == "udp://:10110"
    assert check_url("/dev/ttyUSB1") == "/dev/ttyUSB1"
    for bad in ("tcp://:10110", "tcp://host", "udp://host:x", "tcp://h:0", "gpsd://h:2947"):
        with pytest.raises(ValueError):
            check_url(bad)


# --- behind a real daemon ----------------------------------------------------------------------


def input_samples(db, sensor: str) -> int:
    if not db.exists():
        return 0
    try:
        store = open_store(db, readonly=True)
    except Exception:
        return 0
    try:
        return sum(1 for s in store.instruments_between(0, 1e12) if s.sensor == sensor)
    finally:
        store.close()


@pytest.mark.slow
def test_instrument_streams_drop_and_return_the_gps_track_is_unaffected(daemon, gps):
    mux = Mux(DEPTH + WIND, every_s=0.05)
    udp_port = free_udp_port()
    share_port = free_port()
    d = daemon(
        f'[[inputs]]\nname = "mux"\nurl = "tcp://127.0.0.1:{mux.port}"\nreconnect_max_s = 1\n\n'
        f'[[inputs]]\nname = "compass"\nurl = "udp://:{udp_port}"\n\n'
        f'[share]\nnmea_tcp = "127.0.0.1:{share_port}"\n'
    )
    sender = None
    try:
        d.start()
        d.wait_gps_open()
        wait_for(lambda: "input compass (udp" in d.log_text(), what="the UDP input open")
        sender = Broadcaster(udp_port, HEADING, every_s=0.05)
        ride = epochs(3000)
        pos = stream(gps, ride, 0, 1.5)
        wait_for(lambda: input_samples(d.db, "mux") > 0 and input_samples(d.db, "compass") > 0,
                 30, what="samples from both inputs")  # fmt: skip

        mux.drop()  # the multiplexer goes away (unplugged, rebooting)
        wait_for(lambda: "input mux (tcp" in d.log_text() and " lost " in d.log_text(), 20,
                 what="the daemon to see the multiplexer go")  # fmt: skip
        pos = stream(gps, ride, pos, 1.5)  # the GPS goes on meanwhile
        during = input_samples(d.db, "mux")
        mux.restore()
        # The GPS goes on until samples come through the multiplexer again. (Its reconnection
        # is not waited for in the log: a connect that races the port's closing may succeed
        # and be reset at once, which is one more "lost" and "back" than the one we make.)
        while input_samples(d.db, "mux") == during:
            assert pos < len(ride) - 200, f"no samples after the multiplexer came back ({d.log})"
            pos = stream(gps, ride, pos, 0.5)
        pos = stream(gps, ride, pos, 0.5)
        wait_for(lambda: len(stored_times(d.db)) == pos, 30, what="every fix stored")
        assert stored_times(d.db) == [round(e.unix, 3) for e in ride[:pos]]  # the track intact
        status = wait_for(lambda: (s := d.status())["inputs"] and
                          s["inputs"][0]["connects"] >= 2 and s, 20,
                          what="the inputs in status")  # fmt: skip
        by_name = {i["name"]: i for i in status["inputs"]}
        assert by_name["mux"]["state"] == "open" and by_name["mux"]["readings"] > 0
        assert by_name["compass"]["state"] == "open" and by_name["compass"]["last_seen"]
        text = d.cli("status").stdout
        assert "input:     mux (tcp://127.0.0.1:" in text and "input:     compass" in text
        assert d.terminate() == 0
    finally:
        if sender is not None:
            sender.close()
        mux.close()


def test_the_gps_stream_gives_readings_and_whole_lines_to_share(tmp_path):
    """Instrument sentences in the [gps] receiver's own stream (a GPS compass) are readings of
    the sensor "gps"; what it reads goes to the share in whole lines, in order."""
    from tracker.gps import GpsReader
    from tracker.pty import PtyWriter

    fixes: list = []
    readings: list = []
    shared: list[bytes] = []
    stop = threading.Event()
    with PtyWriter.open(tmp_path / "gps0", timeout=2.0) as pty:
        reader = GpsReader(pty.path, 9600, fixes.extend, stop, readings=readings.extend,
                           share=shared.append)  # fmt: skip
        thread = threading.Thread(target=reader.run, daemon=True)
        thread.start()
        try:
            assert pty.wait_for_reader(timeout=10)
            ride = epochs(20)
            sent = b""
            for e in ride:
                chunk = e.data + HEADING
                sent += chunk
                # Cut mid-sentence on purpose: the share must still see whole lines only.
                pty.write(chunk[:7])
                pty.write(chunk[7:])
            wait_for(lambda: len(fixes) == 20 and len(readings) == 20, what="fixes, readings")
            wait_for(lambda: b"".join(shared) == sent, what="every line shared")
            assert all(chunk.endswith(b"\n") for chunk in shared)
            assert {(r.kind, r.value, r.sensor) for r in readings} == {("heading_true", 123.4,
                                                                         "gps")}  # fmt: skip
        finally:
            stop.set()
            thread.join(timeout=5)
    assert not thread.is_alive()
