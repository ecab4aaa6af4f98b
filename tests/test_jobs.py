"""Jobs that run in their tenant: enqueued with dispatcher.jobs, run by a real
``rq worker`` process on the machine's Redis, on a real registry and real
tenant data (``tenant_jobs_probe``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tenant_jobs_probe
from flask import Flask
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus

from dispatcher import CachePolicy, Tenant, TenantDispatcher, TenantRegistry
from dispatcher.data import TenantData
from dispatcher.demo.data import Base
from dispatcher.exceptions import TenantDisabledError, TenantNotFound
from dispatcher.jobs import (
    TenantReplaced,
    enqueue,
    run_in_tenant,
    tenant_identity,
    use_dispatcher,
)

TESTS = Path(__file__).parent
#: A Redis database of these tests' own: it must be empty when they start,
#: and is emptied after each.
REDIS_URL = "redis://127.0.0.1:6379/14"
#: Upper bound for a job to run (only reached when a test fails), and the
#: moment a burst worker gets to exit once its jobs have run.
WAIT = 60
EXIT_WAIT = 2


@pytest.fixture
def redis() -> Iterator[Redis]:
    connection = Redis.from_url(REDIS_URL)
    try:
        connection.ping()
    except Exception as e:  # noqa: BLE001 - any reason means no Redis here
        pytest.skip(f"no Redis at {REDIS_URL}: {e}")
    if connection.dbsize():
        pytest.skip(f"{REDIS_URL} holds keys of someone else's: not touching it")
    yield connection
    connection.flushdb()
    connection.close()


@pytest.fixture
def queue(redis: Redis) -> Queue:
    return Queue(f"jobs-{uuid.uuid4().hex[:8]}", connection=redis)


@pytest.fixture
def data(tenant_data_location: dict[str, Any]) -> Iterator[TenantData]:
    data = TenantData(metadata=Base.metadata, **tenant_data_location)
    yield data
    data.dispose()


def create(registry: TenantRegistry, data: TenantData, slug: str) -> Tenant:
    tenant = registry.create_tenant(
        slug, owner_email=f"owner@{slug}.test", subdomain=slug
    )
    return data.create(tenant)


@pytest.fixture
def tenants(registry: TenantRegistry, data: TenantData) -> dict[str, Tenant]:
    return {slug: create(registry, data, slug) for slug in ("acme", "beta")}


@pytest.fixture
def environ(database_url: str, tenant_data_location: dict[str, Any]) -> dict[str, str]:
    """The deployment's variables, as the worker and the probe read them."""
    environ = {
        "DISPATCHER_DATABASE_URL": database_url,
        "DISPATCHER_APP_FACTORY": "tenant_jobs_probe:create_app",
        "DISPATCHER_DEFAULT_APP": "tenant_data_probe:landing",
        "DISPATCHER_TENANT_DATA": "",
        "PROBE_DATA_URL": tenant_data_location["url"],
    }
    if "directory" in tenant_data_location:
        environ["PROBE_DATA_DIRECTORY"] = str(tenant_data_location["directory"])
    return environ


def work(
    queue: Queue,
    jobs: list[Job],
    environ: dict[str, str],
    tmp_path: Path,
    *options: str,
) -> None:
    """An ``rq worker`` in burst mode, until it has run ``jobs``.

    Then it is given a moment to exit and killed (by its PID) if it has not:
    a burst worker whose work is done sometimes takes up to a minute to close
    its pub/sub connection (RQ's listener thread waits 60 s for a message).
    """
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "rq"), "worker", "--burst"]
        + ["--url", REDIS_URL, *options, queue.name],
        env={
            **os.environ,
            **environ,
            "PYTHONPATH": os.pathsep.join(
                [str(TESTS), os.environ.get("PYTHONPATH", "")]
            ),
        },
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for job in jobs:
            outcome = job.latest_result(timeout=WAIT)
            assert outcome is not None, f"{job.description} did not run"
        try:
            worker.wait(timeout=EXIT_WAIT)
        except subprocess.TimeoutExpired:
            worker.kill()
    finally:
        if worker.poll() is None:
            worker.kill()
        _, errors = worker.communicate(timeout=WAIT)
    assert worker.returncode in (0, -signal.SIGKILL), errors


