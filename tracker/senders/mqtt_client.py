"""The paho-mqtt client layer: the MQTT twin of tracker/senders/http.py.

What the MQTT sender (tracker/senders/mqtt.py) and its `tracker doctor` probe need of paho,
and nothing of OwnTracks or the store: whether paho is installed, a client made for a broker's
URL (MQTT 3.1.1, TLS for mqtts:// with the system CAs or a CA file, the login, the connect
timeout, the in-flight window), the connect with its CONNACK awaited within
`connect_timeout_s`, and what paho and the socket raise mapped, where it enters, into the
SendError family of tracker/senders/transport.py (a refused login is AuthFailed, no answer
Unreachable, a broker that is busy Transient). Publishing with acknowledgement stays with the
sender, which drives the client's loop in its own thread (no paho thread).

paho is imported inside the functions that use it, so that `tracker status` and the config
parse never load it.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tracker.senders.transport import AuthFailed, SendError, Transient, Unreachable

if TYPE_CHECKING:
    import paho.mqtt.client as paho

# The word every message starts with, as the sender's own (its backend NAME).
NAME = "mqtt"
LOOP_S = 0.5  # the longest single wait in paho's select: new fixes go out at most this late

# CONNACK codes that retrying cannot fix, as paho reports them (the MQTT 5 reason codes it maps
# the 3.1.1 return codes 1, 2, 4 and 5 to): 0x84 protocol version refused, 0x85 client id
# refused, 0x86 bad user name or password, 0x87 not authorized. 3 (server unavailable, 0x88)
# is retried.
REFUSED_FOR_GOOD = {0x84, 0x85, 0x86, 0x87}


class BrokerOptions(Protocol):
    """What the client layer reads of a sender's settings (tracker/senders/mqtt.py's
    Settings), declared here so that this layer does not import the sender."""

    # Read-only properties: the settings are a frozen dataclass.
    @property
    def url(self) -> str: ...
    @property
    def username(self) -> str: ...
    @property
    def connect_timeout_s(self) -> float: ...
    @property
    def keepalive_s(self) -> float: ...
    @property
    def max_inflight(self) -> int: ...
    @property
    def ca_file(self) -> Path | None: ...

    def host_port(self) -> tuple[str, int, bool]: ...


def missing_paho() -> str | None:
    """Why paho-mqtt cannot be used (not installed), or None."""
    try:
        import paho.mqtt.client  # noqa: F401
    except ImportError:
        return ("paho-mqtt is not installed (pip install 'pi-live-tracker[mqtt]', or apt "
                "install python3-paho-mqtt >= 2.1)")  # fmt: skip
    return None


def reason_value(rc: Any) -> int:
    """A paho ReasonCode (or a plain int) as its number."""
    return int(getattr(rc, "value", rc))


def make_client(o: BrokerOptions, client_id: str, password: str | None, *,
                persistent: bool = True) -> paho.Client:  # fmt: skip
    """A paho client for `o`, not connected: MQTT 3.1.1, a persistent session unless told,
    TLS for mqtts:// (system CAs, or `ca_file`; the host name checked), credentials, the
    connect timeout."""
    import ssl

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion  # what paho.mqtt.client uses, exported

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=not persistent, protocol=mqtt.MQTTv311)  # fmt: skip
    client.connect_timeout = o.connect_timeout_s
    if o.username:
        client.username_pw_set(o.username, password)
    _, _, tls = o.host_port()
    if tls:
        client.tls_set_context(ssl.create_default_context(
            cafile=str(o.ca_file) if o.ca_file else None))  # fmt: skip
    client.max_inflight_messages_set(o.max_inflight)
    return client


def handshake(client: paho.Client, o: BrokerOptions, stop: threading.Event | None = None, *,
              reconnect: bool = False) -> tuple[int, bool, str]:  # fmt: skip
    """Connect `client` (or reconnect it) and wait for the CONNACK: (reason code, session
    present, its text). Unreachable when no MQTT answer came: connect and TLS are bounded by
    `connect_timeout_s`, the CONNACK by the same again. (0, False, "stopping") when `stop` is
    set meanwhile."""
    import paho.mqtt.client as mqtt

    answer: list[tuple[int, bool, str]] = []
    # Callback API version 2 (make_client): five arguments, whatever paho's union of types says.
    chained: Any = client.on_connect

    def on_connect(c: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        answer.append((reason_value(rc), bool(flags.session_present), str(rc)))
        if chained is not None:
            chained(c, userdata, flags, rc, props)

    client.on_connect = on_connect
    host, port, _ = o.host_port()
    try:
        if reconnect:
            client.reconnect()
        else:
            client.connect(host, port, keepalive=round(o.keepalive_s))
        deadline = time.monotonic() + o.connect_timeout_s
        while not answer:
            if stop is not None and stop.is_set():
                return 0, False, "stopping"
            rc = client.loop(timeout=min(LOOP_S, max(0.0, deadline - time.monotonic())))
            if not answer and rc != mqtt.MQTT_ERR_SUCCESS:
                raise Unreachable(f"{NAME} {o.url}: connection closed before the broker "
                                  f"answered ({mqtt.error_string(rc)})")  # fmt: skip
            if not answer and time.monotonic() >= deadline:
                raise Unreachable(f"{NAME} {o.url}: no CONNACK within "
                                  f"{o.connect_timeout_s:g} s")  # fmt: skip
    except OSError as e:  # refused, DNS, timeout, TLS (ssl.SSLError is an OSError)
        raise Unreachable(f"{NAME} {o.url}: {_os_error(e)}") from None
    finally:
        client.on_connect = chained
    return answer[0]


def refused(o: BrokerOptions, code: int, text: str) -> SendError:
    message = f"{NAME} {o.url}: the broker refused the connection: {text}"
    return AuthFailed(message) if code in REFUSED_FOR_GOOD else Transient(message)


def _os_error(e: OSError) -> str:
    import ssl

    if isinstance(e, ssl.SSLCertVerificationError):
        return f"certificate not accepted: {e.verify_message or e}"
    if isinstance(e, socket.timeout):
        return "connect timed out"
    return e.strerror or str(e) or type(e).__name__
