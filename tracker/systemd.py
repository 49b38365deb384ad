"""Living under systemd: sd_notify (READY, STATUS, WATCHDOG, STOPPING) and journal logging.

Everything here also works without systemd: with no NOTIFY_SOCKET a Notifier does nothing, and
with no journal the logs are plain stderr lines. So the daemon runs the same in a venv, in a
container and as a unit.

- `Notifier` speaks the sd_notify protocol. With systemd-python installed it uses
  `systemd.daemon.notify`; without it, the protocol itself, which is small: one datagram of
  newline-separated `KEY=value` lines to the AF_UNIX socket named by NOTIFY_SOCKET (a path, or
  an abstract name written with a leading `@`). A failing send is never an error for the
  daemon: systemd may be gone (shutdown) and tracking must go on.
- `stale()` is the watchdog rule as a pure function: given each thread's last heartbeat
  (monotonic seconds) and how old one may get, which threads are stuck.
- `Supervisor` is what the daemon's main loop calls: it sends READY=1 once the daemon says it is
  ready, STATUS= every few seconds, and WATCHDOG=1 at half of WATCHDOG_USEC, but only while no
  thread is stale: a hung sender or GPS thread therefore gets the service restarted by
  `WatchdogSec=`. A thread that goes stale is one warning line (and one when it recovers).
- `setup_logging()` sends records to the journal under systemd, with structured fields: pass
  `extra=fields(backend=..., activity=...)`, and
  `journalctl -u tracker TRACKER_BACKEND=mapmytracks` finds them. Without systemd-python the
  stderr lines the journal reads start with their syslog priority (`<3>` error, `<4>`
  warning, ...), so `journalctl -p warning` still works.

Thread safety: a Notifier may be used from any thread (each send is one datagram). A Supervisor
belongs to the thread that calls `tick()` (the daemon's main thread).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

JOURNAL_SOCKET = "/run/systemd/journal/socket"
STATUS_EVERY_S = 5.0  # STATUS= is sent at least this often (and at once when it changes)

# Structured journal fields: TRACKER_<NAME>, uppercase, as journald requires.
FIELD_BACKEND = "TRACKER_BACKEND"
FIELD_ACTIVITY = "TRACKER_ACTIVITY"
FIELD_COMPONENT = "TRACKER_COMPONENT"


# --- sd_notify ------------------------------------------------------------------------------------


def _socket_address(name: str) -> str | bytes:
    """NOTIFY_SOCKET as a socket address: `@name` is the abstract name `\\0name`."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


def socket_sender(name: str) -> Callable[[str], bool]:
    """The sd_notify protocol without libsystemd: one datagram per message to `name`."""
    address = _socket_address(name)

    def send(message: str) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(address)
                s.sendall(message.encode())
            return True
        except OSError:
            return False

    return send


def _library_sender() -> Callable[[str], bool] | None:
    try:
        from systemd import daemon as sd_daemon
    except ImportError:
        return None

    def send(message: str) -> bool:
        try:
            return bool(sd_daemon.notify(message))
        except OSError:
            return False

    return send


class Notifier:
    """Sends sd_notify messages; does nothing when the service manager did not ask for them.

    `send` is the transport (systemd-python's `notify` or `socket_sender`), None when
    NOTIFY_SOCKET is not set. Every method returns whether the message went out.
    """

    def __init__(
        self, send: Callable[[str], bool] | None, environ: Mapping[str, str] | None = None
    ) -> None:
        self._send = send
        self._environ = os.environ if environ is None else environ
        self.sent = 0

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, use_library: bool = True
    ) -> Notifier:
        """A Notifier for NOTIFY_SOCKET; systemd-python when importable and `use_library`."""
        env = os.environ if environ is None else environ
        name = env.get("NOTIFY_SOCKET")
        if not name:
            return cls(None, env)
        send = _library_sender() if use_library and environ is None else None
        return cls(send or socket_sender(name), env)

    @property
    def enabled(self) -> bool:
        return self._send is not None

    @property
    def transport(self) -> str:
        if self._send is None:
            return "none"
        return "socket" if self._send.__qualname__.startswith("socket_sender") else "systemd-python"

    def notify(self, *lines: str) -> bool:
        if self._send is None:
            return False
        ok = self._send("\n".join(lines))
        self.sent += ok
        return ok

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify("STATUS=" + text.replace("\n", " "))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def watchdog_interval_s(self) -> float | None:
        """WATCHDOG_USEC in seconds when the watchdog is on for this process, else None."""
        return watchdog_interval_s(self._environ)


