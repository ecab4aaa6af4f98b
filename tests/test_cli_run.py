"""``tenantctl run`` and ``tenantctl each``, as real processes, on a real
registry and real tenant data (``tenant_jobs_probe``'s app and commands, and
``tenant_run_probe``'s)."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher import TenantRegistry
from dispatcher.data import TenantData
from dispatcher.demo.data import Base

TESTS = Path(__file__).parent

Tenantctl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def data(tenant_data_location: dict[str, Any]) -> Iterator[TenantData]:
    data = TenantData(metadata=Base.metadata, **tenant_data_location)
    yield data
    data.dispose()


@pytest.fixture
def tenants(registry: TenantRegistry, data: TenantData) -> None:
    """acme and beta active, gamma disabled; each with its (empty) notes."""
    for slug in ("acme", "beta", "gamma"):
        tenant = registry.create_tenant(
            slug, owner_email=f"owner@{slug}.test", subdomain=slug
        )
        data.create(tenant)
    registry.disable_tenant("gamma", reason="unpaid")


@pytest.fixture
def tenantctl_environ(
    tenant_data_location: dict[str, Any],
) -> dict[str, str]:
    """The deployment's variables: the probe's app on the test's tenant data."""
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "DISPATCHER_APP_FACTORY": "tenant_jobs_probe:create_app",
        "DISPATCHER_DEFAULT_APP": "tenant_data_probe:landing",
        "DISPATCHER_TENANT_DATA": "",
        "PROBE_DATA_URL": tenant_data_location["url"],
    }
    if "directory" in tenant_data_location:
        environ["PROBE_DATA_DIRECTORY"] = str(tenant_data_location["directory"])
    return environ


@pytest.fixture
def tenantctl_command(database_url: str) -> list[str]:
    return [sys.executable, "-m", "dispatcher", "--database-url", database_url]


@pytest.fixture
def tenantctl(
    tenantctl_command: list[str], tenantctl_environ: dict[str, str], tmp_path: Path
) -> Tenantctl:
    def run(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*tenantctl_command, *arguments],
            env=tenantctl_environ,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run


@pytest.fixture
def run_probe(tenantctl_environ: dict[str, str]) -> None:
    """The deployment's app is ``tenant_run_probe``'s."""
    tenantctl_environ["DISPATCHER_APP_FACTORY"] = "tenant_run_probe:create_app"


