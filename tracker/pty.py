"""A pseudo-terminal that stands in for a serial GPS (after Klipper's `util.create_pty`).

`create_pty()` opens a pty pair in raw mode and returns the master fd and the slave path. The
slave path is what the daemon opens as if it were /dev/ttyUSB0 (`serial.serial_for_url(path)`
works on it); whatever is written to the master arrives there byte for byte: no echo, no CR/LF
translation, so NMEA keeps its CRLF.

Rules of a pty that the writer has to live with:

- The master must stay open for as long as anyone uses the slave. Closing it hangs the slave up:
  a reader's next read fails (pyserial raises `SerialException`, "device reports readiness to
  read but returned no data"), as if the GPS cable were pulled.
- Bytes written while nobody has the slave open are kept by the kernel and handed to the next
  reader (pyserial flushes them on open, `cat` does not), and a reader that does not read lets
  the kernel buffer (about 20 KiB) fill, after which a write blocks or, on a non-blocking
  master, fails with EAGAIN. Other kernels answer EIO instead while the slave is closed.
  `PtyWriter` handles all of this: it drops what nobody is there to read, waits a bounded time
  for a slow reader, and counts what it lost, so a simulator never crashes or hangs because the
  daemon is not running yet, restarts, or stalls.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import select
import struct
import termios
import threading
import time
import tty

from tracker.logutil import RateLimitedLog

log = logging.getLogger(__name__)

# Keep at most this much of what the reader sent us (e.g. receiver configuration commands).
_INPUT_KEEP = 64 * 1024


def create_pty(
    link: str | os.PathLike[str] | None = None, *, mode: int | None = None
) -> tuple[int, str]:
    """Open a pseudo-terminal pair in raw mode; return (master_fd, slave_path).

    The master fd is non-blocking (a write never hangs the caller; see `PtyWriter`) and
    close-on-exec. Our own slave fd is closed before returning, so the master sees a hang-up
    (POLLHUP) until a reader opens `slave_path`; the raw settings stay with the pty as long as the
    master is open. `mode`, when given, is applied to the slave device (e.g. 0o666 so a daemon
    running as another user can open it).

    `link`, when given, is made a symlink to the slave (like socat's `link=`): an existing symlink
    there is replaced, any other existing file is an error (FileExistsError). The caller owns the
    master fd and the link: close the fd with `os.close` and remove the link with `remove_link`
    (or use `PtyWriter.open`, which does both on close).
    """
    master, slave = os.openpty()
    try:
        slave_path = os.ttyname(slave)
        # Raw on the slave: no echo of what we write back to us, no CR->NL or NL->CRNL mapping,
        # no line buffering, all 8 bits through. The settings belong to the pty, not to this fd.
        tty.setraw(slave, termios.TCSANOW)
        if mode is not None:
            os.chmod(slave_path, mode)
        flags = fcntl.fcntl(master, fcntl.F_GETFL)
        fcntl.fcntl(master, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        os.set_inheritable(master, False)
        if link is not None:
            _make_link(os.fspath(link), slave_path)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return master, slave_path


def _make_link(link: str, target: str) -> None:
    if os.path.lexists(link) and not os.path.islink(link):
        raise FileExistsError(
            errno.EEXIST, "refusing to replace a file that is not a symlink", link
        )
    # Replace atomically so a reader never sees the link missing (or a stale one half-gone).
    tmp = f"{link}.tmp{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def remove_link(link: str | os.PathLike[str], slave_path: str) -> bool:
    """Remove `link` if it is still a symlink to `slave_path`; return whether it was removed.

    A link that now points elsewhere belongs to someone else (another simulator took the name)
    and is left alone.
    """
    link = os.fspath(link)
    try:
        if os.readlink(link) != slave_path:
            return False
        os.unlink(link)
    except OSError:
        return False
    return True


class PtyWriter:
    """Writes bytes to a pty master without blocking for long and without failing on a lost reader.

    `write()` never raises for the reader's sake: bytes written while no reader has the slave
    open are dropped (a real serial line loses them too, and stale fixes must not reach the next
    reader), and a reader that stops reading gets `timeout` seconds to make room before the rest
    is dropped. `written`, `dropped` (bytes) and `drops` (writes that lost bytes) count the outcome.
    What the reader writes to the slave (e.g. receiver configuration) is drained so it cannot
    block the reader, and kept for `read_input()`.

    Not thread-safe: one thread writes. `close()` may be called from any thread once writing
    stopped.
    """

    def __init__(
        self,
        master_fd: int,
        *,
        slave_path: str | None = None,
        link: str | None = None,
        timeout: float = 1.0,
    ) -> None:
        """Wrap an open, non-blocking master fd; the writer owns it (and `link`) from now on."""
        self.master_fd = master_fd
        self.slave_path = slave_path
        self.link = link
        self.timeout = timeout
        self.written = 0
        self.dropped = 0
        self.drops = 0
        self._input = bytearray()
        self._closed = False
        self._ratelog = RateLimitedLog(log, interval_s=60.0)

    @classmethod
    def open(
        cls,
        link: str | os.PathLike[str] | None = None,
        *,
        timeout: float = 1.0,
        mode: int | None = None,
    ) -> PtyWriter:
        """Create a pty (see `create_pty`) and a writer that owns it and removes `link` on close."""
        master, slave_path = create_pty(link, mode=mode)
        return cls(
            master,
            slave_path=slave_path,
            link=None if link is None else os.fspath(link),
            timeout=timeout,
        )

    @property
    def path(self) -> str:
        """The path a reader should open: the link when there is one, else the slave."""
        return self.link or self.slave_path or ""

    def _events(self, timeout_s: float = 0.0) -> int:
        poller = select.poll()
        poller.register(self.master_fd, select.POLLOUT | select.POLLIN)
        ready = poller.poll(max(0, int(timeout_s * 1000)))
        return ready[0][1] if ready else 0

    def reader_connected(self) -> bool:
        """Whether some process has the slave open (the master reports no hang-up)."""
        return not self._events() & select.POLLHUP

    def wait_for_reader(
        self,
        timeout: float | None = None,
        stop: threading.Event | None = None,
        settle: float = 0.2,
    ) -> bool:
        """Wait until a reader opened the slave, then `settle` seconds more; return whether one did.

        The settle time covers the gap between a reader's open() and its input flush (pyserial
        flushes right after configuring the port): bytes written in that gap would be lost.
        Returns False on timeout or when `stop` is set.
        """
        waiter = stop or threading.Event()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.reader_connected():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            # No poll event marks the end of a hang-up, so look again every 50 ms.
            if waiter.wait(0.05):
                return False
        return not (settle > 0 and waiter.wait(settle))

    def write(self, data: bytes, timeout: float | None = None) -> int:
        """Write `data`; return how many bytes went out (the rest was dropped and counted).

        Waits at most `timeout` seconds (default: the writer's) for a slow reader to make room.
        Never raises for a missing, gone or stalled reader; raises ValueError once closed.
        """
        if self._closed:
            raise ValueError("write to a closed PtyWriter")
        if not data:
            return 0
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        sent = 0
        reason = ""
        while sent < len(data):
            events = self._events()
            if events & select.POLLIN:
                self._drain_input()
            if events & select.POLLHUP:
                reason = "no reader has the pty open"
                break
            try:
                sent += os.write(self.master_fd, view[sent:])
                continue
            except BlockingIOError:
                pass
            except OSError as e:
                if e.errno != errno.EIO:
                    raise
                reason = "no reader has the pty open"
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                reason = f"the reader did not read for {timeout:g} s"
                break
            self._events(min(remaining, 0.05))
        lost = len(data) - sent
        self.written += sent
        if lost:
            self.dropped += lost
            self.drops += 1
            self._ratelog.warning("drop", "dropped %d bytes for %s: %s", lost, self.path, reason)
        return sent

    def _drain_input(self) -> None:
        while True:
            try:
                chunk = os.read(self.master_fd, 4096)
            except (BlockingIOError, OSError):
                return
            if not chunk:
                return
            self._input += chunk
            if len(self._input) > _INPUT_KEEP:
                del self._input[: len(self._input) - _INPUT_KEEP]

    def read_input(self) -> bytes:
        """Return (and forget) what the reader wrote to the slave since the last call."""
        if not self._closed:
            self._drain_input()
        data = bytes(self._input)
        self._input.clear()
        return data

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until the reader has read all that was written; return whether it did in time.

        Closing the master discards what the reader has not read yet, so a ride's last epochs
        would be lost; `close()` drains first. True at once when no reader is connected (then
        nothing written is waiting for anyone). Waits at most `timeout` (default: the writer's).
        """
        if self._closed or not self.reader_connected() or not self.slave_path:
            return True
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        try:
            # The pending count lives on the tty, so any fd of the slave can ask for it.
            probe = os.open(self.slave_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            return False
        try:
            empty_twice = 0
            while empty_twice < 2:  # the kernel moves bytes to the slave in deferred work
                pending = struct.unpack("i", fcntl.ioctl(probe, termios.FIONREAD, b"\0" * 4))[0]
                empty_twice = empty_twice + 1 if pending == 0 else 0
                if time.monotonic() >= deadline:
                    return pending == 0
                time.sleep(0.02)
            return True
        except OSError:
            return False
        finally:
            os.close(probe)

    def close(self) -> None:
        """Let the reader drain (see `drain`), then close the master (the reader sees a hang-up)
        and remove the link. Idempotent."""
        if self._closed:
            return
        self.drain()
        self._closed = True
        if self.link and self.slave_path:
            remove_link(self.link, self.slave_path)
        with contextlib.suppress(OSError):
            os.close(self.master_fd)

    def __enter__(self) -> PtyWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
