"""Background jobs that run in their tenant, with RQ (or Celery).

Enqueue a job for a tenant (in a request of a tenant app, or anywhere with
a tenant from the registry); the arguments and options are ``Queue.enqueue``'s::

    from redis import Redis
    from rq import Queue

    from dispatcher import current_tenant
    from dispatcher.jobs import enqueue

    queue = Queue(connection=Redis())
    enqueue(queue, current_tenant, "shop.tasks.send_invoice", invoice_id)

and run workers with the deployment's ``DISPATCHER_*`` variables, as the WSGI
server has them::

    DISPATCHER_APP_FACTORY=shop:create_app rq worker --url redis://localhost:6379/0

The job is :func:`run_in_tenant` with the tenant's slug and identity (its
creation time, :func:`tenant_identity`) before the function and its
arguments. In the worker it enters the tenant's app
(:func:`dispatcher.contexts.app_for` on the worker's dispatcher), where
``current_tenant`` and the tenant's data session work as in a request, and
calls the function there. A job never runs in the wrong place: it fails,
with nothing run and its traceback (``job.latest_result().exc_string``)
saying why, if its tenant was deleted
(:exc:`~dispatcher.exceptions.TenantNotFound`), disabled
(:exc:`~dispatcher.exceptions.TenantDisabledError`), or deleted and created
anew under the same slug (:exc:`TenantReplaced`) since it was enqueued.
A tenant in maintenance mode runs its jobs.

The worker's dispatcher is built once per process from the environment
(:func:`dispatcher.wsgi.make_application`), on its first job, unless
:func:`use_dispatcher` gave one. RQ's default worker forks a process per
job, so each job builds its tenant's app there; ``rq worker --worker-class
rq.worker.SimpleWorker`` runs jobs in the worker itself, which keeps tenants'
apps built from one job to the next (and hears changes as servers do).

The function is given by reference or by import path (``"shop.tasks.send_invoice"``),
and must be importable by the worker: not from ``__main__``, not a lambda.

Celery, the same way: the task carries the slug, the identity and the
function's import path (JSON, Celery's default serializer, cannot carry a
function), and its body is :func:`run_in_tenant`::

    @celery.task
    def in_tenant(slug, identity, function, *args, **kwargs):
        return run_in_tenant(slug, identity, function, *args, **kwargs)

    in_tenant.delay(
        tenant.slug, tenant_identity(tenant), "shop.tasks.send_invoice", invoice_id
    )

Each prefork child builds its dispatcher on its first task; to build it as
the child starts, call ``use_dispatcher(make_application())`` from Celery's
``worker_process_init`` signal.
"""

from __future__ import annotations

import os
import pkgutil
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dispatcher.contexts import app_for
from dispatcher.exceptions import TenantDisabledError, TenantNotFound
from dispatcher.tenant import Tenant, aware

if TYPE_CHECKING:
    from dispatcher.middleware import TenantDispatcher

__all__ = [
    "TenantReplaced",
    "enqueue",
    "run_in_tenant",
    "tenant_identity",
    "use_dispatcher",
]


class TenantReplaced(TenantNotFound):
    """The tenant a job was enqueued for was deleted, and another one now has
    its slug; the job did not run."""


def tenant_identity(tenant: Tenant) -> str:
    """What tells this tenant from another that later gets its slug: its
    creation time, to the microsecond, as ISO 8601 text."""
    return aware(tenant.created_at).isoformat()


