"""HttpTransport: one requests session per sender, timeouts, TLS, a size cap.

Whatever requests and urllib3 raise is wrapped here, where it enters, into the SendError family
of tracker/senders/transport.py (whose docstring lists the five cases and what each means for a
resend).

Thread safety: one HttpTransport per sender thread (a requests.Session is not shared).
Secrets: the password goes into the session's auth and nowhere else; it is in no message,
no repr and no exception.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import IO, Any
from urllib.parse import urlsplit

import requests
import urllib3.exceptions

from tracker import __version__
from tracker.senders.retry import parse_retry_after
from tracker.senders.transport import (
    MAX_REPLY_BYTES,
    AuthFailed,
    LostReply,
    Rejected,
    Reply,
    SendError,
    Transient,
    Unreachable,
)

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024
PROBE_CONNECT_S, PROBE_READ_S = 10.0, 15.0  # `tracker doctor` waits no longer than this
_warned_plain: set[str] = set()


def _unusable(message: str, kind: str) -> Transient:
    """A 2xx reply that is not the protocol's (`kind`: html, too_large, empty): Transient, and
    the server may have applied the request. `kind` gives each its own once-a-minute log line
    (the sender's rate limit keys on the type and a `kind` attribute, as for gpsr's errors)."""
    e = Transient(message, maybe_applied=True)
    e.kind = kind  # type: ignore[attr-defined]
    return e


class HttpTransport:
    """POSTs (and GETs) to one base URL over one keep-alive session, with basic auth when a
    username is given (Map My Tracks) or none (json-gpsr, whose token is a request field).

    Every call has a connect and a read timeout, and the whole reply must arrive within
    connect + 2 * read timeout (a server dripping one byte at a time cannot hold the sender:
    the body is read one recv at a time, each bounded by the read timeout, and the deadline
    is checked between them; replies are asked for uncompressed so a recv is never held back
    to fill a decoder). A body is read up to `max_reply_bytes` and no further.
    Certificates are verified (`verify` may name a CA bundle). A plain http:// URL works but is
    warned about once per process and URL: basic auth sends the password (a form field the
    token) readable by anyone on the path.
    """

    def __init__(
        self,
        url: str,
        username: str | None,
        password: str | None,
        *,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 30.0,
        max_reply_bytes: int = MAX_REPLY_BYTES,
        verify: bool | str = True,
        name: str = "http",
        session: requests.Session | None = None,
        empty_ok: bool = False,
        secret: str | None = "token",
    ) -> None:
        """`empty_ok`: an empty 2xx body is the protocol's acknowledgement (Traccar), not an
        unusable reply. `secret`: what the plain-http warning says goes in clear text (the
        password with `username`; None when the protocol sends nothing secret)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{name}: not an http(s) URL: {url!r}")
        self.url = url
        self.name = name
        self.timeout = (connect_timeout_s, read_timeout_s)
        self.max_reply_bytes = max_reply_bytes
        self.empty_ok = empty_ok
        self._session = session or requests.Session()
        if username is not None:
            self._session.auth = (username, password or "")
        self._session.verify = verify
        self._session.headers["User-Agent"] = f"tracker/{__version__}"
        self._session.headers["Accept-Encoding"] = "identity"  # replies are a few hundred bytes
        secret = "password" if username is not None else secret
        if parts.scheme == "http" and url not in _warned_plain and secret is not None:
            _warned_plain.add(url)
            log.warning(
                "%s: %s is plain http: the %s goes over the network in clear text%s; use https",
                name,
                url,
                secret,
                " (basic auth)" if username is not None else "",
            )

    def close(self) -> None:
        self._session.close()

    def __repr__(self) -> str:
        return f"<HttpTransport {self.name} {self.url}>"

    def _url(self, path: str) -> str:
        return self.url if not path else self.url.rstrip("/") + "/" + path.lstrip("/")

    def post(
        self,
        fields: Mapping[str, str],
        files: Mapping[str, tuple[str, IO[bytes] | bytes, str]] | None = None,
        *,
        path: str = "",
        what: str | None = None,
    ) -> Reply:
        """POST `fields` form-encoded (multipart when `files` is given) to the URL (or to
        `path` below it) and return the 2xx reply. Raises a SendError subclass for everything
        else. `what` names the request in messages (default: the `request` field)."""
        what = what or fields.get("request", "request")
        return self._request(
            "POST", path, what, data=dict(fields), files=dict(files) if files else None
        )

    def get(self, params: Mapping[str, str], *, path: str = "", what: str = "GET") -> Reply:
        """GET `path` below the URL with query `params`; the same rules as `post`. The query
        is in the URL: callers keep secrets in it out of their own messages."""
        return self._request("GET", path, what, params=dict(params))

    def _request(self, method: str, path: str, what: str, **kwargs: Any) -> Reply:
        """One request with the timeouts, the overall deadline and the error classification."""
        deadline = time.monotonic() + self.timeout[0] + 2 * self.timeout[1]
        try:
            resp = self._session.request(
                method, self._url(path), timeout=self.timeout, stream=True,
                allow_redirects=False, **kwargs,
            )  # fmt: skip
        except requests.exceptions.RequestException as e:
            raise _classify(e, f"{self.name} {what}") from e
        try:
            return self._finish(resp, what, deadline)
        finally:
            resp.close()

    def _finish(self, resp: requests.Response, what: str, deadline: float) -> Reply:
        where = f"{self.name} {what}"
        status = resp.status_code
        retry_after = parse_retry_after(resp.headers.get("Retry-After"), time.time())
        if status in (401, 403):
            raise AuthFailed(f"{where}: HTTP {status}: the server refused the credentials")
        if status in (429, 503):
            raise Transient(f"{where}: HTTP {status}", retry_after_s=retry_after)
        if 300 <= status < 400:
            raise Transient(
                f"{where}: HTTP {status} redirect to {resp.headers.get('Location', '?')!r} "
                "(set the final URL in the config)"
            )
        if status in (400, 413, 422):
            raise Rejected(f"{where}: HTTP {status}: the server refused the request")
        if status >= 500:
            raise Transient(
                f"{where}: HTTP {status}", retry_after_s=retry_after, maybe_applied=True
            )
        if not 200 <= status < 300:
            raise Transient(f"{where}: HTTP {status} (is the URL right?)")
        length = resp.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.max_reply_bytes:
            raise _unusable(
                f"{where}: reply of {int(length)} bytes is over the "
                f"{self.max_reply_bytes}-byte limit",
                "too_large",
            )
        body = bytearray()
        try:
            # read1, not iter_content: iter_content blocks until a whole chunk or the end of
            # the body, so a body dripped one byte a second (each recv well inside the read
            # timeout) would hold the thread for as many seconds as it has bytes.
            while chunk := resp.raw.read1(_CHUNK, decode_content=True):
                body += chunk
                if len(body) > self.max_reply_bytes:
                    raise _unusable(
                        f"{where}: reply over the {self.max_reply_bytes}-byte limit",
                        "too_large",
                    )
                if time.monotonic() > deadline:
                    raise LostReply(f"{where}: reply still incomplete at the time limit")
        except requests.exceptions.RequestException as e:
            raise LostReply(f"{where}: reply cut short: {_reason(e)}") from e
        except urllib3.exceptions.HTTPError as e:  # raised bare by some urllib3 paths
            raise LostReply(f"{where}: reply cut short: {e}") from e
        except OSError as e:
            raise LostReply(f"{where}: reply cut short: {e}") from e
        reply = Reply(status, resp.headers, bytes(body))
        if not reply.body.strip() and not self.empty_ok:
            raise _unusable(f"{where}: empty reply (HTTP {status})", "empty")
        if reply.looks_like_html:
            raise _unusable(
                f"{where}: HTML page instead of a reply (captive portal or proxy?)", "html"
            )
        return reply


