"""The connection to the service's database, and its schema kept current by Alembic migrations.

Opening a database upgrades it to the newest schema. A database made by the release
before migrations existed (its tables, no ``alembic_version``) is first stamped with
the baseline revision, whose tables are exactly those, then upgraded like any other.
Concurrent starts (several replicas) migrate one at a time: a PostgreSQL advisory
lock, or for SQLite a file lock beside the database file.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from cloud_stub.errors import StoreError

__all__ = ["BASELINE_REVISION", "MIGRATIONS", "Database"]

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE_REVISION = "0001"
_MIGRATION_LOCK_ID = 0x45444745  # any constant shared by every replica of the service


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run while one writer commits; busy_timeout makes concurrent
    # writers wait for the lock instead of failing with "database is locked".
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


class Database:
    """An engine on ``url`` whose schema is upgraded to the newest revision on opening.

    Args:
        url: SQLAlchemy URL, ``sqlite:///file.db`` or ``postgresql+psycopg://...``.

    Raises:
        StoreError: The URL is malformed, the database cannot be opened, or it cannot
            be migrated.
    """

    def __init__(self, url: str) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise StoreError(f"not a database URL: {url!r}") from exc
        if parsed.get_backend_name() not in ("sqlite", "postgresql"):
            raise StoreError(f"database must be sqlite or postgresql, got {parsed.get_backend_name()!r}")
        self.url = parsed
        options: dict[str, Any] = {"pool_pre_ping": True}
        if parsed.get_backend_name() == "sqlite":
            if not parsed.database or parsed.database == ":memory:":
                raise StoreError("use a file for SQLite (sqlite:///path.db): an in-memory database is lost on restart")
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            options["connect_args"] = {"timeout": 30, "check_same_thread": False}
        try:
            self.engine: Engine = create_engine(parsed, **options)
            if parsed.get_backend_name() == "sqlite":
                event.listen(self.engine, "connect", _sqlite_pragmas)
            self.migrate()
        except (OperationalError, ImportError) as exc:
            raise StoreError(f"cannot open database {parsed.render_as_string(hide_password=True)}: {exc}") from exc

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.url.get_backend_name()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def revision(self) -> str | None:
        """The schema revision the database is at (``None``: never migrated)."""
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def migrate(self) -> None:
        """Upgrade the schema to the newest revision (stamping a pre-migration database first)."""
        with self._migration_lock(), self.engine.begin() as conn:
            if self.backend == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
            config = _alembic_config(conn)
            tables = set(inspect(conn).get_table_names())
            if "api_keys" in tables and "alembic_version" not in tables:
                command.stamp(config, BASELINE_REVISION)
            command.upgrade(config, "head")

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if self.backend != "sqlite":
            yield
            return
        lock_path = Path(f"{Path(str(self.url.database)).expanduser()}.migrate.lock")
        with lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
