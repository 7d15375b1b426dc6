"""What every part of the store shares: the engine, and turning result rows into records."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Engine

__all__ = ["StorePart", "record"]

T = TypeVar("T")


class StorePart:
    """One concept's part of :class:`cloud_stub.store.Store`, on the store's engine."""

    engine: Engine


def record(kind: type[T], row: Any, **decoded: Any) -> T:
    """``kind`` built from a result row's columns, with ``decoded`` replacing some of them."""
    return kind(**{**dict(row._mapping), **decoded})
