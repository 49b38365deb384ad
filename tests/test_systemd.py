"""sd_notify, the watchdog rule and journal logging, against real sockets and a real daemon.

The notification socket is always a real AF_UNIX datagram socket, as systemd makes it; the
daemon is a real `tracker run` process started the way systemd starts it (NOTIFY_SOCKET,
WATCHDOG_USEC, and WATCHDOG_PID set to the daemon's own pid through `exec`).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ROOT, epochs, wait_for

from tracker import systemd as sd

# --- a real notification socket ---------------------------------------------------------------


class NotifySocket:
    """A bound AF_UNIX datagram socket that collects what the daemon sends, in order."""

    def __init__(self, name: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(name)
        self.sock.settimeout(0.1)
        self.messages: list[str] = []

    def poll(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(65536).decode())
            except (TimeoutError, BlockingIOError):
                return self.messages

    def wait(self, predicate, timeout: float = 30.0, what: str = "") -> object:
        return wait_for(lambda: predicate(self.poll()), timeout=timeout, what=what)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[NotifySocket, str]]:
    """(socket, NOTIFY_SOCKET value) for a socket file."""
    path = tmp_path / "notify"
    s = NotifySocket(str(path))
    yield s, str(path)
    s.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[NotifySocket, str]]:
    """(socket, NOTIFY_SOCKET value) for an abstract name, written `@name` as systemd does."""
    name = f"tracker-test-{os.getpid()}-{threading.get_ident()}"
    s = NotifySocket(b"\0" + name.encode())
    yield s, "@" + name
    s.close()


def lines(messages: list[str]) -> list[str]:
    return [line for m in messages for line in m.split("\n")]


# --- Notifier -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["notify_socket", "abstract_socket"])
def test_the_socket_implementation_speaks_sd_notify(kind, request):
    sock, name = request.getfixturevalue(kind)
    n = sd.Notifier.from_env({"NOTIFY_SOCKET": name}, use_library=False)
    assert n.enabled and n.transport == "socket"
    assert n.ready("store open") and n.status("GPS open\nsecond line") and n.watchdog()
    assert n.stopping()
    assert sock.wait(lambda m: len(m) >= 4) and sock.messages == [
        "READY=1\nSTATUS=store open",
        "STATUS=GPS open second line",
        "WATCHDOG=1",
        "STOPPING=1",
    ]


@pytest.mark.parametrize("kind", ["notify_socket", "abstract_socket"])
def test_systemd_python_is_used_when_installed(kind, request, monkeypatch):
    pytest.importorskip("systemd.daemon", reason="systemd-python is not installed")
    sock, name = request.getfixturevalue(kind)
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    n = sd.Notifier.from_env()
    assert n.transport == "systemd-python"
    assert n.ready() and n.watchdog()
    sock.wait(lambda m: len(m) >= 2)
    assert sock.messages == ["READY=1", "WATCHDOG=1"]


def test_without_notify_socket_nothing_is_sent_and_nothing_fails(tmp_path):
    n = sd.Notifier.from_env({})
    assert not n.enabled and not n.ready() and not n.watchdog()
    # A socket that is gone (systemd shutting down) is not an error for the daemon either.
    gone = sd.Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "absent")}, use_library=False)
    assert gone.enabled and gone.status("x") is False


def test_watchdog_interval_follows_watchdog_usec_and_pid():
    me = str(os.getpid())
    assert sd.watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert sd.watchdog_interval_s({"WATCHDOG_USEC": "2500000", "WATCHDOG_PID": me}) == 2.5
    assert sd.watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert sd.watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None
    assert sd.watchdog_interval_s({"WATCHDOG_USEC": "soon"}) is None
    assert sd.watchdog_interval_s({}) is None


# --- the watchdog rule ----------------------------------------------------------------------------


def test_stale_names_the_threads_older_than_their_max_age():
    beats = {"gps": 100.0, "recorder": 95.0, "sender-mapmytracks": 80.0}
    assert sd.stale(beats, 100.0, 10.0) == ["sender-mapmytracks"]
    assert sd.stale(beats, 100.0, 20.0) == []
    assert sd.stale(beats, 100.0, 4.0) == ["recorder", "sender-mapmytracks"]
    # per name; a name without a limit is never stale; a heartbeat "in the future" is fresh
    assert sd.stale(beats, 100.0, {"gps": 1.0, "recorder": 1.0}) == ["recorder"]
    assert sd.stale({"gps": 101.0}, 100.0, 0.5) == []
    assert sd.stale({}, 100.0, 1.0) == []


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_supervisor_stops_watchdog_while_a_thread_is_stuck(abstract_socket, caplog):
    sock, name = abstract_socket
    env = {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "4000000"}
    clock = Clock()
    beats = {"gps": clock.now, "sender-x": clock.now}
    ready = threading.Event()
    sup = sd.Supervisor(
        sd.Notifier.from_env(env, use_library=False),
        is_ready=ready.is_set,
        status_text=lambda: "GPS open" + ("; STUCK" if sup.stale else ""),
        components=lambda: [sd.Component(k, lambda k=k: beats[k]) for k in beats],
        clock=clock,
    )
    caplog.set_level(logging.INFO, logger="tracker.systemd")

    def step(dt: float, *fresh: str) -> list[str]:
        clock.now += dt
        for k in fresh:
            beats[k] = clock.now
        before = len(sock.poll())
        sup.tick()
        return lines(sock.poll()[before:])

    assert step(0) == ["STATUS=GPS open", "WATCHDOG=1"]  # not ready yet: no READY=1
    ready.set()
    assert step(1, "gps", "sender-x") == ["READY=1", "STATUS=GPS open"]
    assert step(1.5, "gps", "sender-x") == ["WATCHDOG=1"]  # every half interval
    assert step(2.5, "gps") == ["WATCHDOG=1"]  # sender-x is 2.5 s old: fresh
    assert step(2.0, "gps") == ["STATUS=GPS open; STUCK"]  # 4.5 s old: stale, no WATCHDOG
    assert step(3.0, "gps") == []
    assert step(3.0, "gps") == ["STATUS=GPS open; STUCK"]  # STATUS still every few seconds
    assert [r.message for r in caplog.records if "watchdog" in r.message] == [
        "watchdog: thread sender-x made no progress for 4 s; no longer telling systemd we are "
        "alive, so it restarts the service"
    ]
    assert step(1.0, "gps", "sender-x") == ["STATUS=GPS open", "WATCHDOG=1"]
    assert "watchdog: thread sender-x is making progress again" in caplog.text


def test_supervisor_without_watchdog_never_pings(notify_socket):
    sock, name = notify_socket
    clock = Clock()
    sup = sd.Supervisor(
        sd.Notifier.from_env({"NOTIFY_SOCKET": name}, use_library=False),
        is_ready=lambda: True,
        status_text=lambda: "s",
        components=lambda: [sd.Component("gps", lambda: 0.0)],
        clock=clock,
    )
    for _ in range(5):
        sup.tick()
        clock.now += 10
    assert sock.wait(lambda m: len(m) >= 5)
    assert "WATCHDOG=1" not in lines(sock.messages) and sup.stale == []


def test_status_line():
    from tracker.fix import Fix

    fix = Fix(time=0.0, lat=1.0, lon=2.0, quality=2, sats=9)
    assert sd.status_line("connecting", None, None) == "GPS connecting, no fix yet; backlog unknown"
    assert (
        sd.status_line("open", fix, {"mapmytracks": 12, "gpsr": 0}, stale_threads=["gps"])
        == "GPS open, DGPS fix, 9 satellites; backlog gpsr 0, mapmytracks 12; STUCK: gps"
    )
    assert sd.status_line("lost", Fix(time=0, lat=0, lon=0), {}, storage_error="disk full") == (
        "GPS lost, fix; no backend; STORAGE: disk full"
    )


# --- logging --------------------------------------------------------------------------------------


def test_stderr_lines_carry_level_component_and_backend(tmp_path):
    import io

    out = io.StringIO()
    try:
        where = sd.setup_logging("info", environ={}, stream=out)
        logging.getLogger("tracker.senders.mapmytracks").warning(
            "server said %s", "no", extra=sd.fields(backend="mapmytracks", activity=7)
        )
        logging.getLogger("tracker.gps").debug("hidden at info")
    finally:
        sd.setup_logging("warning", environ={}, stream=sys.stderr)
    assert where == "stderr"
    line = out.getvalue().strip()
    assert line.endswith(
        "WARNING tracker.senders.mapmytracks [mapmytracks activity 7]: server said no"
    )
    assert line[:4].isdigit(), "a timestamp outside systemd"


def test_under_systemd_without_a_journal_logs_go_to_stderr(tmp_path):
    import io

    out = io.StringIO()
    try:
        where = sd.setup_logging(
            "info", environ={"NOTIFY_SOCKET": "@x"}, stream=out,
            journal_socket=str(tmp_path / "no-journal"),
        )  # fmt: skip
        logging.getLogger("tracker.gps").info("hello")
    finally:
        sd.setup_logging("warning", environ={}, stream=sys.stderr)
    assert where == "stderr"
    assert out.getvalue() == "INFO tracker.gps: hello\n"  # journald stamps the time itself


STDERR_CHILD = """
import sys
sys.modules["systemd"] = None  # systemd-python unimportable, as on a Pi without it
import logging
from tracker import systemd as sd
where = sd.setup_logging("debug")
assert where == "stderr", where
log = logging.getLogger("tracker.gps")
log.debug("d"); log.info("i"); log.warning("w"); log.error("e"); log.critical("c")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("failed")
"""


def stderr_child(environ: dict[str, str], stderr: int | None = None) -> list[str]:
    """STDERR_CHILD's stderr lines; `stderr` an fd to give it (read back here), else a pipe."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("JOURNAL_STREAM", "NOTIFY_SOCKET", "INVOCATION_ID")}  # fmt: skip
    env.update(environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", STDERR_CHILD], env=env, cwd=ROOT, timeout=60,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE if stderr is None else stderr,
    )  # fmt: skip
    assert done.returncode == 0
    return done.stderr.decode().splitlines() if stderr is None else []