def watchdog_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """Like sd_watchdog_enabled(): WATCHDOG_USEC, if WATCHDOG_PID (when set) is this process."""
    env = os.environ if environ is None else environ
    pid = env.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1e6 if usec > 0 else None


# --- the watchdog rule ----------------------------------------------------------------------------


def stale(
    heartbeats: Mapping[str, float],
    now: float,
    max_age_s: float | Mapping[str, float],
) -> list[str]:
    """The names whose heartbeat is older than their max age at `now` (sorted).

    `max_age_s` is one age for all, or per name (a name missing there is never stale). A
    heartbeat in the future (clock read in another order) counts as fresh.
    """
    out = []
    for name, beat in heartbeats.items():
        limit = max_age_s if isinstance(max_age_s, int | float) else max_age_s.get(name)
        if limit is not None and now - beat > limit:
            out.append(name)
    return sorted(out)


@dataclass(frozen=True)
class Component:
    """A thread the watchdog watches: `heartbeat()` returns its last progress (monotonic s);
    `max_age_s` is how long it may legitimately go without one (None: the watchdog interval)."""

    name: str
    heartbeat: Callable[[], float]
    max_age_s: float | None = None


class Supervisor:
    """READY, STATUS and WATCHDOG for the daemon's main loop; call `tick()` often.

    `is_ready()` says when READY=1 may go out; `status_text()` returns the STATUS line;
    `components()` returns the threads to watch (called on every tick, so senders added later
    are watched too). WATCHDOG=1 goes out every half WATCHDOG_USEC while no component is stale;
    a component's max age is its own `max_age_s` or at least the watchdog interval.
    """

    def __init__(
        self,
        notifier: Notifier,
        *,
        is_ready: Callable[[], bool],
        status_text: Callable[[], str],
        components: Callable[[], list[Component]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.notifier = notifier
        self.interval_s = notifier.watchdog_interval_s()
        self.is_ready = is_ready
        self.status_text = status_text
        self.components = components
        self.clock = clock
        self.ready_sent = False
        self.stale: list[str] = []
        self._last_status: str | None = None
        self._last_status_at = -1e18
        self._last_ping = -1e18

    def next_wait_s(self) -> float:
        """How long the main loop may sleep before the next tick."""
        if self.interval_s is None:
            return 1.0
        return max(0.05, min(1.0, self.interval_s / 4))

    def tick(self) -> None:
        if not self.notifier.enabled:
            return  # not under systemd: nothing to say, nothing to compute
        now = self.clock()
        if self.interval_s is not None:
            self._check_threads(now)
        text = self.status_text()
        if not self.ready_sent and self.is_ready():
            self.ready_sent = True
            self.notifier.ready(text)
            self._last_status, self._last_status_at = text, now
            log.info("ready: %s", text)
        elif text != self._last_status or now - self._last_status_at >= STATUS_EVERY_S:
            self.notifier.status(text)
            self._last_status, self._last_status_at = text, now
        due = self.interval_s is not None and now - self._last_ping >= self.interval_s / 2
        if due and not self.stale and self.notifier.watchdog():
            self._last_ping = now

    def _check_threads(self, now: float) -> None:
        assert self.interval_s is not None
        comps = self.components()
        heartbeats = {c.name: c.heartbeat() for c in comps}
        ages = {c.name: max(self.interval_s, c.max_age_s or 0.0) for c in comps}
        stuck = stale(heartbeats, now, ages)
        for name in stuck:
            if name not in self.stale:
                log.error(
                    "watchdog: thread %s made no progress for %.0f s; no longer telling systemd "
                    "we are alive, so it restarts the service",
                    name, now - heartbeats[name],
                )  # fmt: skip
        for name in self.stale:
            if name not in stuck:
                log.warning("watchdog: thread %s is making progress again", name)
        self.stale = stuck


# --- STATUS= --------------------------------------------------------------------------------------


def status_line(
    gps_state: str,
    last_fix: Any | None,
    backlog: Mapping[str, int] | None,
    *,
    storage_error: str | None = None,
    stale_threads: list[str] | None = None,
) -> str:
    """The STATUS= line `systemctl status tracker` shows, e.g.
    `GPS open, fix, 9 satellites; backlog mapmytracks 12`.

    `last_fix` is a Fix (or None before the first one); `backlog` maps backend -> fixes not yet
    acknowledged (None while unknown, {} with no backend configured).
    """
    gps = f"GPS {gps_state}"
    if last_fix is None:
        gps += ", no fix yet"
    else:
        quality = getattr(last_fix, "quality", None)
        gps += ", fix" if quality in (None, 1) else f", {_QUALITY.get(quality, 'gps')} fix"
        sats = getattr(last_fix, "sats", None)
        if sats is not None:
            gps += f", {sats} satellites"
    parts = [gps]
    if backlog is None:
        parts.append("backlog unknown")
    elif not backlog:
        parts.append("no backend")
    else:
        parts.append("backlog " + ", ".join(f"{k} {v}" for k, v in sorted(backlog.items())))
    if storage_error:
        parts.append(f"STORAGE: {storage_error}")
    if stale_threads:
        parts.append("STUCK: " + ", ".join(stale_threads))
    return "; ".join(parts)


_QUALITY = {2: "DGPS", 3: "PPS", 4: "RTK", 5: "float-RTK", 6: "estimated", 7: "manual",
            8: "simulated"}  # fmt: skip


class BacklogProbe:
    """Backend -> fixes not yet acknowledged, from a read-only connection of its own, at most
    every `every_s` (the count is a query over the queue: cheap, but not free on a Pi Zero).
    Never raises: while the store cannot be read the last value (or None) is returned."""

    def __init__(
        self, path: Any, every_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self.every_s = every_s
        self.clock = clock
        self.value: dict[str, int] | None = None
        self._at = -1e18

    def __call__(self) -> dict[str, int] | None:
        now = self.clock()
        if now - self._at < self.every_s:
            return self.value
        self._at = now
        from tracker.store import StoreError, open_store

        try:
            store = open_store(self.path, readonly=True)
        except (StoreError, OSError):
            return self.value
        try:
            self.value = store.pending()
        except (StoreError, OSError):
            pass
        finally:
            store.close()
        return self.value


# --- logging --------------------------------------------------------------------------------------


def fields(*, backend: str | None = None, activity: int | str | None = None, **more: Any) -> dict:
    """`extra=` for a log call: the structured journal fields (TRACKER_BACKEND, ...)."""
    out: dict[str, Any] = {}
    if backend is not None:
        out[FIELD_BACKEND] = backend
    if activity is not None:
        out[FIELD_ACTIVITY] = str(activity)
    for key, value in more.items():
        out["TRACKER_" + key.upper()] = value
    return out


class _ComponentFilter(logging.Filter):
    """Adds TRACKER_COMPONENT (the logger name without `tracker.`) to every record, and
    TRACKER_BACKEND to every record logged in a sender thread (named `sender-<backend>` by the
    daemon) or by a `tracker.senders.<backend>` logger, unless the call gave its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, FIELD_COMPONENT):
            setattr(record, FIELD_COMPONENT, record.name.removeprefix("tracker."))
        if not getattr(record, FIELD_BACKEND, None):
            backend = None
            if record.threadName and record.threadName.startswith("sender-"):
                backend = record.threadName.removeprefix("sender-")
            elif record.name.startswith("tracker.senders."):
                module = record.name.removeprefix("tracker.senders.")
                if module not in ("retry", "transport"):
                    backend = module
            if backend:
                setattr(record, FIELD_BACKEND, backend)
        return True


class StderrFormatter(logging.Formatter):
    """`LEVEL component: message`, with `[backend activity N]` when the record carries them."""

    def format(self, record: logging.LogRecord) -> str:
        tags = []
        if getattr(record, FIELD_BACKEND, None):
            tags.append(str(getattr(record, FIELD_BACKEND)))
        if getattr(record, FIELD_ACTIVITY, None):
            tags.append(f"activity {getattr(record, FIELD_ACTIVITY)}")
        record.tracker_tags = f" [{' '.join(tags)}]" if tags else ""
        return super().format(record)


class JournalStreamFormatter(StderrFormatter):
    """StderrFormatter for a stderr the journal reads: every line starts with the record's
    syslog priority, `<3>` for an error (sd-daemon(3)); journald takes it as the entry's
    priority and strips it (`SyslogLevelPrefix=yes`, the default). Every line, so the lines of a
    traceback keep the priority of the record they belong to."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level: 2 critical, 3 error, 4 warning, 6 info, 7 debug
    (a level between two takes the lower one's)."""
    for threshold, priority in _PRIORITIES:
        if levelno >= threshold:
            return priority
    return 7


_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def stream_is_journal(stream: Any, environ: Mapping[str, str] | None = None) -> bool:
    """Whether `stream` is the journal's stdout/stderr stream: JOURNAL_STREAM (`device:inode`,
    set by systemd for a service whose output goes to the journal) names its file, the check
    systemd.exec(5) asks for. A process that inherited the variable with its stderr redirected
    elsewhere (a file, a pipe, a terminal) is not writing to the journal."""
    env = os.environ if environ is None else environ
    try:
        device, inode = (int(x) for x in env.get("JOURNAL_STREAM", "").split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):  # no or bad variable, no file descriptor
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def under_systemd(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return bool(env.get("JOURNAL_STREAM") or env.get("NOTIFY_SOCKET"))


def journal_handler(level: int = logging.NOTSET, **kw: Any) -> logging.Handler | None:
    """systemd-python's JournalHandler with SYSLOG_IDENTIFIER=tracker, or None without it."""
    try:
        from systemd.journal import JournalHandler
    except ImportError:
        return None
    return JournalHandler(level=level, SYSLOG_IDENTIFIER="tracker", **kw)


def setup_logging(
    level: str,
    *,
    environ: Mapping[str, str] | None = None,
    stream: Any = None,
    journal_socket: str = JOURNAL_SOCKET,
) -> str:
    """Configure the root logger; return where logs go: "journal" or "stderr".

    Under systemd (JOURNAL_STREAM or NOTIFY_SOCKET set) with systemd-python installed and the
    journal's socket present: the JournalHandler, with the structured fields. Otherwise stderr
    lines `LEVEL component: message`, with a timestamp unless journald adds its own, and with
    the syslog priority in front (`<4>WARNING ...`) when the stream is the journal's
    (JOURNAL_STREAM names it).
    """
    env = os.environ if environ is None else environ
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    root.setLevel(getattr(logging, level.upper()))
    handler: logging.Handler | None = None
    where = "stderr"
    if under_systemd(env) and os.path.exists(journal_socket):
        handler = journal_handler()
        if handler is not None:
            handler.setFormatter(logging.Formatter("%(message)s"))
            where = "journal"
    if handler is None:
        out = stream or sys.stderr
        handler = logging.StreamHandler(out)
        fmt = "%(levelname)s %(name)s%(tracker_tags)s: %(message)s"
        if not under_systemd(env) and not env.get("INVOCATION_ID"):
            fmt = "%(asctime)s " + fmt
        if stream_is_journal(out, env):
            handler.setFormatter(JournalStreamFormatter(fmt))
        else:
            handler.setFormatter(StderrFormatter(fmt))
    handler.addFilter(_ComponentFilter())
    root.addHandler(handler)
    return where
