"""An OsmAnd-protocol HTTP server that behaves like Traccar's, for tests and the demo (standard
library only).

Traccar's OsmAnd decoder (port 5055 by default; org.traccar.protocol.OsmAndProtocolDecoder)
takes one position per request as query parameters: in the URL of a GET or a POST (the Traccar
Client posts with an empty body), or, when the URL has none, as a query string in the body (a
form POST). This server keeps its state in memory, records every request (each is named
"position", e.g. `server.count("position", processed=True)`) and injects network faults
(`tracker.testing.faults`). Readings, as Traccar does unless said otherwise:

- The path is ignored (Traccar's decoder never looks at it). `id` or `deviceid` names the
  device by its unique identifier; a missing or unregistered one is HTTP 400 with an empty body
  (`register_unknown=True` registers it instead, like Traccar's `database.registerUnknown`).
- Accepted: HTTP 200, empty body (Traccar answers a queued command's text here; there are none).
- `timestamp`: a whole number below 2^31 - 1 is unix seconds, above it milliseconds; text with
  a `T` is ISO 8601; else `yyyy-MM-dd HH:mm:ss` (in UTC here; Traccar reads it in the server's
  time zone). Missing: the server's clock. Times are kept in milliseconds, as Traccar's Date.
- `lat`, `lon` (or `location=lat,lon`), `speed` (knots, stored as sent), `bearing` or `heading`,
  `altitude`, `accuracy`, `hdop` and `batt` are numbers; `valid` true/1 or not. Every other
  parameter is an attribute: a number if it reads as one, else true/false, else the text.
  `hdop` is an attribute too (Traccar's `hdop` key), `batt` the `batteryLevel` attribute.
- Malformed: a number that does not parse, a timestamp that does not, no `lat`/`lon`, or a
  position outside -90..90 / -180..180: HTTP 400 and nothing stored. This is the model's
  stricter reading, so tests can make a server refuse one fix: Traccar itself closes the
  connection without a reply when a number does not parse (its decoder throws), and without a
  position it takes the device's last known one.
- The duplicate filter (Traccar `filter.enable` and `filter.duplicate`, FilterHandler): a
  position whose time equals the device's latest stored position's time, and whose attribute
  keys that latest position all has, is dropped and answered 200 like any other. Only that: a
  position older than the latest is stored (as history). `duplicate_filter=False` models a server
  without the setting. The latest position is the one with the newest time (a later one of equal
  time replaces it), as Traccar's PostProcessHandler keeps it.

Thread-safe inspection for tests: `positions(device)`, `times(device)`, `duplicates(device)`,
`filtered(device)`, `latest(device)`, `devices()`; `add_device(unique_id)` registers one. Pass
`state=old.state` to a new server to keep everything across a restart.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tracker.testing.faults import (
    Call,
    Faults,
    FaultyServer,
    Reply,
    RequestLog,
    add_fault_arguments,
    faults_from_args,
    run_in_foreground,
    seeded,
)

log = logging.getLogger(__name__)

REQUEST = "position"
DEFAULT_PORT = 5055  # Traccar's OsmAnd port
SECONDS_BELOW = 2**31 - 1  # Java's Integer.MAX_VALUE: a smaller timestamp is in seconds
TEXT = "text/plain; charset=utf-8"
NUMBERS = ("lat", "lon", "speed", "bearing", "heading", "altitude", "accuracy", "hdop", "batt")


@dataclass(frozen=True)
class Position:
    """One stored position. `time_ms` as Traccar keeps it; `speed` in knots as sent; `params`
    exactly as received; `seq` the order of entry."""

    device: str
    time_ms: int
    lat: float
    lon: float
    speed: float | None = None
    course: float | None = None
    altitude: float | None = None
    accuracy: float | None = None
    valid: bool = True
    attributes: dict[str, Any] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    method: str = "GET"
    seq: int = 0

    @property
    def time(self) -> float:
        """Unix seconds."""
        return self.time_ms / 1000


class State:
    """Everything the server knows, behind one lock; survives a restart when the same object is
    passed to the next server. Methods with a leading underscore expect the lock."""

    def __init__(self, devices: Iterable[str] = ()) -> None:
        self.lock = threading.RLock()
        self.devices: set[str] = set(devices)
        self.positions: dict[str, list[Position]] = {}
        self.latest: dict[str, Position] = {}
        self.filtered: dict[str, int] = {}
        self.requests = RequestLog()
        self.next_seq = 1


def _number(params: dict[str, str], key: str) -> float | None:
    if key not in params:
        return None
    x = float(params[key])  # ValueError: malformed
    if not math.isfinite(x):
        raise ValueError(f"{key} is not finite: {params[key]!r}")
    return x


def parse_timestamp(value: str) -> int:
    """An OsmAnd `timestamp` -> milliseconds, as Traccar reads it. Raises ValueError."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        t = int(text)
        return t * 1000 if t < SECONDS_BELOW else t
    if "T" in text:
        d = datetime.fromisoformat(text.replace("Z", "+00:00"))
    else:
        d = datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return round(d.timestamp() * 1000)


