"""PostgreSQL fixtures for the tests: one throwaway server per session, one fresh
database per test (the server itself: ``torchpbt.testing.postgres``).

Without the server binaries (Debian's ``postgresql`` package; ``.ci/run`` installs it)
every PostgreSQL test is skipped with a reason saying so, or fails when
``TORCHPBT_REQUIRE_PG=1`` (CI), so a CI run can never pass by silently skipping them.

``TORCHPBT_TEST_PG_URL=postgresql+psycopg://USER@HOST:PORT/DB`` uses an existing
server instead (its user needs CREATEDB); ``TORCHPBT_PG_BIN`` names the directory
of ``initdb``/``pg_ctl`` if they are somewhere else.
"""

from __future__ import annotations

import os

import pytest

from torchpbt.testing.postgres import HOW_TO_FIX, PgServer, PgUnavailable, start_server

__all__ = ["HOW_TO_FIX", "PgServer", "PgUnavailable", "pg_server", "pg_url", "start_server",
           "store_url"]


@pytest.fixture(scope="session")
def pg_server():
    """The session's PostgreSQL server (skipped, loudly, if none can be started)."""
    try:
        server = start_server()
    except PgUnavailable as exc:
        message = (f"POSTGRESQL TESTS NOT RUN: cannot start a PostgreSQL server: {exc}. "
                   f"{HOW_TO_FIX}")
        if os.environ.get("TORCHPBT_REQUIRE_PG") == "1":
            pytest.fail(message + " (TORCHPBT_REQUIRE_PG=1: failing instead of skipping)")
        pytest.skip(message)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server):
    """A new, empty database on the session's server, dropped after the test."""
    url = pg_server.new_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """The same test on both backends: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'torchpbt.db'}"
    return request.getfixturevalue("pg_url")
