"""The MQTT sender: OwnTracks location JSON, published to a broker with paho-mqtt.

Protocol and guarantees: docs/mqtt.md. The pure functions at the top (settings, encoding) have
no I/O; `MqttSender` below is the thread.

Encoding: one OwnTracks `_type: location` message per sent second on `topic` (`tst` whole
seconds, `lat`/`lon` 7 decimals, `alt` m, `vel` km/h, `cog` degrees, `acc`/`vac` m, `tid`,
and `hr`/`cad`/`pwr` when a sensor gave a value in that second). At most one location per
`min_point_interval_s` (the first fix of each second at the default): the fixes thinned out are
acknowledged with the message that covers them. Activity starts and ends go to `<topic>/event`
as `_type: activity`; the last will (`_type: lwt`, OwnTracks' own) to `topic`. Nothing but
`location` and `lwt` JSON is ever published on `topic`.

Delivery (at least once, with a bounded duplicate window):

- The paho client is driven from `work()` in the sender's own thread (`client.loop(timeout)`,
  no paho thread): its callbacks run here, so they touch the store without a lock, and every
  blocking call has a timeout (connect, TLS and the CONNACK: `connect_timeout_s`; each loop:
  `interval_s` at most), so the shared stop event is seen within about a second.
- Up to `max_inflight` messages are in flight; each message id (mid) maps to the fix ids it
  covers. They are acknowledged in the store when paho reports the message published: PUBACK
  (QoS 1), PUBCOMP (QoS 2), or written to the socket (QoS 0: lossy, see docs/mqtt.md).
- MQTT 3.1.1 (what OwnTracks speaks; Mosquitto 2.0 also keeps 3.1.1 sessions across its own
  restart, not MQTT 5 ones), a stable client id and a persistent session (clean_session
  False): after a network drop or a broker restart paho reconnects to the same session and
  resends what was in flight (QoS 2 completes exactly once). A new client (a new process)
  first wipes the session with one clean connect, because it would reuse packet ids a previous
  one left half-done on the broker (a QoS 2 PUBLISH with such an id is taken by the broker as
  a duplicate and dropped); what was in flight then was not acknowledged in the store and is
  published again. When the broker answers a reconnect without our session (it lost it), paho
  has resent the window already and it is published once more by a new client. That is the
  duplicate window: at most `max_inflight` messages around a crash or a restart (twice that
  after a lost session); never a fix lost at QoS 1 or 2.
- `catch_up = "live_first"`: when the backlog spans more than LIVE_FIRST_AFTER_S the newest
  location goes first (retained as `retain` says), then the history oldest first, never
  retained (kind "history"), with up to CATCH_UP_INFLIGHT messages in flight; every newer fix
  again goes first. In memory, `_runs`/`_filled` are as published; the state's `runs` and
  `filled` as acknowledged (a crash mid-fill resumes the history, never taking it as covered
  by the present), and its `last_time` is then the newest location acknowledged in order
  ahead of the history.
- The broker cannot be asked what it has, so there is nothing to reconcile (the `pending`
  marker of the HTTP backends has no use here): the store's acknowledgement is the only state
  besides the thinning reference and the events published.

Thread safety: a sender owns its Ledger and its paho client; run it in its own thread.
"""

from __future__ import annotations

import json
import logging
import math
import re
import socket
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from tracker.checks import FAIL, OK, Check, Probe, unreachable
from tracker.credentials import SecretError
from tracker.fix import SAMPLE_KINDS, Sample
from tracker.senders.accuracy import DEFAULT_UERE_M, accuracy  # shared with gpsr, traccar
from tracker.senders.base import Sender
from tracker.senders.mqtt_client import handshake, make_client, missing_paho, refused
from tracker.senders.settings import secret
from tracker.senders.state import Migration, upgrade
from tracker.senders.transport import (
    LostReply,
    Unreachable,
)
from tracker.senders.wire import (
    LIVE_FIRST_AFTER_S,
    MAX_RUNS,
    ThinnedSettings,
    adjacent,
    due,
    is_finite,
    next_history,
    stored_runs,
    wire_time,
)
from tracker.store import Activity, StoredFix
from tracker.validate import (
    boolean,
    bounded,
    nonempty_str,
    one_of,
    pos_float,
    user_path,
    without_userinfo,
)

if TYPE_CHECKING:
    import paho.mqtt.client as paho

log = logging.getLogger(__name__)