def _attribute(value: str) -> Any:
    try:
        return float(value)
    except ValueError:
        return {"true": True, "false": False}.get(value, value)


class OsmAndApp:
    """The protocol side (tracker.testing.faults.App)."""

    def __init__(self, state: State, clock: Callable[[], float], *, register_unknown: bool,
                 duplicate_filter: bool) -> None:  # fmt: skip
        self.state = state
        self.clock = clock
        self.register_unknown = register_unknown
        self.duplicate_filter = duplicate_filter

    def parse(self, method: str, path: str, headers: Any, body: bytes) -> Call:
        _, _, query = path.partition("?")
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        json_body = headers.get("Content-Type", "").startswith("application/json")
        if not pairs and body and not json_body:  # Traccar reads the body only then
            pairs = urllib.parse.parse_qsl(body.decode("ascii", "replace"), keep_blank_values=True)
        return Call(REQUEST, dict(pairs), None, {"method": method, "json": json_body})

    def process(self, call: Call) -> Reply:
        p = call.params
        if call.data["json"]:  # Traccar's JSON form (Transistorsoft): not modelled
            return Reply(400, b"", TEXT, summary="JSON body not modelled")
        device = p.get("id", p.get("deviceid", ""))
        with self.state.lock:
            if not device or (device not in self.state.devices and not self.register_unknown):
                return Reply(400, b"", TEXT, summary=f"unknown device {device!r}")
            self.state.devices.add(device)
            try:
                pos = self._position(device, call)
            except ValueError as e:
                return Reply(400, b"", TEXT, summary=f"malformed: {e}")
            latest = self.state.latest.get(device)
            if self.duplicate_filter and _duplicate(pos, latest):
                self.state.filtered[device] = self.state.filtered.get(device, 0) + 1
                return Reply(200, b"", TEXT, summary=f"duplicate t={pos.time_ms} dropped")
            self.state.next_seq += 1
            self.state.positions.setdefault(device, []).append(pos)
            if latest is None or pos.time_ms >= latest.time_ms:
                self.state.latest[device] = pos
        return Reply(200, b"", TEXT, summary=f"stored t={pos.time_ms}")

    def _position(self, device: str, call: Call) -> Position:
        p = dict(call.params)
        if "location" in p and not ("lat" in p and "lon" in p):
            p["lat"], _, p["lon"] = p["location"].partition(",")
        values = {k: _number(p, k) for k in NUMBERS}
        lat, lon = values["lat"], values["lon"]
        if lat is None or lon is None:
            raise ValueError("no lat/lon")
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise ValueError(f"position out of range: {lat}, {lon}")
        time_ms = (parse_timestamp(p["timestamp"]) if "timestamp" in p
                   else round(self.clock() * 1000))  # fmt: skip
        attributes: dict[str, Any] = {}
        if values["hdop"] is not None:
            attributes["hdop"] = values["hdop"]
        if values["batt"] is not None:
            attributes["batteryLevel"] = values["batt"]
        known = {*NUMBERS, "id", "deviceid", "timestamp", "location", "valid"}
        for key, value in p.items():
            if key not in known:
                attributes[key] = _attribute(value)
        course = values["bearing"] if values["bearing"] is not None else values["heading"]
        return Position(
            device, time_ms, lat, lon, speed=values["speed"], course=course,
            altitude=values["altitude"], accuracy=values["accuracy"],
            valid=p.get("valid", "true").lower() in ("true", "1"), attributes=attributes,
            params=dict(call.params), method=call.data["method"], seq=self.state.next_seq,
        )  # fmt: skip


