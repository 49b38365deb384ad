"""The TOML configuration: parsed once at start, every key validated.

A bad file never half-starts the daemon: `load()` raises ConfigError with one line that names the
file, the key and what is wrong, and the CLI turns it into exit code 2. Every section and key is
listed in SCHEMA below; anything else is an error too (a typo such as `baudrte` must not be
silently ignored on a unit that then runs at the wrong speed for a whole ride).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

# ConfigError and validate are re-exported: the rest of tracker imports them from here. The
# validators keep the short private names the SCHEMA below is written with.
from tracker.validate import ConfigError, credential_exists, key_text, secret, validate
from tracker.validate import boolean as _bool
from tracker.validate import bounded as _bounded
from tracker.validate import nonempty_str as _str
from tracker.validate import one_of as _one_of
from tracker.validate import pos_float as _pos_float
from tracker.validate import pos_int as _pos_int
from tracker.validate import user_path as _path

if TYPE_CHECKING:
    from tracker.activity import Rules
    from tracker.button_config import ButtonConfig
    from tracker.inputs_config import InputConfig
    from tracker.sensors.config import SensorConfig

DEFAULT_PATH = Path("/etc/tracker/tracker.toml")

# The Map My Tracks API's lists (../shared/seeds/000_…): start_activity and upload_activity accept
# these activity types only. The seed lists "hiking" and "stand up paddle boarding" twice.
ACTIVITY_TYPES = (
    "running", "cycling", "mountain biking", "sailing", "walking", "hiking", "driving",
    "motor racing", "off road driving", "motorcycling", "enduro", "skiing",
    "cross country skiing", "canoeing", "kayaking", "sea kayaking", "stand up paddle boarding",
    "rowing", "windsurfing", "kiteboarding", "orienteering", "mountaineering", "skating",
    "skateboarding", "longboarding", "horse riding", "hang gliding", "gliding", "flying",
    "snowboarding", "paragliding", "hot air ballooning", "nordic walking",
)  # fmt: skip
PRIVACY = ("public", "private")
TITLE_MAX = 100
TAG_MAX = 50


@dataclass(frozen=True)
class GpsConfig:
    device: str = "/dev/serial0"
    baudrate: int = 9600
    reconnect_max_s: float = 30.0


@dataclass(frozen=True)
class ShareConfig:
    """[share] (tracker/share.py): serve the NMEA read to TCP clients; off without the key."""

    nmea_tcp: str | None = None  # host:port, e.g. "0.0.0.0:10110"


@dataclass(frozen=True)
class StorageConfig:
    path: Path = Path("/var/lib/tracker/tracker.db")
    commit_interval_s: float = 1.0
    max_mb: float = 1024.0
    prune: str = "drop_oldest"


@dataclass(frozen=True)
class ActivityConfig:
    """[activity]: when an activity starts, pauses and ends (tracker/activity.py), and what it
    is called. `start_speed_mps` None: the activity type's default (START_SPEEDS);
    `idle_stop_s` None: 900 s in "auto" mode, no idle end in "always" and "manual"."""

    start: str = "auto"
    resume_window_s: float = 1800.0
    title: str = "{Type} {start:%Y-%m-%d %H:%M}"
    type: str = "cycling"
    privacy: str = "private"
    tags: tuple[str, ...] = ()
    start_speed_mps: float | None = None
    max_hdop: float = 5.0
    start_after_s: float = 10.0
    idle_stop_s: float | None = None
    paused_points: str = "thin"
    timezone: str = "UTC"

    def rules(self) -> Rules:
        from tracker.activity import DEFAULT_IDLE_STOP_S, Rules, start_speed_for

        idle = self.idle_stop_s
        if idle is None and self.start == "auto":
            idle = DEFAULT_IDLE_STOP_S
        return Rules(
            mode=self.start,
            start_speed_mps=self.start_speed_mps or start_speed_for(self.type),
            max_hdop=self.max_hdop,
            start_after_s=self.start_after_s,
            idle_stop_s=idle,
            paused_points=self.paused_points,
            resume_window_s=self.resume_window_s,
        )

    def title_for(self, started_at: float) -> str:
        """The title for an activity starting at `started_at` (GPS time), in `timezone`."""
        return render_title(self.title, self.type, started_at, self.timezone)


def render_title(template: str, activity_type: str, started_at: float, tz: str = "UTC") -> str:
    """`{type}`, `{Type}` and `{start:<strftime>}` fields (str.format) or, in a template
    without braces, strftime fields (the older form); dates in the time zone `tz`."""
    return _fill_title(template, activity_type, started_at, tz)[:TITLE_MAX]


def _fill_title(template: str, activity_type: str, started_at: float, tz: str) -> str:
    start = datetime.fromtimestamp(started_at, UTC).astimezone(zone(tz))
    if "{" in template:
        return template.format(type=activity_type, Type=activity_type.capitalize(), start=start)
    return start.strftime(template)


def zone(name: str) -> tzinfo:
    if name == "UTC":
        return UTC
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


@dataclass(frozen=True)
class TimeConfig:
    """[time] (docs/time.md): set the system clock from the GPS once when it is more than
    60 s off (needs CAP_SYS_TIME)."""

    set_system_clock: bool = False


@dataclass(frozen=True)
class WebConfig:
    """[web] (tracker/web.py): the status page. Off without the section. Anywhere but the
    loopback a token is required (inline, token_file, or the credential web-token)."""

    # (key, systemd credential), as a backend's Settings.SECRET; tracker/web.py reads it.
    SECRET: ClassVar[tuple[str, str]] = ("token", "web-token")

    listen: str = "127.0.0.1:8080"
    token: str = field(default="", repr=False)
    token_file: Path | None = None
    tiles_url: str = ""  # e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png; "": no map

    def check(self) -> None:
        host, _ = split_listen(self.listen)
        if not _loopback(host) and not (
            self.token or self.token_file or credential_exists(self.SECRET[1])
        ):
            raise ValueError(
                f"token: missing; {self.listen} is reachable from other machines, so the page "
                f"needs a token (token, token_file or the systemd credential {self.SECRET[1]})"
            )


def split_listen(text: str) -> tuple[str, int]:
    """`host:port` (`[v6]:port`) -> (host, port); ValueError naming what is wrong."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port such as 127.0.0.1:8080, got {text!r}")
    return host, int(port)


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen(v: Any) -> str:
    text = _str(v)
    split_listen(text)
    return text


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"


