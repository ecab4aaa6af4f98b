"""``tenant_jobs_probe``'s deployment with commands that show how ``tenantctl
each`` runs them: ``DISPATCHER_APP_FACTORY=tenant_run_probe:create_app``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import tenant_jobs_probe
from flask import Flask

from dispatcher.context import current_tenant
from dispatcher.tenant import Tenant

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

    return app