def test_stderr_read_by_the_journal_carries_the_syslog_priority_on_every_line():
    """A real child writing to a pipe that JOURNAL_STREAM names, as systemd sets it up for a
    service (StandardError=journal) when systemd-python is not installed."""
    r, w = os.pipe()
    try:
        st = os.fstat(w)
        stderr_child({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, stderr=w)
        os.close(w)
        w = -1
        with os.fdopen(r, "rb") as f:
            r = -1
            lines = f.read().decode().splitlines()
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)
    assert lines[:6] == [
        "<7>DEBUG tracker.gps: d",
        "<6>INFO tracker.gps: i",
        "<4>WARNING tracker.gps: w",
        "<3>ERROR tracker.gps: e",
        "<2>CRITICAL tracker.gps: c",
        "<3>ERROR tracker.gps: failed",  # no timestamp: journald stamps the time itself
    ]
    traceback = lines[6:]
    assert traceback[0] == "<3>Traceback (most recent call last):"
    assert traceback[-1] == "<3>ZeroDivisionError: division by zero"
    assert all(x.startswith("<3>") for x in traceback), "a traceback keeps the error priority"


def test_stderr_not_read_by_the_journal_has_no_priority_prefix():
    plain = stderr_child({})  # outside systemd: a timestamp, no prefix
    assert len(plain) > 6 and not any(x.startswith("<") for x in plain)
    assert plain[2].endswith(" WARNING tracker.gps: w") and plain[2][:4].isdigit()
    # JOURNAL_STREAM inherited, but this stderr is a pipe of our own, not the journal's stream
    inherited = stderr_child({"JOURNAL_STREAM": "8:12345"})
    assert inherited[:2] == ["DEBUG tracker.gps: d", "INFO tracker.gps: i"]