NAME = "mqtt"
CREDENTIAL = "mqtt-password"
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
EVENTS_EVERY_S = 1.0  # activities are looked at no more often than this
STATUS_EVERY_S = 10.0  # the sent counter is copied into the status at most this often
TID_MAX = 2  # OwnTracks' tracker id: two characters
# live_first: messages in flight while a history is filled in, at least. An MQTT 3.1.1 broker
# sets no limit on a client's publishes in flight (Receive Maximum is MQTT 5's); paho's own
# (max_inflight_messages_set, fixed for a connection) is set to this with live_first, and the
# sender's window keeps to `max_inflight` once live.
CATCH_UP_INFLIGHT = 100


# --- settings ------------------------------------------------------------------------------


def mqtt_url(v: Any) -> str:
    """`mqtt://host[:port]` or `mqtts://host[:port]` (TLS, certificates checked)."""
    text = nonempty_str(v)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"not a URL: {e}") from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(
            f"expected mqtt://host:1883 or mqtts://host:8883, got {without_userinfo(text)!r}"
        )
    if parts.path not in ("", "/") or parts.query or parts.username or port == 0:
        # the user and password go in their own keys; the URL is echoed without them
        raise ValueError(
            f"expected only a scheme, a host and a port, got {without_userinfo(text)!r}"
        )
    return text


def _topic(v: Any) -> str:
    text = nonempty_str(v)
    if any(c in text for c in "+#\0") or text.startswith("$") or text != text.strip("/"):
        raise ValueError(f"expected a topic without wildcards, $ or a leading or trailing /, "
                         f"got {text!r}")  # fmt: skip
    return text


def _tid(v: Any) -> str:
    text = nonempty_str(v)
    if len(text) > TID_MAX or any(c.isspace() for c in text):
        raise ValueError(f"expected one or two characters (OwnTracks' tid), got {v!r}")
    return text


def _client_id(v: Any) -> str:
    text = nonempty_str(v)
    if len(text.encode()) > 256:
        raise ValueError("expected at most 256 bytes")
    return text


def _max_inflight(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1000:
        raise ValueError(f"expected a whole number from 1 to 1000, got {v!r}")
    return v


@dataclass(frozen=True)
class Settings(ThinnedSettings):
    """[mqtt] (docs/mqtt.md): the config section, and the sender's options.

    `topic`, `client_id` and `tid` are derived when not set (`location_topic()`, ...).
    `interval_s` is how often the store is looked at when there is nothing to send;
    `read_timeout_s` how long a message may wait for its acknowledgement before the
    connection is taken for dead.
    """

    KEYS: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "url": mqtt_url,
        "username": nonempty_str,
        "password": secret,
        "password_file": user_path,
        "topic": _topic,
        "client_id": _client_id,
        "tid": _tid,
        "qos": one_of(0, 1, 2),
        "retain": boolean,
        "ca_file": user_path,
        "send": one_of("all", "activities"),
        "max_inflight": _max_inflight,
        "keepalive_s": bounded(5, 3600, "the broker's idea of a dead connection"),
        "interval_s": bounded(0.05, 5, "a stored fix waits at most this long"),
        "events": boolean,
        "uere_m": pos_float,
    }

    CATCH_UP: ClassVar[tuple[str, ...]] = ("in_order", "live_first")  # docs: catching up
    REQUIRED: ClassVar[dict[str, str]] = {"url": "the broker, e.g. mqtts://broker.example:8883"}
    SECRET: ClassVar[tuple[str, str] | None] = ("password", CREDENTIAL)

    interval_s: float = 1.0
    username: str = ""
    password: str = field(default="", repr=False)
    password_file: Path | None = None
    topic: str = ""
    client_id: str = ""
    tid: str = ""
    qos: int = 1
    retain: bool = False
    ca_file: Path | None = None
    send: str = "all"
    max_inflight: int = 20
    keepalive_s: float = 60.0
    events: bool = True
    uere_m: float = DEFAULT_UERE_M

    def scope(self) -> str:
        """A fleet backend: every fix by default, parked or riding (`send`)."""
        return self.send

    def check(self) -> None:
        """A password only goes with a user name; an anonymous broker needs neither."""
        if not self.enabled:
            return
        if self.username:
            super().check()  # the url, and a password from somewhere
        elif not self.url:
            raise ValueError(f"url: missing ({self.REQUIRED['url']})")
        elif self.password or self.password_file:
            raise ValueError("username: missing (a password is sent with a user name)")
        if self.ca_file is not None and not self.url.startswith("mqtts://"):
            raise ValueError("ca_file: only for an mqtts:// url")

    # -- derived values -------------------------------------------------------------------

    def location_topic(self, hostname: str | None = None) -> str:
        """`topic`, else OwnTracks' `owntracks/<username>/<hostname>`."""
        if self.topic:
            return self.topic
        host = hostname or socket.gethostname().split(".")[0] or "tracker"
        return f"owntracks/{self.username or 'tracker'}/{host}"

    def device(self, hostname: str | None = None) -> str:
        return self.location_topic(hostname).rsplit("/", 1)[-1]

    def tracker_id(self, hostname: str | None = None) -> str:
        """`tid`, else the last two characters of the device (the topic's last level)."""
        return self.tid or self.device(hostname)[-TID_MAX:]

    def session_id(self, hostname: str | None = None) -> str:
        """`client_id`, else one made from the topic: stable across restarts (the persistent
        session is the broker's by client id) and different for every unit (a second client
        with the same id takes the session over)."""
        if self.client_id:
            return self.client_id
        return "tracker-" + re.sub(r"[^0-9A-Za-z_-]", "-", self.location_topic(hostname))

    def host_port(self) -> tuple[str, int, bool]:
        parts = urlsplit(self.url)
        assert parts.hostname is not None
        return parts.hostname, parts.port or DEFAULT_PORTS[parts.scheme], parts.scheme == "mqtts"




