"""The status page: a small read-only HTTP server the daemon runs when `[web] listen` is set.

One page (tracker/data/status.html: no framework, no external resource, so it works on a boat
or in a field without network) that refreshes itself from a JSON API:

    /                          the page
    /api/status                `tracker status --json` (its `instruments`, the latest boat
                               instrument readings of the current activity, are the newest
                               activity's when none runs), and `web`
    /api/activities            `tracker activities --json`
    /api/track?activity=ID     the activity's track as [[lat, lon], ...] (thinned), for the SVG;
                               without `activity`, the current one (or the newest)
    /export/ID.gpx|.csv|.geojson   one activity as a download

Everything is read from the store through a read-only connection per request: the page can
never change anything, and it sees exactly what `tracker status` sees.

Safe by default: `[web] listen` is 127.0.0.1 unless configured. On any other address a token
is required (config.py refuses to start without one): every request must carry it as
`Authorization: Bearer <token>`, or as `?token=` once, which sets an HttpOnly cookie for the
browser. Compared in constant time.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tracker.config import Config, split_listen
from tracker.store import StoreError, open_store
from tracker.validate import credential_exists
from tracker.worker import run_loop

log = logging.getLogger(__name__)

TRACK_POINTS = 2000  # the most points a track is drawn with (the SVG stays light)
COOKIE = "tracker_token"
CREDENTIAL = "web-token"
EXPORTS = {"gpx": "application/gpx+xml", "csv": "text/csv", "geojson": "application/geo+json"}


def page() -> bytes:
    return resources.files("tracker").joinpath("data/status.html").read_bytes()


def track(store: Any, activity_id: int, limit: int = TRACK_POINTS) -> list[list[float]]:
    """The activity's fixes as [lat, lon], every k-th so that at most `limit` remain (the
    last fix always included, so the track ends where the rider is)."""
    n = store.fix_count(activity_id)
    step = max(1, -(-n // limit))
    out: list[list[float]] = []
    last = None
    for i, f in enumerate(store.iter_fixes(activity_id)):
        last = f
        if i % step == 0:
            out.append([round(f.lat, 6), round(f.lon, 6)])
    if last is not None and (not out or out[-1] != [round(last.lat, 6), round(last.lon, 6)]):
        out.append([round(last.lat, 6), round(last.lon, 6)])
    return out


class _Handler(BaseHTTPRequestHandler):
    server: StatusServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        log.debug("web: %s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if not self._allowed(url.path, query):
            return
        try:
            if url.path == "/":
                self._send(200, "text/html; charset=utf-8", page())
            elif url.path == "/api/status":
                self._json(self.server.with_store(self.server.status))
            elif url.path == "/api/activities":
                self._json(self.server.with_store(self.server.activities))
            elif url.path == "/api/track":
                wanted = query.get("activity", [None])[0]
                self._json(self.server.with_store(lambda s: self.server.track(s, wanted)))
            elif url.path.startswith("/export/"):
                self._export(url.path.removeprefix("/export/"))
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found\n")
        except StoreError as e:
            self._send(503, "text/plain; charset=utf-8", f"{e}\n".encode())
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away

    def _allowed(self, path: str, query: dict[str, list[str]]) -> bool:
        token = self.server.token
        if not token:
            return True
        given = query.get("token", [None])[0]
        if given is not None and hmac.compare_digest(given, token):
            # Once in the URL, then a cookie: the token does not stay in the address bar.
            self.send_response(303)
            self.send_header("Location", path)
            self.send_header("Set-Cookie",
                             f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/")  # fmt: skip
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip(), token):
            return True
        for part in self.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and hmac.compare_digest(value, token):
                return True
        self._send(401, "text/plain; charset=utf-8",
                   b"a token is needed: open the page once as /?token=...\n")  # fmt: skip
        return False

    def _json(self, value: Any) -> None:
        from tracker.plausible import no_nonfinite  # here: the one line web.py needs of it

        # Strict JSON: a non-finite value (an older release's `inf` in the store) is null,
        # never `Infinity`, which a browser's JSON.parse refuses.
        body = json.dumps(no_nonfinite(value), allow_nan=False)
        self._send(200, "application/json", body.encode())

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _export(self, name: str) -> None:
        from tracker import export

        stem, _, fmt = name.partition(".")
        if fmt not in EXPORTS or not stem.isdigit():
            self._send(404, "text/plain; charset=utf-8", b"not found\n")
            return
        write = {"gpx": export.write_gpx, "csv": export.write_csv,
                 "geojson": export.write_geojson}[fmt]  # fmt: skip
        buf = io.StringIO()
        try:
            self.server.with_store(lambda s: write(s, buf, [int(stem)]))
        except KeyError:
            self._send(404, "text/plain; charset=utf-8", b"no such activity\n")
            return
        body = buf.getvalue().encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", EXPORTS[fmt])
        self.send_header("Content-Disposition", f'attachment; filename="activity-{stem}.{fmt}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class StatusServer(ThreadingHTTPServer):
    """The status page's HTTP server. `run(stop)` serves until `stop` is set."""

    daemon_threads = True
    timeout = 0.5  # handle_request() returns this often: the worker loop checks stop

    def __init__(self, cfg: Config, token: str = "") -> None:
        host, port = split_listen(cfg.web.listen)
        self.address_family = _family(host)
        super().__init__((host, port), _Handler)
        self.cfg = cfg
        self.token = token
        self.heartbeat = 0.0

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/"

    def with_store(self, read: Any) -> Any:
        store = open_store(self.cfg.storage.path, readonly=True)
        try:
            return read(store)
        finally:
            store.close()

    def status(self, store: Any) -> dict[str, Any]:
        from tracker import status

        report = status.collect(store, self.cfg)
        report["web"] = {"tiles_url": self.cfg.web.tiles_url or None}
        if report["activity"] is None:  # collect gives the current activity's only
            report["instruments"] = self.instruments(store)
        return report

    def instruments(self, store: Any) -> dict[str, Any]:
        """The latest instrument readings (depth, wind...) of the newest activity, for a page
        looked at after the ride: `{"activity": id, "readings": [...]}`
        (rides.instruments_json)."""
        from tracker import rides

        a = (store.activities() or [None])[-1]
        if a is None:
            return {"activity": None, "readings": []}
        readings = rides.instruments_json(rides.latest_instruments(store, a))
        return {"activity": a.id, "readings": readings}

    def activities(self, store: Any) -> list[dict[str, Any]]:
        from tracker import rides
        from tracker.config import zone

        tz = zone(self.cfg.activity.timezone)
        return [rides.as_json(r, tz) for r in rides.rides(store, self.cfg.activity.rules())]

    def track(self, store: Any, wanted: str | None) -> dict[str, Any]:
        if wanted is not None and wanted.isdigit():
            a = store.activity(int(wanted))
        else:
            a = store.current_activity() or (store.activities() or [None])[-1]
        if a is None:
            return {"activity": None, "points": []}
        return {"activity": a.id, "title": a.title, "points": track(store, a.id)}

    def run(self, stop: threading.Event) -> None:
        def beat(now: float) -> None:
            self.heartbeat = now

        def step() -> float:
            self.handle_request()
            return 0.0

        try:
            run_loop("status page", step, stop, beat=beat)
        finally:
            self.server_close()


def _family(host: str) -> Any:
    import socket

    return socket.AF_INET6 if ":" in host else socket.AF_INET


def start(cfg: Config, stop: threading.Event) -> StatusServer | None:
    """The status page's server in its own thread, or None (no [web], or the address is
    taken: one log line, the daemon runs on)."""
    if cfg.web is None:
        return None
    token = ""
    try:
        token = web_token(cfg)
        server = StatusServer(cfg, token)
    except (OSError, ValueError) as e:
        log.error("status page on %s unavailable: %s; the daemon runs without it",
                  cfg.web.listen, e)  # fmt: skip
        return None
    threading.Thread(target=server.run, args=(stop,), name="web", daemon=True).start()
    log.info("status page at %s%s", server.url, " (token required)" if token else "")
    return server


def web_token(cfg: Config) -> str:
    """The page's token: inline, a file, or the systemd credential web-token; "" for none."""
    from tracker.senders.transport import SecretError, read_secret

    w = cfg.web
    if not (w.token or w.token_file or credential_exists(CREDENTIAL)):
        return ""
    try:
        return read_secret(w.token or None, w.token_file, CREDENTIAL, what="token")
    except SecretError as e:
        raise ValueError(str(e)) from None


