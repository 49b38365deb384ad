"""HttpTransport: one keep-alive connection per sender, timeouts, TLS, a size cap.

Built on the standard library's http.client and ssl. requests did the same job for a resident
cost of about 11 MB (urllib3, charset_normalizer, idna and their modules), a third of what a
Pi Zero unit may use in all (scripts/bench.py, `memory`); http.client and ssl cost about 5. Of
requests we used one connection, basic auth, form and multipart bodies and its errors: that
is what this module does, and no more (no redirects: a backend's URL is final; no proxies).

Whatever http.client, ssl and the socket raise is wrapped here, where it enters, into the
SendError family of tracker/senders/transport.py (whose docstring lists the five cases and
what each means for a resend).

Thread safety: one HttpTransport per sender thread. Secrets: the password goes into the
Authorization header and nowhere else; it is in no message, no repr and no exception.
"""

from __future__ import annotations

import base64
import http.client
import logging
import select
import socket
import ssl
import time
import uuid
from collections.abc import Mapping
from typing import IO, Any
from urllib.parse import urlencode, urlsplit

from tracker import __version__
from tracker.retry import parse_retry_after
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
    """POSTs (and GETs) to one base URL over one keep-alive connection, with basic auth when a
    username is given (Map My Tracks) or none (json-gpsr, whose token is a request field).

    Every call has a connect and a read timeout, and the whole reply must arrive within
    connect + 2 * read timeout (a server dripping one byte at a time cannot hold the sender:
    the body is read one recv at a time, each bounded by the read timeout, and the deadline
    is checked between them; replies are asked for uncompressed). A body is read up to
    `max_reply_bytes` and no further. Certificates are verified against the system's store
    (`verify` may name a CA bundle instead). A plain http:// URL works but is warned about
    once per process and URL: basic auth sends the password (a form field the token) readable
    by anyone on the path.
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
        empty_ok: bool = False,
        secret: str | None = "token",
    ) -> None:
        """`empty_ok`: an empty 2xx body is the protocol's acknowledgement (Traccar), not an
        unusable reply. `secret`: what the plain-http warning says goes in clear text (the
        password with `username`; None when the protocol sends nothing secret)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{name}: not an http(s) URL: {url!r}")
        try:
            port = parts.port
        except ValueError as e:
            raise ValueError(f"{name}: bad port in {url!r}") from e
        self.url = url
        self.name = name
        self.timeout = (connect_timeout_s, read_timeout_s)
        self.max_reply_bytes = max_reply_bytes
        self.empty_ok = empty_ok
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = port or (443 if self._https else 80)
        self._base_path = parts.path or "/"
        self._verify = verify
        self._context: ssl.SSLContext | None = None  # made at the first https connection
        self._conn: http.client.HTTPConnection | None = None
        self._headers = {"User-Agent": f"tracker/{__version__}"}
        if username is not None:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        secret = "password" if username is not None else secret
        if not self._https and url not in _warned_plain and secret is not None:
            _warned_plain.add(url)
            log.warning(
                "%s: %s is plain http: the %s goes over the network in clear text%s; use https",
                name,
                url,
                secret,
                " (basic auth)" if username is not None else "",
            )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __repr__(self) -> str:
        return f"<HttpTransport {self.name} {self.url}>"

    def _path(self, path: str, query: Mapping[str, str] | None = None) -> str:
        full = self._base_path if not path else self._base_path.rstrip("/") + "/" + path.lstrip("/")
        return full + ("?" + urlencode(query) if query else "")

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
        if files:
            body, ctype = _multipart(fields, files)
        else:
            body, ctype = form(fields), "application/x-www-form-urlencoded"
        return self._request("POST", self._path(path), what, body, ctype)

    def get(self, params: Mapping[str, str], *, path: str = "", what: str = "GET") -> Reply:
        """GET `path` below the URL with query `params`; the same rules as `post`. The query
        is in the URL: callers keep secrets in it out of their own messages."""
        return self._request("GET", self._path(path, params), what, None, None)

    # -- one request ---------------------------------------------------------------------

    def _connection(self, where: str) -> http.client.HTTPConnection:
        """The kept-alive connection, or a new one (Unreachable when it cannot be made: then
        nothing was sent). A kept connection the server has closed meanwhile (it is readable:
        end of file) is replaced before anything is sent on it."""
        conn = self._conn
        if conn is not None and (conn.sock is None or _readable(conn.sock)):
            conn.close()
            conn = self._conn = None
        if conn is not None:
            return conn
        connect_s, read_s = self.timeout
        if self._https:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=connect_s,
                                               context=self._ssl_context())  # fmt: skip
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=connect_s)
        try:
            conn.connect()
        except TimeoutError:
            conn.close()
            raise Unreachable(f"{where}: connect timed out") from None
        except ssl.SSLError as e:  # CertificateError is one
            conn.close()
            raise Unreachable(f"{where}: SSLError: {_reason(e)}") from e
        except OSError as e:  # refused, unreachable, no such host
            conn.close()
            raise Unreachable(f"{where}: cannot connect: {_reason(e)}") from e
        assert conn.sock is not None
        conn.sock.settimeout(read_s)
        self._conn = conn
        return conn

    def _ssl_context(self) -> ssl.SSLContext:
        if self._context is None:
            if self._verify is False:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            elif isinstance(self._verify, str):
                ctx = ssl.create_default_context(cafile=self._verify)
            else:
                ctx = ssl.create_default_context()
            self._context = ctx
        return self._context

    def _request(
        self, method: str, target: str, what: str, body: bytes | None, ctype: str | None
    ) -> Reply:
        """One request with the timeouts, the overall deadline and the error classification."""
        where = f"{self.name} {what}"
        deadline = time.monotonic() + self.timeout[0] + 2 * self.timeout[1]
        conn = self._connection(where)
        headers = dict(self._headers)
        if ctype is not None:
            headers["Content-Type"] = ctype
        done = False
        try:
            try:
                conn.request(method, target, body=body, headers=headers)
                resp = conn.getresponse()
            except TimeoutError:
                raise LostReply(f"{where}: no reply within the read timeout") from None
            except (http.client.HTTPException, OSError) as e:
                # Sent, or partly: the server may have it. A garbage status line lands here
                # too (http.client's BadStatusLine), as it did with requests.
                raise LostReply(f"{where}: connection lost before the reply: {_reason(e)}") from e
            try:
                reply = self._finish(resp, what, deadline)
            finally:
                resp.close()  # read to its end or not, it must be closed before the next
            done = not resp.will_close
            return reply
        finally:
            if not done:
                # An error, a body not read to its end, or the server's `Connection: close`:
                # this connection cannot carry the next request.
                self.close()

    def _finish(self, resp: http.client.HTTPResponse, what: str, deadline: float) -> Reply:
        where = f"{self.name} {what}"
        status = resp.status
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
            # read1: one recv at most, so a body dripped one byte a second (each recv well
            # inside the read timeout) is checked against the deadline at every byte.
            while chunk := resp.read1(_CHUNK):
                body += chunk
                if len(body) > self.max_reply_bytes:
                    raise _unusable(
                        f"{where}: reply over the {self.max_reply_bytes}-byte limit",
                        "too_large",
                    )
                if time.monotonic() > deadline:
                    raise LostReply(f"{where}: reply still incomplete at the time limit")
            if resp.length:  # read1 ends quietly at end of file: bytes of Content-Length left
                raise http.client.IncompleteRead(bytes(body), resp.length)
        except TimeoutError:
            raise LostReply(f"{where}: reply cut short: read timed out") from None
        except (http.client.HTTPException, OSError) as e:  # IncompleteRead, a reset
            raise LostReply(f"{where}: reply cut short: {_reason(e)}") from e
        # Header names lower-cased: the Reply is a plain mapping (HTTPMessage is not one).
        reply = Reply(status, {k.lower(): v for k, v in resp.getheaders()}, bytes(body))
        if not reply.body.strip() and not self.empty_ok:
            raise _unusable(f"{where}: empty reply (HTTP {status})", "empty")
        if reply.looks_like_html:
            raise _unusable(
                f"{where}: HTML page instead of a reply (captive portal or proxy?)", "html"
            )
        return reply


