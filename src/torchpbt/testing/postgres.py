"""A throwaway PostgreSQL server: for the tests (``tests/pg.py``) and the benchmarks.

The server is a new cluster (``initdb``) in a temp dir on a free port, run as the
``postgres`` user when the tests run as root (``initdb`` refuses root), with
durability turned off (nothing in it must survive). It is stopped and deleted at
the end (:meth:`PgServer.stop`, also registered with ``atexit``). Without the server
binaries (Debian's ``postgresql`` package) :func:`start_server` raises
:class:`PgUnavailable` saying what is missing and :data:`HOW_TO_FIX` says how to get it.

``TORCHPBT_TEST_PG_URL=postgresql+psycopg://USER@HOST:PORT/DB`` uses an existing
server instead (its user needs CREATEDB); ``TORCHPBT_PG_BIN`` names the directory
of ``initdb``/``pg_ctl`` if they are somewhere else.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

HOW_TO_FIX = (
    "Install the server: `apt-get install -y postgresql` (Debian/Ubuntu; .ci/run does it), "
    "or set TORCHPBT_PG_BIN=/path/to/postgresql/bin, or point TORCHPBT_TEST_PG_URL="
    "postgresql+psycopg://USER@HOST:PORT/DB at a running server."
)


class PgUnavailable(RuntimeError):
    """No PostgreSQL server can be had; the message says what failed."""


def _bin_dir() -> Path:
    given = os.environ.get("TORCHPBT_PG_BIN")
    candidates = [given] if given else sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]),
        reverse=True)
    on_path = shutil.which("initdb")
    if not given and on_path:
        candidates.append(str(Path(on_path).parent))
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    raise PgUnavailable(f"no PostgreSQL server binaries (initdb, pg_ctl) found in "
                        f"{candidates or '/usr/lib/postgresql/*/bin or PATH'}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """A running server: ``url(db)`` for SQLAlchemy, ``new_database()`` per test."""

    def __init__(self, base_url: str, owned_dir: Path | None = None,
                 stop: list[str] | None = None, as_user: list[str] | None = None) -> None:
        self.base_url = base_url  # postgresql+psycopg://USER@HOST:PORT/DB
        self.owned_dir = owned_dir
        self._stop = stop
        self._as_user = as_user or []
        self.databases: list[str] = []
        self.start_seconds = 0.0

    def url(self, database: str) -> str:
        return self.base_url.rsplit("/", 1)[0] + "/" + database

    def _admin(self):  # a psycopg connection in autocommit, for CREATE/DROP DATABASE
        import psycopg

        return psycopg.connect(self.base_url.replace("postgresql+psycopg://", "postgresql://"),
                               autocommit=True, connect_timeout=10)

    def new_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop a server this module started, and delete its directory (idempotent)."""
        if self._stop is not None:
            subprocess.run(self._as_user + self._stop, capture_output=True, timeout=60)
            self._stop = None
        if self.owned_dir is not None:
            shutil.rmtree(self.owned_dir, ignore_errors=True)
            self.owned_dir = None


def _run(cmd: list[str], what: str) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PgUnavailable(f"{what} failed: {exc}") from exc
    if proc.returncode != 0:
        raise PgUnavailable(f"{what} failed (exit {proc.returncode}): "
                            f"{(proc.stderr or proc.stdout).strip()[-800:]}")


def start_server() -> PgServer:
    """Start a throwaway cluster; raise PgUnavailable saying why it cannot be."""
    try:  # without the driver nothing could talk to the server: say so, start nothing
        import psycopg  # noqa: F401
    except ImportError:
        raise PgUnavailable("the psycopg driver is not installed; install it with "
                            "pip install 'torchpbt[postgres]'") from None
    external = os.environ.get("TORCHPBT_TEST_PG_URL")
    if external:
        server = PgServer(external)
        try:
            server.drop_database(server.new_database())
        except Exception as exc:
            raise PgUnavailable(f"TORCHPBT_TEST_PG_URL={external} is not usable (a test "
                                f"database cannot be created there): {exc}") from exc
        return server
    t0 = time.perf_counter()
    bindir = _bin_dir()
    as_user: list[str] = []
    data = Path(tempfile.mkdtemp(prefix="torchpbt-pg-"))
    try:
        if os.geteuid() == 0:  # initdb refuses root: run the server as `postgres`
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise PgUnavailable("running as root and there is no `postgres` user to run "
                                    "the server as") from None
            os.chown(data, user.pw_uid, user.pw_gid)
            runuser = shutil.which("runuser")
            if not runuser:
                raise PgUnavailable("running as root without `runuser` (util-linux) to run "
                                    "the server as `postgres`")
            as_user = [runuser, "-u", "postgres", "--"]
        pgdata = data / "data"
        _run(as_user + [str(bindir / "initdb"), "-D", str(pgdata), "-U", "postgres",
                        "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"], "initdb")
        last = ""
        for _ in range(3):  # the free port may be taken between the check and the start
            port = _free_port()
            opts = (f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
            stop = [str(bindir / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"]
            try:
                _run(as_user + [str(bindir / "pg_ctl"), "-D", str(pgdata), "-o", opts, "-l",
                                str(data / "server.log"), "-w", "-t", "60", "start"], "pg_ctl start")
            except PgUnavailable as exc:
                log = data / "server.log"
                last = f"{exc}; server log: {log.read_text()[-800:] if log.exists() else '-'}"
                continue
            server = PgServer(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres",
                              data, stop, as_user)
            server.start_seconds = time.perf_counter() - t0
            atexit.register(server.stop)  # also if the session fixture never tears down
            return server
        raise PgUnavailable(last)
    except BaseException:
        shutil.rmtree(data, ignore_errors=True)
        raise


__all__ = ["HOW_TO_FIX", "PgServer", "PgUnavailable", "start_server"]
