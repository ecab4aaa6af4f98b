"""PostgreSQL's ``LISTEN``/``NOTIFY`` as the change feed's :class:`Notifier`.

The registry takes a notifier once, the way httpx takes a ``transport=``::

    TenantRegistry(url)                                   # PostgreSQL: this one
    TenantRegistry(url, notifier=PostgresNotifier(url, channel="tenants"))
    TenantRegistry(url, notifier=None)                    # followers only poll

``notify`` sends ``pg_notify`` inside the write's transaction, so the wake-up
is delivered at commit and never for a write that rolled back. The payload is
only the generation: followers read the changes from the feed, so a lost
notification costs latency, never a change. Another transport (Redis pub/sub,
say) is one more class with these two methods.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from sqlalchemy import URL, func, make_url, select

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = ["DEFAULT_CHANNEL", "PostgresListener", "PostgresNotifier"]

DEFAULT_CHANNEL = "dispatcher_changes"
_CHANNEL = re.compile(r"[a-z][a-z0-9_]{0,62}")


class PostgresNotifier:
    """Wakes followers with ``NOTIFY <channel>`` at each write's commit.

    :param url: the registry's database URL (the listener connects with it).
    :param channel: a plain identifier, the same in every process.
    :param timeout: seconds a listener's connect may take.
    """

    def __init__(
        self,
        url: str | URL,
        *,
        channel: str = DEFAULT_CHANNEL,
        timeout: float = 5.0,
    ) -> None:
        if not isinstance(channel, str) or not _CHANNEL.fullmatch(channel):
            raise ValueError(
                f"channel {channel!r} must be 1-63 of a-z, 0-9 and '_', "
                "starting with a letter"
            )
        # Checked here: a bad one would fail only in the listener's thread.
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError(f"timeout must be a number of seconds, not {timeout!r}")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(
                f"timeout must be a positive, finite number of seconds, not {timeout!r}"
            )
        self.url = make_url(url)
        self.channel = channel
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"<PostgresNotifier {self.channel!r}>"

    def notify(self, connection: Connection, generation: int) -> None:
        """Announce ``generation`` when ``connection``'s transaction commits."""
        connection.execute(select(func.pg_notify(self.channel, str(generation))))

    def listen(self) -> PostgresListener:
        """A dedicated connection ``LISTEN``-ing on the channel."""
        return PostgresListener(self.url, self.channel, self.timeout)


class PostgresListener:
    """A psycopg connection of its own, ``LISTEN``-ing on one channel."""

    def __init__(self, url: URL, channel: str, timeout: float) -> None:
        import psycopg

        self._connection = psycopg.connect(
            url.set(drivername="postgresql").render_as_string(hide_password=False),
            autocommit=True,
            connect_timeout=connect_timeout(timeout),
        )
        try:
            # The channel was checked to be a plain identifier.
            self._connection.execute(f"LISTEN {channel}")
        except BaseException:
            self._connection.close()
            raise

    def wait(self, timeout: float) -> bool:
        """Whether a notification arrived within ``timeout`` seconds."""
        arrived = False
        for _ in self._connection.notifies(timeout=timeout, stop_after=1):
            arrived = True
        return arrived

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> PostgresListener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def connect_timeout(seconds: float) -> int:
    """libpq's ``connect_timeout`` for a wait of ``seconds``: whole seconds
    (and libpq treats 1 as 2)."""
    return max(1, math.ceil(seconds))
