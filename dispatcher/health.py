"""Liveness and readiness endpoints for load balancers and Kubernetes probes.

A small WSGI app beside the dispatcher, mounted on a path (no tenant's path
prefix can be ``_health``, but a tenant app's own ``/_health`` route is hidden
behind the mount) or served on a port of its own::

    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from dispatcher.health import HealthApp

    dispatcher = TenantDispatcher(registry, create_app, base_domain="example.com")
    application = DispatcherMiddleware(dispatcher, {"/_health": HealthApp(dispatcher)})

``GET /live``
    200 while the process answers. It never touches the database: restart a
    process on it (a liveness probe), never on the registry's health, which a
    restart does not fix.
``GET /ready``
    200 when this process can serve: the registry answers one indexed query,
    and the change follower runs and has read the feed within ``max_lag``
    seconds; else 503. The first call starts the follower
    (:meth:`~dispatcher.middleware.TenantDispatcher.follow`), so a worker that
    has served nothing yet is judged like the others.

Both answer a small JSON object (``/ready``: the registry's error class, never
its URL; the follower's generation and lag; what is wrong), with
``Cache-Control: no-store``; only ``GET`` and ``HEAD`` (405 otherwise), other
paths 404. Mounted beside the tenants, ``/_health`` answers on every
tenant's host: the body names no tenant and no URL, but keep it for the
operator's probes (block it at the proxy) or serve the app on a port of its
own. Under a pre-fork server each probe is answered by whichever worker takes
it, judging its own follower.

The registry's answer is remembered for ``check_every`` seconds (2 by default)
per process: every load balancer probing every few seconds costs the database
at most one query per process per interval, and while a check is running (up
to the registry's timeout when the database is down) other probes get the
last answer instead of queuing more queries.

``max_lag`` defaults to ``2 * (poll_interval + registry.timeout)`` (12 s with
the defaults): the follower reads the feed every ``poll_interval`` seconds and
a read may wait up to the registry's timeout before it fails, so the bound
lets one slow or failed poll pass (a blip, a lock held by a migration) and
reports the second.

Every process shares one registry, so when it is down every instance turns
not ready at once, and a load balancer that pulls unready instances (a
Kubernetes Service does; AWS's application and network load balancers fail
open when every target is unhealthy) stops sending the requests the
dispatcher would have served from its cache (``stale_if_error``).
``require_registry=False`` reports the outage in the body and stays ready
through it. A process is still not
ready in either mode if its follower is not running, has never read the feed
(a wrong URL, a missing schema, a worker started during the outage with
nothing cached: it could only answer 503), or lags while the registry answers
(the follower is stuck, not the database). The default requires the registry:
traffic goes only to processes that can serve any tenant, and an outage of one
instance's path to the database takes only that instance out.

A dispatcher that does not follow changes (``poll_interval=None``, a single
process) has no follower to judge: ``/ready`` is the registry's check alone,
and ``"follower"`` is ``null``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Response

from dispatcher import forks
from dispatcher.exceptions import RegistryError

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from dispatcher.middleware import TenantDispatcher

__all__ = ["HealthApp", "Readiness", "judge"]

#: Seconds the registry's answer is remembered by default.
DEFAULT_CHECK_EVERY = 2.0
_METHODS = ("GET", "HEAD")
_HEADERS = {"Cache-Control": "no-store"}


@dataclass(frozen=True)
class Readiness:
    """What ``/ready`` found: each value, and what stops this process serving."""

    #: The registry's error class (``RegistryUnavailable``, ``SchemaMissing``),
    #: None when it answered.
    registry_error: str | None
    require_registry: bool
    #: Whether the dispatcher follows changes (it has a ``poll_interval``).
    following: bool
    running: bool
    generation: int | None
    #: Seconds since the follower last read the feed; None if it never has.
    lag: float | None
    max_lag: float | None
    problems: tuple[str, ...]

    @property
    def ready(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        follower = None
        if self.following:
            follower = {
                "running": self.running,
                "generation": self.generation,
                "lag": None if self.lag is None else round(self.lag, 3),
                "max_lag": self.max_lag,
            }
        return {
            "ready": self.ready,
            "registry": {
                "reachable": self.registry_error is None,
                "error": self.registry_error,
                "required": self.require_registry,
            },
            "follower": follower,
            "problems": list(self.problems),
        }


def judge(
    registry_error: str | None,
    *,
    require_registry: bool,
    following: bool,
    running: bool,
    lag: float | None,
    max_lag: float | None,
) -> tuple[str, ...]:
    """What stops a process serving, from what ``/ready`` found (empty: ready).

    A lag past ``max_lag`` while the registry is down is the outage, not the
    follower: it counts only when the registry is required.
    """
    problems = []
    if registry_error is not None and require_registry:
        problems.append("registry unreachable")
    if following:
        if not running:
            problems.append("follower not running")
        elif lag is None:
            problems.append("change feed never read")
        elif max_lag is not None and lag > max_lag:
            if require_registry or registry_error is None:
                problems.append("change feed read too long ago")
    return tuple(problems)


@dataclass(frozen=True)
class _Check:
    at: float
    error: str | None


class HealthApp:
    """``/live`` and ``/ready`` for one dispatcher (see the module's docstring).

    :param dispatcher: the :class:`~dispatcher.middleware.TenantDispatcher`
        whose registry and follower are judged.
    :param require_registry: whether an unreachable registry makes the process
        not ready (default); False reports it and stays ready.
    :param check_every: seconds the registry's answer is remembered (0: ask
        at every probe).
    :param max_lag: seconds since the follower's last read of the feed past
        which the process is not ready; None: ``2 * (poll_interval + timeout)``.
    :param timer: the clock of ``check_every`` and of the lag; it must be
        :func:`time.monotonic` or run at its pace (the follower's read times
        are ``time.monotonic()``).
    """

    def __init__(
        self,
        dispatcher: TenantDispatcher,
        *,
        require_registry: bool = True,
        check_every: float = DEFAULT_CHECK_EVERY,
        max_lag: float | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dispatcher = dispatcher
        self.require_registry = bool(require_registry)
        self.check_every = _seconds("check_every", check_every, zero=True)
        self.max_lag = None if max_lag is None else _seconds("max_lag", max_lag)
        if not callable(timer):
            raise TypeError(f"timer must be callable, not {timer!r}")
        self._timer = timer
        self._lock = threading.Lock()
        self._last: _Check | None = None
        self._checking = False
        forks.on_fork_in_child(self, HealthApp._forked)

    def _forked(self) -> None:
        """In a forked child: a new lock, and the registry asked anew."""
        self._lock = threading.Lock()
        self._last = None
        self._checking = False

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in ("/live", "/ready"):
            answer = _json(404, {"error": "not found", "paths": ["/live", "/ready"]})
        elif environ.get("REQUEST_METHOD", "GET") not in _METHODS:
            answer = _json(405, {"error": "method not allowed"})
            answer.headers["Allow"] = ", ".join(_METHODS)
        elif path == "/live":
            answer = _json(200, {"live": True})
        else:
            readiness = self.readiness()
            answer = _json(200 if readiness.ready else 503, readiness.as_json())
        return answer(environ, start_response)

    def readiness(self) -> Readiness:
        """Judge this process now; starts the follower if it is not running."""
        follower = self.dispatcher.follow()
        registry_error = self._registry_error()
        running, generation, lag, max_lag = False, None, None, None
        if follower is not None:
            running, generation = follower.running, follower.generation
            read_at = follower.read_at
            if read_at is not None:
                lag = max(0.0, self._timer() - read_at)
            max_lag = self.max_lag
            if max_lag is None:
                max_lag = 2 * (
                    follower.poll_interval + self.dispatcher.registry.timeout
                )
        problems = judge(
            registry_error,
            require_registry=self.require_registry,
            following=follower is not None,
            running=running,
            lag=lag,
            max_lag=max_lag,
        )
        return Readiness(
            registry_error=registry_error,
            require_registry=self.require_registry,
            following=follower is not None,
            running=running,
            generation=generation,
            lag=lag,
            max_lag=max_lag,
            problems=problems,
        )

    def _registry_error(self) -> str | None:
        """The registry's error class, or None: remembered for ``check_every`` s.

        One check at a time, run with no lock held; probes meanwhile get the
        last answer (only the very first ones, with none, ask too).
        """
        with self._lock:
            last = self._last
            if last is not None and (
                self._checking or self._timer() - last.at < self.check_every
            ):
                return last.error
            self._checking = True
        error = None
        try:
            self.dispatcher.registry.latest_generation()
        except RegistryError as e:
            error = type(e).__name__
        except BaseException:
            # A bug, not an answer: nothing to remember.
            with self._lock:
                self._checking = False
            raise
        with self._lock:
            self._checking = False
            self._last = _Check(self._timer(), error)
        return error


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(
        json.dumps(body) + "\n",
        status=status,
        mimetype="application/json",
        headers=_HEADERS,
    )


def _seconds(name: str, value: object, *, zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        rule = "at least 0" if zero else "greater than 0"
        raise ValueError(
            f"{name} must be a finite number of seconds {rule}, not {value!r}"
        )
    return float(value)