# --- encoding ------------------------------------------------------------------------------


def location(
    fix: StoredFix,
    tid: str,
    samples: dict[str, float] | None = None,
    uere_m: float = DEFAULT_UERE_M,
) -> dict[str, Any]:
    """One OwnTracks location object. Whole numbers where OwnTracks has them (alt, vel, cog,
    acc, vac); a value the receiver did not give is left out rather than sent as 0."""
    obj: dict[str, Any] = {
        "_type": "location",
        "tst": wire_time(fix.time),
        "lat": round(fix.lat, 7),
        "lon": round(fix.lon, 7),
        "tid": tid,
    }
    if is_finite(fix.alt):
        obj["alt"] = round(fix.alt)
    if is_finite(fix.speed):
        obj["vel"] = round(fix.speed * 3.6)
    if is_finite(fix.course):
        obj["cog"] = round(fix.course) % 360
    ha, va = accuracy(fix, uere_m)
    if is_finite(ha):
        obj["acc"] = round(ha)
    if is_finite(va):
        obj["vac"] = round(va)
    for kind, value in (samples or {}).items():
        if kind in SAMPLE_KINDS and math.isfinite(value):
            obj[kind] = round(value)
    return obj


def samples_by_second(samples: Iterable[Sample]) -> dict[int, dict[str, float]]:
    """Second -> kind -> the first sample of that kind in that second."""
    out: dict[int, dict[str, float]] = {}
    for s in sorted(samples, key=lambda s: s.time):
        out.setdefault(math.floor(s.time), {}).setdefault(s.kind, s.value)
    return out


def activity_event(a: Activity, event: str, tid: str) -> dict[str, Any]:
    """An activity start or end (`event` "start" or "end") for `<topic>/event`: our own
    `_type`, never `location`, so a location consumer cannot mistake it for a position."""
    at = a.started_at if event == "start" else a.ended_at
    obj: dict[str, Any] = {
        "_type": "activity",
        "event": event,
        "tst": wire_time(at if at is not None else a.started_at),
        "tid": tid,
        "id": a.uuid,
        "title": a.title,
        "activity": a.type,
    }
    if event == "end" and a.end_reason:
        obj["reason"] = a.end_reason
    return obj


def last_will(tst: int) -> dict[str, Any]:
    """OwnTracks' last will: the broker publishes it on `topic` if we vanish without a
    DISCONNECT (power cut, network gone past the keepalive, SIGKILL)."""
    return {"_type": "lwt", "tst": tst}


def dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


# --- delivery state ------------------------------------------------------------------------


@dataclass
class State:
    """[mqtt] delivery state (tracker/senders/state.py): the newest location time such that
    every location up to it was acknowledged, the history aside (the thinning reference after
    a restart), and the activities whose start and end events were acknowledged, up to which
    id.

    `catch_up = "live_first"`: `runs`, the [first, last] seconds of each stretch acknowledged
    ahead of the history (empty: none, every location older than `last_time` acknowledged);
    `filled`, the newest history second such that every history location up to it was
    acknowledged. `last_time` then says nothing of the seconds before the runs."""

    # Version 0 (no "v"): the same keys. Version 1: no live_first keys.
    VERSION: ClassVar[int] = 2
    MIGRATIONS: ClassVar[dict[int, Migration]] = {0: dict, 1: dict}

    last_time: int | None = None
    started: int = 0
    ended: int = 0
    runs: list[list[int]] = field(default_factory=list)
    filled: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"v": self.VERSION, "last_time": self.last_time, "started": self.started,
                "ended": self.ended, "runs": self.runs, "filled": self.filled}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> State:
        d = upgrade(d, NAME, cls.VERSION, cls.MIGRATIONS)
        last, filled = d.get("last_time"), d.get("filled")
        return cls(None if last is None else int(last), int(d.get("started", 0)),
                   int(d.get("ended", 0)), stored_runs(d.get("runs"), NAME),
                   None if filled is None else int(filled))  # fmt: skip


