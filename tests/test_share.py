"""The NMEA share server (tracker/share.py): real TCP clients on 127.0.0.1, and a real gpsd
reading a running `tracker run`'s share port (issue 15)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from support import Daemon, epochs, free_port, stored_fixes, stored_so_far, wait_for

from tracker.pty import PtyWriter
from tracker.share import MAX_LINE, LineCutter, ShareServer


def test_line_cutter_hands_over_whole_lines_only():
    cut = LineCutter()
    assert cut.feed(b"$GPGGA,1") == b""
    assert cut.feed(b"23*00\r\n$GPRMC") == b"$GPGGA,123*00\r\n"
    assert cut.feed(b",4*11\r\n$A\r\n$B") == b"$GPRMC,4*11\r\n$A\r\n"
    cut.reset()  # the line went away: its partial sentence is never shared
    assert cut.feed(b"*5\r\n") == b"*5\r\n"
    assert cut.feed(b"x" * (MAX_LINE + 1)) == b""  # binary junk: dropped, the tail stays bounded
    assert cut.feed(b"\n$C\r\n") == b"\n$C\r\n"


@pytest.fixture
def server():
    stop = threading.Event()
    made = []

    def make(**kw) -> ShareServer:
        s = ShareServer("127.0.0.1", 0, stop, **kw).start()
        made.append(s)
        return s

    yield make
    stop.set()
    for s in made:
        s.thread.join(timeout=5)
        assert not s.thread.is_alive()


def connect(server: ShareServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    return sock


def read_lines(sock: socket.socket, n: int) -> list[bytes]:
    """`n` lines from `sock` (each with its CRLF), failing after the socket's timeout."""
    buf = b""
    while buf.count(b"\n") < n:
        data = sock.recv(65536)
        assert data, f"closed after {len(buf.splitlines())} lines"
        buf += data
    return buf.splitlines(keepends=True)


def sentence(source: str, i: int) -> bytes:
    return f"${source},{i:06d},{'x' * 40}*00\r\n".encode()