@dataclass(frozen=True)
class Config:
    path: Path | None = None
    gps: GpsConfig = field(default_factory=GpsConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    activity: ActivityConfig = field(default_factory=ActivityConfig)
    log: LogConfig = field(default_factory=LogConfig)
    time: TimeConfig = field(default_factory=TimeConfig)
    button: ButtonConfig | None = None  # None: no [button] section (tracker/button_config.py)
    web: WebConfig | None = None  # None: no [web] section, no status page
    sensors: tuple[SensorConfig, ...] = ()  # the [[sensors]] array of tables
    inputs: tuple[InputConfig, ...] = ()  # the [[inputs]] array (tracker/inputs_config.py)
    share: ShareConfig = field(default_factory=ShareConfig)
    # Backend section -> its Settings (tracker/backends.py), only those present in the file.
    backends: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        # cfg.mapmytracks, cfg.gpsr, ...: a backend's settings, None when its section is absent.
        from tracker.backends import REGISTRY

        if name in REGISTRY:
            return self.backends.get(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


# --- validators: each takes the raw TOML value and returns the typed one or raises ValueError ---
# (the generic ones are in tracker/validate.py; these know this file's sections)


def _title(v: Any) -> str:
    title = _str(v)
    try:
        sample = _fill_title(title, "stand up paddle boarding", 1798761599.0, "UTC")
    except (KeyError, IndexError, AttributeError, TypeError) as e:  # {start.x}, {start[0]}
        raise ValueError(
            f"unknown field {e} in {title!r} (known: {{type}}, {{Type}}, {{start:%Y-%m-%d}})"
        ) from None
    except ValueError as e:
        raise ValueError(f"bad field in {title!r}: {e}") from None
    if len(sample) > TITLE_MAX:
        raise ValueError(f"longer than {TITLE_MAX} characters once the fields are filled in")
    return title


def _timezone(v: Any) -> str:
    name = _str(v)
    try:
        zone(name)
    except (ValueError, OSError, ImportError) as e:  # ZoneInfoNotFoundError is a KeyError...
        raise ValueError(f"unknown time zone {name!r} ({type(e).__name__})") from None
    except KeyError:
        raise ValueError(f"unknown time zone {name!r} (an IANA name like Europe/Paris)") from None
    return name


def _tags(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(t, str) for t in v):
        raise ValueError(f"expected a list of strings, got {v!r}")
    for tag in v:
        if not tag.strip() or "," in tag or len(tag) > TAG_MAX:
            raise ValueError(f"tag {tag!r} must be 1 to {TAG_MAX} characters without a comma")
    return tuple(t.strip() for t in v)


def _gps_device(v: Any) -> str:
    device = _str(v)
    if device.startswith("gpsd://"):
        from tracker.gpsd import parse_url

        parse_url(device)
    return device


def _level(v: Any) -> str:
    return _one_of("debug", "info", "warning", "error")(str(v).lower())


SCHEMA: dict[str, tuple[type, dict[str, Callable[[Any], Any]]]] = {
    "gps": (
        GpsConfig,
        {"device": _gps_device, "baudrate": _pos_int, "reconnect_max_s": _pos_float},
    ),
    "storage": (
        StorageConfig,
        {
            "path": _path,
            "commit_interval_s": _pos_float,
            "max_mb": _pos_float,
            "prune": _one_of("drop_oldest", "drop_newest"),
        },
    ),
    "activity": (
        ActivityConfig,
        {
            "start": _one_of("auto", "always", "manual"),
            "resume_window_s": _pos_float,
            "title": _title,
            "type": _one_of(*ACTIVITY_TYPES),
            "privacy": _one_of(*PRIVACY),
            "tags": _tags,
            "start_speed_mps": _pos_float,
            "max_hdop": _bounded(0.5, 50, "above 50 any fix would count"),
            "start_after_s": _pos_float,
            "idle_stop_s": _bounded(60, 86400, "a red light is not the end of a ride"),
            "paused_points": _one_of("send", "thin", "keep_local"),
            "timezone": _timezone,
        },
    ),
    "log": (LogConfig, {"level": _level}),
    "time": (TimeConfig, {"set_system_clock": _bool}),
    "web": (
        WebConfig,
        {"listen": _listen, "token": secret, "token_file": _path, "tiles_url": _str},
    ),
    "share": (ShareConfig, {"nmea_tcp": _listen}),
}


def parse(data: dict[str, Any], path: Path | None = None) -> Config:
    """Validate a parsed TOML document; raise ConfigError naming the first bad key."""
    from tracker.backends import REGISTRY, settings_class

    where = f"{path}: " if path else ""
    sections: dict[str, Any] = {}
    backends: dict[str, Any] = {}
    for name, body in data.items():
        if name == "sensors":  # an array of tables, validated entry by entry
            from tracker.sensors.config import parse_sensors

            sections["sensors"] = tuple(parse_sensors(body, where))
            continue
        if name == "inputs":
            from tracker.inputs_config import parse_inputs

            sections["inputs"] = parse_inputs(body, where)
            continue
        if name not in SCHEMA and name != "button" and name not in REGISTRY:
            known = ", ".join([*SCHEMA, "button", *REGISTRY, "sensors", "inputs"])
            raise ConfigError(f"{where}unknown section [{key_text(name)}] (known: {known})")
        if not isinstance(body, dict):
            raise ConfigError(f"{where}[{name}] must be a table")
        cls: type[Any]  # a backend's Settings, the button's, or a SCHEMA section's
        if name in REGISTRY:
            cls = settings_class(name)
            keys = cls.keys()
        elif name == "button":  # its settings live with it, as the sensors' and inputs' do
            from tracker.button_config import KEYS as keys
            from tracker.button_config import ButtonConfig as cls
        else:
            cls, keys = SCHEMA[name]
        section = cls(**validate(body, keys, f"{where}[{name}]"))
        if hasattr(section, "check"):
            try:
                section.check()
            except ValueError as e:
                raise ConfigError(f"{where}[{name}] {e}") from None
        (backends if name in REGISTRY else sections)[name] = section
    return Config(path=path, backends=backends, **sections)


def exposed_secrets(cfg: Config) -> str | None:
    """When the config file holds a password or token inline and users other than its owner
    and group may read it: a one-line warning naming the file and the chmod that fixes it."""
    if cfg.path is None:
        return None
    inline = [f"[{name}] {s.SECRET[0]}" for name, s in cfg.backends.items()
              if s.SECRET is not None and getattr(s, s.SECRET[0], None)]  # fmt: skip
    if cfg.web is not None and cfg.web.token:
        inline.append("[web] token")
    if not inline:
        return None
    try:
        mode = cfg.path.stat().st_mode
    except OSError:
        return None
    if not mode & 0o004:
        return None
    return (
        f"{cfg.path} holds {', '.join(inline)} and every user may read it: "
        f"chmod 640 {cfg.path} (or move the secret to a *_file or a systemd credential)"
    )


def load(path: Path | str) -> Config:
    """Read and validate the TOML file at `path`."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied reading the config file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:  # tomllib decodes the bytes before parsing
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 (byte {e.start})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: arrays or tables nested too deeply") from None
    except OSError as e:  # a directory, an I/O error
        raise ConfigError(f"{path}: cannot read the config file: {e.strerror or e}") from None
    return parse(data, path)
