"""The status page's server under hostile clients (tracker/web.py): bounded connections,
deadlines, caps, one-line errors; and a real `tracker run` under the unit's own limits whose
page is flooded while the GPS is unplugged and plugged back."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support import T0, Daemon, epochs, free_port, stored_times, wait_for

from tracker import web
from tracker.config import Config, StorageConfig, WebConfig
from tracker.fix import Fix
from tracker.pty import PtyWriter
from tracker.store import open_store


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "tracker.db"
    s = open_store(path)
    a = s.start_activity("Morning loop", "cycling", "private", (), T0.timestamp())
    s.add_fixes(a.id, [Fix(T0.timestamp() + i, 48.0 + i * 4.5e-5, 11.0, speed=5.0, hdop=0.9)
                       for i in range(600)])  # fmt: skip
    s.close()
    return path


@pytest.fixture
def page(db: Path):
    """A StatusServer on the fixture's store, in its own thread; tests may shrink its bounds
    before the first request (they are read on every pass of its loop)."""
    cfg = Config(storage=StorageConfig(path=db), web=WebConfig(listen="127.0.0.1:0"))
    server = web.StatusServer(cfg)
    stop = threading.Event()
    thread = threading.Thread(target=server.run, args=(stop,), daemon=True)
    thread.start()
    yield server
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()


def connect(server: web.StatusServer) -> socket.socket:
    return socket.create_connection(server.server_address[:2], timeout=10)


def read_reply(
    sock: socket.socket, pending: bytearray | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP reply from `sock`: status, headers (lower-case names), body. `pending`: the
    bytes already read past the last reply, kept there for the next one (pipelined replies
    may come in one read)."""
    buf = bytes(pending) if pending is not None else b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a reply: {buf!r}"
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    size = int(headers.get("content-length", "0"))
    while len(body) < size:
        chunk = sock.recv(65536)
        assert chunk, "closed in the middle of a body"
        body += chunk
    if pending is not None:
        pending[:] = body[size:]
    return int(lines[0].split()[1]), headers, body[:size]