def notes_of(slug: str, environ: dict[str, str]) -> int:
    """How many notes tenant ``slug``'s data holds, read here on a dispatcher
    of this process's own."""
    from dispatcher.wsgi import make_application

    saved = dict(os.environ)
    os.environ.update(environ)
    tenant_jobs_probe._made.clear()
    dispatcher = make_application(environ)
    try:
        with dispatcher.app_for(slug):
            return tenant_jobs_probe.count_notes()
    finally:
        dispatcher.close()
        dispatcher.registry.close()
        tenant_jobs_probe.data().dispose()
        tenant_jobs_probe._made.clear()
        os.environ.clear()
        os.environ.update(saved)


def failure(job: Job) -> str:
    """The job's traceback, as RQ recorded its failure."""
    job.refresh()
    assert job.get_status() == JobStatus.FAILED
    result = job.latest_result()
    assert result is not None and result.exc_string is not None
    return result.exc_string


def finished(job: Job) -> Any:
    """The job's return value; it must have run."""
    job.refresh()
    result = job.latest_result()
    assert job.get_status() == JobStatus.FINISHED, result and result.exc_string
    return job.return_value()


def test_a_job_runs_in_its_tenant_and_writes_its_data_only(
    tenants: dict[str, Tenant],
    queue: Queue,
    environ: dict[str, str],
    tmp_path: Path,
) -> None:
    for_acme = enqueue(queue, tenants["acme"], tenant_jobs_probe.add_note, "one")
    again = enqueue(queue, tenants["acme"], "tenant_jobs_probe.add_note", "two")
    for_beta = enqueue(queue, tenants["beta"], tenant_jobs_probe.add_note, body="b")
    work(queue, [for_acme, again, for_beta], environ, tmp_path)
    for job, slug in ((for_acme, "acme"), (again, "acme"), (for_beta, "beta")):
        assert finished(job) == slug
    assert notes_of("acme", environ) == 2
    assert notes_of("beta", environ) == 1


def test_a_job_for_a_deleted_tenant_fails_and_runs_nowhere(
    registry: TenantRegistry,
    tenants: dict[str, Tenant],
    queue: Queue,
    environ: dict[str, str],
    tmp_path: Path,
) -> None:
    job = enqueue(queue, tenants["acme"], tenant_jobs_probe.add_note, "lost")
    registry.delete_tenant("acme")
    work(queue, [job], environ, tmp_path)
    assert "TenantNotFound: no tenant has the slug 'acme'" in failure(job)
    assert notes_of("beta", environ) == 0


def test_a_job_for_a_tenant_deleted_and_created_anew_fails(
    registry: TenantRegistry,
    data: TenantData,
    tenants: dict[str, Tenant],
    queue: Queue,
    environ: dict[str, str],
    tmp_path: Path,
) -> None:
    job = enqueue(queue, tenants["acme"], tenant_jobs_probe.add_note, "for the old")
    registry.delete_tenant("acme")
    new = create(registry, data, "acme")
    assert tenant_identity(new) != tenant_identity(tenants["acme"])
    work(queue, [job], environ, tmp_path)
    exc_info = failure(job)
    assert "TenantReplaced: tenant 'acme' was created at" in exc_info
    assert "the job did not run" in exc_info
    assert notes_of("acme", environ) == 0


def test_a_job_for_a_disabled_tenant_fails(
    registry: TenantRegistry,
    tenants: dict[str, Tenant],
    queue: Queue,
    environ: dict[str, str],
    tmp_path: Path,
) -> None:
    job = enqueue(queue, tenants["acme"], tenant_jobs_probe.add_note, "late")
    registry.disable_tenant("acme", reason="unpaid")
    work(queue, [job], environ, tmp_path)
    assert "TenantDisabledError: tenant 'acme' is disabled (unpaid)" in failure(job)
    registry.enable_tenant("acme")
    assert notes_of("acme", environ) == 0


