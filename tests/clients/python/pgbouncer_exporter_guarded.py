"""Debian's prometheus-pgbouncer-exporter (1.7) with each of its collectors guarded, for tests/it/exporter.rs.

Run by the system interpreter (/usr/bin/python3), which has the Debian package and its dependencies
(psycopg2, prometheus_client, configargparse); not by the drivers' virtualenv.

The packaged exporter registers four collectors and dies at startup if any of them raises: its SHOW STATS
collector reads `total_requests`, a column PgBouncer dropped in 1.8, so against PgBouncer 1.18 (and against
pgwarden, which has PgBouncer 1.25's columns) it never serves anything. This script builds the exporter from
the package's own modules the way its cli.main does (the same connection, collectors, databases filter and
HTTP handler); the only difference is that each collector runs inside a guard that turns an exception into
one line on stderr and no metrics for that collector, so the others still export. The test compares what it
serves from PgBouncer with what it serves from pgwarden.

Environment: PGW_HOST, PGW_PORT, PGW_USER (the console user; its password comes from PGPASSWORD, as libpq
reads it), PGW_HTTP_PORT (where to serve /metrics on 127.0.0.1). Prints `LISTENING <port>` once it serves,
and for every failed collection `EXPORTER-ERROR collector=<class> error=<repr of the exception>` (stderr).
"""

import os
import sys
from http.server import HTTPServer

from prometheus_client.core import CollectorRegistry
from prometheus_client.exposition import MetricsHandler
from prometheus_pgbouncer_exporter.collectors import (
    DatabasesCollector,
    ListsCollector,
    PoolsCollector,
    StatsCollector,
)
from prometheus_pgbouncer_exporter.exposition import create_request_handler
from prometheus_pgbouncer_exporter.utils import get_connection


class Guarded:
    """Runs one collector; an exception becomes a line on stderr and no metrics."""

    def __init__(self, inner):
        self.inner = inner

    def collect(self):
        try:
            families = list(self.inner.collect())
        except Exception as err:  # noqa: BLE001 - every failure is reported, none is fatal
            print(
                f"EXPORTER-ERROR collector={type(self.inner).__name__} error={err!r}",
                file=sys.stderr,
                flush=True,
            )
            return []
        return families


def main():
    e = os.environ
    connection = get_connection(e["PGW_USER"], e["PGW_PORT"], e["PGW_HOST"])
    registry = CollectorRegistry(auto_describe=False)
    for collector in (
        StatsCollector(connection=connection, databases=None),
        PoolsCollector(connection=connection, databases=None),
        DatabasesCollector(connection=connection, databases=None),
        ListsCollector(connection=connection),
    ):
        registry.register(Guarded(collector))
    handler = create_request_handler("/nonexistent-licence")
    # The package's handler serves the process-wide REGISTRY; this one serves the guarded registry.
    handler = type("GuardedHandler", (handler,), {"registry": registry})
    assert issubclass(handler, MetricsHandler)
    httpd = HTTPServer(("127.0.0.1", int(e["PGW_HTTP_PORT"])), handler)
    print(f"LISTENING {httpd.server_address[1]}", flush=True)
    try:
        httpd.serve_forever()
    finally:
        connection.close()


if __name__ == "__main__":
    main()
