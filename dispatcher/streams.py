"""The request and response streams the dispatcher wraps.

Response bodies. Each tenant response holds a lease on its app (so an evicted
app is torn down only after its last response), released when the server
calls the body's ``close()``::

    leases = Leases()
    body = leases.wrap(app(environ, start_response), entry, environ)

* A server that drops a body without ``close()`` (a bug, but it happens) must
  not pin the app forever: the lease is released when the body is collected,
  exactly once, and counted in :attr:`Leases.leaked`.
* The wrapping hides nothing a server looks at: a body of the server's
  ``wsgi.file_wrapper`` type comes back as that type (gunicorn and wsgiref
  test ``isinstance(body, environ["wsgi.file_wrapper"])``, and gunicorn then
  uses sendfile), around a proxy of its file whose ``close()`` ends the lease;
  a sized body keeps ``len()`` (wsgiref, waitress and uWSGI send a
  Content-Length for a body of one chunk); an unsized one has no ``__len__``.

Request bodies. :class:`RequestBody` wraps ``wsgi.input`` of requests that
have one: an error the server raises while parsing the body (bad chunked
encoding, a connection that ends early) and a body shorter than its
Content-Length become werkzeug's :exc:`~werkzeug.exceptions.ClientDisconnected`,
a 400, instead of an exception Flask answers with 500.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import ClientDisconnected

from dispatcher.entries import Entry

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

__all__ = ["Leases", "RequestBody", "guard_input"]

log = logging.getLogger(__name__)

#: PEP 3333 leaves the block size to the server; gunicorn's and wsgiref's default.
_BLOCK_SIZE = 8192


class Leases:
    """Wraps one dispatcher's response bodies and counts the leaked ones."""

    __slots__ = ("leaked",)

    def __init__(self) -> None:
        #: Bodies collected without ``close()``; their lease was released then.
        self.leaked = 0

    def wrap(
        self, body: Iterable[bytes], entry: Entry, environ: WSGIEnvironment
    ) -> Iterable[bytes]:
        """``body``, holding a lease on ``entry`` until it is closed or collected."""
        # Servers test isinstance with the class they put in the environ; an
        # app makes one of exactly that class with environ["wsgi.file_wrapper"].
        wrapper = environ.get("wsgi.file_wrapper")
        if type(body) is wrapper:  # never None: that is no type
            return _lease_file(body, wrapper, entry, self)
        # The instance, not its type: hasattr on a type that lacks the
        # attribute builds an AttributeError, five times slower.
        leased = _SizedBody() if hasattr(body, "__len__") else _Body()
        leased._body = body
        leased._entry = entry
        leased._leases = self
        return leased


class _Lease:
    """The lease half of a wrapped body: released once, by close or collection."""

    __slots__ = ("_entry", "_leases")

    _entry: Entry | None
    _leases: Leases

    def _release(self) -> None:
        entry, self._entry = self._entry, None
        if entry is not None:
            entry.release()

    def __del__(self) -> None:
        # The safety net: the server dropped the body without close(). Runs
        # once, when the last reference goes; close() already cleared _entry.
        entry = self._entry
        if entry is not None:
            self._entry = None
            self._leases.leaked += 1
            log.warning(
                "a response of tenant %r was collected without close(); "
                "its app's lease is released now",
                entry.tenant.slug,
                extra={"tenant": entry.tenant.slug},
            )
            entry.release()


class _Body(_Lease):
    """A response body that holds its app's lease until the server closes it."""

    __slots__ = ("_body",)

    _body: Iterable[bytes]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            # _release(), inlined: this runs once per response.
            entry, self._entry = self._entry, None
            if entry is not None:
                entry.release()