def test_syslog_priority_of_each_level():
    assert [sd.syslog_priority(getattr(logging, n)) for n in
            ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")] == [2, 3, 4, 6, 7]  # fmt: skip
    assert sd.syslog_priority(logging.WARNING + 5) == 4
    assert sd.syslog_priority(logging.NOTSET) == 7


def parse_journal_datagram(data: bytes) -> dict[str, str]:
    """The journal's native protocol: `KEY=value\\n`, or `KEY\\n<le64 size><value>\\n`."""
    out, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            out[k.decode()] = v.decode()
            i = nl + 1
        else:
            size = struct.unpack("<Q", data[nl + 1 : nl + 9])[0]
            out[line.decode()] = data[nl + 9 : nl + 9 + size].decode()
            i = nl + 9 + size + 1
    return out


JOURNAL_CHILD = """
import logging
from tracker import systemd as sd
where = sd.setup_logging("info")
assert where == "journal", where
logging.getLogger("tracker.senders.mapmytracks").warning(
    "server refused: %s", "bad point", extra=sd.fields(backend="mapmytracks", activity=42))
logging.getLogger("tracker.gps").info("GPS open")
import threading
t = threading.Thread(name="sender-gpsr",
    target=lambda: logging.getLogger("tracker.senders").warning("gpsr: unreachable"))
t.start(); t.join()
"""


def test_under_systemd_logs_go_to_the_journal_with_structured_fields(tmp_path):
    """A real journal socket: the child runs in its own mount namespace where our datagram
    socket is bind-mounted at /run/systemd/journal/socket, where libsystemd sends."""
    pytest.importorskip("systemd.journal", reason="systemd-python is not installed")
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) to give the child its own /run")
    probe = subprocess.run([unshare, "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespaces here: {probe.stderr.decode().strip()}")
    sock_path = tmp_path / "journal.sock"
    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journal.bind(str(sock_path))
    journal.settimeout(20)
    script = (
        "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && "
        "touch /run/systemd/journal/socket && "
        f"mount --bind {sock_path} /run/systemd/journal/socket && "
        f'exec {sys.executable} -c "$0"'
    )
    env = dict(os.environ, JOURNAL_STREAM="8:12345", PYTHONPATH=str(ROOT))
    try:
        done = subprocess.run(
            [unshare, "-m", "sh", "-c", script, textwrap.dedent(JOURNAL_CHILD)],
            capture_output=True, text=True, env=env, timeout=60, cwd=ROOT,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stderr == "", "nothing on stderr when the journal takes the logs"
        records = [parse_journal_datagram(journal.recv(65536)) for _ in range(3)]
    finally:
        journal.close()
    sender, gps, thread = records
    assert sender["MESSAGE"] == "server refused: bad point"
    assert sender["PRIORITY"] == "4"
    assert sender["SYSLOG_IDENTIFIER"] == "tracker"
    assert sender["TRACKER_BACKEND"] == "mapmytracks"
    assert sender["TRACKER_ACTIVITY"] == "42"
    assert sender["TRACKER_COMPONENT"] == "senders.mapmytracks"
    assert gps["MESSAGE"] == "GPS open" and gps["PRIORITY"] == "6"
    assert gps["TRACKER_COMPONENT"] == "gps" and "TRACKER_BACKEND" not in gps
    # whatever a sender thread logs carries its backend
    assert thread["MESSAGE"] == "gpsr: unreachable" and thread["TRACKER_BACKEND"] == "gpsr"


# --- a real `tracker run` under a real notification socket ---------------------------------


class Service:
    """`tracker run` started like systemd does it: NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID."""

    def __init__(self, tmp_path: Path, config: str, notify: str, watchdog_s: float) -> None:
        self.config = tmp_path / "tracker.toml"
        self.config.write_text(config)
        self.log = tmp_path / "daemon.log"
        env = dict(os.environ, NOTIFY_SOCKET=notify, WATCHDOG_USEC=str(int(watchdog_s * 1e6)))
        env.pop("JOURNAL_STREAM", None)
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                ["sh", "-c", 'WATCHDOG_PID=$$ exec "$0" -m tracker run -c "$1"',
                 sys.executable, str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
            )  # fmt: skip

    def log_text(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def base_config(tmp_path: Path, gps_path: str) -> str:
    return (
        f'[gps]\ndevice = "{gps_path}"\nreconnect_max_s = 1\n\n'
        f'[storage]\npath = "{tmp_path / "tracker.db"}"\ncommit_interval_s = 0.2\n\n'
    )


@pytest.mark.slow
def test_tracker_run_notifies_ready_status_watchdog_and_stopping(tmp_path, gps, abstract_socket):
    sock, name = abstract_socket
    svc = Service(tmp_path, base_config(tmp_path, gps.path), name, watchdog_s=2.0)
    try:
        sock.wait(lambda m: "READY=1" in lines(m), what="READY=1")
        assert gps.wait_for_reader(timeout=20), svc.log_text()
        ready_at = lines(sock.messages).index("READY=1")
        # READY=1 comes with the status of a store that is open (backends known: none)
        assert lines(sock.messages)[ready_at + 1].startswith("STATUS=GPS ")
        assert "no backend" in lines(sock.messages)[ready_at + 1]
        for e in epochs(30, rate_hz=10.0):
            gps.write(e.data)
        sock.wait(lambda m: any("satellites" in x for x in lines(m)), what="a STATUS with a fix")
        sock.wait(lambda m: lines(m)[ready_at:].count("WATCHDOG=1") >= 3, what="WATCHDOG=1 x3")
        svc.proc.send_signal(signal.SIGTERM)
        assert svc.proc.wait(timeout=15) == 0
        sock.poll()
        assert lines(sock.messages)[-2:] == [
            "STOPPING=1",
            "STATUS=stopping: storing what is pending",
        ]
        assert lines(sock.messages).count("READY=1") == 1
    finally:
        svc.stop()


class SilentServer:
    """A TCP server that accepts connections and never answers: a hung backend."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.accepted = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            self.accepted.set()

    def release(self) -> None:
        """Hang up on every client and stop listening: requests now fail at once."""
        for c in self.conns:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
        self.sock.close()


@pytest.mark.slow
def test_a_hung_sender_stops_the_watchdog_and_a_recovered_one_restarts_it(
    tmp_path, gps, abstract_socket
):
    pytest.importorskip("tracker.senders.mapmytracks", reason="no Map My Tracks sender yet")
    sock, name = abstract_socket
    server = SilentServer()
    config = base_config(tmp_path, gps.path) + (
        "[mapmytracks]\n"
        f'url = "http://127.0.0.1:{server.port}/api/"\n'
        'username = "rider"\npassword = "secret"\n'
        "connect_timeout_s = 60\nread_timeout_s = 60\ninterval_s = 1\n"
    )
    svc = Service(tmp_path, config, name, watchdog_s=2.0)
    try:
        sock.wait(lambda m: "READY=1" in lines(m), what="READY=1")
        assert gps.wait_for_reader(timeout=20), svc.log_text()
        for e in epochs(50, rate_hz=10.0):
            gps.write(e.data)
        assert server.accepted.wait(30), "the sender connected to the silent server"
        # The sender is now waiting 60 s for a reply, far longer than the 2 s watchdog.
        sock.wait(lambda m: any("STUCK: sender-mapmytracks" in x for x in lines(m)),
                  what="STATUS naming the stuck sender")  # fmt: skip
        first_stuck = next(i for i, x in enumerate(lines(sock.messages)) if "STUCK" in x)
        assert "WATCHDOG=1" in lines(sock.messages)[:first_stuck], "pings before the hang"
        # STATUS keeps coming every few seconds while stuck; no WATCHDOG=1 among them.
        sock.wait(lambda m: sum("STUCK" in x for x in lines(m)[first_stuck:]) >= 3,
                  what="three STATUS lines while stuck")  # fmt: skip
        assert svc.proc.poll() is None
        while_stuck = lines(sock.messages)[first_stuck:]
        assert "WATCHDOG=1" not in while_stuck, while_stuck
        assert "watchdog: thread sender-mapmytracks made no progress" in svc.log_text()

        server.release()  # the request fails, the sender backs off in short waits: alive again
        sock.wait(lambda m: "WATCHDOG=1" in lines(m)[first_stuck:], what="WATCHDOG=1 again")
        assert "watchdog: thread sender-mapmytracks is making progress again" in svc.log_text()
    finally:
        svc.stop()
        if server.sock.fileno() != -1:
            server.release()

