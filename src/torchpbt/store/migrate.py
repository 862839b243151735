"""Schema migrations on open: every ``SQLStore`` goes through here.

The schema is versioned twice, kept equal: alembic's revision (``000N``, in our
own version table so a PostgreSQL database shared with an application that uses
alembic itself is not confused) and ``torchpbt_meta.schema_version`` (``N``),
which torchpbt 0.1 wrote before migrations existed and which older torchpbts
still read to refuse newer stores (store rule 5).

- a new database is created by running every revision (there is no
  ``create_all``: one path, so a fresh store and an upgraded one are the same);
- an older one is upgraded to the head, all of it in **one transaction** under a
  lock (PostgreSQL advisory lock; SQLite ``BEGIN IMMEDIATE``), so a crash or an
  error leaves it exactly as it was and two processes opening it at once upgrade
  it once; a store of torchpbt 0.1 (no alembic table) is first stamped with the
  revision its ``schema_version`` names;
- a newer one is refused before anything is written.

The common case, a store already at the head, costs one read of each version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import Engine

from ..engine.faults import crash_point
from .base import SCHEMA_VERSION, StoreError

VERSION_TABLE = "torchpbt_alembic_version"
META_TABLE = "torchpbt_meta"
MIGRATIONS = Path(__file__).with_name("migrations")
_PG_LOCK = 0x74706274  # "tpbt": one advisory lock key for torchpbt's migrations


def revision(version: int) -> str:
    """The alembic revision id of a schema version (1 -> "0001")."""
    return f"{version:04d}"


HEAD = revision(SCHEMA_VERSION)


def read_versions(conn: Connection) -> tuple[int | None, str | None]:
    """``(schema_version, alembic revision)``; ``None`` where the table is missing."""
    tables = set(inspect(conn).get_table_names())
    version = rev = None
    if META_TABLE in tables:
        value = conn.execute(text(
            f"SELECT value FROM {META_TABLE} WHERE key = 'schema_version'")).scalar()
        version = int(value) if value is not None else 0
    if VERSION_TABLE in tables:
        rev = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    return version, rev


def ensure_schema(engine: Engine, url: str, create: bool) -> None:
    """Bring the database at ``engine`` to the current schema, or refuse it."""
    with engine.connect() as conn:
        version, rev = read_versions(conn)
    _check(url, version, rev, create)
    if version == SCHEMA_VERSION and rev == HEAD:
        return
    with engine.connect() as conn:
        _lock(conn)
        version, rev = read_versions(conn)  # another process may have upgraded it meanwhile
        _check(url, version, rev, create)
        if version != SCHEMA_VERSION or rev != HEAD:
            _upgrade(conn, url, version, rev)
        crash_point("store_migrate")
        conn.commit()


def _check(url: str, version: int | None, rev: str | None, create: bool) -> None:
    if version is None and not create:
        raise StoreError(f"store {url!r} holds no torchpbt run; check the path.")
    newer = version is not None and version > SCHEMA_VERSION
    if newer or (rev is not None and not rev.isdigit()) or (rev or "") > HEAD:
        shown = version if newer or rev is None else rev
        raise StoreError(
            f"store {url!r} has schema version {shown}, newer than this torchpbt's "
            f"{SCHEMA_VERSION}; upgrade torchpbt to read it."
        )


def _lock(conn: Connection) -> None:
    """Begin the migration transaction, holding a lock that serialises migrations."""
    if conn.dialect.name == "sqlite":
        # pysqlite would run DDL outside any transaction (it only BEGINs before DML):
        # begin explicitly, and take the write lock now, not at the first write.
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    elif conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})


def alembic_config(conn: Connection | None = None) -> Any:
    """An alembic ``Config`` for the shipped migrations, bound to ``conn`` if given."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def _upgrade(conn: Connection, url: str, version: int | None, rev: str | None) -> None:
    from alembic import command

    cfg = alembic_config(conn)
    try:
        if version is not None and rev is None:  # written by torchpbt 0.1: no alembic table
            if version < 1:
                raise StoreError(
                    f"store {url!r} has no schema version; it was not written by torchpbt "
                    "(or was damaged): use another store URL."
                )
            command.stamp(cfg, revision(version))
        command.upgrade(cfg, "head")
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(
            f"cannot upgrade store {url!r} to schema version {SCHEMA_VERSION} "
            f"({type(exc).__name__}: {exc}); nothing was changed. Check that the database "
            "is writable, or open it with the torchpbt that wrote it."
        ) from exc