_CONNECT_FAILED = (
    urllib3.exceptions.NewConnectionError,  # refused, unreachable, DNS (NameResolutionError)
    urllib3.exceptions.ConnectTimeoutError,
    urllib3.exceptions.SSLError,
    urllib3.exceptions.ProxyError,
)


def _reason(e: BaseException) -> str:
    """The innermost useful message of a requests/urllib3 error, without the URL noise."""
    inner: Any = e.args[0] if e.args else e
    if isinstance(inner, urllib3.exceptions.MaxRetryError) and inner.reason is not None:
        inner = inner.reason
    if isinstance(inner, urllib3.exceptions.ProtocolError) and len(inner.args) > 1:
        inner = inner.args[1]
    return str(inner) or type(inner).__name__


def _classify(e: requests.exceptions.RequestException, where: str) -> SendError:
    """Map a requests error raised before the reply's headers arrived to our family."""
    reason = _reason(e)
    if isinstance(e, requests.exceptions.ConnectTimeout):
        return Unreachable(f"{where}: connect timed out")
    if isinstance(e, requests.exceptions.ReadTimeout):
        return LostReply(f"{where}: no reply within the read timeout")
    if isinstance(e, requests.exceptions.SSLError | requests.exceptions.ProxyError):
        return Unreachable(f"{where}: {type(e).__name__}: {reason}")
    if isinstance(e, requests.exceptions.ConnectionError):
        inner: Any = e.args[0] if e.args else None
        if isinstance(inner, urllib3.exceptions.MaxRetryError):
            inner = inner.reason
        if isinstance(inner, _CONNECT_FAILED):
            return Unreachable(f"{where}: cannot connect: {reason}")
        return LostReply(f"{where}: connection lost before the reply: {reason}")
    if isinstance(e, requests.exceptions.ChunkedEncodingError):
        return LostReply(f"{where}: reply cut short: {reason}")
    # InvalidURL, InvalidHeader, ...: nothing was sent.
    return Unreachable(f"{where}: {type(e).__name__}: {reason}")


def probe_transport(
    settings: Any, name: str, username: str | None = None, password: str | None = None
) -> HttpTransport:
    """The transport a backend's `tracker doctor` probe uses: its URL, shorter timeouts."""
    return HttpTransport(
        settings.url, username, password,
        connect_timeout_s=min(settings.connect_timeout_s, PROBE_CONNECT_S),
        read_timeout_s=min(settings.read_timeout_s, PROBE_READ_S), name=name,
    )  # fmt: skip