def ask(server: web.StatusServer, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    with connect(server) as s:
        s.sendall(raw)
        return read_reply(s)


def get(server: web.StatusServer, target: str) -> tuple[int, dict[str, str], bytes]:
    return ask(server, f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the other side closed `sock` (an end of file or a reset, not a timeout)."""
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def test_bad_parameters_get_4xx_with_one_line_never_a_traceback(page, caplog):
    caplog.set_level(logging.DEBUG, logger="tracker.web")
    cases = {
        "/api/track?activity=99999999999999999999999": (400, "activity: expected a positive"),
        "/api/track?activity=abc": (400, "got 'abc'"),
        "/api/track?activity=-1": (400, "got '-1'"),
        "/api/track?activity=%EF%BC%91": (400, "activity"),  # a full-width digit one
        "/api/track?activity=1&activity=1": (400, "more than once"),
        "/api/track?activity=7": (404, "no such activity: 7"),
        "/nope": (404, "not found: '/nope'"),
        "/export/abc.gpx": (400, "bad export name 'abc.gpx'"),
        "/export/1.exe": (400, "bad export name '1.exe'"),
        "/export/99999999999999999999.gpx": (400, "bad export name"),
        "/export/9223372036854775808.csv": (400, "activity"),  # one past SQLite's integers
        "/export/7.gpx": (404, "no such activity"),
        "/api/status?" + "&".join(f"k{i}=v" for i in range(20)): (400, "too many query"),
        "/api/track?activity=" + "9" * 3000: (414, "request line longer than 2048 bytes"),
    }
    for target, (code, reason) in cases.items():
        got, headers, body = get(page, target)
        assert (got, body.count(b"\n"), body.endswith(b"\n")) == (code, 1, True), (target, body)
        assert reason in body.decode(), (target, body)
        assert headers["content-type"].startswith("text/plain")
    assert get(page, "/api/track?activity=1")[0] == 200  # and the same page still answers
    assert get(page, "/export/1.csv")[0] == 200
    assert not any(r.exc_info for r in caplog.records)


def test_only_get_without_a_body(page):
    for method in ("POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"):
        code, headers, body = ask(page, f"{method} / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
                                  .encode())  # fmt: skip
        assert (code, headers["allow"], headers["connection"]) == (405, "GET", "close"), method
        assert body == f"'{method}' not allowed: the page only reads (GET)\n".encode()
    code, headers, body = ask(page, b"GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
    assert (code, body, headers["connection"]) == (400, b"a GET carries no body\n", "close")
    code, _, body = ask(page, b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert code == 400
    code, _, body = ask(page, b"garbage\r\n\r\n")
    assert code == 400 and body.count(b"\n") == 1


def test_oversized_heads_are_refused_and_closed(page):
    with connect(page) as s:
        s.sendall(b"GET / HTTP/1.1\r\n" + b"X-Filler: " + b"a" * 9000 + b"\r\n\r\n")
        code, headers, body = read_reply(s)
        assert (code, headers["connection"]) == (431, "close")
        assert body == b"request head longer than 8192 bytes\n"
        assert closed_by_peer(s)
    with connect(page) as s:  # a head that never ends is refused once it is too long
        s.sendall(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 2000)
        assert read_reply(s)[0] == 431
    assert page.counters()["refused"] == 2


def test_a_connection_that_sends_no_whole_request_is_closed_at_the_deadline(page):
    page.request_deadline_s = 0.5
    stalled = []
    for part in (b"G", b"GET /api/status HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nHost: t\r\n"):
        s = connect(page)
        s.sendall(part)
        stalled.append(s)
    wait_for(lambda: page.counters()["timed_out"] == 3, what="three timed out")
    for s in stalled:
        s.settimeout(5)
        assert closed_by_peer(s)
        s.close()
    assert page.counters()["connections"] == 0


def test_a_silent_connection_never_takes_a_slot(page):
    """Connections that send nothing stay in the kernel (TCP_DEFER_ACCEPT) as long as they are
    silent: a browser behind them is answered at once, however many there are."""
    page.cap = 4
    silent = [connect(page) for _ in range(40)]
    try:
        for _ in range(5):
            assert get(page, "/api/status")[0] == 200
        assert page.counters()["accepted"] == 5 and page.counters()["evicted"] == 0
    finally:
        for s in silent:
            s.close()


def test_keep_alive_and_pipelining_are_bounded(page):
    page.max_requests = 3
    with connect(page) as s:
        s.sendall(b"GET /api/activities HTTP/1.1\r\n\r\n" * 2)  # pipelined: answered in order
        pending = bytearray()  # both replies may come in one read
        assert [read_reply(s, pending)[0] for _ in range(2)] == [200, 200]
        s.sendall(b"GET /api/track HTTP/1.1\r\n\r\n")
        code, _, body = read_reply(s, pending)
        assert code == 200 and json.loads(body)["activity"] == 1
        assert closed_by_peer(s)  # the third request was the last on this connection
    assert page.counters()["served"] == 3


def test_when_full_the_longest_waiting_connection_makes_room_for_a_browser(page):
    page.cap = 4
    held = []
    for _ in range(40):  # slow loris: half a head, and then nothing
        s = connect(page)
        s.sendall(b"GET /api/status HTTP/1.1\r\nHost: t\r\n")
        held.append(s)
    try:
        for _ in range(5):  # a browser polling through the flood is answered every time
            assert get(page, "/api/status")[0] == 200
        wait_for(lambda: page.counters()["evicted"] >= 36, timeout=10, what="evictions")
        assert page.counters()["connections"] <= page.cap
        assert all(closed_by_peer(s) for s in held[:30])  # the oldest went first
    finally:
        for s in held:
            s.close()


def test_a_reply_the_client_does_not_read_is_dropped_after_the_stall_deadline(page):
    page.write_stall_s = 0.5
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that reads nothing
    s.connect(page.server_address[:2])
    with s:
        # Pipelined exports, read by nobody: more than the kernel's buffers hold.
        s.sendall(b"GET /export/1.gpx HTTP/1.1\r\n\r\n" * 200)
        wait_for(lambda: page.counters()["stalled"] == 1, timeout=30, what="the stall seen")
    assert get(page, "/api/status")[0] == 200


def test_a_bug_in_a_reply_is_one_500_and_one_log_line(page, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="tracker.web")

    def broken(store):
        raise RuntimeError("a bug in reading the rides")

    monkeypatch.setattr(page, "activities", broken)  # a bug cannot be made any other way
    for _ in range(20):
        code, headers, body = get(page, "/api/activities")
        assert (code, body) == (500, b"internal error: see the daemon's log\n")
    assert get(page, "/api/status")[0] == 200
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "a bug in reading the rides" in errors[0].getMessage()
    assert page.counters()["errors"] == 20


def test_the_connection_cap_is_a_share_of_the_open_file_limit():
    import resource

    assert web.connection_cap(1024) == web.MAX_CONNECTIONS == 32
    assert web.connection_cap(resource.RLIM_INFINITY) == 32
    assert web.connection_cap(128) == 16
    assert web.connection_cap(20) == web.MIN_CONNECTIONS
    assert web.connection_cap(1024) * web.NOFILE_SHARE <= 1024


def test_the_page_never_starts_a_thread_per_connection(page):
    def workers() -> int:
        return sum(t.name.startswith("web-") for t in threading.enumerate())

    wait_for(lambda: workers() == web.WORKERS, what="the page's workers")
    before = {t.name for t in threading.enumerate()}
    held = [connect(page) for _ in range(100)]
    for s in held:  # accepted (a silent one stays in the kernel) and never finished
        s.sendall(b"GET / HTTP/1.1\r\n")
    try:
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: get(page, "/api/status")[0], range(40)))
        assert codes == [200] * 40
        new = {t.name for t in threading.enumerate()} - before
        assert all(n.startswith("ThreadPoolExecutor") for n in new), new  # the test's own
        assert workers() == web.WORKERS
    finally:
        for s in held:
            s.close()


ACCEPT_SPIN = r"""
import json, os, resource, socket, sys, threading, time
from tracker import web
from tracker.config import Config, StorageConfig, WebConfig
cfg = Config(storage=StorageConfig(path=sys.argv[1]), web=WebConfig(listen="127.0.0.1:0"))
server = web.StatusServer(cfg)
server.cap = 64  # more than the descriptors left: accept() must fail with EMFILE
used = len(os.listdir("/proc/self/fd"))
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (used + 8, hard))
stop = threading.Event()
threading.Thread(target=server.run, args=(stop,), daemon=True).start()
print(server.server_address[1], flush=True)
sys.stdin.readline()  # the test has flooded it; now measure
t0, c0 = time.monotonic(), sum(os.times()[:2])
time.sleep(2.0)
print(json.dumps({"cpu": sum(os.times()[:2]) - c0, "wall": time.monotonic() - t0,
                  **server.counters()}), flush=True)
stop.set()
"""


def test_out_of_descriptors_the_page_pauses_instead_of_spinning(db, tmp_path):
    """accept() failing with EMFILE leaves the listener readable: a loop that retries at once
    spins a core (seen at 95 %). The page pauses its accepts and logs once a minute."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", ACCEPT_SPIN, str(db)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip
    held = []
    try:
        port = int(proc.stdout.readline())
        for _ in range(40):  # the kernel completes them; the page cannot take them
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET / HTTP/1.1\r\n")
            held.append(s)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        got = json.loads(proc.stdout.readline())
    finally:
        for s in held:
            s.close()
        proc.stdin.close()
        stderr = proc.stderr.read()
        proc.wait(timeout=10)
    assert got["accept_errors"] >= 1
    # A spinning loop takes the whole core it is given; pausing takes next to nothing. The
    # bound is half of the wall time, far from either, so a busy machine cannot make it flaky.
    assert got["cpu"] < 0.5 * got["wall"], got
    lines = [x for x in stderr.splitlines() if "cannot accept" in x]
    assert len(lines) == 1 and "Too many open files" in lines[0], stderr[-2000:]


# --- the real daemon, flooded --------------------------------------------------------------

HALF_OPEN = 1500
BURST = 500


def proc_stats(pid: int) -> dict[str, float]:
    """Threads, open descriptors, RSS (MB) and CPU seconds of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)  # fmt: skip
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
        "cpu_s": (int(stat[11]) + int(stat[12])) / ticks,
    }


class CgroupV1:
    """The unit's TasksMax= and MemoryMax= as cgroup v1 pids and memory groups, when the
    machine lets this process make them."""

    def __init__(self, tasks_max: int, memory_max: int) -> None:
        name = f"tracker-test-{uuid.uuid4().hex[:8]}"
        self.dirs = [Path("/sys/fs/cgroup/pids") / name, Path("/sys/fs/cgroup/memory") / name]
        for d in self.dirs:
            d.mkdir()
        (self.dirs[0] / "pids.max").write_text(str(tasks_max))
        (self.dirs[1] / "memory.limit_in_bytes").write_text(str(memory_max))

    def prefix(self) -> list[str]:
        """A command prefix that enters both groups, then runs the rest of the command."""
        enter = " && ".join(f"echo $$ > {d / 'cgroup.procs'}" for d in self.dirs)
        return ["sh", "-c", f'{enter} && exec "$@"', "sh"]

    def events(self) -> dict[str, int]:
        """How often each limit was hit."""
        return {"pids": int((self.dirs[0] / "pids.events").read_text().split()[1]),
                "memory": int((self.dirs[1] / "memory.failcnt").read_text())}  # fmt: skip

    def remove(self) -> None:
        for d in self.dirs:
            with contextlib.suppress(OSError):
                d.rmdir()


def unit_cgroup() -> CgroupV1 | None:
    try:
        return CgroupV1(tasks_max=64, memory_max=128 * 1024 * 1024)
    except OSError:
        return None


class Flood:
    """The hostile side, in the test process: HALF_OPEN connections that connect and then send
    half a head or nothing (opened without waiting, held until `close`), and a BURST of whole
    requests from 25 threads."""

    def __init__(self, port: int) -> None:
        self.addr = ("127.0.0.1", port)
        self.held: list[socket.socket] = []
        self.results: list[object] = []

    def open_half(self) -> None:
        unsent = []
        for i in range(HALF_OPEN):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(self.addr)  # the kernel retries while the backlog is full
            self.held.append(s)
            if i % 2:
                unsent.append(s)
        deadline = time.monotonic() + 10
        while unsent and time.monotonic() < deadline:  # half a head once connected
            left = []
            for s in unsent:
                try:
                    s.send(b"GET /api/status HTTP/1.1\r\nHost: t\r\n")
                except (BlockingIOError, OSError):
                    left.append(s)
            unsent = left
            time.sleep(0.05)  # pacing, not synchronisation: nothing waits on this

    def one(self, _: int) -> object:
        try:
            with socket.create_connection(self.addr, timeout=30) as s:
                s.sendall(b"GET /api/status HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                code, _, body = read_reply(s)
                return code if code != 200 else strict_json(body)
        except (OSError, AssertionError) as e:
            return e

    def burst(self) -> None:
        with ThreadPoolExecutor(25) as pool:
            self.results = list(pool.map(self.one, range(BURST)))

    def close(self) -> None:
        for s in self.held:
            s.close()


def strict_json(body: bytes) -> dict:
    def no(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(body, parse_constant=no)


@pytest.mark.slow
@pytest.mark.parametrize("limits", ["unit", "open files"])
def test_a_flooded_page_starves_neither_the_gps_nor_the_daemon(tmp_path, limits):
    """The daemon under the unit's limits (TasksMax=64, MemoryMax=128M, LimitNOFILE=1024) or
    the open-file limit alone, reading a ride from a pty, its page flooded with half-open
    connections and a burst of requests, the GPS unplugged and plugged back mid-flood."""
    cgroup = unit_cgroup() if limits == "unit" else None
    if limits == "unit" and cgroup is None:
        pytest.skip("cannot make cgroup v1 pids and memory groups here (needs root and a "
                    "writable /sys/fs/cgroup/pids and /memory)")  # fmt: skip
    link = tmp_path / "gps0"
    gps = PtyWriter.open(link, timeout=2.0)
    port = free_port()
    d = Daemon(tmp_path, str(link), f'[web]\nlisten = "127.0.0.1:{port}"\n')
    d.prefix = [*(cgroup.prefix() if cgroup else []), "prlimit", "--nofile=1024:1024", "--"]
    flood = Flood(port)
    ride = epochs(800, rate_hz=10.0)
    written: list = []
    try:
        d.start()
        d.wait_gps_open()
        wait_for(lambda: "status page at" in d.log_text(), what="the page up")
        assert "(at most 32 connections)" in d.log_text()
        assert d.proc is not None
        pid = d.proc.pid
        for e in ride[:100]:  # the ride is under way before the flood
            gps.write(e.data)
        written += ride[:100]
        wait_for(lambda: len(stored_times(d.db)) == 100, what="the first 100 fixes")
        base = proc_stats(pid)
        lines_before = len(d.log_text().splitlines())
        peak = dict(base)
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.wait(0.05):
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    for k, v in proc_stats(pid).items():
                        peak[k] = max(peak[k], v)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        polls: list[object] = []
        flooding = threading.Event()

        def browser() -> None:  # a tab polling the page through the flood, as it does
            while not flooding.wait(0.5):
                polls.append(flood.one(0))

        hostile = [threading.Thread(target=flood.open_half), threading.Thread(target=flood.burst)]
        tab = threading.Thread(target=browser)
        for t in (*hostile, tab):
            t.start()

        pos = 100
        for e in ride[pos:400]:  # 30 GPS seconds at ~100 epochs a wall second
            gps.write(e.data)
            time.sleep(0.01)  # pacing, not synchronisation
        written += ride[pos:400]
        # What a pulled cable loses is what was on the wire: the test pulls it once the daemon
        # has read what was written, stored through the flood, so every loss below is a fault.
        wait_for(lambda: len(stored_times(d.db)) == 400, timeout=30, what="400 fixes stored")
        gps.close()  # the cable pulled mid-flood: epochs 400-449 are the replug's
        wait_for(lambda: " lost (" in d.log_text(), what="the GPS loss seen")
        gps = PtyWriter.open(link, timeout=2.0)
        assert gps.wait_for_reader(timeout=20), "the GPS was not reopened during the flood"
        for e in ride[450:]:
            gps.write(e.data)
            time.sleep(0.01)
        written += ride[450:]
        for t in hostile:
            t.join(timeout=120)
        flooding.set()
        tab.join(timeout=60)
        want = [round(e.unix, 3) for e in written]
        wait_for(lambda: stored_times(d.db) == want, timeout=30,
                 what="every fix read while plugged in, stored once")  # fmt: skip
        sampling.set()
        sampler.join(timeout=5)

        # The page is still there for a browser, and says what it went through.
        report = flood.one(0)
        assert isinstance(report, dict), report
        counts = report["web"]["server"]
        assert counts["cap"] == 32 and counts["connections"] <= 32
        assert counts["evicted"] + counts["timed_out"] > 0, counts
        failed = [r for r in flood.results if not isinstance(r, dict)]
        assert not failed, f"{len(failed)} of {BURST} requests failed: {failed[:5]}"
        assert polls and all(isinstance(p, dict) for p in polls), polls
        assert d.gps_opens() == 2, "opened at start and once after the replug"
        assert d.proc.poll() is None

        # Nothing grew with the flood: no thread, a bounded number of descriptors, memory.
        assert peak["threads"] <= base["threads"], (base, peak)
        assert peak["fds"] <= base["fds"] + 32 + 16, (base, peak)
        assert peak["rss_mb"] <= base["rss_mb"] + 24, (base, peak)
        new_lines = d.log_text().splitlines()[lines_before:]
        assert len(new_lines) <= 12, "\n".join(new_lines)
        assert not any("Traceback" in x for x in new_lines)
        if cgroup is not None:
            assert cgroup.events()["pids"] == 0, "the task limit was never hit"

        # Afterwards, flood sockets still held, the daemon rests: it does not spin.
        before, t0 = proc_stats(pid)["cpu_s"], time.monotonic()
        time.sleep(2.0)  # a window to measure over, not a wait for something
        spent, wall = proc_stats(pid)["cpu_s"] - before, time.monotonic() - t0
        assert spent < 0.5 * wall, (spent, wall)
        assert d.terminate() == 0
    finally:
        flood.close()
        gps.close()
        d.stop()
        if cgroup is not None:
            cgroup.remove()
