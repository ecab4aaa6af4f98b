"""``tenantctl run`` and ``tenantctl each``: a tenant app's own Flask commands,
in one tenant or in every tenant (see :mod:`dispatcher.contexts`).

::

    tenantctl run acme -- send-digest --dry-run
    tenantctl each --jobs 4 -- send-digest

The dispatcher is the deployment's, built from the ``DISPATCHER_*`` variables
as the server builds it (:func:`dispatcher.wsgi.make_application`), with
tenantctl's ``--database-url`` and ``--base-domain``. The command runs inside
:func:`~dispatcher.contexts.app_for`: ``current_tenant`` and the tenant's
data session work as in a request. The commands are the app's ``app.cli``
ones and Flask's own (``shell``, ``routes``), as ``flask`` would offer them.

``each`` builds the dispatcher once and runs every tenant's command in a
child process forked from its own (``--jobs`` of them at a time): a command
may keep module-level state or not be thread-safe, and nothing one tenant's
run leaves behind can reach the next's, yet a tenant costs a fork, not a new
interpreter importing everything again. The parent never builds a tenant's
app and holds no database connection when it forks; :mod:`dispatcher.forks`
resets the rest in each child. Each tenant's output (stdout and stderr, at
the file descriptors: a subprocess's or C code's too) is captured and printed
whole when it ends, each line prefixed with the slug, so parallel runs never
interleave; a summary of the failures ends it.

``tenantctl`` imports this module to register the commands, so the helpers
it shares with it are imported when a command runs (``tests/test_layering.py``).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import click

from dispatcher.settings import BASE_DOMAIN_VARIABLE, DATABASE_URL_VARIABLE
from dispatcher.tenant import TenantStatus

if TYPE_CHECKING:
    from dispatcher.middleware import TenantDispatcher

__all__ = ["each", "run", "run_command"]

_PASS_THROUGH = {"ignore_unknown_options": True, "allow_interspersed_args": False}


@click.command(context_settings=_PASS_THROUGH)
@click.argument("slug")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option(
    "--allow-disabled",
    is_flag=True,
    help="Run in a disabled tenant too (its app is built for this run alone).",
)
@click.option(
    "--traceback",
    "show_traceback",
    is_flag=True,
    help="Print the traceback of an exception the command raised.",
)
@click.pass_context
def run(
    ctx: click.Context,
    slug: str,
    command: tuple[str, ...],
    allow_disabled: bool,
    show_traceback: bool,
) -> None:
    """Run one of a tenant app's Flask commands in that tenant.

    Options go before SLUG, the command and its arguments after '--':
    tenantctl run acme -- send-digest --dry-run. The exit status is the
    command's; '-- --help' lists the commands.
    """
    if command[0] == "--":
        # After SLUG, click passes the separator on with the rest.
        command = command[1:]
    if not command:
        from dispatcher.cli import BadInput

        raise BadInput("name the command to run after '--'")
    dispatcher = _dispatcher(ctx)
    code = run_command(
        dispatcher,
        slug,
        command,
        allow_disabled=allow_disabled,
        show_traceback=show_traceback,
    )
    ctx.exit(code)


def run_command(
    dispatcher: TenantDispatcher,
    slug: str,
    command: Sequence[str],
    *,
    allow_disabled: bool = False,
    show_traceback: bool = False,
) -> int:
    """Run the Flask command ``command`` (its name and arguments) in tenant
    ``slug``'s app; its exit status.

    Raises tenantctl's one-line errors for an unknown tenant or command.
    """
    from flask import Flask
    from flask.cli import FlaskGroup

    from dispatcher.cli import BadInput, Failed, _escape
    from dispatcher.contexts import app_for

    with app_for(dispatcher, slug, allow_disabled=allow_disabled) as app:
        if not isinstance(app, Flask):
            raise Failed(
                f"tenant {slug!r} is served by {type(app).__name__}, not a Flask"
                " app: it has no Flask commands"
            )
        # The app is built already: no FLASK_APP, no .env, no debug flag.
        group = FlaskGroup(
            create_app=lambda: app,
            add_version_option=False,
            load_dotenv=False,
            set_debug_flag=False,
        )
        try:
            result = group.main(
                list(command), prog_name=f"tenantctl run {slug}", standalone_mode=False
            )
        except click.UsageError as e:
            raise BadInput(f"tenant {slug!r}: {e.format_message()}") from e
        except click.ClickException as e:
            # The command's own ClickException: its message, its exit code.
            click.echo(
                f"Error: tenant {slug!r}: {_escape(e.format_message())}", err=True
            )
            return e.exit_code
        except click.Abort as e:
            raise Failed(f"tenant {slug!r}: {command[0]!r} aborted") from e
        except Exception as e:
            if show_traceback:
                traceback.print_exc()
            raise Failed(
                f"{command[0]!r} failed in tenant {slug!r}: "
                f"{type(e).__name__}: {e}"
                + ("" if show_traceback else " (--traceback shows where)")
            ) from e
    # An int is an exit status (click's --help, ctx.exit(3)); a command's
    # return value is not.
    if isinstance(result, int) and not isinstance(result, bool):
        return result
    return 0


def _dispatcher(ctx: click.Context) -> TenantDispatcher:
    """The deployment's dispatcher, with this invocation's database and domain;
    closed (with its registry) when the command ends."""
    from dispatcher.cli import BadInput, refuse_missing_registry
    from dispatcher.wsgi import make_application

    obj: dict[str, Any] = ctx.ensure_object(dict)
    # A tenant's command may write, but never to a registry made up here.
    refuse_missing_registry(obj["database_url"])
    environ = {
        **os.environ,
        DATABASE_URL_VARIABLE: obj["database_url"],
        BASE_DOMAIN_VARIABLE: obj["base_domain"] or "",
    }
    try:
        dispatcher = make_application(environ)
    except ValueError as e:
        raise BadInput(str(e)) from e
    ctx.call_on_close(dispatcher.registry.close)
    ctx.call_on_close(dispatcher.close)
    return dispatcher


@dataclass(frozen=True, slots=True)
class _Outcome:
    slug: str
    code: int
    output: str


@click.command(context_settings=_PASS_THROUGH)
@click.option(
    "--status",
    type=click.Choice([status.value for status in TenantStatus]),
    default=TenantStatus.ACTIVE.value,
    show_default=True,
    help="Run in the tenants with this status.",
)
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Tenants run at a time, each in a process of its own.",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def each(ctx: click.Context, status: str, jobs: int, command: tuple[str, ...]) -> None:
    """Run one of the tenant apps' Flask commands in every tenant.

    Put the command after '--': tenantctl each --jobs 4 -- send-digest.
    Each tenant runs in a process of its own, forked from this one; its
    output is printed whole when it ends, each line prefixed with its slug.
    The exit status is 1 if the command failed in any tenant.
    """
    from dispatcher.cli import Failed

    dispatcher = _dispatcher(ctx)
    slugs = [tenant.slug for tenant in dispatcher.registry.list_tenants(status)]
    if not slugs:
        click.echo(f"no {status} tenants", err=True)
        return
    # A pooled connection used by two processes would interleave their
    # messages: the children open their own.
    dispatcher.registry.engine.dispose()
    # What every run imports (tenantctl itself does not): once, here.
    for name in ("dispatcher.contexts", "flask.cli", "flask.testing"):
        importlib.import_module(name)
    progress = _Progress(len(slugs))
    failures: list[_Outcome] = []

    def show(outcome: _Outcome) -> None:
        progress.clear()
        for line in outcome.output.splitlines():
            click.echo(f"{outcome.slug}: {line}")
        if outcome.code != 0:
            failures.append(outcome)
        progress.advance(failed=len(failures))

    _run_forked(
        lambda slug: _run_in_child(
            dispatcher,
            slug,
            command,
            allow_disabled=status == TenantStatus.DISABLED,
        ),
        slugs,
        jobs=jobs,
        show=show,
    )
    progress.clear()
    if failures:
        listed = ", ".join(
            f"{outcome.slug} (exit {outcome.code})"
            for outcome in sorted(failures, key=lambda outcome: outcome.slug)
        )
        raise Failed(f"{len(failures)} of {len(slugs)} tenants failed: {listed}")
    click.echo(f"done in {len(slugs)} tenants", err=True)


def _run_forked(
    child: Callable[[str], int],
    slugs: Sequence[str],
    *,
    jobs: int,
    show: Callable[[_Outcome], None],
) -> None:
    """``child(slug)`` for each slug in a child process forked from this one,
    at most ``jobs`` at a time; ``show`` gets each outcome as its child ends.

    This process must have no other thread and no pooled connection: the
    children would share them. If this one is interrupted, the children are
    terminated.
    """
    running: dict[int, tuple[str, IO[bytes]]] = {}

    def reap() -> None:
        pid, status = os.waitpid(-1, 0)
        if pid not in running:  # not ours: started by something else in here
            return
        slug, output = running.pop(pid)
        with output:
            output.seek(0)
            text = output.read().decode("utf-8", "replace")
        show(_Outcome(slug, os.waitstatus_to_exitcode(status), text))

    try:
        for slug in slugs:
            while len(running) >= jobs:
                reap()
            # A file, not a pipe: the child never blocks on a full pipe while
            # this process waits for another child.
            output = tempfile.TemporaryFile()
            running[_fork(child, slug, output)] = (slug, output)
        while running:
            reap()
    finally:
        for pid, (_, left) in running.items():
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
            left.close()


def _fork(child: Callable[[str], int], slug: str, output: IO[bytes]) -> int:
    """Fork a child that runs ``child(slug)`` with its stdin on /dev/null and
    its stdout and stderr in ``output``, and exits with its status; its pid."""
    # What Python still buffers would be written again by every child.
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError as e:  # too many processes, no memory
        from dispatcher.cli import Failed

        raise Failed(f"could not fork a process for tenant {slug!r}: {e}") from e
    if pid != 0:
        return pid
    code = 1
    try:
        nothing = os.open(os.devnull, os.O_RDONLY)
        os.dup2(nothing, 0)
        os.close(nothing)
        # At the descriptors, so a subprocess's or C code's output is caught.
        os.dup2(output.fileno(), 1)
        os.dup2(output.fileno(), 2)
        code = child(slug)
    finally:
        # Never back into the parent's code: no atexit handler, no click
        # cleanup of the parent's (its registry's close, say) runs here.
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _run_in_child(
    dispatcher: TenantDispatcher,
    slug: str,
    command: Sequence[str],
    *,
    allow_disabled: bool,
) -> int:
    """What ``tenantctl run SLUG -- COMMAND`` does, in a forked child: the
    command's exit status, an error as its one line on stderr."""
    from dispatcher.cli import Failed, one_line
    from dispatcher.exceptions import DispatcherError

    try:
        try:
            return run_command(dispatcher, slug, command, allow_disabled=allow_disabled)
        finally:
            dispatcher.close()
            dispatcher.registry.close()
    except SystemExit as e:  # the command's sys.exit()
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        click.echo(e.code, err=True)
        return 1
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except DispatcherError as e:
        error: click.ClickException = one_line(e)  # as tenantctl's group does
    except Exception as e:
        error = Failed(
            f"{command[0]!r} failed in tenant {slug!r}: {type(e).__name__}: {e}"
        )
    error.show()
    return error.exit_code


class _Progress:
    """``N/M tenants, K failed`` on one line of an interactive stderr."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.shown = sys.stderr.isatty()

    def advance(self, *, failed: int) -> None:
        self.done += 1
        if self.shown:
            click.echo(
                f"\r{self.done}/{self.total} tenants, {failed} failed",
                err=True,
                nl=False,
            )

    def clear(self) -> None:
        if self.shown and self.done:
            click.echo("\r\x1b[K", err=True, nl=False)