def enqueue(
    queue: Any,
    tenant: Tenant,
    func: Callable[..., Any] | str,
    *args: Any,
    **kwargs: Any,
) -> Any:
    """Enqueue ``func(*args, **kwargs)`` on the RQ ``queue``, to run in ``tenant``.

    ``kwargs`` may hold ``Queue.enqueue``'s options (``job_timeout``,
    ``retry``, ``args=``/``kwargs=``...): they are RQ's, as there. The job's
    ``meta["tenant"]`` is the slug; its description names the function and
    the tenant. Returns RQ's ``Job``.

    :raise TenantDisabledError: the tenant is disabled: its job would fail.
    """
    if not isinstance(tenant, Tenant):
        raise TypeError(f"tenant must be a Tenant, not {type(tenant).__name__}")
    if not tenant.is_active:
        raise TenantDisabledError(
            f"tenant {tenant.slug!r} is disabled: a job for it would not run"
        )
    _check_importable(func)
    meta = {**(kwargs.pop("meta", None) or {}), "tenant": tenant.slug}
    kwargs.setdefault("description", f"{_name(func)} in tenant {tenant.slug!r}")
    head = (tenant.slug, tenant_identity(tenant), func)
    if "args" in kwargs or "kwargs" in kwargs:
        # RQ's explicit form: enqueue(f, args=(...), kwargs={...}, job_timeout=...)
        if args:
            raise TypeError(
                "give the function's arguments either after it or as args= and"
                " kwargs=, not both"
            )
        explicit = tuple(kwargs.pop("args", None) or ())
        return queue.enqueue(
            run_in_tenant,
            args=(*head, *explicit),
            kwargs=kwargs.pop("kwargs", None) or {},
            meta=meta,
            **kwargs,
        )
    return queue.enqueue(run_in_tenant, *head, *args, meta=meta, **kwargs)


def run_in_tenant(
    slug: str,
    identity: str,
    func: Callable[..., Any] | str,
    /,
    *args: Any,
    **kwargs: Any,
) -> Any:
    """The job: ``func(*args, **kwargs)`` inside tenant ``slug``'s app, on
    this process's dispatcher, if the tenant is still the one with this
    ``identity`` and is active; its return value is the job's result."""
    function = _resolve(func)
    entered = app_for(worker_dispatcher(), slug)
    with entered:
        assert entered.tenant is not None
        found = tenant_identity(entered.tenant)
        if found != identity:
            raise TenantReplaced(
                f"tenant {slug!r} was created at {found}, not at {identity} as"
                " when this job was enqueued: that tenant was deleted, and this"
                " one is another; the job did not run"
            )
        return function(*args, **kwargs)


_worker_lock = threading.Lock()
# The one place jobs find their dispatcher: RQ and Celery call a function by
# name, with no way to hand it an object. A forked child (RQ's work horse)
# reuses its parent's, which forgets what the parent built (dispatcher.forks).
_worker: TenantDispatcher | None = None


def use_dispatcher(dispatcher: TenantDispatcher | None) -> None:
    """Run this process's jobs on ``dispatcher`` (None: on the environment's,
    built at the next job). Its owner closes it."""
    global _worker
    with _worker_lock:
        _worker = dispatcher


def worker_dispatcher() -> TenantDispatcher:
    """The dispatcher this process's jobs run on: :func:`use_dispatcher`'s, or
    the one the ``DISPATCHER_*`` variables describe, built once."""
    global _worker
    with _worker_lock:
        if _worker is None:
            from dispatcher.wsgi import make_application

            _worker = make_application(os.environ)
        return _worker


def _resolve(func: Callable[..., Any] | str) -> Callable[..., Any]:
    if callable(func):
        return func
    found = pkgutil.resolve_name(func)
    if not callable(found):
        raise TypeError(f"{func!r} names {found!r}, which is not callable")
    return found  # type: ignore[no-any-return]


def _check_importable(func: Callable[..., Any] | str) -> None:
    if isinstance(func, str):
        if "." not in func.strip("."):
            raise ValueError(f"function {func!r} must be an import path, 'module.name'")
        return
    if not callable(func):
        raise TypeError(f"func must be callable or an import path, not {func!r}")
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", "")
    if module == "__main__" or "<" in qualname:
        raise ValueError(
            f"function {_name(func)!r} cannot be found by a worker: give a"
            " module-level function of an importable module"
        )


def _name(func: Callable[..., Any] | str) -> str:
    if isinstance(func, str):
        return func
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None) or repr(func)
    return f"{module}.{qualname}" if module else qualname