def one_line_error(finished: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in finished.stderr
    lines = finished.stderr.strip().splitlines()
    assert len(lines) == 1, finished.stderr
    return lines[0]


# -- run --------------------------------------------------------------------------


def test_run_runs_the_command_in_that_tenant_and_its_data_only(
    tenants: None, tenantctl: Tenantctl
) -> None:
    added = tenantctl("run", "acme", "--", "add-note", "hello")
    assert added.returncode == 0, added.stderr
    assert added.stdout == "adding 'hello' to acme\n"
    acme = tenantctl("run", "acme", "--", "count-notes")
    beta = tenantctl("run", "beta", "--", "count-notes")
    assert acme.stdout == "acme has 1 notes\n"
    assert beta.stdout == "beta has 0 notes\n"


def test_run_exits_with_the_commands_status(
    tenants: None, tenantctl: Tenantctl
) -> None:
    finished = tenantctl("run", "acme", "--", "exit-with", "3")
    assert finished.returncode == 3
    assert finished.stdout == "exiting with 3\n"


def test_run_lists_the_apps_commands_and_flasks(
    tenants: None, tenantctl: Tenantctl
) -> None:
    finished = tenantctl("run", "acme", "--", "--help")
    assert finished.returncode == 0, finished.stderr
    for command in ("add-note", "count-notes", "routes", "shell"):
        assert command in finished.stdout


@pytest.mark.parametrize(
    ("arguments", "code", "words"),
    [
        pytest.param(("nobody", "--", "count-notes"), 1, "'nobody'", id="unknown"),
        pytest.param(("Bad!", "--", "count-notes"), 2, "'Bad!'", id="malformed slug"),
        pytest.param(("gamma", "--", "count-notes"), 1, "disabled (unpaid)", id="off"),
        pytest.param(("acme", "--", "nope"), 2, "No such command 'nope'", id="command"),
        pytest.param(("acme", "--", "add-note"), 2, "Missing argument", id="usage"),
        pytest.param(("acme", "--"), 2, "name the command", id="no command"),
        pytest.param(
            ("acme", "--", "fail-in", "acme"),
            1,
            "'fail-in' failed in tenant 'acme': RuntimeError: broken in acme",
            id="raised",
        ),
    ],
)
def test_run_refuses_in_one_line(
    tenants: None,
    tenantctl: Tenantctl,
    arguments: tuple[str, ...],
    code: int,
    words: str,
) -> None:
    finished = tenantctl("run", *arguments)
    assert finished.returncode == code
    assert words in one_line_error(finished)


def test_run_shows_the_commands_traceback_when_asked(
    tenants: None, tenantctl: Tenantctl
) -> None:
    finished = tenantctl("run", "--traceback", "acme", "--", "fail-in", "acme")
    assert finished.returncode == 1
    assert "Traceback" in finished.stderr
    assert "RuntimeError: broken in acme" in finished.stderr


def test_run_in_a_disabled_tenant_when_allowed(
    tenants: None, tenantctl: Tenantctl
) -> None:
    added = tenantctl("run", "--allow-disabled", "gamma", "--", "add-note", "export")
    assert added.returncode == 0, added.stderr
    assert added.stdout == "adding 'export' to gamma\n"


# -- each -------------------------------------------------------------------------


def test_each_runs_in_every_active_tenant(tenants: None, tenantctl: Tenantctl) -> None:
    finished = tenantctl("each", "--", "count-notes")
    assert finished.returncode == 0, finished.stderr
    assert sorted(finished.stdout.splitlines()) == [
        "acme: acme has 0 notes",
        "beta: beta has 0 notes",
    ]
    assert finished.stderr == "done in 2 tenants\n"


def test_each_with_status_disabled(tenants: None, tenantctl: Tenantctl) -> None:
    finished = tenantctl("each", "--status", "disabled", "--", "count-notes")
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout == "gamma: gamma has 0 notes\n"


def test_each_keeps_a_tenants_output_together_in_parallel(
    tenants: None, tenantctl: Tenantctl
) -> None:
    finished = tenantctl("each", "--jobs", "2", "--", "lines", "200")
    assert finished.returncode == 0, finished.stderr
    slugs = [line.split(":", 1)[0] for line in finished.stdout.splitlines()]
    assert len(slugs) == 2 * 400
    # One block per tenant: the slug changes once.
    assert sorted(set(slugs)) == ["acme", "beta"]
    assert sum(a != b for a, b in zip(slugs, slugs[1:], strict=False)) == 1


def test_each_runs_every_tenant_in_a_process_of_its_own(
    tenants: None, tenantctl: Tenantctl
) -> None:
    # The command keeps module-level state: one tenant's run never sees
    # another's, though the same parent forks both, one after the other.
    finished = tenantctl("each", "--jobs", "1", "--", "seen")
    assert finished.stdout.splitlines() == ["acme: seen: acme", "beta: seen: beta"]


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_each_forks_every_tenants_process_from_its_own(
    tenants: None,
    run_probe: None,
    tenantctl_command: list[str],
    tenantctl_environ: dict[str, str],
    tmp_path: Path,
) -> None:
    command = [*tenantctl_command, "each", "--jobs", "2", "--", "process"]
    each = subprocess.Popen(
        command,
        env=tenantctl_environ,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = each.communicate(timeout=120)
    assert each.returncode == 0, stderr
    processes = dict(line.split(": ", 1) for line in stdout.splitlines())
    assert sorted(processes) == ["acme", "beta"]
    seen = [json.loads(process) for process in processes.values()]
    # Children of tenantctl itself, still running its command line: no
    # 'tenantctl run' (no new interpreter) was started for a tenant.
    assert [process["parent"] for process in seen] == [each.pid, each.pid]
    assert [process["argv"] for process in seen] == [command, command]
    assert len({process["pid"] for process in seen} - {each.pid}) == 2


def test_each_captures_output_at_the_descriptors(
    tenants: None, run_probe: None, tenantctl: Tenantctl
) -> None:
    # Written past sys.stdout: to the descriptors, and by a subprocess.
    finished = tenantctl("each", "--jobs", "2", "--", "outside-python")
    assert finished.returncode == 0, finished.stderr
    lines = finished.stdout.splitlines()
    for slug in ("acme", "beta"):
        assert f"{slug}: descriptor 1 in {slug}" in lines
        assert f"{slug}: descriptor 2 in {slug}" in lines
        assert f"{slug}: a subprocess" in lines
        assert f"{slug}: its stderr" in lines
    assert finished.stderr == "done in 2 tenants\n"


def test_each_interrupted_ends_its_children(
    tenants: None,
    run_probe: None,
    tenantctl_command: list[str],
    tenantctl_environ: dict[str, str],
    tmp_path: Path,
) -> None:
    each = subprocess.Popen(
        [*tenantctl_command, "each", "--jobs", "2", "--", "hang", str(tmp_path)],
        env=tenantctl_environ,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pid_files = [tmp_path / "acme.pid", tmp_path / "beta.pid"]
    children: list[int] = []
    try:
        ends = time.monotonic() + 60
        while not all(path.exists() for path in pid_files):
            assert time.monotonic() < ends, "the children never started"
            assert each.poll() is None, each.communicate()
            threading.Event().wait(0.05)
        children = [int(path.read_text()) for path in pid_files]
        each.send_signal(signal.SIGINT)  # Ctrl-C
        _, stderr = each.communicate(timeout=60)
        assert each.returncode == 1
        assert stderr == "\nAborted!\n"  # click's, no traceback
        for child in children:
            with pytest.raises(ProcessLookupError):
                os.kill(child, 0)
    finally:
        each.kill()
        each.wait(timeout=60)
        for child in children:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.parametrize(
    ("command", "code", "shown"),
    [
        pytest.param(("exit-with", "3"), 3, "exiting with 3", id="sys.exit"),
        pytest.param(
            ("nope",), 2, "Error: tenant '{slug}': No such command 'nope'.", id="usage"
        ),
    ],
)
def test_each_sums_up_each_tenants_exit_status(
    tenants: None,
    tenantctl: Tenantctl,
    command: tuple[str, ...],
    code: int,
    shown: str,
) -> None:
    finished = tenantctl("each", "--", *command)
    assert finished.returncode == 1
    assert finished.stdout.splitlines() == [
        f"acme: {shown.format(slug='acme')}",
        f"beta: {shown.format(slug='beta')}",
    ]
    assert one_line_error(finished) == (
        f"Error: 2 of 2 tenants failed: acme (exit {code}), beta (exit {code})"
    )


def test_each_sums_up_the_failures_and_exits_1(
    tenants: None, tenantctl: Tenantctl
) -> None:
    finished = tenantctl("each", "--jobs", "2", "--", "fail-in", "beta")
    assert finished.returncode == 1
    assert "acme: fine" in finished.stdout.splitlines()
    assert (
        "beta: Error: 'fail-in' failed in tenant 'beta': RuntimeError: broken in beta"
        in finished.stdout
    )
    assert one_line_error(finished) == ("Error: 1 of 2 tenants failed: beta (exit 1)")


def test_each_with_no_tenants(registry: TenantRegistry, tenantctl: Tenantctl) -> None:
    finished = tenantctl("each", "--", "count-notes")
    assert finished.returncode == 0
    assert finished.stderr == "no active tenants\n"


def test_each_shows_progress_on_a_terminal(
    tenants: None,
    tenantctl_command: list[str],
    tenantctl_environ: dict[str, str],
    tmp_path: Path,
) -> None:
    # stderr on a terminal (a pseudo-terminal here), stdout on a pipe.
    terminal, stderr = pty.openpty()
    try:
        each = subprocess.Popen(
            [*tenantctl_command, "each", "--", "count-notes"],
            env=tenantctl_environ,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        os.close(stderr)
        shown = b""
        while True:
            try:
                chunk = os.read(terminal, 4096)
            except OSError:  # EIO: the other end closed
                break
            if not chunk:
                break
            shown += chunk
        stdout, _ = each.communicate(timeout=120)
    finally:
        os.close(terminal)
    assert each.returncode == 0
    assert b"\r1/2 tenants, 0 failed" in shown
    assert b"\r2/2 tenants, 0 failed" in shown
    assert shown.endswith(b"done in 2 tenants\r\n")
    # The progress line is the terminal's alone.
    assert sorted(stdout.decode().splitlines()) == [
        "acme: acme has 0 notes",
        "beta: beta has 0 notes",
    ]
