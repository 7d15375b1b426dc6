"""Alembic environment: migrations run on the connection :class:`cloud_stub.store.database.Database` passes."""

from alembic import context

from cloud_stub.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations by opening the database with cloud_stub.store.Store (or Database)")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