class _SizedBody(_Body):
    """A body with a length: a server may send Content-Length for one chunk."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._body)  # type: ignore[arg-type]


class _LeasedFile(_Lease):
    """A file-like object whose ``close()`` also ends its response's lease.

    Everything else (``read``, ``fileno``, ``seek``: what sendfile uses) is the
    file's own.
    """

    __slots__ = ("_file", "_close")

    def __init__(
        self,
        file: Any,
        close: Callable[[], object] | None,
        entry: Entry,
        leases: Leases,
    ) -> None:
        self._file = file
        self._close = close
        self._entry = entry
        self._leases = leases

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def close(self) -> None:
        try:
            if self._close is not None:
                self._close()
        finally:
            self._release()


def _lease_file(
    body: Any, wrapper: Callable[..., Iterable[bytes]], entry: Entry, leases: Leases
) -> Iterable[bytes]:
    """A new ``wrapper`` of ``body``'s file, leased through the file's ``close()``."""
    file = getattr(body, "filelike", None)
    if file is None:  # a wrapper that keeps its file elsewhere: lease it whole
        leased = _Body()
        leased._body, leased._entry, leased._leases = body, entry, leases
        return leased
    # The server's wrapper closes the file it is given; the body's own close
    # (the file's, for gunicorn's and wsgiref's) runs inside ours.
    proxy = _LeasedFile(file, getattr(body, "close", None), entry, leases)
    return wrapper(proxy, getattr(body, "blksize", _BLOCK_SIZE))


# -- the request body ---------------------------------------------------------------


def guard_input(environ: WSGIEnvironment) -> None:
    """Wrap ``environ["wsgi.input"]`` in a :class:`RequestBody`.

    For requests that have a body (a Content-Length or a Transfer-Encoding):
    the caller checks, so that bodiless requests pay nothing more.
    """
    stream = environ.get("wsgi.input")
    if stream is None:
        return
    length: int | None = None
    if "HTTP_TRANSFER_ENCODING" not in environ:
        try:
            length = int(environ.get("CONTENT_LENGTH", ""))
        except ValueError:
            pass  # malformed: werkzeug then reads no body at all
    kind = _RequestBodyInto if hasattr(stream, "readinto") else RequestBody
    environ["wsgi.input"] = kind(stream, length)


class RequestBody:
    """A request's ``wsgi.input`` whose read errors are the client's: 400.

    :param stream: the server's input stream.
    :param length: the request's Content-Length, or None (chunked, unknown):
        the stream ending before ``length`` bytes is an incomplete request.

    Offers what PEP 3333 promises of ``wsgi.input`` (``read``, ``readline``,
    ``readlines``, iteration), ``readinto`` where the server's stream has it,
    and passes any other attribute (``fileno``, ``seek``) through.
    """

    __slots__ = ("_stream", "_missing")

    def __init__(self, stream: Any, length: int | None) -> None:
        self._stream = stream
        self._missing = length if length is not None and length > 0 else 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def read(self, size: int | None = -1) -> bytes:
        data: bytes = _client_errors(self._stream.read, size)
        whole = size is None or size < 0
        self._count(len(data), ended=whole or (not data and size != 0))
        return data

    def readline(self, size: int | None = -1) -> bytes:
        line: bytes = _client_errors(self._stream.readline, size)
        self._count(len(line), ended=not line and size != 0)
        return line

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines, total = [], 0
        for line in self:
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def _count(self, size: int, *, ended: bool) -> None:
        """Count ``size`` bytes read; if the body ``ended`` short, a 400."""
        if self._missing:
            self._missing = max(0, self._missing - size)
            if ended and self._missing:
                raise ClientDisconnected(
                    f"The request body ended {self._missing} bytes short of "
                    "its Content-Length."
                )


class _RequestBodyInto(RequestBody):
    """A :class:`RequestBody` over a stream with ``readinto`` (werkzeug's
    ``LimitedStream`` prefers it, so it gets the same translation)."""

    __slots__ = ()

    def readinto(self, buffer: Any) -> int:
        count: int = _client_errors(self._stream.readinto, buffer)
        # Nothing read into a non-empty buffer: the stream has ended.
        self._count(count, ended=not count and len(memoryview(buffer)) > 0)
        return count


def _client_errors(read: Callable[[Any], Any], argument: Any) -> Any:
    """``read(argument)``, with the server's body-parsing errors as a 400."""
    try:
        return read(argument)
    except Exception as e:
        if not _is_read_error(e):
            raise
        raise _unreadable(e) from e


def _is_read_error(error: Exception) -> bool:
    """Whether the server raised ``error`` because it could not read the body.

    OSError and ValueError, what werkzeug's own ``LimitedStream`` treats as a
    disconnect (werkzeug's dechunking reader, a reset connection, gunicorn's
    ``NoMoreData``), and gunicorn's ``ParseException`` (a bad chunk size or
    terminator), looked up only if gunicorn is the server. A TypeError (a bad
    argument) is the app's own.
    """
    if isinstance(error, (OSError, ValueError)):
        return True
    errors = sys.modules.get("gunicorn.http.errors")
    parse_error = getattr(errors, "ParseException", None)
    return isinstance(parse_error, type) and isinstance(error, parse_error)


def _unreadable(error: Exception) -> ClientDisconnected:
    log.debug("unreadable request body: %r", error)
    return ClientDisconnected("The request body is malformed or incomplete.")
