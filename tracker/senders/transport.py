"""What every sender shares about HTTP, without loading requests: one exception family, the
reply, and reading a secret. The session itself is HttpTransport in tracker/senders/http.py,
which wraps whatever requests and urllib3 raise, where it enters, into SendError and its
subclasses, so the senders handle five cases and nothing else:

- Unreachable: the connection was never made (DNS, refused, connect timeout, TLS handshake).
  The server surely did not see the request: resending is safe.
- LostReply: the request went out and no complete reply came back (read timeout, reset,
  a body cut short). The server may have applied it: the sender must find out before resending.
- Transient: the server answered, but not usefully (500, 502, 503, 429, a redirect, an HTML
  page from a captive portal, an empty or oversized reply). `retry_after_s` carries a
  Retry-After; `maybe_applied` says whether the server may still have applied the request
  (True for a 500 or an unreadable 200, False for 429/503, which refuse before doing anything).
- AuthFailed: 401/403. Retrying cannot help until the configuration changes.
- Rejected: the server understood and refused the data for good (its XML error, 400, 413).

Thread safety: one HttpTransport per sender thread (its connection is not shared).
Secrets: the password goes into the session's auth and nowhere else; it is in no message,
no repr and no exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

# Where secrets come from is its own module (the page reads its token too); the senders have
# always taken these two from here.
from tracker.credentials import SecretError, read_secret  # noqa: F401

if TYPE_CHECKING:
    from email.message import Message

MAX_REPLY_BYTES = 1024 * 1024


class SendError(Exception):
    """Base of everything a send can fail with. `maybe_applied`: the server may have acted
    on the request although no usable reply came back."""

    maybe_applied = False

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unreachable(SendError):
    """No connection was made; the server did not see the request."""


class LostReply(SendError):
    """Sent, but no complete reply: ambiguous."""

    maybe_applied = True


class Transient(SendError):
    """The server answered, but not with a usable reply; try again later."""

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        maybe_applied: bool = False,
    ) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.maybe_applied = maybe_applied


class AuthFailed(SendError):
    """The server refused the credentials (401/403)."""


class Rejected(SendError):
    """The server refused the request's data for good."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete HTTP reply whose status was 2xx; `body` is at most MAX_REPLY_BYTES."""

    status: int
    headers: Mapping[str, str] | Message[str, str] = field(repr=False)  # http.client's too
    body: bytes

    @property
    def looks_like_html(self) -> bool:
        ctype = self.headers.get("content-type", "").lower()
        head = self.body[:256].lstrip().lower()
        return "html" in ctype or head.startswith((b"<!doctype html", b"<html"))


