"""Repeat cache: the same image always gets the same crafted feature (A3 defence).

Averaging several crafted versions of one face would cancel their perturbations
(paper Sec. V-A, A3). Shuffling a batch does not stop that for long, because crafted
features of one face stay close and can be re-aligned by nearest neighbour
(docs/design.md, "Crafting"). So the crafter remembers, per image, the first crafted feature
it released and returns it again whenever the same input comes back, alone or
inside a new batch.

The cache stores no raw feature: keys are HMAC-SHA256 digests of the raw feature
bytes under a random secret kept with the cache, and values are the crafted
features that were released anyway. Persisted to SQLite, it survives a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from edge_sdk.errors import EdgeSDKError

__all__ = ["CacheError", "RepeatCache"]


class CacheError(EdgeSDKError):
    """A persisted repeat cache cannot be opened or does not fit the kit."""


class RepeatCache:
    """Crafted features keyed by a keyed hash of the raw feature.

    Args:
        path: SQLite file to persist to; ``None`` keeps the cache in memory only.
        max_entries: Least recently used entries beyond this are dropped.
        memory_entries: Entries also kept in memory (default ``max_entries``); with a
            ``path``, a smaller number bounds the memory while the database keeps
            ``max_entries``.
        secret: HMAC key; drawn at random (and persisted with the cache) if omitted.
        scope: What the cached features were crafted with (kit and settings); a
            persisted cache opened under another scope is refused, so a cache is
            never silently reused with another kit or configuration.

    Example:
        >>> cache = RepeatCache()
        >>> raw, crafted = torch.zeros(2, 3), torch.ones(2, 3)
        >>> keys = cache.keys_for(raw)
        >>> cache.put(keys, crafted)
        >>> [k == keys[0] for k in keys], torch.equal(cache.get(keys[1]), crafted[1])
        ([True, True], True)
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        max_entries: int = 100_000,
        memory_entries: int | None = None,
        secret: bytes | None = None,
        scope: str = "",
    ) -> None:
        if max_entries < 1 or (memory_entries is not None and memory_entries < 1):
            raise ValueError(f"max_entries and memory_entries must be >= 1, got {max_entries}, {memory_entries}")
        self.max_entries = max_entries
        self.memory_entries = max_entries if memory_entries is None else memory_entries
        self._lock = threading.Lock()
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self._db: sqlite3.Connection | None = None
        self.path = Path(path) if path is not None else None
        if self.path is None:
            self._secret = secret or secrets.token_bytes(32)
            return
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            with self._db:
                self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS crafted (digest TEXT PRIMARY KEY, dtype TEXT NOT NULL, "
                    "shape TEXT NOT NULL, data BLOB NOT NULL, used INTEGER NOT NULL)"
                )
                row = self._db.execute("SELECT value FROM meta WHERE key = 'secret'").fetchone()
                if row is None:
                    self._secret = secret or secrets.token_bytes(32)
                    self._db.execute("INSERT INTO meta VALUES ('secret', ?)", (self._secret,))
                else:
                    self._secret = bytes(row[0])
                stored = self._db.execute("SELECT value FROM meta WHERE key = 'scope'").fetchone()
                if stored is None:
                    self._db.execute("INSERT INTO meta VALUES ('scope', ?)", (scope.encode(),))
                elif bytes(stored[0]).decode() != scope:
                    raise CacheError(
                        f"{self.path}: cache was made for another kit or crafting configuration "
                        f"({bytes(stored[0]).decode()[:80]!r}); use a new cache file"
                    )
        except CacheError:
            if self._db is not None:
                self._db.close()
            raise
        except sqlite3.DatabaseError as exc:
            raise CacheError(f"{self.path}: not a usable repeat-cache database ({exc})") from exc

    def keys_for(self, raw_features: torch.Tensor) -> list[str]:
        """One key per item of a raw feature batch ``(B, ...)``: HMAC-SHA256 of its float32 bytes."""
        array = raw_features.detach().cpu().contiguous().float().numpy()
        return [hmac.new(self._secret, row.tobytes(), hashlib.sha256).hexdigest() for row in array]

    def get(self, key: str) -> torch.Tensor | None:
        """The crafted feature released for this key, or ``None``."""
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return torch.from_numpy(self._memory[key].copy())
            if self._db is None:
                return None
            row = self._db.execute("SELECT dtype, shape, data FROM crafted WHERE digest = ?", (key,)).fetchone()
            if row is None:
                return None
            shape = tuple(int(s) for s in row[1].split(",") if s)
            array = np.frombuffer(row[2], dtype=np.dtype(row[0])).reshape(shape).copy()
            self._remember(key, array)
            return torch.from_numpy(array.copy())

    def put(self, keys: list[str], crafted: torch.Tensor) -> None:
        """Store crafted features ``(B, ...)`` under their keys; an existing key keeps its first value."""
        arrays = crafted.detach().cpu().contiguous().numpy()
        with self._lock:
            for key, array in zip(keys, arrays, strict=True):
                if key not in self._memory:
                    self._remember(key, array.copy())
            if self._db is not None:
                with self._db:
                    rows = [
                        (k, a.dtype.str, ",".join(map(str, a.shape)), a.tobytes())
                        for k, a in zip(keys, arrays, strict=True)
                    ]
                    self._db.executemany(
                        "INSERT OR IGNORE INTO crafted VALUES (?, ?, ?, ?, strftime('%s','now'))", rows
                    )
                    count = self._db.execute("SELECT COUNT(*) FROM crafted").fetchone()[0]
                    if count > self.max_entries:
                        oldest = "SELECT digest FROM crafted ORDER BY used, rowid LIMIT ?"
                        self._db.execute(f"DELETE FROM crafted WHERE digest IN ({oldest})", (count - self.max_entries,))

    def _remember(self, key: str, array: np.ndarray) -> None:
        self._memory[key] = array
        self._memory.move_to_end(key)
        while len(self._memory) > self.memory_entries:
            self._memory.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            if self._db is not None:
                return int(self._db.execute("SELECT COUNT(*) FROM crafted").fetchone()[0])
            return len(self._memory)

    def close(self) -> None:
        """Close the database (the cache keeps working in memory)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
