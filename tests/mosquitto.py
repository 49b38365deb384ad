"""A real Mosquitto for the MQTT tests, and a real paho subscriber that records what it gets.

The broker runs as its own process on a free port with a config file, password file and
persistence directory of its own (in the test's tmp dir), and is stopped by its pid: SIGTERM, so
it writes its persistent sessions and their queued messages to disk first, as a broker being
restarted does. Tests that need it skip with a reason when /usr/sbin/mosquitto is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support import free_port, wait_for

MOSQUITTO = Path("/usr/sbin/mosquitto")
PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"

SKIP_REASON = "needs Mosquitto (/usr/sbin/mosquitto and mosquitto_passwd: apt install mosquitto)"


def require_mosquitto() -> None:
    """Skip the calling test, with the reason, where Mosquitto is not installed."""
    if not MOSQUITTO.exists() or not Path(PASSWD).exists():
        pytest.skip(SKIP_REASON)


@dataclass
class Certs:
    ca: Path
    cert: Path
    key: Path


def make_certs(directory: Path, host: str = "127.0.0.1") -> Certs:
    """A test CA and a server certificate it signed for the address `host` only, with the
    openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    d = directory
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=tracker test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    run(
        "req",
        *ec,
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=tracker test broker",
    )  # not a host name: only the SAN may match
    (d / "ext.cnf").write_text(
        f"subjectAltName=IP:{host}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")  # fmt: skip
    return Certs(d / "ca.crt", d / "server.crt", d / "server.key")


class Broker:
    """A Mosquitto process: `start()`, `stop()` (SIGTERM by pid, sessions saved), `kill()`,
    started again on the same port. `users` (name -> password) makes it refuse anonymous
    clients; `certs` makes its listener TLS-only."""

    def __init__(self, directory: Path, *, users: dict[str, str] | None = None,
                 certs: Certs | None = None, port: int | None = None,
                 max_inflight: int = 20) -> None:  # fmt: skip
        require_mosquitto()
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.log = self.dir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None
        data = self.dir / "data"
        data.mkdir(exist_ok=True)
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence true",
            f"persistence_location {data}/",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            # A subscriber away for a broker restart gets everything queued for it.
            "max_queued_messages 0",
            f"max_inflight_messages {max_inflight}",
            "user root" if os.geteuid() == 0 else "",  # else it drops to `mosquitto`
        ]
        if users:
            passwd = self.dir / "passwd"
            passwd.touch(mode=0o600)
            for name, password in users.items():
                subprocess.run([PASSWD, "-b", str(passwd), name, password], check=True,
                               capture_output=True)  # fmt: skip
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if certs:
            lines += [f"cafile {certs.ca}", f"certfile {certs.cert}", f"keyfile {certs.key}"]
        self.config = self.dir / "mosquitto.conf"
        self.config.write_text("\n".join(line for line in lines if line) + "\n")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> Broker:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen([str(MOSQUITTO), "-c", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        wait_for(self._listening, timeout, what=f"mosquitto on port {self.port} ({self.log})")
        return self

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            pytest.fail(f"mosquitto exited with {self.proc.returncode}: {err} {self.log_text()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM: Mosquitto writes its persistence file and exits."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """The broker stopped dead (SIGSTOP) inside the block: what is published meanwhile
        waits, unacknowledged, in its socket buffer; SIGCONT after."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: nothing is saved, what the broker held in memory (sessions, queued
        messages) is gone, as after a crash of the broker's machine."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cpu_s(self) -> float:
        """User + system CPU seconds of the broker process so far (/proc)."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Received:
    topic: str
    payload: dict[str, Any]
    dup: bool


@dataclass
class Subscriber:
    """A paho subscriber with a persistent session (MQTT 3.1.1, clean_session False): what is
    published while it is away (a broker restart) is queued for it and delivered when it is
    back. Records every message, in order of arrival."""

    broker: Broker
    topic: str = "owntracks/#"
    qos: int = 2
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    client_id: str = "test-subscriber"
    messages: list[Received] = field(default_factory=list)
    subscriptions: int = 0  # SUBACKs so far: one more each time it subscribed again

    def __post_init__(self) -> None:
        import paho.mqtt.client as mqtt

        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        clean_session=False, protocol=mqtt.MQTTv311)  # fmt: skip
        if self.username:
            c.username_pw_set(self.username, self.password)
        if self.ca_file:
            c.tls_set(ca_certs=str(self.ca_file))
        c.reconnect_delay_set(1, 1)
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(self.topic, qos=self.qos)
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self.client = c

    def start(self) -> Subscriber:
        self.client.connect("127.0.0.1", self.broker.port, keepalive=5)
        self.client.loop_start()
        if not self._subscribed.wait(15):
            pytest.fail("the test subscriber did not get its SUBACK")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_subscribe(self, *args: Any) -> None:
        self.subscriptions += 1
        self._subscribed.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            payload = {"_unreadable": msg.payload.decode(errors="replace")}
        with self._lock:
            self.messages.append(Received(msg.topic, payload, bool(msg.dup)))

    def received(self, topic: str | None = None, type_: str | None = None) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if (topic is None or m.topic == topic)
                    and (type_ is None or m.payload.get("_type") == type_)]  # fmt: skip

    def locations(self, topic: str | None = None) -> list[dict[str, Any]]:
        return [m.payload for m in self.received(topic, "location")]


def pause(seconds: float) -> None:
    """A deliberate gap (the network down for a while), not a synchronisation."""
    time.sleep(seconds)
