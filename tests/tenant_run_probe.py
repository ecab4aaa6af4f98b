"""``tenant_jobs_probe``'s deployment with commands that show how ``tenantctl
each`` runs them: ``DISPATCHER_APP_FACTORY=tenant_run_probe:create_app``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import click
import tenant_jobs_probe
from flask import Flask

from dispatcher.context import current_tenant
from dispatcher.tenant import Tenant

#: Seconds ``hang`` waits to be killed before it gives up.
HANG_SECONDS = 60.0

# Writes a line to each of its descriptors.
SUBPROCESS = "import sys; print('a subprocess'); print('its stderr', file=sys.stderr)"


def create_app(tenant: Tenant) -> Flask:
    app = tenant_jobs_probe.create_app(tenant)

    @app.cli.command("process")
    def process_command() -> None:
        """This process, its parent and the command line it was started with."""
        argv = Path("/proc/self/cmdline").read_bytes().decode().split("\0")[:-1]
        click.echo(
            json.dumps({"pid": os.getpid(), "parent": os.getppid(), "argv": argv})
        )

    @app.cli.command("outside-python")
    def outside_python_command() -> None:
        """Output Python's sys.stdout never sees: the descriptors', a child's."""
        os.write(1, f"descriptor 1 in {current_tenant.slug}\n".encode())
        os.write(2, f"descriptor 2 in {current_tenant.slug}\n".encode())
        subprocess.run([sys.executable, "-c", SUBPROCESS], check=True, timeout=60)

    @app.cli.command("hang")
    @click.argument("directory", type=click.Path(path_type=Path))
    def hang_command(directory: Path) -> None:
        """Say this process's pid in ``directory``/SLUG.pid, then wait to be killed."""
        written = directory / f"{current_tenant.slug}.part"
        written.write_text(str(os.getpid()))
        written.rename(directory / f"{current_tenant.slug}.pid")  # whole or absent
        threading.Event().wait(HANG_SECONDS)

    return app