def test_a_simple_worker_keeps_the_tenants_app_between_jobs(
    tenants: dict[str, Tenant],
    queue: Queue,
    environ: dict[str, str],
    tmp_path: Path,
) -> None:
    jobs = [
        enqueue(queue, tenants[slug], tenant_jobs_probe.where_am_i)
        for slug in ("acme", "acme", "beta")
    ]
    work(queue, jobs, environ, tmp_path, "--worker-class", "rq.worker.SimpleWorker")
    places = [finished(job) for job in jobs]
    (pid, acme_app, first), (pid2, acme_app2, second), (pid3, beta_app, third) = places
    assert (first, second, third) == ("acme", "acme", "beta")
    assert pid == pid2 == pid3
    assert acme_app == acme_app2 != beta_app


# -- enqueueing ------------------------------------------------------------------


def test_enqueue_names_the_tenant_and_passes_rqs_options_on(
    tenants: dict[str, Tenant], queue: Queue
) -> None:
    job = enqueue(
        queue,
        tenants["acme"],
        tenant_jobs_probe.add_note,
        args=("hello",),
        kwargs={},
        job_timeout=30,
        meta={"by": "test"},
    )
    assert job.meta == {"by": "test", "tenant": "acme"}
    assert job.timeout == 30
    assert job.description == "tenant_jobs_probe.add_note in tenant 'acme'"
    identity = tenant_identity(tenants["acme"])
    assert job.args == ("acme", identity, tenant_jobs_probe.add_note, "hello")
    plain = enqueue(queue, tenants["acme"], tenant_jobs_probe.add_note, "x", body2=1)
    assert plain.kwargs == {"body2": 1}


def test_enqueue_refuses_what_a_worker_could_not_run(
    registry: TenantRegistry, tenants: dict[str, Tenant], queue: Queue
) -> None:
    disabled = registry.disable_tenant("beta")
    with pytest.raises(TenantDisabledError, match="'beta'"):
        enqueue(queue, disabled, tenant_jobs_probe.add_note, "x")
    with pytest.raises(ValueError, match="importable"):
        enqueue(queue, tenants["acme"], lambda: None)
    with pytest.raises(ValueError, match="'add_note'"):
        enqueue(queue, tenants["acme"], "add_note")
    with pytest.raises(TypeError, match="Tenant"):
        enqueue(queue, "acme", tenant_jobs_probe.add_note)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not both"):
        enqueue(queue, tenants["acme"], tenant_jobs_probe.add_note, "x", args=("y",))
    assert queue.count == 0


# -- the runner, in this process ------------------------------------------------------


@pytest.fixture
def dispatcher(registry: TenantRegistry) -> Iterator[TenantDispatcher]:
    def create_app(tenant: Tenant) -> Flask:
        return Flask(f"tenant_{tenant.slug}")

    dispatcher = TenantDispatcher(
        registry, create_app, policy=CachePolicy(poll_interval=None)
    )
    use_dispatcher(dispatcher)
    yield dispatcher
    use_dispatcher(None)
    dispatcher.close()


def slug_here() -> str:
    from dispatcher import current_tenant

    return current_tenant.slug


def test_run_in_tenant_on_a_given_dispatcher(
    dispatcher: TenantDispatcher, registry: TenantRegistry, data: TenantData
) -> None:
    acme = create(registry, data, "acme")
    assert run_in_tenant("acme", tenant_identity(acme), slug_here) == "acme"
    with pytest.raises(TenantReplaced, match="'acme'") as raised:
        run_in_tenant("acme", "2000-01-01T00:00:00+00:00", slug_here)
    assert isinstance(raised.value, TenantNotFound)
    with pytest.raises(TenantNotFound, match="'beta'"):
        run_in_tenant("beta", tenant_identity(acme), slug_here)


def test_enqueue_in_a_request_takes_current_tenant(
    dispatcher: TenantDispatcher,
    registry: TenantRegistry,
    data: TenantData,
    queue: Queue,
) -> None:
    from dispatcher import current_tenant

    acme = create(registry, data, "acme")
    with dispatcher.app_for("acme"):
        job = enqueue(queue, current_tenant, slug_here)
    assert job.meta["tenant"] == "acme"
    assert job.args[:2] == ("acme", tenant_identity(acme))
