"""Alembic environment of the torchpbt store.

``SQLStore`` runs it with its own open connection (``config.attributes["connection"]``),
already inside the transaction (and lock) that makes the whole upgrade atomic, so
this file never begins or commits anything itself in that case. The ``alembic``
command line works too, for writing new revisions: give the database with
``-x url=...`` (or ``sqlalchemy.url`` in an ini file).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from torchpbt.store.migrate import VERSION_TABLE
from torchpbt.store.models import Base


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      version_table=VERSION_TABLE)
    with context.begin_transaction():  # a no-op inside the caller's transaction
        context.run_migrations()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = (context.get_x_argument(as_dictionary=True).get("url")
           or context.config.get_main_option("sqlalchemy.url"))
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


_main()