def test_every_client_gets_every_line_verbatim_in_order_never_interleaved(server):
    share = server(max_buffer=1 << 20)  # room for the whole burst: nothing is dropped here
    clients = [connect(share) for _ in range(3)]
    wait_for(lambda: share.status()["clients"] == 3, what="3 clients")
    n = 2000

    def source(name: str) -> None:
        # Chunks of 1-3 lines, as a reader hands them over.
        i = 0
        while i < n:
            k = min(1 + i % 3, n - i)
            share.publish(b"".join(sentence(name, j) for j in range(i, i + k)))
            i += k

    threads = [threading.Thread(target=source, args=(name,)) for name in ("GPS", "ECHO")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    for sock in clients:
        lines = read_lines(sock, 2 * n)
        assert len(lines) == 2 * n
        for name in ("GPS", "ECHO"):
            mine = [line for line in lines if line.startswith(f"${name},".encode())]
            assert mine == [sentence(name, i) for i in range(n)]  # whole, verbatim, in order
        sock.close()
    status = share.status()
    assert status["dropped_bytes"] == 0
    assert status["published_bytes"] == n * (len(sentence("GPS", 0)) + len(sentence("ECHO", 0)))


def test_a_stalled_client_loses_lines_alone_and_never_blocks_the_source(server):
    share = server(max_buffer=4096)
    stalled = connect(share)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader = connect(share)
    wait_for(lambda: share.status()["clients"] == 2, what="2 clients")
    got: list[bytes] = []
    n = 4000  # ~230 kB: far more than the stalled client's queue and socket buffers hold
    reader_port = f"127.0.0.1:{reader.getsockname()[1]}"

    def read_all() -> None:
        got.extend(read_lines(reader, n))

    def reader_queued() -> int:
        return next(c["queued"] for c in share.status()["per_client"] if c["peer"] == reader_port)

    t = threading.Thread(target=read_all)
    t.start()
    for i in range(0, n, 40):
        # 40 lines at a time (2.3 kB), as a source at a realistic rate: the reading client's
        # queue is drained between bursts (observed, not timed), the stalled one's never is.
        for j in range(i, i + 40):
            share.publish(sentence("GPS", j))  # returns at once whatever the stalled client does
        wait_for(lambda: reader_queued() == 0, what="the reading client to catch up")
    t.join(timeout=30)
    assert got == [sentence("GPS", i) for i in range(n)]  # the reading client lost nothing
    per = {c["peer"]: c for c in share.status()["per_client"]}
    stalled_row = per[f"127.0.0.1:{stalled.getsockname()[1]}"]
    assert stalled_row["dropped"] > 0 and stalled_row["queued"] <= 4096
    assert per[reader_port]["dropped"] == 0
    assert share.status()["dropped_bytes"] == stalled_row["dropped_bytes"]
    # What the stalled client does get is whole lines, in order, with gaps.
    stalled.settimeout(0.5)
    buf = b""
    try:
        while data := stalled.recv(65536):
            buf += data
    except TimeoutError:
        pass
    lines = buf.splitlines(keepends=True)
    assert lines and all(line in {sentence("GPS", i) for i in range(n)} for line in lines)
    numbers = [int(line.split(b",")[1]) for line in lines]
    assert numbers == sorted(numbers) and len(numbers) < n


def test_clients_come_and_go_and_the_limit_holds(server):
    share = server(max_clients=2)
    a, b = connect(share), connect(share)
    wait_for(lambda: share.status()["clients"] == 2, what="2 clients")
    c = connect(share)
    c.settimeout(5)
    assert c.recv(10) == b""  # refused: closed at once
    wait_for(lambda: share.status()["refused"] == 1, what="the refusal counted")
    a.close()
    wait_for(lambda: share.status()["clients"] == 1, what="the closed client removed")
    share.publish(sentence("GPS", 1))
    assert read_lines(b, 1) == [sentence("GPS", 1)]
    b.sendall(b"?WATCH;\r\n")  # whatever a client says is read and ignored
    share.publish(sentence("GPS", 2))
    assert read_lines(b, 1) == [sentence("GPS", 2)]
    b.close()


def test_a_port_in_use_is_an_error_at_start():
    stop = threading.Event()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            ShareServer("127.0.0.1", taken.getsockname()[1], stop).start()


# --- a real gpsd, client of a real daemon's share port ----------------------------------------

GPSD = shutil.which("gpsd") or ("/usr/sbin/gpsd" if Path("/usr/sbin/gpsd").exists() else None)


class Gpsd:
    """A real gpsd on a free port, in the foreground, stopped by its pid."""

    def __init__(self, tmp_path: Path, device: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log = tmp_path / "gpsd.log"
        control = tmp_path / f"gpsd-{self.port}.sock"
        control.unlink(missing_ok=True)
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [GPSD, "-N", "-n", "-b", "-S", str(self.port), "-F", str(control), device],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def watch(self, timeout: float = 10.0) -> socket.socket:
        """A JSON watch on this gpsd (retried until it listens)."""

        def attempt():
            try:
                return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
            except OSError:
                return None

        sock = wait_for(attempt, 20, what=f"gpsd to listen (log: {self.log})")
        sock.sendall(b'?WATCH={"enable":true,"json":true};\n')
        return sock

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def tpv_times(sock: socket.socket, until: float, got: list[dict]) -> None:
    """Collect gpsd's TPV reports with a time into `got` until one at `until` came."""
    buf = b""
    while not any(round(_t(r), 3) >= until for r in got):
        data = sock.recv(65536)
        assert data, "gpsd closed the watch"
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            d = json.loads(line)
            if d.get("class") == "TPV" and d.get("mode", 0) >= 2 and "time" in d:
                got.append(d)


def _t(report: dict) -> float:
    from datetime import datetime

    return datetime.fromisoformat(report["time"].replace("Z", "+00:00")).timestamp()


@pytest.mark.skipif(GPSD is None, reason="gpsd is not installed (Debian: apt install gpsd)")
def test_gpsd_reading_the_share_port_reports_the_fixes_the_tracker_stored(tmp_path):
    port = free_port()
    with PtyWriter.open(tmp_path / "gps0", timeout=2.0) as gps:
        d = Daemon(tmp_path, gps.path, f'[share]\nnmea_tcp = "127.0.0.1:{port}"\n')
        gpsd = None
        try:
            d.start()
            d.wait_gps_open()
            gpsd = Gpsd(tmp_path, f"tcp://127.0.0.1:{port}")
            watch = gpsd.watch()
            wait_for(lambda: d.status()["share"].get("clients") == 1, 20,
                     what="gpsd connected to the share port")  # fmt: skip
            ride = epochs(60, rate_hz=5.0)
            reports: list[dict] = []
            collector = threading.Thread(
                target=tpv_times, args=(watch, round(ride[-2].unix, 3), reports)
            )
            collector.start()
            for e in ride:
                gps.write(e.data)
                collector.join(timeout=0.02)  # paced like a 50 Hz receiver, not a sync point
            collector.join(timeout=30)
            assert not collector.is_alive(), f"gpsd reported {len(reports)} fixes"
            watch.close()
            wait_for(lambda: len(stored_so_far(d.db)) >= len(ride), 20, what="all fixes stored")
            stored = {round(f.time, 3): f for f in stored_fixes(d.db)}
            # gpsd reports each epoch once it has its date (from the first RMC) and repeats one
            # while it learns the cycle: every report it makes is a stored fix, to the digit.
            seen = {}
            for r in reports:
                seen[round(_t(r), 3)] = r
            assert len(seen) >= len(ride) - 3
            for t, r in seen.items():
                f = stored[t]
                assert r["lat"] == pytest.approx(f.lat, abs=1e-8)
                assert r["lon"] == pytest.approx(f.lon, abs=1e-8)
                assert r["altMSL"] == pytest.approx(f.alt, abs=1e-3)
                if "speed" in r:
                    assert r["speed"] == pytest.approx(f.speed, abs=2e-3)
            status = wait_for(lambda: (s := d.status())["share"]["sent_bytes"] > 0 and s, 20,
                              what="the runtime row to show what was shared")  # fmt: skip
            assert status["share"]["dropped_bytes"] == 0
            assert "share:     tcp 127.0.0.1:" in d.cli("status").stdout
        finally:
            if gpsd is not None:
                gpsd.stop()
            d.stop()


def test_a_daemon_whose_share_port_is_taken_records_anyway_and_says_so(tmp_path):
    with socket.socket() as taken, PtyWriter.open(tmp_path / "gps0", timeout=2.0) as gps:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d = Daemon(tmp_path, gps.path, f'[share]\nnmea_tcp = "127.0.0.1:{port}"\n')
        try:
            d.start()
            d.wait_gps_open()
            ride = epochs(20)
            for e in ride:
                gps.write(e.data)
            wait_for(lambda: len(stored_so_far(d.db)) == 20, 20, what="the fixes stored")
            assert f"cannot share NMEA on 127.0.0.1:{port}" in d.log_text()
            share = wait_for(lambda: d.status()["share"], 20, what="the share in status")
            assert share["error"] and share["listen"] == f"127.0.0.1:{port}"
            assert "not serving" in d.cli("status").stdout
            assert d.terminate() == 0
        finally:
            d.stop()
