"""The test databases' URLs, derived from the admin DSN that names the server
(`CREDITS_TEST_PG`), so that every test database lives on that server, as that user."""

from __future__ import annotations

import sqlalchemy as sa
from psycopg.conninfo import conninfo_to_dict

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def database_url(admin_dsn: str, database: str) -> str:
    """A SQLAlchemy URL (psycopg 3) of `database` on the admin DSN's server, as its user.

    Host, port, user and password come from the DSN (URL or `key=value` form); any other
    connection parameter (sslmode, a socket directory as host) rides in the query.
    """
    params = {k: str(v) for k, v in conninfo_to_dict(admin_dsn).items() if v is not None}
    params.pop("dbname", None)
    host = params.pop("host", None)
    port = params.pop("port", None)
    if host is not None and (host.startswith("/") or "," in host):
        params["host"] = host  # a socket directory or several hosts: libpq reads it
        host = None
    if port is not None and "," in port:
        params["port"] = port
        port = None
    url = sa.URL.create(
        "postgresql+psycopg",
        username=params.pop("user", None),
        password=params.pop("password", None),
        host=host,
        port=None if port is None else int(port),
        database=database,
        query=params,
    )
    return url.render_as_string(hide_password=False)
