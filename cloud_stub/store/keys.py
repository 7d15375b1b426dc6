"""API keys: issued once, stored as SHA-256, checked on every request, revocable."""

from __future__ import annotations

import hashlib
import secrets
import time

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from cloud_stub.errors import ConflictError, NotFoundError
from cloud_stub.store._base import StorePart, record
from cloud_stub.store.rows import ApiKeyRow
from cloud_stub.store.schema import api_keys

__all__ = ["KEY_PREFIX", "KeyStore", "hash_api_key"]

KEY_PREFIX = "esk_"


def hash_api_key(key: str) -> str:
    """SHA-256 of a key: what is stored (keys are 256-bit random, so a fast hash suffices)."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore(StorePart):
    """The ``api_keys`` table."""

    def create_api_key(self, name: str) -> str:
        """Issue a new key for ``name``; the key is returned once and only its hash is stored.

        Raises:
            ConflictError: A key with this name exists.
        """
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(api_keys).values(name=name, key_hash=hash_api_key(key), created_at=time.time()))
        except IntegrityError as exc:
            raise ConflictError(f"an API key named {name!r} exists; revoke it or choose another name") from exc
        return key

    def check_api_key(self, key: str) -> int | None:
        """The key's id if it is valid and not revoked, else ``None``."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(api_keys.c.id).where(api_keys.c.key_hash == hash_api_key(key), api_keys.c.revoked_at.is_(None))
            ).first()
        return None if row is None else int(row.id)

    def revoke_api_key(self, name: str) -> None:
        """Revoke the key named ``name``.

        Raises:
            NotFoundError: No active key has this name.
        """
        with self.engine.begin() as conn:
            done = conn.execute(
                update(api_keys)
                .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            ).rowcount
        if not done:
            raise NotFoundError(f"no active API key named {name!r}")

    def list_api_keys(self) -> list[ApiKeyRow]:
        """Names and dates of every key (never the hashes), oldest first."""
        columns = (api_keys.c.id, api_keys.c.name, api_keys.c.created_at, api_keys.c.revoked_at)
        with self.engine.connect() as conn:
            rows = conn.execute(select(*columns).order_by(api_keys.c.id)).all()
        return [record(ApiKeyRow, r) for r in rows]
