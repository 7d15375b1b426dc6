"""``edge-cloud keys create|list|revoke``: manage the API keys of a cloud stub database."""

from __future__ import annotations

import datetime
from typing import Annotated

import typer

from cloud_stub.settings import ServerSettings
from cloud_stub.store import Store
from edge_sdk.console import handle_errors

__all__ = ["create_key", "list_keys", "revoke_key"]

DatabaseOption = Annotated[
    str | None, typer.Option(help="Database of the service: " + ServerSettings.describe("database_url"))
]


def _store(database_url: str | None) -> Store:
    return Store(database_url or ServerSettings().database_url)


@handle_errors
def create_key(
    name: Annotated[str, typer.Option(help="Who or what the key is for (unique).")],
    database_url: DatabaseOption = None,
) -> None:
    """Issue an API key and print it once; only its SHA-256 is stored."""
    key = _store(database_url).create_api_key(name)
    typer.echo(key)


@handle_errors
def list_keys(database_url: DatabaseOption = None) -> None:
    """List key names and dates (keys themselves are not stored)."""
    for record in _store(database_url).list_api_keys():
        created = datetime.datetime.fromtimestamp(record.created_at, datetime.UTC).isoformat(timespec="seconds")
        state = "revoked" if record.revoked_at else "active"
        typer.echo(f"{record.id}\t{record.name}\t{created}\t{state}")


@handle_errors
def revoke_key(
    name: Annotated[str, typer.Option(help="Name of the key to revoke.")],
    database_url: DatabaseOption = None,
) -> None:
    """Revoke a key: requests with it get 401 from then on."""
    _store(database_url).revoke_api_key(name)
    typer.echo(f"revoked {name}")
