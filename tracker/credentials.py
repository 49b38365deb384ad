"""Where a secret comes from: the config's inline value, else the first line of a file, else a
systemd credential (LoadCredential=, in $CREDENTIALS_DIRECTORY). Shared by every backend and the
status page's token; a leaf module, so the page need not import the senders' transport."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


class SecretError(Exception):
    """The password could not be read; the message names where it was looked for."""


def read_secret(
    value: str | None,
    file: str | os.PathLike[str] | None,
    credential_name: str | None,
    environ: Mapping[str, str] | None = None,
    *,
    what: str = "password",
) -> str:
    """The secret from `value`, else the first line of `file`, else the systemd credential
    `credential_name` in $CREDENTIALS_DIRECTORY. Trailing newlines are stripped. Raises
    SecretError (naming the places, never the content) when none gives a non-empty secret.
    `what` names the secret in messages and config keys ("password", "token")."""
    env = os.environ if environ is None else environ
    if value:
        return value
    if file:
        return _read_secret_file(Path(file), what)
    directory = env.get("CREDENTIALS_DIRECTORY")
    if credential_name and directory:
        path = Path(directory) / credential_name
        if path.exists():
            return _read_secret_file(path, what)
    raise SecretError(
        f"no {what}: set {what} or {what}_file, or pass the systemd credential "
        f"{credential_name!r} (LoadCredential=)"
    )


def _read_secret_file(path: Path, what: str = "password") -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SecretError(f"cannot read the {what} file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise SecretError(f"the {what} file {path} is not UTF-8 text") from None
    secret = text.rstrip("\r\n")
    if not secret:
        raise SecretError(f"the {what} file {path} is empty")
    return secret
