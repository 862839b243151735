"""Alembic migrations of the store schema, shipped with the package so every
installed torchpbt can upgrade the stores older versions wrote (SQLStore runs
them on open; see ``torchpbt.store.migrate``)."""