def _duplicate(pos: Position, latest: Position | None) -> bool:
    """Traccar's FilterHandler.filterDuplicate: the same time as the latest position, and no
    attribute the latest one lacks."""
    return (
        latest is not None
        and pos.time_ms == latest.time_ms
        and all(key in latest.attributes for key in pos.attributes)
    )


class OsmAndServer(FaultyServer):
    """A Traccar-like OsmAnd server on `host:port` (see the module docstring for its readings).

    `devices`: the registered unique identifiers (default: "tracker-1"). `seed` seeds the
    fault RNG as in the other test servers.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        devices: Iterable[str] | None = None,
        faults: Faults | None = None,
        seed: int | None = None,
        state: State | None = None,
        clock: Callable[[], float] = time.time,
        *,
        register_unknown: bool = False,
        duplicate_filter: bool = True,
    ) -> None:
        self.state = state if state is not None else State(
            ["tracker-1"] if devices is None else devices
        )  # fmt: skip
        self.osmand = OsmAndApp(self.state, clock, register_unknown=register_unknown,
                                duplicate_filter=duplicate_filter)  # fmt: skip
        super().__init__(
            self.osmand, host=host, port=port, faults=seeded(faults, seed),
            requests=self.state.requests, clock=clock,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def duplicate_filter(self) -> bool:
        return self.osmand.duplicate_filter

    @duplicate_filter.setter
    def duplicate_filter(self, on: bool) -> None:
        self.osmand.duplicate_filter = on

    def add_device(self, unique_id: str) -> None:
        with self.state.lock:
            self.state.devices.add(unique_id)

    def devices(self) -> set[str]:
        with self.state.lock:
            return set(self.state.devices)

    def positions(self, device: str) -> list[Position]:
        """The device's stored positions in the order received (duplicates dropped by the
        filter are not stored)."""
        with self.state.lock:
            return list(self.state.positions.get(device, []))

    def times(self, device: str) -> list[float]:
        """The stored positions' times, unix seconds, in the order received."""
        return [p.time for p in self.positions(device)]

    def latest(self, device: str) -> Position | None:
        with self.state.lock:
            return self.state.latest.get(device)

    def duplicates(self, device: str) -> list[Position]:
        """Stored positions whose time an earlier stored position of the device already had."""
        seen: set[int] = set()
        dups = []
        for p in self.positions(device):
            if p.time_ms in seen:
                dups.append(p)
            seen.add(p.time_ms)
        return dups

    def filtered(self, device: str) -> int:
        """How many positions of the device the duplicate filter dropped."""
        with self.state.lock:
            return self.state.filtered.get(device, 0)


# -- command line -------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help="port (default %(default)s, as Traccar; 0: any)")  # fmt: skip
    parser.add_argument("--device", action="append", metavar="ID",
                        help="a registered device id (repeatable; default tracker-1)")  # fmt: skip
    parser.add_argument("--register-unknown", action="store_true",
                        help="accept any device id (database.registerUnknown)")  # fmt: skip
    parser.add_argument("--no-duplicate-filter", action="store_true",
                        help="store a position of an already stored time")  # fmt: skip
    add_fault_arguments(parser)


def main(args: argparse.Namespace) -> int:
    """Run a server in the foreground until SIGINT/SIGTERM; one log line a request."""
    try:
        faults = faults_from_args(args)
    except ValueError as e:
        print(f"tracker: {e}", file=sys.stderr)
        return 2
    devices = args.device or ["tracker-1"]
    server = OsmAndServer(args.host, args.port, devices, faults, seed=args.seed,
                          register_unknown=args.register_unknown,
                          duplicate_filter=not args.no_duplicate_filter)  # fmt: skip
    return run_in_foreground(server, lambda: (
        f"OsmAnd (Traccar) test server at {server.url} devices={sorted(devices)} "
        f"duplicate_filter={server.duplicate_filter} {faults!r}"
    ))  # fmt: skip


def _cli(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tracker.testing.osmand",
        description="A Traccar-like OsmAnd server with scripted faults, for tests and demos.",
    )
    add_arguments(parser)
    return main(parser.parse_args(None if argv is None else list(argv)))


if __name__ == "__main__":
    sys.exit(_cli())