# Left as they are in a form body: RFC 3986 allows these sub-delimiters and ':' in a query
# unescaped, and every form parser splits on '&' and '=' only. A JSON value (json-gpsr's
# `fixes`) is full of them: escaped, each costs three bytes of mobile data instead of one.
FORM_SAFE = ":,[]"


def form(fields: Mapping[str, str]) -> bytes:
    """`fields` as an application/x-www-form-urlencoded body, without needless escapes."""
    return urlencode(fields, safe=FORM_SAFE).encode()


def _readable(sock: socket.socket) -> bool:
    """Whether an idle kept-alive socket has something to read: the server's end of file (it
    closed the connection) or bytes nobody asked for. Either way it is not reusable."""
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _reason(e: BaseException) -> str:
    """A short message of a socket, ssl or http.client error."""
    if isinstance(e, http.client.IncompleteRead):
        return f"IncompleteRead ({len(e.partial)} bytes read)"
    if isinstance(e, ssl.SSLCertVerificationError):
        return e.verify_message or str(e)
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _multipart(
    fields: Mapping[str, str], files: Mapping[str, tuple[str, IO[bytes] | bytes, str]]
) -> tuple[bytes, str]:
    """A multipart/form-data body (RFC 7578) of `fields` then `files`, and its content type."""
    boundary = uuid.uuid4().hex
    out = bytearray()
    for key, value in fields.items():
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(key)}"\r\n\r\n'
                ).encode() + str(value).encode() + b"\r\n"  # fmt: skip
    for key, (filename, content, ctype) in files.items():
        data = content if isinstance(content, bytes) else content.read()
        disposition = f'form-data; name="{_quote(key)}"; filename="{_quote(filename)}"'
        out += (f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                f"Content-Type: {ctype}\r\n\r\n").encode()  # fmt: skip
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def _quote(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def probe_transport(
    settings: Any, name: str, username: str | None = None, password: str | None = None
) -> HttpTransport:
    """The transport a backend's `tracker doctor` probe uses: its URL, shorter timeouts."""
    return HttpTransport(
        settings.url, username, password,
        connect_timeout_s=min(settings.connect_timeout_s, PROBE_CONNECT_S),
        read_timeout_s=min(settings.read_timeout_s, PROBE_READ_S), name=name,
    )  # fmt: skip


__all__ = ["HttpTransport", "SendError", "probe_transport"]
