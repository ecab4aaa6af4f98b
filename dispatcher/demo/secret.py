"""The demo's deployment secret: ``DISPATCHER_SECRET_KEY``, else a key file.

Every tenant's session key is derived from this one secret
(:func:`dispatcher.sessions.init_tenant_sessions`), so every process of a
deployment must see the same value: a key made up per process would make
``gunicorn -w 2`` log visitors out whenever the other worker answers.

- ``DISPATCHER_SECRET_KEY`` set (and not empty): used as is; shorter than
  :data:`~dispatcher.sessions.MIN_SECRET_BYTES` bytes is refused.
- Unset: the key in :data:`SECRET_FILE` in the working directory (beside the
  demo's default SQLite database), made on first use with a random value and
  mode 0600, and logged as a warning. Processes that start together agree on
  one key: the file appears whole, by ``os.link``, or not at all. A key file
  other users may read is refused, like ssh refuses such a private key.

Production sets ``DISPATCHER_SECRET_KEY`` (the same on every host); the file
is for a demo on one machine.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from dispatcher.sessions import MIN_SECRET_BYTES

__all__ = ["SECRET_FILE", "SECRET_VARIABLE", "deployment_secret"]

log = logging.getLogger(__name__)

SECRET_VARIABLE = "DISPATCHER_SECRET_KEY"
SECRET_FILE = "dispatcher-secret.key"

_HINT = "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def deployment_secret(
    environ: Mapping[str, str] = os.environ, directory: Path | None = None
) -> str:
    """The secret every tenant's session key is derived from.

    ``directory`` (default: the working directory) holds the key file used
    when ``DISPATCHER_SECRET_KEY`` is unset.
    """
    value = environ.get(SECRET_VARIABLE, "")
    if value:
        if len(value.encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"{SECRET_VARIABLE} must be at least {MIN_SECRET_BYTES} bytes long, "
                f"not {len(value.encode())}; {_HINT}"
            )
        return value
    return _read_or_create(Path.cwd() if directory is None else directory)


def _read_or_create(directory: Path) -> str:
    path = (directory / SECRET_FILE).absolute()
    try:
        secret = _read(path)
    except FileNotFoundError:
        pass
    else:
        log.info("%s is unset: using the key in %s", SECRET_VARIABLE, path)
        return secret
    secret = secrets.token_urlsafe(32)
    # Written whole under a name of its own, then linked into place: a process
    # that starts at the same moment reads the winner's key, never half of one.
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(secret + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.link(draft, path)
    except FileExistsError:
        return _read(path)
    finally:
        draft.unlink(missing_ok=True)
    log.warning(
        "%s is unset: made a new deployment secret in %s (mode 0600); sessions "
        "last as long as that file. Set %s in production.",
        SECRET_VARIABLE,
        path,
        SECRET_VARIABLE,
    )
    return secret


def _read(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ValueError(
            f"{path} has mode {mode:04o}: a secret key file must be readable by "
            f"its owner only; chmod 600 it, or set {SECRET_VARIABLE}"
        )
    secret = path.read_text().strip()
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(
            f"{path} holds {len(secret.encode())} bytes: a secret must be at least "
            f"{MIN_SECRET_BYTES}; delete the file to have a new one made, or set "
            f"{SECRET_VARIABLE}"
        )
    return secret