@dataclass
class Message:
    """One message in flight: what its acknowledgement settles."""

    kind: str  # "location", "history" (live_first: older than the newest), "start", "end"
    t: int  # tst (location) or activity id (events)
    ids: list[int] = field(default_factory=list)  # fix ids (location)
    sent_at: float = 0.0  # monotonic
    mid: int | None = None  # set once it is in the window
    ahead: bool = False  # live_first: a location sent ahead of the history


# --- the sender ----------------------------------------------------------------------------


class MqttSender(Sender["State"]):
    """Publishes every fix of its scope to an MQTT broker (see the module docstring).

    `secret` (reads the password) is called in the thread when the client is made.
    `hostname` (tests) stands in for the machine's in the derived topic, client id and tid.
    """

    name = NAME
    auth_hint = (
        f"check [{NAME}] username and the password (password_file or the credential "
        f"{CREDENTIAL}) and the broker's ACL for the topic, then restart tracker"
    )

    options: Settings

    def __init__(self, *args: Any, hostname: str | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        o = self.options
        self.topic = o.location_topic(hostname)
        self.event_topic = f"{self.topic}/event"
        self.tid = o.tracker_id(hostname)
        self.client_id = o.session_id(hostname)
        self._password: str | None = None
        self._client: paho.Client | None = None
        self._first_connect = True  # of this client: the session is wiped first
        self._connected = False
        self._lost: str | None = None  # why paho dropped the connection
        self._untrusted = False  # the broker lost our session: ignore acks until reset
        self._window: OrderedDict[int, Message] = OrderedDict()
        self._held: set[int] = set()  # fix ids in flight
        self._acks: list[int] = []  # mids paho reported published (on_publish)
        self._st: State | None = None
        self._last_time: int | None = None  # the newest location time published
        # live_first, as published (State's runs and filled are as acknowledged)
        self._runs: list[list[int]] = []
        self._filled: int | None = None
        self._started = 0  # the newest activity whose start event was published
        self._ended = 0
        self._events_at = -math.inf
        self._sent = 0
        self._status_at = -math.inf
        self._ok_at = -math.inf
        self.status.update(url=o.url, user=o.username or None, phase="starting")

    # -- plumbing -------------------------------------------------------------------------

    def open_transport(self) -> None:
        """Reads the password (SecretError disables this backend), and checks that paho-mqtt
        is there (ValueError: disabled too); the client is made at the first connect."""
        paho_missing = missing_paho()
        if paho_missing:
            raise ValueError(paho_missing)
        if self.options.username and self._secret is not None:
            self._password = self._secret()

    def close(self) -> None:
        """DISCONNECT cleanly: the broker keeps the session and drops the last will."""
        client, self._client = self._client, None
        connected, self._connected = self._connected, False
        if client is None:
            return
        try:
            if connected:
                client.disconnect()  # written at once: no paho thread runs
        finally:
            sock = client.socket()
            if sock is not None:
                sock.close()  # paho closes its wake-up socket pair when the client goes

    def _make_client(self) -> paho.Client:
        o = self.options
        client = make_client(o, self.client_id, self._password)
        if o.catch_up == "live_first":
            # paho's own limit cannot change on a connection: it allows the catch-up's, and
            # the window (_inflight) keeps to max_inflight when live.
            client.max_inflight_messages_set(max(o.max_inflight, CATCH_UP_INFLIGHT))
        client.will_set(self.topic, dumps(last_will(math.floor(self.wall()))),
                        qos=self.options.qos, retain=False)  # fmt: skip
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._first_connect = True
        return client

    # paho calls these inside client.loop() / publish(), in this thread.

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if not self._first_connect and not flags.session_present and self._window:
            # Paho resends its in-flight messages after this callback, to a broker that no
            # longer knows them: a QoS 2 PUBREL would then "complete" a message the broker
            # never kept. Acks are ignored from here on; the window goes again through a new
            # client (work() resets).
            self._untrusted = True

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any,
                       props: Any) -> None:  # fmt: skip
        self._connected = False
        self._lost = str(rc)

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        if not self._untrusted:
            # MQTT 3.1.1 has no refusal in a PUBACK: an ACL that forbids the topic is silent.
            self._acks.append(mid)

    # -- connecting -----------------------------------------------------------------------

    def _reset(self, why: str) -> None:
        """Forget the client and what it had in flight: everything not acknowledged in the
        store is published again by a new client, whose session starts clean."""
        if self._window:
            log.info("%s: %s; publishing the %d messages in flight again", NAME, why,
                     len(self._window))  # fmt: skip
        self.close()
        self._window.clear()
        self._held.clear()
        self._acks.clear()
        self._untrusted = False
        assert self._st is not None
        self._last_time = self._st.last_time
        self._runs, self._filled = [list(r) for r in self._st.runs], self._st.filled
        self._started, self._ended = self._st.started, self._st.ended

    def _connect(self) -> bool:
        """Connected (True), stopping (False), or a SendError. Bounded: connect_timeout_s
        for TCP and TLS, the same again for the CONNACK."""
        if self._client is None:
            self._client = self._make_client()
        o = self.options
        if self._first_connect:
            # One clean connect with our client id drops the session a previous client left,
            # whose packet ids this one would reuse; the DISCONNECT drops its will too.
            wipe = make_client(o, self.client_id, self._password, persistent=False)
            try:
                code, _, text = handshake(wipe, o, self.stop)
                if code >= 0x80:
                    raise refused(o, code, text)
                wipe.disconnect()
            finally:
                sock = wipe.socket()
                if sock is not None:
                    sock.close()
        self._lost = None
        code, session, text = handshake(self._client, o, self.stop,
                                        reconnect=not self._first_connect)  # fmt: skip
        if text == "stopping":
            return False
        if code >= 0x80:
            raise refused(o, code, text)
        self._first_connect = False
        self._connected = True
        now = self.clock()
        for msg in self._window.values():  # resent by paho now: their wait starts again
            msg.sent_at = now
        self.status.phase = "connected"
        log.info("%s: connected to %s as %s (session %s)", NAME, o.url, self.client_id,
                 "resumed" if session else "new")  # fmt: skip
        self._ok()
        return True

    def _ok(self) -> None:
        """The broker answered: reset the backoff (status written at most every 30 s)."""
        now = self.clock()
        if self.retry.failures or self.status.state != "ok" or now - self._ok_at > 30:
            self._ok_at = now
            self.succeeded()

    # -- one step -------------------------------------------------------------------------

    def work(self) -> float:
        import paho.mqtt.client as mqtt

        assert self.store is not None
        if self._st is None:
            self._st = self.load_state(State)
            self._reset("started")
        if self._untrusted:
            self._reset("the broker no longer had our session")
        if not self._connected and (not self._connect() or self._untrusted):
            return 0.0
        assert self._client is not None
        published = self._publish_events() + self._publish_locations()
        # Waits for acknowledgements, or for interval_s when there is nothing to do (a fix
        # stored meanwhile waits that long).
        rc = self._client.loop(timeout=0.0 if published else self.options.interval_s)
        self._settle_acks()
        if rc != mqtt.MQTT_ERR_SUCCESS or not self._connected:
            self._connected = False
            why = self._lost or mqtt.error_string(rc)
            raise LostReply(f"{NAME} {self.options.url}: connection lost ({why}); "
                            f"{len(self._window)} messages in flight")  # fmt: skip
        if self._window:
            oldest = next(iter(self._window.values()))
            if self.clock() - oldest.sent_at > self.options.read_timeout_s:
                self._connected = False  # the next step reconnects; paho resends the window
                raise LostReply(f"{NAME} {self.options.url}: no acknowledgement in "
                                f"{self.options.read_timeout_s:g} s")  # fmt: skip
        if self._sent != self.status.points_sent and (
            not self._window or self.clock() - self._status_at >= STATUS_EVERY_S
        ):
            self.status.points_sent = self._sent
            self._status_at = self.clock()
        return 0.0

    def _inflight(self) -> int:
        """Messages in flight at most: more while a history is filled in (CATCH_UP_INFLIGHT)."""
        o = self.options
        return max(o.max_inflight, CATCH_UP_INFLIGHT) if self._runs else o.max_inflight

    def _room(self) -> int:
        return self._inflight() - len(self._window)

    def _send(self, topic: str, payload: bytes, msg: Message, retain: bool = False) -> None:
        """Publish one message and put it in the window (before paho may report it: at QoS 0
        on_publish can fire inside publish()). LostReply if the connection is gone: at QoS
        1 and 2 the message stays in the window (paho resends it after the reconnect)."""
        import paho.mqtt.client as mqtt

        assert self._client is not None
        msg.sent_at = self.clock()
        info = self._client.publish(topic, payload, qos=self.options.qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_SUCCESS or (self.options.qos and info.rc in (
                mqtt.MQTT_ERR_NO_CONN, mqtt.MQTT_ERR_CONN_LOST)):  # fmt: skip
            # QoS 1/2: paho keeps it and resends it after the reconnect.
            msg.mid = info.mid
            self._window[info.mid] = msg
            self._held.update(msg.ids)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self._connected = False
            raise LostReply(f"{NAME}: publish failed ({mqtt.error_string(info.rc)})")

    def _publish_locations(self) -> int:
        """Locations, up to the room in the window: in order; with live_first, the newest
        first when the backlog spans more than LIVE_FIRST_AFTER_S, then the history."""
        assert self.store is not None
        room = self._room()
        if room <= 0:
            return 0
        sent = 0
        if self.options.catch_up == "live_first" or self._runs:
            newest = self.store.newest_pending(NAME)
            if newest is not None and newest.id not in self._held and self._goes_first(newest):
                self._publish_ahead(newest)
                sent, room = 1, room - 1
        if room <= 0:
            return sent
        if self._runs:
            return sent + self._publish_history(room)
        return sent + self._publish_in_order(room)

    def _goes_first(self, newest: StoredFix) -> bool:
        """live_first: whether the newest pending fix goes before the backlog: when it is due,
        and a history is being filled (unless the runs are at MAX_RUNS and it would start
        one more), or the backlog spans more than LIVE_FIRST_AFTER_S. A fill once begun is
        finished whatever `catch_up` says now."""
        assert self.store is not None
        o = self.options
        t = wire_time(newest.time)
        if not due(t, self._last_time, o.min_point_interval_s):
            return False
        if self._runs:
            step = o.min_point_interval_s
            return len(self._runs) < MAX_RUNS or adjacent(t, self._runs[-1][1], step)
        if o.catch_up != "live_first":
            return False
        oldest = self.store.next_batch(NAME, 1)
        return bool(oldest) and t - wire_time(oldest[0].time) > LIVE_FIRST_AFTER_S

    def _publish_ahead(self, fix: StoredFix) -> None:
        """The present, ahead of the history: retained as `retain` says (it is the newest)."""
        assert self.store is not None
        t = wire_time(fix.time)
        samples = samples_by_second(self.store.samples_between(t, t + 1)).get(t)
        msg = Message("location", t, [fix.id], ahead=True)
        try:
            self._send(self.topic, dumps(location(fix, self.tid, samples, self.options.uere_m)),
                       msg, retain=self.options.retain)  # fmt: skip
        finally:
            if msg.mid is not None:  # in the window: the runs and the reference move
                if self._runs and adjacent(t, self._runs[-1][1], self.options.min_point_interval_s):
                    self._runs[-1][1] = t
                else:
                    if not self._runs:
                        self._filled = self._last_time
                        log.info("%s: the present (tst %d) went first; the history follows, "
                                 "oldest first, not retained", NAME, t)  # fmt: skip
                    self._runs.append([t, t])
                self._last_time = t

    def _publish_history(self, room: int) -> int:
        """The history, oldest first, thinned among itself and never retained: the broker
        keeps one retained message a topic, the first a new subscriber gets, and it is to be
        the present. Covered fixes go with the history message before them, or are
        acknowledged now (a second on the topic, or in flight with its own fix)."""
        assert self.store is not None
        o = self.options
        limit = len(self._held) + o.batch_max_points
        rest = [f for f in self.store.next_batch(NAME, limit) if f.id not in self._held]
        plan: list[tuple[StoredFix, list[int], list[list[int]], int | None]] = []
        covered_now: list[int] = []
        runs, filled = self._runs, self._filled
        while rest and len(plan) < room:
            covered, fix, runs, filled = next_history(rest, runs, filled, o.min_point_interval_s)
            (plan[-1][1] if plan else covered_now).extend(f.id for f in covered)
            if fix is None:
                break
            filled = wire_time(fix.time)
            plan.append((fix, [fix.id], runs, filled))
            rest = rest[len(covered) + 1 :]
        if covered_now:
            self._settle_ids(covered_now)
        if not plan:
            if not rest and not covered_now:  # nothing older pending that is not in flight
                runs = []
            self._runs, self._filled = runs, filled
            if not runs:
                log.info("%s: the history is filled in, publishing in order again", NAME)
                self._fill_over()
            return 0
        t0, t1 = wire_time(plan[0][0].time), wire_time(plan[-1][0].time)
        by_second = samples_by_second(self.store.samples_between(t0, t1 + 1))
        for f, ids, after_runs, after_filled in plan:
            t = wire_time(f.time)
            msg = Message("history", t, ids)
            try:
                self._send(self.topic, dumps(location(f, self.tid, by_second.get(t), o.uere_m)),
                           msg, retain=False)  # fmt: skip
            finally:
                if msg.mid is not None:  # in the window: the history reference moves
                    self._runs, self._filled = after_runs, after_filled
        return len(plan)

    def _fill_over(self) -> None:
        """The fill ended with its last acknowledgement already settled: the stored state
        says so now (it said so only with a later acknowledgement, and a restart meanwhile
        would begin with a fill that had nothing left to fill)."""
        st = self._st
        in_flight = any(m.kind == "history" for m in self._window.values())
        if st is not None and (st.runs or st.filled is not None) and not in_flight:
            st.runs, st.filled = [], None
            self.save_state(st)

    def _publish_in_order(self, room: int) -> int:
        assert self.store is not None
        limit = len(self._held) + self.options.batch_max_points
        batch = [f for f in self.store.next_batch(NAME, limit) if f.id not in self._held]
        if not batch:
            return 0
        step = self.options.min_point_interval_s
        plan: list[tuple[StoredFix, list[int]]] = []  # (fix to send, ids it covers)
        covered: list[int] = []  # covered by a message already acknowledged
        last = self._last_time
        for f in batch:
            t = wire_time(f.time)
            if not due(t, last, step):
                # Covered by the last location: acknowledged with it (or now, if it was).
                previous = self._window_last_location()
                if plan:
                    plan[-1][1].append(f.id)
                elif previous is not None:
                    previous.ids.append(f.id)
                    self._held.add(f.id)
                else:
                    covered.append(f.id)
                continue
            if len(plan) >= room:
                break
            plan.append((f, [f.id]))
            last = t
        if covered:
            self._settle_ids(covered)
        if not plan:
            return 0
        t0, t1 = wire_time(plan[0][0].time), wire_time(plan[-1][0].time)
        by_second = samples_by_second(self.store.samples_between(t0, t1 + 1))
        for f, ids in plan:
            t = wire_time(f.time)
            obj = location(f, self.tid, by_second.get(t), self.options.uere_m)
            msg = Message("location", t, ids)
            try:
                self._send(self.topic, dumps(obj), msg, retain=self.options.retain)
            finally:
                if msg.mid is not None:  # in the window: the thinning reference moves
                    self._last_time = t
        return len(plan)

    def _window_last_location(self) -> Message | None:
        for msg in reversed(self._window.values()):
            if msg.kind == "location":
                return msg
        return None

    def _publish_events(self) -> int:
        """Activity starts and ends on `<topic>/event`, each in activity order. An end goes
        once the start is acknowledged and every fix of the activity too, so it follows
        them; a later activity's end waits for an earlier one's."""
        assert self.store is not None and self._st is not None
        now = self.clock()
        if not self.options.events or now - self._events_at < EVENTS_EVERY_S:
            return 0
        self._events_at = now
        activities = self.store.activities()
        sent = 0
        for a in activities:
            if a.id <= self._started:
                continue
            if self._room() <= 0:
                return sent
            self._publish_event(a, "start")
            sent += 1
        for a in activities:
            if a.id <= self._ended:
                continue
            if (a.current or a.id > self._st.started or self._room() <= 0
                    or self.store.next_batch(NAME, 1, a.id)):  # fmt: skip
                break
            self._publish_event(a, "end")
            sent += 1
        return sent

    def _publish_event(self, a: Activity, event: str) -> None:
        """One activity's "start" or "end". Once it is in the window (even if the connection
        then failed: paho resends it), the newest of its kind published is this activity."""
        msg = Message(event, a.id)
        try:
            self._send(self.event_topic, dumps(activity_event(a, event, self.tid)), msg)
        finally:
            if msg.mid is not None and event == "start":
                self._started = a.id
            elif msg.mid is not None:
                self._ended = a.id

    # -- acknowledgements -----------------------------------------------------------------

    def _settle_acks(self) -> None:
        """What paho reported published since the last call: one store transaction."""
        if not self._acks:
            return
        acks, self._acks = self._acks, []
        ids: list[int] = []
        done: list[Message] = []
        for mid in acks:
            msg = self._window.pop(mid, None)
            if msg is None:  # a mid of a window already dropped (a reset)
                continue
            self._held.difference_update(msg.ids)
            ids.extend(msg.ids)
            done.append(msg)
        self._settle_ids(ids, done)
        if done:
            self._sent += sum(1 for m in done if m.kind == "location")
            self._ok()

    def _settle_ids(self, ids: Sequence[int], done: Sequence[Message] = ()) -> None:
        """Acknowledge `ids` and move the state past what is now wholly acknowledged."""
        if not ids and not done:
            return
        st = self._st
        assert st is not None
        pending = {m.kind: m.t for m in reversed(self._window.values())}  # oldest per kind
        step = self.options.min_point_interval_s
        for m in sorted((m for m in done if m.ahead), key=lambda m: m.t):
            if st.runs and adjacent(m.t, st.runs[-1][1], step):
                st.runs[-1][1] = max(st.runs[-1][1], m.t)
            else:
                if not st.runs:
                    st.filled = st.last_time
                st.runs.append([m.t, m.t])
        st.last_time = _contiguous(done, "location", pending, st.last_time)
        st.filled = _contiguous(done, "history", pending, st.filled)
        if not self._runs and "history" not in pending:  # the history is all acknowledged
            st.runs, st.filled = [], None
        # Events: every start (end) up to the oldest in flight, else up to the newest sent.
        st.started = pending["start"] - 1 if "start" in pending else self._started
        st.ended = pending["end"] - 1 if "end" in pending else self._ended
        self.settle(st, ids)


def _contiguous(done: Iterable[Message], kind: str, pending: dict[str, int],
                last: int | None) -> int | None:  # fmt: skip
    """The newest time of `kind` such that every message of that kind up to it was
    acknowledged: `last`, moved by the `done` ones older than the oldest still in flight."""
    oldest = pending.get(kind)
    times = [m.t for m in done if m.kind == kind and (oldest is None or m.t < oldest)]
    return max(times + ([last] if last is not None else [])) if times else last


SENDER = MqttSender  # what tracker/backends.py builds for an [mqtt] section


PASSWORD_FIX = (
    f"set [{NAME}] password_file, or put the password in /etc/credstore/{CREDENTIAL} (mode "
    "600) for the unit's LoadCredential="
)


def probe(settings: Settings) -> Probe:
    """`tracker doctor`: the broker answers MQTT, TLS checks out and it accepts the login. Its
    own client id (`<client_id>-doctor`, a clean session), so the running daemon's session is
    not taken over; it publishes nothing (a subscriber of the location topic sees only
    locations)."""
    s = settings
    paho_missing = missing_paho()
    if paho_missing:
        return Probe([Check(NAME, FAIL, paho_missing, "install it, then restart tracker")])
    password = None
    if s.username:
        try:
            password = s.read_secret()
        except SecretError as e:
            return Probe([Check(f"{NAME} password", FAIL, str(e), PASSWORD_FIX)])
    client = make_client(s, s.session_id() + "-doctor", password, persistent=False)
    try:
        code, _, text = handshake(client, s)
        if code < 0x80:
            client.disconnect()
    except Unreachable as e:
        detail = str(e).removeprefix(f"{NAME} {s.url}: ")
        if "CONNACK" in detail or "before the broker answered" in detail:
            return Probe([Check(NAME, FAIL, f"{s.url}: no MQTT answer ({detail})",
                                f"check the url in [{NAME}]: the port of the broker's MQTT "
                                "listener, mqtts:// for a TLS one")])  # fmt: skip
        return Probe([unreachable(NAME, s.url, detail, NAME)])
    finally:
        sock = client.socket()
        if sock is not None:
            sock.close()
    if code in (0x86, 0x87):
        return Probe([
            Check(NAME, OK, f"{s.url} answers"),
            Check(f"{NAME} credentials", FAIL, f"the broker refused the login: {text}",
                  f"check [{NAME}] username ({s.username!r}) and the password"),
        ])  # fmt: skip
    if code >= 0x80:
        return Probe([Check(NAME, FAIL, f"{s.url}: the broker refused the connection: {text}",
                            f"check [{NAME}] client_id and the broker's settings")])  # fmt: skip
    who = f"user {s.username}" if s.username else "anonymous"
    return Probe([
        Check(NAME, OK, f"{s.url} answers MQTT"),
        Check(f"{NAME} credentials", OK, f"accepted ({who}); topic {s.location_topic()}"),
    ])  # fmt: skip
