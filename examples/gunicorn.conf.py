"""A gunicorn configuration for the dispatcher, with Prometheus metrics.

Copy it next to your deployment and run::

    pip install 'flask-tenant-dispatcher[metrics]'
    gunicorn -c gunicorn.conf.py 'dispatcher.wsgi:application'

The application is configured by the ``DISPATCHER_*`` variables (see
``dispatcher/wsgi.py``); this file only says how gunicorn runs it. The hooks
imported below migrate the registry once in the master, freeze the master's
heap before each fork, and run the metrics: each worker writes its metrics to
files in ``PROMETHEUS_MULTIPROC_DIR`` (its last counts too, as it exits), and
the master serves the sum of them at ``DISPATCHER_METRICS_ADDRESS`` (on any
path there; nothing but the metrics).
"""

import os

# Metrics on. Set here rather than left to the shell, so every worker has them.
os.environ.setdefault("DISPATCHER_METRICS", "1")
# Where the master serves them: a port of its own, on loopback by default.
# Let your Prometheus reach it; never route visitors to it (it is not on
# `bind`, so the tenants' proxy never sends anyone there by accident).
os.environ.setdefault("DISPATCHER_METRICS_ADDRESS", "127.0.0.1:9464")
# Liveness and readiness for your load balancer: /_health/live, /_health/ready
# on `bind`, beside the tenants (no tenant's path prefix can be "_health").
os.environ.setdefault("DISPATCHER_HEALTH_PATH", "/_health")
# The workers' metric files: a directory of this server's own, emptied by
# on_starting at each start of prometheus_client's files (counter_<pid>.db,
# gauge_livesum_<pid>.db, ...) and of nothing else. Unset, the hooks make a
# temporary one and remove it at exit. It must be set before anything imports
# prometheus_client, which is why it is set here, at the top of the config.
# os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", "/run/tenant-dispatcher/metrics")

# The hooks read the settings above when imported: import them after.
# Every hook the dispatcher needs; define your own after this line to extend
# one (call ours from it), never instead of it.
from dispatcher.gunicorn_conf import (  # noqa: F401
    child_exit,  # drops a dead worker's live gauges from the sums
    on_exit,  # removes the metrics directory the hooks made, if they made one
    on_starting,  # migrates the registry; empties the metrics directory
    post_fork,  # closes the metrics socket in each worker (the master's alone)
    pre_fork,  # gc.freeze() before each worker forks
    when_ready,  # serves the metrics on DISPATCHER_METRICS_ADDRESS
    worker_exit,  # a worker's last counts, copied as it exits
)

# Where visitors reach the tenants (behind your proxy).
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# Sync workers: a handful per CPU. Each worker holds its own built apps (up to
# DISPATCHER_MAX_APPS) and its own change follower.
workers = int(os.environ.get("GUNICORN_WORKERS", "4"))
