"""The `[[inputs]]` entries of the configuration (tracker/inputs.py, docs/boats.md).

Beside the inputs, as the sensors' settings are beside them (tracker/sensors/config.py): the
configuration parses them without importing the readers (pyserial, the decoder). A bad entry
is one ConfigError line naming it and the key (`inputs[1].url: ...`, counted from 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tracker.validate import ConfigError, nonempty_str, pos_float, pos_int, validate


@dataclass(frozen=True)
class InputConfig:
    """One `[[inputs]]` entry: an NMEA instrument stream."""

    name: str
    url: str  # a serial device or pyserial URL, tcp://host:port, udp://:port
    baudrate: int = 4800  # serial only: NMEA 0183's speed (38400 for NMEA 0183-HS, AIS)
    reconnect_max_s: float = 30.0  # longest wait between attempts to reopen it


def split_host_port(url: str, scheme: str, *, host_required: bool) -> tuple[str, int]:
    """`scheme://host:port` -> (host, port); ValueError naming what is wrong."""
    rest = url[len(scheme) + 3 :]
    host, sep, port = rest.rstrip("/").rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 < int(port) <= 65535 or "/" in host:
        raise ValueError(f"expected {scheme}://host:port, got {url!r}")
    if host_required and not host:
        raise ValueError(f"expected {scheme}://host:port with a host, got {url!r}")
    return host, int(port)


def check_input_url(url: str) -> str:
    """An `[[inputs]]` url: tcp://host:port, udp://[host]:port, or a serial device or pyserial
    URL (opened as such); ValueError naming what is wrong."""
    if url.startswith("tcp://"):
        split_host_port(url, "tcp", host_required=True)
    elif url.startswith("udp://"):
        split_host_port(url, "udp", host_required=False)
    elif url.startswith("gpsd://"):
        raise ValueError("gpsd:// is a GPS source ([gps] device), not an input")
    return url


def _url(v: Any) -> str:
    return check_input_url(nonempty_str(v))


def _name(v: Any) -> str:
    name = nonempty_str(v)
    if not all(c.isalnum() or c in "-_." for c in name) or len(name) > 32:
        raise ValueError(f"expected up to 32 letters, digits, '-', '_' or '.', got {v!r}")
    return name


INPUT_KEYS: dict[str, Callable[[Any], Any]] = {
    "name": _name,
    "url": _url,
    "baudrate": pos_int,
    "reconnect_max_s": pos_float,
}


def parse_inputs(body: Any, where: str = "") -> tuple[InputConfig, ...]:
    """The `[[inputs]]` array of tables; ConfigError naming the entry and key
    (`inputs[1].url: ...`, counted from 1 as a rider counts them)."""
    if not isinstance(body, list) or not all(isinstance(e, dict) for e in body):
        raise ConfigError(f"{where}inputs must be an array of tables ([[inputs]])")
    out: list[InputConfig] = []
    for i, entry in enumerate(body, 1):
        at = f"{where}inputs[{i}]"
        values = validate(entry, INPUT_KEYS, at, sep=".")
        for key in ("name", "url"):
            if key not in values:
                raise ConfigError(f"{at}.{key}: missing")
        if any(e.name == values["name"] for e in out):
            raise ConfigError(f"{at}.name: {values['name']!r} is used twice (names must differ)")
        out.append(InputConfig(**values))
    return tuple(out)
