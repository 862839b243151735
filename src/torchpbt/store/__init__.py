"""Persistent record of runs: a documented contract and its SQLAlchemy implementation."""

from .base import (
    SCHEMA_VERSION,
    BaseStore,
    EventRecord,
    IntervalRecord,
    MemberUpdate,
    StepRecord,
    StoreError,
)
from .sql import SQLStore, open_store

__all__ = [
    "SCHEMA_VERSION", "BaseStore", "EventRecord", "IntervalRecord", "MemberUpdate", "StepRecord", "SQLStore",
    "StoreError", "open_store",
]
